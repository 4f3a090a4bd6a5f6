"""/models: the model versions on disk and which one serves."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from edge_runtime.api.deps import ModelsDep
from edge_runtime.api.schemas import ModelVersionOut

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelVersionOut])
def list_versions(models: ModelsDep) -> list[ModelVersionOut]:
    return [ModelVersionOut(**asdict(v)) for v in models.versions()]

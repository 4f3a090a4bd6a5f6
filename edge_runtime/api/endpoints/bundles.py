"""/models/{version}/bundle and /models/import: move a trained model between boards."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from edge_runtime.api.deps import ModelsDep, Mutating, RuntimeDep
from edge_runtime.api.schemas import WRITE, errors
from edge_runtime.services import bundles, events

router = APIRouter(prefix="/models", tags=["models"])
TAR = {200: {"content": {"application/x-tar": {}}}} | errors(401, 403, 404, 422)
Version = Annotated[str, PathParam(pattern=f"^{bundles.VERSION_PATTERN}$",
                                   description="a model version, e.g. v000012")]


@router.get("/{version}/bundle", response_class=FileResponse, responses=TAR,
            dependencies=[Mutating])
def export_bundle(
    version: Version,
    models: ModelsDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
    replay: Annotated[bool, Query(description="include the replay store")] = False,
) -> FileResponse:
    """One tar: manifest, checksums, graphs, student, thresholds (and the replay store)."""
    layout = runtime.settings.layout
    path = bundles.export_bundle(models, version, layout.work,
                                 layout.replay if replay else None)
    background.add_task(path.unlink, missing_ok=True)
    return FileResponse(path, media_type="application/x-tar",
                        filename=f"edge-runtime-{version}.tar")


@router.post("/import", dependencies=[Mutating], responses=errors(*WRITE, 409, 507))
async def import_bundle(
    runtime: RuntimeDep,
    bundle: Annotated[UploadFile, File(description="a bundle from GET /models/{v}/bundle")],
    promote: Annotated[bool, Query(description="make it the live version now")] = False,
    replay: Annotated[bool, Query(description="install its replay store (empty "
                                              "board only)")] = False,
) -> dict:
    """Verify every checksum, install as a new version; live only with promote=true."""
    work = runtime.settings.layout.work
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=work, prefix="import-", suffix=".tar") as tmp:
        await run_in_threadpool(shutil.copyfileobj, bundle.file, tmp, 1 << 20)
        tmp.flush()
        result = await run_in_threadpool(
            bundles.import_bundle, runtime.models, Path(tmp.name), runtime.settings.layout.replay,
            promote, replay)
    if result.promoted:
        live = runtime.models.live
        runtime.events.publish(events.MODEL, {"version": result.version, "origin": "import",
                                              "products": sorted(live.manifest.thresholds)})
    return asdict(result)

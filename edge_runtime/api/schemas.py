"""Request and response bodies (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

PRODUCT_NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$"


class ProductIn(BaseModel):
    name: str = Field(pattern=PRODUCT_NAME, description="letters, digits, space, _ . -; "
                      "not digits only (a product reference of digits is its id)")
    description: str = Field(default="", max_length=500)

    @field_validator("name")
    @classmethod
    def not_an_id(cls, name: str) -> str:
        if name.isdigit():
            raise ValueError("a name of digits only would read as a product id; add a letter")
        return name


class Thresholds(BaseModel):
    image: float | None = None
    pixel: float | None = None


class ProductOut(BaseModel):
    id: int
    name: str
    description: str
    created_at: float
    captures: int
    trained: bool
    thresholds: Thresholds | None = None
    threshold_override: Thresholds


class CaptureOut(BaseModel):
    id: int
    product_id: int
    source: str
    width: int
    height: int
    bytes: int
    created_at: float


class CapturesOut(BaseModel):
    count: int
    captures: list[CaptureOut]


class TrainIn(BaseModel):
    epochs: int | None = Field(default=None, ge=1, le=100)
    max_images: int | None = Field(default=None, ge=2, le=5000)


class ThresholdIn(BaseModel):
    image: float = Field(gt=0, allow_inf_nan=False)
    pixel: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class JobOut(BaseModel):
    id: int
    product_id: int
    status: str
    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None
    eta_seconds: float | None
    cancel_requested: bool
    version: str | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class InspectionOut(BaseModel):
    id: int
    product_id: int
    product: str
    score: float
    verdict: str
    threshold: float
    latency_ms: float
    model_version: str
    map_url: str


class ModelVersionOut(BaseModel):
    version: str
    created_at: float
    products: list[str]
    training: dict
    live: bool

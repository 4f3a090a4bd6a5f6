"""Request and response bodies (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# starts with a letter or digit; not digits only (a product reference of digits is its id)
PRODUCT_NAME = r"^([A-Za-z]|[0-9]+[A-Za-z _.\-])[A-Za-z0-9 _.\-]*$"


class ProductIn(BaseModel):
    name: str = Field(pattern=PRODUCT_NAME, max_length=64,
                      description="letters, digits, space, _ . -; starts with a letter or "
                                  "digit; not digits only (digits refer to a product id)")
    description: str = Field(default="", max_length=500)


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


class ErrorOut(BaseModel):
    detail: str


class ValidationItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    loc: list[str | int]
    msg: str
    type: str


class InvalidOut(BaseModel):
    """422: a request that failed validation (a list) or that cannot be acted on (text)."""

    detail: str | list[ValidationItem]


_MEANING = {400: "a body that does not parse, or a Host not allowed",
            401: "missing or wrong bearer token",
            403: "cross-origin write refused", 404: "no such resource",
            409: "conflicts with the current state", 410: "no longer kept",
            413: "too large (request body, or an image's decoded size)",
            422: "invalid input", 503: "camera or model unavailable",
            507: "the disk is full; nothing was written"}


def errors(*codes: int) -> dict:
    """The error statuses an endpoint can answer, for the OpenAPI document."""
    return {code: {"model": InvalidOut if code == 422 else ErrorOut,
                   "description": _MEANING[code]} for code in codes}


WRITE = (400, 401, 403, 413, 422)  # mutating: unparsable, token, origin, body limit, input

"""Request and response bodies (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# starts with a letter or digit; not digits only (a product reference of digits is its id)
PRODUCT_NAME = r"^([A-Za-z]|[0-9]+[A-Za-z _.\-])[A-Za-z0-9 _.\-]*$"


class ProductIn(BaseModel):
    name: str = Field(pattern=PRODUCT_NAME, max_length=64,
                      description="letters, digits, space, _ . -; starts with a letter or "
                                  "digit; not digits only (digits refer to a product id)")
    description: str = Field(default="", max_length=500)


class ThresholdPair(BaseModel):
    image: float | None = None
    pixel: float | None = None


class Thresholds(ThresholdPair):
    warning: str | None = Field(default=None, description="calibrated on too few normals to "
                                "promise the target false-reject rate; add good captures")


class CalibratedThresholds(Thresholds):
    normal_scores: list[float] = Field(
        default_factory=list, description="image scores of the held-out normal captures "
                                          "they were calibrated on")


class ThresholdOverride(Thresholds):
    set_for: str | None = Field(default=None, description="who answered when it was set "
                                "(student or a head's kind): it applies only to that path's "
                                "scores")
    active: bool = Field(default=False, description="it decides: set, the path it was set "
                         "for answers, and that path's calibration is the one it was set on")
    recalibrated: bool = Field(default=False, description="set aside: the path it was set "
                               "for has been recalibrated since (retrained or refitted), so "
                               "its values are on an old scale; set it again to apply")
    set_on: ThresholdPair | None = Field(default=None, description="that path's calibrated "
                                          "thresholds when it was set")


class ProductOut(BaseModel):
    id: int
    name: str
    description: str
    created_at: float
    captures: int
    trained: bool
    served_by: str | None = Field(default=None, description="who answers now: student, a "
                                  "head's kind, or nobody yet")
    thresholds: CalibratedThresholds | None = Field(
        default=None, description="the calibration of the path that answers now")
    threshold_override: ThresholdOverride


class CaptureOut(BaseModel):
    id: int
    product_id: int
    name: str = Field(default="", description="the uploaded file name (display only)")
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
    """null (or left out) removes that override: the calibrated value decides again."""

    image: float | None = Field(default=None, gt=0, allow_inf_nan=False)
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
    percent: float = Field(default=0.0, description="0-100 over all phases")
    version: str | None
    error: str | None
    result: dict | None = Field(default=None, description="version, thresholds, the "
                                "threshold_changes a succeeded job made and the operator "
                                "overrides it set aside (overrides_set_aside: product -> "
                                "the image override no longer applied)")
    created_at: float
    started_at: float | None
    finished_at: float | None


class _Inspection(BaseModel):
    """The fields of an inspection that the verdict and its history share."""

    id: int
    product_id: int
    product: str
    score: float
    verdict: str
    threshold: float
    latency_ms: float
    model_version: str


class InspectionOut(_Inspection):
    head: str = Field(description='who answered: "student", or the memory-bank head '
                                  '("padim" / "patchcore") before the student knows the product')
    map_url: str


class ModelVersionOut(BaseModel):
    version: str
    created_at: float
    products: list[str]
    training: dict
    live: bool


class InspectionRow(_Inspection):
    source: str
    created_at: float
    label: str | None
    map_kept: bool = Field(description="the map is kept on disk (rejects, reviewed parts; "
                           "within inspection.keep_maps_mb, oldest first out)")
    map_available: bool = Field(default=False, description="map_url answers now: kept on disk "
                                "or still among the recent maps in RAM (else 410)")
    map_url: str


class InspectionPage(BaseModel):
    total: int
    limit: int
    offset: int
    inspections: list[InspectionRow]


class InspectionCounts(BaseModel):
    product_id: int
    product: str
    pass_: int = Field(alias="pass")
    reject: int
    pass_recent: int
    reject_recent: int


class ReviewIn(BaseModel):
    label: Literal["fine", "defective"] = Field(
        description="fine: the image becomes a normal capture (the next training learns it); "
                    "defective: kept as a labelled example of the product")


class ReviewOut(BaseModel):
    inspection_id: int
    label: str
    product_id: int
    captures: int
    capture_id: int | None = None
    example: str | None = None


class ProductDeleted(BaseModel):
    id: int
    name: str
    deleted: bool
    in_live_model: bool
    consequences: str


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

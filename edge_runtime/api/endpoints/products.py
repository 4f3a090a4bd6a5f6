"""/products: create, list, captures, training, threshold override."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool

from edge_runtime.api.deps import (
    CapturesDep,
    HeadsDep,
    JobsDep,
    Mutating,
    ProductDep,
    ProductsDep,
    SettingsDep,
)
from edge_runtime.api.schemas import (
    WRITE,
    CapturesOut,
    JobOut,
    ProductIn,
    ProductOut,
    ThresholdIn,
    TrainIn,
    errors,
)
from edge_runtime.api.uploads import read_upload

router = APIRouter(prefix="/products", tags=["products"])


@router.post("", status_code=201, response_model=ProductOut, dependencies=[Mutating],
             responses=errors(*WRITE, 409, 507))
def create_product(body: ProductIn, products: ProductsDep) -> ProductOut:
    return ProductOut(**products.create(body.name, body.description))


@router.get("", response_model=list[ProductOut])
def list_products(products: ProductsDep) -> list[ProductOut]:
    return [ProductOut(**view) for view in products.list()]


@router.get("/{product_id}", response_model=ProductOut, responses=errors(404, 422))
def get_product(product: ProductDep, products: ProductsDep) -> ProductOut:
    return ProductOut(**products.view(product))


@router.post("/{product_id}/captures", status_code=201, response_model=CapturesOut,
             dependencies=[Mutating], responses=errors(*WRITE, 404, 409, 503, 507))
async def add_captures(
    product: ProductDep,
    captures: CapturesDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile] | None, File(description="PNG or JPEG images")] = None,
    camera_frames: Annotated[int, Query(ge=0, le=100, description="camera frames")] = 0,
) -> CapturesOut:
    limit = int(settings.api.max_upload_mb * 2**20)
    uploads = [await read_upload(f, limit) for f in files or []]
    names = [f.filename or "" for f in files or []]
    # decoding, camera frames and fsyncs stay off the event loop
    return CapturesOut(**await run_in_threadpool(captures.add, product, uploads, camera_frames,
                                                 names))


@router.get("/{product_id}/captures", response_model=CapturesOut, responses=errors(404, 422))
def list_captures(
    product: ProductDep,
    captures: CapturesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> CapturesOut:
    return CapturesOut(**captures.list(product["id"], limit, offset))


@router.post("/{product_id}/train", status_code=202, response_model=JobOut,
             dependencies=[Mutating], responses=errors(*WRITE, 404, 409, 507))
def train(product: ProductDep, jobs: JobsDep, body: TrainIn | None = None) -> JobOut:
    params = body.model_dump(exclude_none=True) if body else {}
    return JobOut(**jobs.submit(product, params))


@router.post("/{product_id}/head", status_code=202, dependencies=[Mutating],
             responses=errors(*WRITE, 404))
def fit_head(product: ProductDep, heads: HeadsDep, captures: CapturesDep) -> dict:
    """Fit the product's memory-bank head now, in the background (GET it for the state)."""
    heads.request_fit(product["id"], lambda: captures.paths(product["id"]))
    return heads.state(product["id"])


@router.get("/{product_id}/head", responses=errors(404, 422))
def head_state(product: ProductDep, heads: HeadsDep) -> dict:
    """queued | fitting | ready | waiting (too few captures) | failed | none; bytes, kind."""
    return heads.state(product["id"])


@router.put("/{product_id}/threshold", response_model=ProductOut, dependencies=[Mutating],
            responses=errors(*WRITE, 404, 507))
def set_threshold(product: ProductDep, body: ThresholdIn, products: ProductsDep) -> ProductOut:
    return ProductOut(**products.set_override(product["id"], body.image, body.pixel))

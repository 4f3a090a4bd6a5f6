"""/products: create, list, captures, training, threshold override."""

from __future__ import annotations

import sqlite3
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, UploadFile

from edge_runtime import repositories as repo
from edge_runtime.api.deps import Mutating, ProductDep, Runtime, RuntimeDep
from edge_runtime.api.schemas import (
    CaptureOut,
    CapturesOut,
    JobOut,
    ProductIn,
    ProductOut,
    ThresholdIn,
    TrainIn,
)
from edge_runtime.api.uploads import read_upload
from edge_runtime.camera import CameraError, CameraNotConfiguredError
from edge_runtime.services.captures import image_info, store_capture

router = APIRouter(prefix="/products", tags=["products"])


def product_out(runtime: Runtime, product: dict, conn: sqlite3.Connection) -> ProductOut:
    live = runtime.registry.live
    trained = live.thresholds(product["name"]) if live else None
    return ProductOut(
        id=product["id"], name=product["name"], description=product["description"],
        created_at=product["created_at"], captures=repo.count_captures(conn, product["id"]),
        trained=trained is not None,
        thresholds=trained and {"image": trained["image"], "pixel": trained["pixel"]},
        threshold_override={"image": product["image_threshold_override"],
                            "pixel": product["pixel_threshold_override"]},
    )


@router.post("", status_code=201, response_model=ProductOut, dependencies=[Mutating])
def create_product(body: ProductIn, runtime: RuntimeDep) -> ProductOut:
    with runtime.db.connect() as conn:
        if repo.find_product(conn, body.name):
            raise HTTPException(409, f"a product named {body.name!r} already exists")
        product = repo.create_product(conn, body.name, body.description)
        return product_out(runtime, product, conn)


@router.get("", response_model=list[ProductOut])
def list_products(runtime: RuntimeDep) -> list[ProductOut]:
    with runtime.db.connect(write=False) as conn:
        return [product_out(runtime, p, conn) for p in repo.list_products(conn)]


@router.get("/{product_id}", response_model=ProductOut)
def get_product(product: ProductDep, runtime: RuntimeDep) -> ProductOut:
    with runtime.db.connect(write=False) as conn:
        return product_out(runtime, product, conn)


@router.post("/{product_id}/captures", status_code=201, response_model=CapturesOut,
             dependencies=[Mutating])
async def add_captures(
    product: ProductDep,
    runtime: RuntimeDep,
    files: Annotated[list[UploadFile] | None, File(description="PNG or JPEG images")] = None,
    camera_frames: Annotated[int, Query(ge=0, le=100, description="camera frames")] = 0,
) -> CapturesOut:
    if not files and not camera_frames:
        raise HTTPException(422, "upload one or more files, or ask for camera_frames")
    limit = int(runtime.settings.api.max_upload_mb * 2**20)
    blobs = [(await read_upload(f, limit), "upload") for f in files or []]
    for _ in range(camera_frames):
        try:
            blobs.append((runtime.camera.capture(), f"camera:{runtime.camera.name}"))
            runtime.camera_error = None
        except CameraNotConfiguredError as exc:
            raise HTTPException(409, str(exc)) from exc
        except CameraError as exc:
            runtime.camera_error = str(exc)
            raise HTTPException(503, str(exc)) from exc
    infos = [image_info(data) for data, _ in blobs]  # validate all before storing any
    stored = [store_capture(runtime.db, runtime.captures_dir, product["id"], data, source, info)
              for (data, source), info in zip(blobs, infos, strict=True)]
    return CapturesOut(count=len(stored), captures=[CaptureOut(**c) for c in stored])


@router.get("/{product_id}/captures", response_model=CapturesOut)
def list_captures(
    product: ProductDep,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> CapturesOut:
    with runtime.db.connect(write=False) as conn:
        rows = repo.list_captures(conn, product["id"], limit, offset)
        total = repo.count_captures(conn, product["id"])
    return CapturesOut(count=total, captures=[CaptureOut(**c) for c in rows])


@router.post("/{product_id}/train", status_code=202, response_model=JobOut,
             dependencies=[Mutating])
def train(product: ProductDep, runtime: RuntimeDep, body: TrainIn | None = None) -> JobOut:
    params = body.model_dump(exclude_none=True) if body else {}
    return JobOut(**runtime.jobs.submit(product, params))


@router.put("/{product_id}/threshold", response_model=ProductOut, dependencies=[Mutating])
def set_threshold(product: ProductDep, body: ThresholdIn, runtime: RuntimeDep) -> ProductOut:
    with runtime.db.connect() as conn:
        repo.set_threshold_override(conn, product["id"], body.image, body.pixel)
        return product_out(runtime, repo.get_product(conn, product["id"]), conn)

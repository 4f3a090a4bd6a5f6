"""/inspect and /inspections: verdicts, anomaly maps."""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from edge_runtime import repositories as repo
from edge_runtime.api.deps import InspectionId, Mutating, RuntimeDep
from edge_runtime.api.schemas import InspectionOut
from edge_runtime.api.uploads import read_upload
from edge_runtime.overlay import map_png16 as encode_png16
from edge_runtime.overlay import overlay_png

router = APIRouter(tags=["inspections"])


def resolve_product(runtime, product: str) -> dict:
    with runtime.db.connect(write=False) as conn:
        as_id = int(product) if product.isdigit() and len(product) < 19 else None
        row = repo.get_product(conn, as_id) if as_id else None
        row = row or repo.find_product(conn, product)
    if row is None:
        raise HTTPException(404, f"no product {product!r}")
    return row


def to_out(result) -> InspectionOut:
    return InspectionOut(**result.__dict__, map_url=f"/inspections/{result.id}/map.png")


@router.post("/inspect", response_model=InspectionOut, dependencies=[Mutating])
async def inspect(
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="PNG or JPEG image")],
    product: Annotated[str, Form(max_length=64, description="product id or name")],
) -> InspectionOut:
    row = resolve_product(runtime, product)
    data = await read_upload(file, int(runtime.settings.api.max_upload_mb * 2**20))
    # inspect() answers 409 for an untrained product before decoding anything;
    # decode + ORT release the GIL; off the event loop, inspections overlap
    return to_out(await run_in_threadpool(runtime.inspections.inspect, row, data))


@router.get("/inspections/{inspection_id}")
def get_inspection(inspection_id: InspectionId, runtime: RuntimeDep) -> dict:
    with runtime.db.connect(write=False) as conn:
        row = repo.get_inspection(conn, inspection_id)
    if row is None:
        raise HTTPException(404, f"no inspection with id {inspection_id}")
    return row


def _recent(runtime, inspection_id: int):
    recent = runtime.inspections.recent_map(inspection_id)
    if recent is None:
        get_inspection(inspection_id, runtime)  # 404 if it never existed
        raise HTTPException(410, f"the map of inspection {inspection_id} is no longer kept "
                                 f"(the last {runtime.settings.inspection.keep_recent_maps} "
                                 "are kept in memory)")
    return recent


@router.get("/inspections/{inspection_id}/map.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def map_png(inspection_id: InspectionId, runtime: RuntimeDep) -> Response:
    recent = _recent(runtime, inspection_id)
    png = overlay_png(recent.rgb, recent.anomaly_map.astype(np.float32),
                      2 * recent.pixel_threshold)
    return Response(png, media_type="image/png")


@router.get("/inspections/{inspection_id}/map16.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def map_png16(inspection_id: InspectionId, runtime: RuntimeDep) -> Response:
    """Raw map as 16-bit grayscale; 65535 = 4x the product's pixel threshold."""
    recent = _recent(runtime, inspection_id)
    scale = 4 * recent.pixel_threshold
    return Response(encode_png16(recent.anomaly_map.astype(np.float32), scale),
                    media_type="image/png", headers={"X-Map-Scale": f"{scale:.9g}"})


@router.get("/inspections/{inspection_id}/map.npy", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def map_npy(inspection_id: InspectionId, runtime: RuntimeDep) -> Response:
    buffer = io.BytesIO()
    np.save(buffer, _recent(runtime, inspection_id).anomaly_map.astype(np.float32))
    return Response(buffer.getvalue(), media_type="application/octet-stream")

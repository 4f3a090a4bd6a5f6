"""/inspect and /inspections: verdicts, anomaly maps."""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from edge_runtime.api.deps import InspectionId, InspectionsDep, Mutating, ProductsDep, SettingsDep
from edge_runtime.api.schemas import WRITE, InspectionOut, errors
from edge_runtime.api.uploads import read_upload
from edge_runtime.inference.overlay import map_png16 as encode_png16
from edge_runtime.inference.overlay import verdict_overlay_png

router = APIRouter(tags=["inspections"])
PNG = {200: {"content": {"image/png": {}}}} | errors(404, 410, 422)


@router.post("/inspect", response_model=InspectionOut, dependencies=[Mutating],
             responses=errors(*WRITE, 404, 409, 503))
async def inspect(
    inspections: InspectionsDep,
    products: ProductsDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="PNG or JPEG image")],
    product: Annotated[str, Form(min_length=1, max_length=64,
                                     description="product id or name")],
) -> InspectionOut:
    row = products.resolve(product)
    data = await read_upload(file, int(settings.api.max_upload_mb * 2**20))
    # decode + ORT release the GIL; off the event loop, inspections overlap
    record = await run_in_threadpool(inspections.inspect, row, data)
    return InspectionOut(**asdict(record), map_url=f"/inspections/{record.id}/map.png")


@router.get("/inspections/{inspection_id}", responses=errors(404, 422))
def get_inspection(inspection_id: InspectionId, inspections: InspectionsDep) -> dict:
    return inspections.get(inspection_id)


@router.get("/inspections/{inspection_id}/map.png", response_class=Response, responses=PNG)
def map_png(inspection_id: InspectionId, inspections: InspectionsDep) -> Response:
    """The part with its map on the verdict's colour scale and a legend (score, threshold,
    verdict); red only where a pixel alone exceeds the threshold that decided."""
    recent = inspections.recent_map(inspection_id)
    png = verdict_overlay_png(recent.rgb, recent.anomaly_map.astype(np.float32),
                              recent.thresholds.image, recent.score, recent.verdict)
    return Response(png, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/inspections/{inspection_id}/map16.png", response_class=Response, responses=PNG)
def map_png16(inspection_id: InspectionId, inspections: InspectionsDep) -> Response:
    """Raw map as 16-bit grayscale; 65535 = 4x the product's pixel threshold."""
    recent = inspections.recent_map(inspection_id)
    scale = 4 * recent.thresholds.pixel
    return Response(encode_png16(recent.anomaly_map.astype(np.float32), scale),
                    media_type="image/png", headers={"X-Map-Scale": f"{scale:.9g}"})


@router.get("/inspections/{inspection_id}/map.npy", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}}
            | errors(404, 410, 422))
def map_npy(inspection_id: InspectionId, inspections: InspectionsDep) -> Response:
    buffer = io.BytesIO()
    np.save(buffer, inspections.recent_map(inspection_id).anomaly_map.astype(np.float32))
    return Response(buffer.getvalue(), media_type="application/octet-stream")

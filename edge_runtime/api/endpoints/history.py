"""What happened: the inspection list (filters, paging), counts per product, the job list,
and the operator's review of an inspection."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from edge_runtime.api.deps import InspectionId, InspectionsDep, JobsDep, Mutating, ReviewsDep
from edge_runtime.api.schemas import (
    WRITE,
    InspectionCounts,
    InspectionPage,
    JobOut,
    ReviewIn,
    ReviewOut,
    errors,
)
from edge_runtime.services.products import SQLITE_MAX_ID

router = APIRouter(tags=["inspections"])
Time = Annotated[float | None, Query(ge=0, le=1e11, description="Unix time, seconds")]


@router.get("/inspections", response_model=InspectionPage, responses=errors(422))
def list_inspections(
    inspections: InspectionsDep,
    product_id: Annotated[int | None, Query(ge=1, le=SQLITE_MAX_ID)] = None,
    verdict: Literal["pass", "reject"] | None = None,
    label: Literal["fine", "defective"] | None = None,
    since: Time = None,
    until: Time = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> InspectionPage:
    """Newest first; ``total`` counts every match, for paging."""
    return InspectionPage(**inspections.list(limit, offset, product_id=product_id,
                                              verdict=verdict, label=label, since=since,
                                              until=until))


@router.get("/inspections/counts", response_model=list[InspectionCounts],
            responses=errors(422))
def inspection_counts(
    inspections: InspectionsDep,
    window_s: Annotated[float, Query(gt=0, le=366 * 86400)] = 3600,
) -> list[InspectionCounts]:
    """Passes and rejects per product, in all and within the last ``window_s`` seconds."""
    return [InspectionCounts(**row) for row in inspections.counts(window_s)]


@router.post("/inspections/{inspection_id}/review", response_model=ReviewOut,
             dependencies=[Mutating], responses=errors(*WRITE, 404, 409, 410, 507))
async def review(inspection_id: InspectionId, body: ReviewIn, reviews: ReviewsDep) -> ReviewOut:
    """"fine" adds the image to the product's normal captures; "defective" keeps it as a
    labelled example. 410 when the inspection's image is no longer kept."""
    return ReviewOut(**await run_in_threadpool(reviews.review, inspection_id, body.label))


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"],
            responses=errors(422))
def list_jobs(
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> list[JobOut]:
    """Newest first."""
    return [JobOut(**job) for job in jobs.list(limit, offset)]

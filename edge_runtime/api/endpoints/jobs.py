"""/jobs: training progress and cancellation."""

from __future__ import annotations

from fastapi import APIRouter

from edge_runtime.api.deps import JobId, JobsDep, Mutating
from edge_runtime.api.schemas import JobOut

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    return JobOut(**jobs.get(job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Mutating])
def cancel_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    return JobOut(**jobs.cancel(job_id))

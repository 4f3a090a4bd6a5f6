"""/jobs: training progress and cancellation."""

from __future__ import annotations

from fastapi import APIRouter

from edge_runtime.api.deps import JobId, JobsDep, Mutating
from edge_runtime.api.schemas import WRITE, JobOut, errors

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut, responses=errors(404, 422))
def get_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    return JobOut(**jobs.get(job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Mutating],
             responses=errors(*WRITE, 404, 507))
def cancel_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    return JobOut(**jobs.cancel(job_id))

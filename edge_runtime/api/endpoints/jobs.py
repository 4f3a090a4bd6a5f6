"""/jobs: training progress and cancellation."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from edge_runtime import repositories as repo
from edge_runtime.api.deps import JobId, Mutating, RuntimeDep
from edge_runtime.api.schemas import JobOut

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, runtime: RuntimeDep) -> JobOut:
    with runtime.db.connect(write=False) as conn:
        job = repo.get_job(conn, job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return JobOut(**job)


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Mutating])
def cancel_job(job_id: JobId, runtime: RuntimeDep) -> JobOut:
    job = runtime.jobs.cancel(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id}")
    return JobOut(**job)

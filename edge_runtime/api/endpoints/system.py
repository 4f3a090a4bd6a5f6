"""/health, /status and /metrics (Prometheus text format)."""

from __future__ import annotations

import json
import sys
import time

import psutil
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from edge_runtime import repositories as repo
from edge_runtime.api.deps import Runtime, RuntimeDep
from edge_runtime.replay.accounting import read_accounting

router = APIRouter(tags=["system"])


@router.get("/health")
def health() -> dict:
    return {"status": "ok"}


def _job_view(job: dict | None) -> dict | None:
    if job is None:
        return None
    keys = ("id", "product_id", "status", "phase", "epoch", "epochs", "step", "steps", "loss",
            "eta_seconds", "cancel_requested")
    return {k: job[k] for k in keys}


def collect_status(runtime: Runtime) -> dict:
    live = runtime.registry.live
    with runtime.db.connect(write=False) as conn:
        products = repo.list_products(conn)
        job = repo.active_job(conn)
    training = live.manifest.training if live else {}
    status = {
        "version": __import__("edge_runtime").__version__,
        "model_version": live.version if live else None,
        "products": [{"id": p["id"], "name": p["name"],
                      "trained": bool(live and live.thresholds(p["name"]))} for p in products],
        "job": _job_view(job),
        "uptime_seconds": round(time.time() - runtime.started_at, 1),
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "inference_latency": runtime.inspections.latency_stats(),
        "macs": training.get("macs"),
        "replay_store": read_accounting(runtime.settings.data_path / "replay"),
        "camera": {"kind": runtime.camera.name, "error": runtime.camera_error},
        "torch_imported": "torch" in sys.modules,  # must stay False: training is a worker's
    }
    if runtime.bridge is not None:
        status["serial_bridge"] = runtime.bridge.status()
    return status


@router.get("/status")
def status(runtime: RuntimeDep) -> dict:
    return collect_status(runtime)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(runtime: RuntimeDep) -> str:
    s = collect_status(runtime)
    lines = [
        "# HELP edge_runtime_up 1 while the daemon serves", "# TYPE edge_runtime_up gauge",
        "edge_runtime_up 1",
        "# TYPE edge_runtime_uptime_seconds gauge",
        f"edge_runtime_uptime_seconds {s['uptime_seconds']}",
        "# TYPE edge_runtime_resident_memory_bytes gauge",
        f"edge_runtime_resident_memory_bytes {int(s['rss_mb'] * 2**20)}",
        "# TYPE edge_runtime_model_loaded gauge",
        f"edge_runtime_model_loaded {int(s['model_version'] is not None)}",
        "# TYPE edge_runtime_training_job_running gauge",
        f"edge_runtime_training_job_running {int(s['job'] is not None)}",
        "# TYPE edge_runtime_camera_error gauge",
        f"edge_runtime_camera_error {int(s['camera']['error'] is not None)}",
        "# HELP edge_runtime_inspections_total inspections by product and verdict",
        "# TYPE edge_runtime_inspections_total counter",
    ]
    for (product, verdict), count in sorted(runtime.inspections.counts.items()):
        lines.append(f'edge_runtime_inspections_total{{product={json.dumps(product)},'
                     f'verdict="{verdict}"}} {count}')
    latency = s["inference_latency"]
    lines += ["# TYPE edge_runtime_inference_latency_ms summary"]
    for q, key in (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms")):
        if key in latency:
            lines.append(f'edge_runtime_inference_latency_ms{{quantile="{q}"}} {latency[key]}')
    lines.append(f"edge_runtime_inference_latency_ms_count {latency['count']}")
    store = s["replay_store"]
    if store:
        lines += ["# TYPE edge_runtime_replay_bytes gauge",
                  f'edge_runtime_replay_bytes{{codec="{store["codec"]}",kind="payload"}} '
                  f'{store["payload_bytes"]}',
                  f'edge_runtime_replay_bytes{{codec="{store["codec"]}",kind="metadata"}} '
                  f'{store["metadata_bytes"]}']
    return "\n".join(lines) + "\n"

"""The operator's whole flow over HTTP against a real uvicorn subprocess."""

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.daemon_process import Daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("daemon") / "data",
               env={"EDGE_RUNTIME_API_MAX_UPLOAD_MB": "1"})
    d.start()
    yield d
    d.stop()


def _worker_memory_while_running(daemon, job_id: int) -> dict | None:
    """/status's view of the worker's RSS, once the worker has started the job."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = daemon.client.get("/status").json()
        if status["worker"] or (status["job"] or {}).get("id") != job_id:
            return status["worker"]
        time.sleep(0.2)
    return None


def _train(daemon, product_id: int, epochs: int = 2, watch_worker: bool = False) -> dict:
    response = daemon.client.post(f"/products/{product_id}/train", json={"epochs": epochs})
    assert response.status_code == 202, response.text
    if watch_worker:
        worker = _worker_memory_while_running(daemon, response.json()["id"])
        assert worker is not None, "/status never reported the training worker's RSS"
        assert 20 < worker["rss_mb"] <= worker["peak_rss_mb"] < 4096, worker
        # training.allocator's default: the worker runs on tcmalloc (Makefile's toolchain)
        assert "libtcmalloc_minimal" in Path(f"/proc/{worker['pid']}/maps").read_text()
    job = daemon.wait_job(response.json()["id"])
    assert job["status"] == "succeeded", job
    daemon.wait_live(job["version"])
    return job


def test_operator_flow_two_products(daemon, data_root, tmp_path):
    c = daemon.client
    bottle = c.post("/products", json={"name": "bottle", "description": "line 3"})
    assert bottle.status_code == 201 and bottle.json()["trained"] is False
    bottle_id = bottle.json()["id"]
    train = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:24]
    uploaded = daemon.upload(bottle_id, train)
    assert uploaded.status_code == 201 and uploaded.json()["count"] == 24
    assert c.get(f"/products/{bottle_id}/captures").json()["count"] == 24
    first = _train(daemon, bottle_id, epochs=6)
    defect = data_root / "bottle" / "test" / "broken_large" / "000.png"
    good = data_root / "bottle" / "test" / "good" / "000.png"
    bad_result = daemon.inspect("bottle", defect).json()
    good_result = daemon.inspect(bottle_id, good).json()
    assert bad_result["score"] > good_result["score"]
    assert {bad_result["verdict"], good_result["verdict"]} <= {"pass", "reject"}
    png = c.get(bad_result["map_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (256, 256 + 64)  # legend band
    raw = np.load(io.BytesIO(c.get(f"/inspections/{bad_result['id']}/map.npy").content))
    assert raw.shape == (256, 256) and float(raw.max()) > 0
    assert c.get(f"/inspections/{bad_result['id']}/map16.png").status_code == 200
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    bad = daemon.inspect("bottle", corrupt)
    assert bad.status_code == 422 and "not a readable" in bad.json()["detail"]

    # a second product: the first keeps being served, and the replay store holds both
    transistor = c.post("/products", json={"name": "transistor"}).json()
    daemon.upload(transistor["id"],
                  sorted((data_root / "transistor" / "train" / "good").glob("*.png"))[:16])
    second = _train(daemon, transistor["id"], watch_worker=True)
    assert second["version"] != first["version"]
    again = daemon.inspect("bottle", defect)
    assert again.status_code == 200 and again.json()["model_version"] == second["version"]
    assert daemon.inspect("transistor", good).status_code == 200
    status = c.get("/status").json()
    assert [p["trained"] for p in status["products"]] == [True, True]
    assert set(status["replay_store"]["products"]) == {"bottle", "transistor"}
    store = status["replay_store"]  # the byte budget of the shipped settings, per product
    assert store["selection"] == "kcenter"
    assert store["budget_bytes"] == 2_476_800 and 0 < store["bytes"] <= store["budget_bytes"]
    assert all(kept["codec"] == "pq" and kept["samples"] > 0
               and kept["bytes"] <= store["budget_bytes"] // 2
               for kept in store["products"].values())
    # the networks as in the papers, plus the new map head's smoothing (2 x 7 taps x 64^2)
    assert status["macs"]["total"] == 207_728_640 + status["macs"]["map"]
    assert status["macs"]["map"] == 57_344
    assert status["inference_latency"]["count"] >= 4
    assert status["torch_imported"] is False
    assert status["rss_mb"] < 250
    assert status["worker"] is None  # no job, no worker
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(c.get("/metrics").text)
               for s in family.samples}
    assert samples[("edge_runtime_replay_samples", (("product", "bottle"),))] == \
        store["products"]["bottle"]["samples"]
    counted = sum(v for (name, labels), v in samples.items()
                  if name == "edge_runtime_inspections_total" and ("product", "bottle") in labels)
    assert counted == 3  # defect, good, defect again (the corrupt upload is refused)
    assert samples[("edge_runtime_inference_latency_seconds_count", ())] == 4  # + transistor
    assert samples[("edge_runtime_model_loaded", ())] == 1
    versions = c.get("/models").json()
    assert [v["version"] for v in versions] == [second["version"], first["version"]]
    assert [v["live"] for v in versions] == [True, False]
    assert versions[0]["products"] == ["bottle", "transistor"]

    # the operator's threshold override decides the verdict
    assert c.put(f"/products/{bottle_id}/threshold", json={"image": 1e9}).status_code == 200
    assert daemon.inspect("bottle", defect).json()["verdict"] == "pass"
    c.put(f"/products/{bottle_id}/threshold", json={"image": 1e-9})
    assert daemon.inspect("bottle", defect).json()["verdict"] == "reject"


def test_errors_are_json_with_the_right_status(daemon, data_root, tmp_path):
    c = daemon.client
    assert c.get("/products/9999").status_code == 404
    assert c.get("/jobs/9999").status_code == 404
    good = data_root / "bottle" / "test" / "good" / "000.png"
    missing = daemon.inspect("no-such-product", good)
    assert missing.status_code == 404 and "no product" in missing.json()["detail"]
    assert c.post("/products", json={"name": "../etc/passwd"}).status_code == 422
    assert c.post("/products", json={"name": "twice"}).status_code == 201
    assert c.post("/products", json={"name": "twice"}).status_code == 409
    fresh = c.post("/products", json={"name": "fresh-untrained"}).json()
    untrained = daemon.inspect(fresh["id"], good)
    assert untrained.status_code == 409 and "no trained model" in untrained.json()["detail"]
    few = c.post(f"/products/{fresh['id']}/train")
    assert few.status_code == 409 and "captures" in few.json()["detail"]  # issue 10: 409
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    assert daemon.upload(fresh["id"], [corrupt]).status_code == 422
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(2 * 2**20))
    assert daemon.upload(fresh["id"], [big]).status_code == 413
    # a second training while one runs
    daemon.upload(fresh["id"], sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:6])
    first = c.post(f"/products/{fresh['id']}/train", json={"epochs": 30})
    assert first.status_code == 202
    conflict = c.post(f"/products/{fresh['id']}/train")
    assert conflict.status_code == 409 and "another training job" in conflict.json()["detail"]
    cancelled = c.post(f"/jobs/{first.json()['id']}/cancel")
    assert cancelled.json()["cancel_requested"] is True
    job = daemon.wait_job(first.json()["id"])
    assert job["status"] == "cancelled"
    time.sleep(0.5)
    assert c.get("/status").json()["job"] is None

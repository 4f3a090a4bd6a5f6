"""kill -9 during training; tokens off loopback; schema fuzzing for 5xx."""

import os
import re
import subprocess
import sys
import time

from edge_runtime.daemon_process import Daemon


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_kill9_during_training_keeps_everything_and_restarts_fast(tmp_path, data_root):
    daemon = Daemon(tmp_path / "data")
    daemon.start()
    try:
        c = daemon.client
        product = c.post("/products", json={"name": "bottle"}).json()
        images = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:24]
        daemon.upload(product["id"], images)
        first = daemon.wait_job(c.post(f"/products/{product['id']}/train",
                                       json={"epochs": 2}).json()["id"])
        assert first["status"] == "succeeded"
        daemon.wait_live(first["version"])
        long_job = c.post(f"/products/{product['id']}/train", json={"epochs": 100}).json()
        deadline = time.monotonic() + 60
        job = long_job
        while job["phase"] != "training" and time.monotonic() < deadline:
            time.sleep(0.2)
            job = c.get(f"/jobs/{long_job['id']}").json()
        assert job["phase"] == "training"
        worker_pid = _job_pid(tmp_path, job)
        assert _pid_alive(worker_pid)
        daemon.kill9()
        deadline = time.monotonic() + 10
        while _pid_alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(worker_pid), "the worker outlived the daemon"

        seconds = daemon.start()
        assert seconds < 5, f"restart took {seconds:.1f} s"
        status = c.get("/status").json()
        assert status["model_version"] == first["version"]
        crashed = c.get(f"/jobs/{long_job['id']}").json()
        assert crashed["status"] == "failed" and "daemon stopped" in crashed["error"]
        assert c.get(f"/products/{product['id']}").json()["captures"] == 24
        good = data_root / "bottle" / "test" / "good" / "000.png"
        served = daemon.inspect("bottle", good)
        assert served.status_code == 200 and served.json()["model_version"] == first["version"]
        # the job can be started again
        again = c.post(f"/products/{product['id']}/train", json={"epochs": 1})
        assert again.status_code == 202
        assert daemon.wait_job(again.json()["id"])["status"] == "succeeded"
    finally:
        daemon.stop()


def _job_pid(tmp_path, job) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "state.db") as conn:
        return conn.execute("SELECT pid FROM jobs WHERE id = ?", (job["id"],)).fetchone()[0]


def test_non_loopback_bind_needs_a_token(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "serve", "--data-dir", str(tmp_path),
         "--host", "0.0.0.0", "--port", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "api.token" in done.stderr and "Traceback" not in done.stderr


def test_mutating_endpoints_need_the_token(tmp_path):
    token = "s3cret-token-for-tests"
    daemon = Daemon(tmp_path / "data", env={"EDGE_RUNTIME_API_TOKEN": token})
    daemon.start()
    try:
        c = daemon.client
        assert c.post("/products", json={"name": "a"}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert c.post("/products", json={"name": "a"}, headers=wrong).status_code == 401
        right = {"Authorization": f"Bearer {token}"}
        assert c.post("/products", json={"name": "a"}, headers=right).status_code == 201
        assert c.get("/products").status_code == 200  # reads stay open
    finally:
        daemon.stop()


def test_bad_config_file_is_reported_clearly(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[training]\nepochs = "many"\n')
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config),
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "training.epochs" in done.stderr


def test_schema_fuzzing_finds_no_server_errors(tmp_path):
    daemon = Daemon(tmp_path / "data")
    daemon.start()
    try:
        done = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run",
             f"{daemon.url}/openapi.json", "--checks", "not_a_server_error",
             # an event stream never ends: each example would cost a 10 s timeout
             # (tests/test_operator_api.py covers /events)
             "--exclude-path", "/events",
             "--max-examples", "25", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=500, cwd=tmp_path)  # its cache stays out
        assert done.returncode == 0, done.stdout[-4000:]
        generated = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
        assert generated and int(generated.group(2)) >= 300, done.stdout[-2000:]
    finally:
        daemon.stop()


def test_camera_failure_is_reported_and_survived(tmp_path):
    empty = tmp_path / "no-frames"
    empty.mkdir()
    daemon = Daemon(tmp_path / "data", env={"EDGE_RUNTIME_CAMERA_KIND": "directory",
                                            "EDGE_RUNTIME_CAMERA_DIRECTORY": str(empty)})
    daemon.start()
    try:
        c = daemon.client
        product = c.post("/products", json={"name": "a"}).json()
        failed = c.post(f"/products/{product['id']}/captures", params={"camera_frames": 2})
        assert failed.status_code == 503 and "has no images" in failed.json()["detail"]
        status = c.get("/status").json()
        assert status["camera"]["kind"] == "directory" and "no images" in status["camera"]["error"]
        assert c.get("/health").status_code == 200
        assert "edge_runtime_camera_error 1" in c.get("/metrics").text
    finally:
        daemon.stop()

"""Training jobs under real line conditions (issue 10, items 1-3 and 10): a real daemon
subprocess on loopback, real SQLite, real worker processes, kill -9."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from edge_runtime.daemon_process import Daemon

ACTIVE = ("queued", "running")


def _images(data_root: Path, category: str, count: int) -> list[Path]:
    return sorted((data_root / category / "train" / "good").glob("*.png"))[:count]


def _product(daemon: Daemon, name: str, images: list[Path]) -> int:
    product = daemon.client.post("/products", json={"name": name})
    assert product.status_code == 201, product.text
    product_id = product.json()["id"]
    assert daemon.upload(product_id, images).status_code == 201
    return product_id


def _start(daemon: Daemon, product_id: int, epochs: int) -> dict:
    response = daemon.client.post(f"/products/{product_id}/train", json={"epochs": epochs})
    assert response.status_code == 202, response.text
    return response.json()


def _wait_phase(daemon: Daemon, job_id: int, phases: tuple[str, ...], timeout: float = 120,
                poll: float = 0.2) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = daemon.client.get(f"/jobs/{job_id}").json()
        if job["phase"] in phases or job["status"] not in ACTIVE:
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} never reached {phases}")


def _job_pid(data_dir: Path, job_id: int) -> int:
    with sqlite3.connect(data_dir / "state.db") as conn:
        return conn.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _cancel_and_wait(daemon: Daemon, job_id: int) -> dict:
    daemon.client.post(f"/jobs/{job_id}/cancel")
    return daemon.wait_job(job_id)


# ---- item 1: the worker dies with the daemon, and only then -------------------------------
def test_worker_survives_request_threads_being_retired(tmp_path, data_root):
    """POST /train used to fork the worker from a pool thread; PR_SET_PDEATHSIG fired when
    the pool retired that thread (idle 10 s), killing the job with -9."""
    daemon = Daemon(tmp_path / "data")
    daemon.start()
    try:
        c = daemon.client
        product_id = _product(daemon, "bottle", _images(data_root, "bottle", 8))
        uploads = _images(data_root, "bottle", 32)

        def slow_upload() -> None:  # holds a pool thread well after /train has returned
            with httpx.Client(base_url=daemon.url, timeout=120) as client:
                files = [("files", (p.name, p.read_bytes(), "image/png")) for p in uploads]
                client.post(f"/products/{product_id}/captures", files=files)

        loaders = [threading.Thread(target=slow_upload) for _ in range(2)]
        for loader in loaders:
            loader.start()
        time.sleep(1.0)  # both uploads are decoding in pool threads now
        job = _start(daemon, product_id, epochs=100)
        for loader in loaders:
            loader.join()
        job = _wait_phase(daemon, job["id"], ("features", "training"))
        pid = _job_pid(tmp_path / "data", job["id"])
        # the pool thread that ran POST /train is now idle: retired after 10 s idle, on the
        # next request that finds an idle thread (a request a second, as an operator would)
        for _ in range(25):
            assert c.get("/status").status_code == 200
            time.sleep(1.0)
        job = c.get(f"/jobs/{job['id']}").json()
        assert job["status"] == "running", job
        assert _pid_alive(pid), "the worker died while the daemon lives"
        assert _cancel_and_wait(daemon, job["id"])["status"] == "cancelled"
        # ... and it still dies with the daemon
        second = _start(daemon, product_id, epochs=100)
        second = _wait_phase(daemon, second["id"], ("features", "training"))
        pid = _job_pid(tmp_path / "data", second["id"])
        daemon.kill9()
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(pid), "the worker outlived the daemon"
    finally:
        daemon.stop()


# ---- item 2: jobs start while the API writes ---------------------------------------------
class BusyWriter:
    """Another process's steady writes to state.db, as the API's inspection records are:
    short write transactions, the write lock held most of the time."""

    def __init__(self, db: Path) -> None:
        self.db, self.stop, self.commits = db, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        while not self.stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO inspections (product_id, score, verdict, threshold, "
                         "latency_ms, model_version, source, created_at) "
                         "VALUES (1, 0.1, 'pass', 0.2, 5.0, 'v000000', 'test', ?)",
                         (time.time(),))
            time.sleep(0.004)
            conn.execute("COMMIT")
            self.commits += 1
            time.sleep(0.001)
        conn.close()

    def __enter__(self) -> BusyWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def test_jobs_start_while_the_database_is_busy(tmp_path, data_root):
    """The worker's start-up used a deferred BEGIN that fails at once with 'database is
    locked' in WAL mode when another connection writes; its error handler then hit the same
    lock, so the job said only 'exited with code 1'."""
    daemon = Daemon(tmp_path / "data")
    daemon.start()
    try:
        product_id = _product(daemon, "bottle", _images(data_root, "bottle", 6))
        outcomes = []
        with BusyWriter(tmp_path / "data" / "state.db") as writer:
            for _ in range(3):
                job = _start(daemon, product_id, epochs=100)
                job = _wait_phase(daemon, job["id"], ("features", "training"))
                assert job["status"] == "running", job
                outcomes.append(_cancel_and_wait(daemon, job["id"]))
        assert writer.commits > 100
        assert [j["status"] for j in outcomes] == ["cancelled"] * 3, outcomes
    finally:
        daemon.stop()


# ---- item 3: success, replay commit and promotion are one recoverable step ----------------
def _replay_products(daemon: Daemon) -> set[str]:
    store = daemon.client.get("/status").json()["replay_store"]
    return set(store["products"]) if store else set()


def _set_job(data_dir: Path, job_id: int, **values) -> None:
    with sqlite3.connect(data_dir / "state.db") as conn:
        columns = ", ".join(f"{k} = ?" for k in values)
        conn.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), job_id))


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, data_root) -> Path:
    """A data directory after two real jobs: bottle (v000001), then magnetic_tile
    (v000002, live, its replay store holds both)."""
    data = tmp_path_factory.mktemp("two-versions") / "data"
    daemon = Daemon(data)
    daemon.start()
    try:
        for name in ("bottle", "magnetic_tile"):
            product_id = _product(daemon, name, _images(data_root, name, 8))
            job = daemon.wait_job(_start(daemon, product_id, epochs=1)["id"])
            assert job["status"] == "succeeded", job
            # "succeeded" is said only once the model serves
            assert daemon.client.get("/status").json()["model_version"] == job["version"]
        assert _replay_products(daemon) == {"bottle", "magnetic_tile"}
    finally:
        daemon.stop()
    return data


def _restart_in(state: Path, tmp_path: Path) -> Daemon:
    data = tmp_path / "data"
    shutil.copytree(state, data)
    daemon = Daemon(data)
    daemon.start()
    return daemon


@pytest.mark.parametrize("current", ["v000001", "v000002"])
def test_a_trained_job_is_promoted_after_a_crash(two_versions, tmp_path, current):
    """kill -9 of the daemon after the worker finished: before the promotion (CURRENT still
    names v000001) or between the promotion and the job's success."""
    (two_versions / "models" / "CURRENT").read_text()  # the fixture's state is complete
    shutil.copytree(two_versions, tmp_path / "state")
    state = tmp_path / "state"
    (state / "models" / "CURRENT").write_text(current)
    _set_job(state, 2, status="running", phase="trained", finished_at=None)
    daemon = _restart_in(state, tmp_path)
    try:
        job = daemon.client.get("/jobs/2").json()
        assert job["status"] == "succeeded", job
        assert daemon.client.get("/status").json()["model_version"] == "v000002"
        assert _replay_products(daemon) == {"bottle", "magnetic_tile"}
        tile = daemon.client.get("/products/2").json()
        assert tile["trained"] is True
    finally:
        daemon.stop()


def test_an_unfinished_job_leaves_nothing_live_after_a_crash(two_versions, tmp_path):
    """kill -9 while the worker was saving or calibrating: the old version serves, with a
    replay store that does not know the new product, and the job says failed."""
    shutil.copytree(two_versions, tmp_path / "state")
    state = tmp_path / "state"
    (state / "models" / "CURRENT").write_text("v000001")
    _set_job(state, 2, status="running", phase="calibrating", finished_at=None)
    daemon = _restart_in(state, tmp_path)
    try:
        job = daemon.client.get("/jobs/2").json()
        assert job["status"] == "failed" and "daemon stopped" in job["error"]
        assert daemon.client.get("/status").json()["model_version"] == "v000001"
        assert _replay_products(daemon) == {"bottle"}
        assert daemon.client.get("/products/2").json()["trained"] is False
        assert [v["version"] for v in daemon.client.get("/models").json()] == ["v000001"]
    finally:
        daemon.stop()


def test_kill9_while_the_worker_saves_keeps_model_and_replay_consistent(tmp_path, data_root):
    """A real kill -9 of the daemon in the window where the replay store already held the
    new product but no version had been promoted (saving, calibrating)."""
    daemon = Daemon(tmp_path / "data")
    daemon.start()
    try:
        bottle = _product(daemon, "bottle", _images(data_root, "bottle", 8))
        first = daemon.wait_job(_start(daemon, bottle, epochs=1)["id"])
        assert first["status"] == "succeeded"
        tile = _product(daemon, "magnetic_tile", _images(data_root, "magnetic_tile", 8))
        job = _start(daemon, tile, epochs=1)
        job = _wait_phase(daemon, job["id"], ("saving", "calibrating"), poll=0.02)
        assert job["phase"] in ("saving", "calibrating"), job
        daemon.kill9()
        daemon.start()
        status = daemon.client.get("/status").json()
        assert status["model_version"] == first["version"]
        assert _replay_products(daemon) == {"bottle"}
        assert daemon.client.get(f"/jobs/{job['id']}").json()["status"] == "failed"
        # and the product trains again, ending with both live and both remembered
        again = daemon.wait_job(_start(daemon, tile, epochs=1)["id"])
        assert again["status"] == "succeeded", again
        assert daemon.client.get("/status").json()["model_version"] == again["version"]
        assert _replay_products(daemon) == {"bottle", "magnetic_tile"}
    finally:
        daemon.stop()


# ---- item 10: the API token never appears on a command line ------------------------------
def test_worker_command_line_holds_no_token(tmp_path, data_root):
    token = "a-token-nobody-may-see-0123"
    daemon = Daemon(tmp_path / "data", env={"EDGE_RUNTIME_API_TOKEN": token})
    daemon.client.headers["Authorization"] = f"Bearer {token}"
    daemon.start()
    try:
        product_id = _product(daemon, "bottle", _images(data_root, "bottle", 6))
        job = _wait_phase(daemon, _start(daemon, product_id, epochs=100)["id"],
                          ("features", "training"))
        pid = _job_pid(tmp_path / "data", job["id"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert "train_worker" in cmdline and token not in cmdline
        settings_files = list((tmp_path / "data" / "work").glob("job-*.settings.json"))
        assert settings_files and all(os.stat(f).st_mode & 0o077 == 0 for f in settings_files)
        assert json.loads(settings_files[0].read_text())["api"]["token"] == token
        assert _cancel_and_wait(daemon, job["id"])["status"] == "cancelled"
    finally:
        daemon.stop()

"""Disk full and damaged state against a real daemon (issue 10, items 7-9): verdicts keep
flowing on a full disk (a real tmpfs), damage is detected, kept aside, reported, survived."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from edge_runtime.daemon_process import Daemon


@pytest.fixture(scope="module")
def trained_data(tmp_path_factory, data_root) -> Path:
    """A stopped daemon's data directory whose live model (v000001) knows bottle."""
    data = tmp_path_factory.mktemp("trained") / "data"
    daemon = Daemon(data)
    daemon.start()
    try:
        c = daemon.client
        product = c.post("/products", json={"name": "bottle"}).json()
        images = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:8]
        assert daemon.upload(product["id"], images).status_code == 201
        job = daemon.train(product["id"])
        assert job["status"] == "succeeded", job
    finally:
        daemon.stop()
    return data


def _copy(trained_data: Path, target: Path) -> Path:
    shutil.copytree(trained_data, target)
    return target


def _log(daemon: Daemon) -> str:
    return (daemon.data_dir.parent / f"daemon-{daemon.port}.log").read_text()


GOOD = Path("bottle") / "test" / "good" / "000.png"


# ---- item 7: disk full -------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(mount: Path, size_mb: int):
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Write until the file system says ENOSPC (a real full disk)."""
    filler = directory / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (2**20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def test_verdicts_keep_flowing_on_a_full_disk(trained_data, tmp_path, data_root):
    with tmpfs(tmp_path / "data", 48) as mount:  # the daemon's log stays outside
        shutil.copytree(trained_data, mount, dirs_exist_ok=True)
        daemon = Daemon(mount)
        daemon.start()
        try:
            c = daemon.client
            assert daemon.inspect("bottle", data_root / GOOD).status_code == 200
            assert c.get("/health").json()["status"] == "ok"
            captures_before = sorted((mount / "captures").rglob("*.*"))
            filler = _fill(mount)
            results = [daemon.inspect("bottle", data_root / GOOD) for _ in range(5)]
            assert [r.status_code for r in results] == [200] * 5, results[-1].text
            assert {r.json()["verdict"] for r in results} <= {"pass", "reject"}
            for result in results:  # every map is served from RAM, recorded or not
                assert c.get(result.json()["map_url"]).status_code == 200
            health = c.get("/health").json()
            assert health["status"] == "degraded" and health["problems"], health
            status = c.get("/status")
            assert status.status_code == 200 and status.json()["problems"]
            image = (data_root / GOOD).read_bytes()
            upload = c.post("/products/1/captures",
                            files=[("files", (f"{i}.png", image, "image/png"))
                                   for i in range(4)])
            assert upload.status_code == 507, upload.text
            assert "full" in upload.json()["detail"]
            assert sorted((mount / "captures").rglob("*.*")) == captures_before
            assert not list((mount / "captures").rglob("*.tmp"))
            assert c.get("/products/1").json()["captures"] == 8

            filler.unlink()  # space returns: the daemon recovers by itself
            again = daemon.inspect("bottle", data_root / GOOD)
            assert again.status_code == 200
            assert c.get(f"/inspections/{again.json()['id']}").status_code == 200
            assert c.get("/health").json() == {"status": "ok", "problems": []}
            assert daemon.upload(1, [data_root / GOOD]).status_code == 201
        finally:
            daemon.stop()


# ---- item 8: a damaged state.db ----------------------------------------------------------
def _truncate_half(db: Path) -> None:
    with sqlite3.connect(db) as conn:  # enough pages that half of them are data
        conn.executemany("INSERT INTO inspections (product_id, score, verdict, threshold, "
                         "latency_ms, model_version, source, created_at) VALUES "
                         "(1, 0.1, 'pass', 0.2, 5.0, 'v000001', 'test', ?)",
                         [(time.time(),)] * 2000)
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_database_is_kept_aside_and_reported(trained_data, tmp_path, damage):
    data = _copy(trained_data, tmp_path / "data")
    db = data / "state.db"
    for extra in ("state.db-wal", "state.db-shm"):
        (data / extra).unlink(missing_ok=True)
    if damage == "empty":
        db.write_bytes(b"")
    else:
        _truncate_half(db)
    daemon = Daemon(data)
    daemon.start()  # no traceback, no crash loop
    try:
        c = daemon.client
        problems = c.get("/status").json()["problems"]
        assert any("state.db was damaged" in p for p in problems), problems
        assert c.get("/health").json()["status"] == "degraded"
        aside = [p for p in data.glob("state.db.damaged-*")
                 if not p.name.endswith(("-wal", "-shm"))]
        assert len(aside) == 1
        assert (aside[0].stat().st_size == 0) == (damage == "empty")
        assert sum("state.db was damaged" in line for line in _log(daemon).splitlines()) == 1
        assert "Traceback" not in _log(daemon)
        # the model still serves; the product can be added again and inspected
        assert c.get("/status").json()["model_version"] == "v000001"
        assert c.post("/products", json={"name": "bottle"}).status_code == 201
    finally:
        daemon.stop()


# ---- item 9: damaged replay store, model versions, CURRENT --------------------------------
def test_a_corrupt_replay_manifest_is_reported_not_a_500(trained_data, tmp_path):
    data = _copy(trained_data, tmp_path / "data")
    manifests = list(data.rglob("store.json"))
    assert manifests
    for manifest in manifests:
        manifest.write_text('{"format_version": 1, "codec": ')
    daemon = Daemon(data)
    daemon.start()
    try:
        c = daemon.client
        status = c.get("/status")
        assert status.status_code == 200, status.text
        assert any("replay store" in p for p in status.json()["problems"])
        assert c.get("/metrics").status_code == 200
        assert c.get("/health").json()["status"] == "degraded"
    finally:
        daemon.stop()


def test_a_missing_replay_group_does_not_fail_later_jobs(trained_data, tmp_path, data_root):
    data = _copy(trained_data, tmp_path / "data")
    groups = list(data.rglob("g*.bin"))
    assert groups
    for group in groups:
        group.unlink()
    daemon = Daemon(data)
    daemon.start()
    try:
        c = daemon.client
        tile = c.post("/products", json={"name": "magnetic_tile"}).json()
        images = sorted((data_root / "magnetic_tile" / "train" / "good").glob("*.png"))[:6]
        assert daemon.upload(tile["id"], images).status_code == 201
        job = daemon.train(tile["id"])
        assert job["status"] == "succeeded", job
        log = (data / "logs" / f"job-{job['id']}.log").read_text()
        assert "missing or fails its checksum; dropped" in log
        assert set(c.get("/status").json()["replay_store"]["products"]) == {"magnetic_tile"}
    finally:
        daemon.stop()


def test_bad_current_and_corrupt_versions_are_logged_and_skipped(trained_data, tmp_path):
    data = _copy(trained_data, tmp_path / "data")
    models = data / "models"
    broken = models / "v000002"
    shutil.copytree(models / "v000001", broken)
    graph = broken / "paste.onnx"
    graph.write_bytes(graph.read_bytes()[:-100] + b"\0" * 100)
    (models / "CURRENT").write_bytes(b"\xff\xfe\x00v0")
    daemon = Daemon(data)
    daemon.start()
    try:
        assert daemon.client.get("/status").json()["model_version"] == "v000001"
        log = _log(daemon)
        assert "v000002 cannot be served" in log and "checksum" in log
        assert daemon.client.get("/health").json()["status"] == "ok"
    finally:
        daemon.stop()

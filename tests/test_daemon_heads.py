"""A new product is inspected by its memory-bank head before any training, and once the
job promotes by whichever of student and head the daemon chose for it, without a failed
request and without flapping (real uvicorn subprocess)."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.daemon_process import Daemon

MAX_BYTES = 1_000_000


def _first_verdict(daemon: Daemon, product_id: int, image, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = daemon.inspect(product_id, image)
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 409, response.text  # not fitted yet
        time.sleep(0.2)
    raise TimeoutError("the head never answered")


def _serving_choice(c: httpx.Client, product: int, version: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = c.get("/status").json()["heads"]["products"].get(str(product), {})
        choice = state.get("serving_choice") or {}
        if choice.get("version") == version:
            return choice
        time.sleep(0.2)
    raise TimeoutError("no serving choice for the new version")


def _bottle_daemon(tmp_path, env: dict | None = None) -> tuple[Daemon, int]:
    """A started daemon (heads within MAX_BYTES) with one product, bottle."""
    daemon = Daemon(tmp_path / "data",
                    env={"EDGE_RUNTIME_HEADS_MAX_BYTES": str(MAX_BYTES)} | (env or {}))
    daemon.start()
    try:
        return daemon, daemon.client.post("/products", json={"name": "bottle"}).json()["id"]
    except Exception:
        daemon.stop()
        raise


def test_head_serves_before_training_and_the_student_takes_over(tmp_path, data_root):
    daemon, product = _bottle_daemon(tmp_path)
    try:
        c = daemon.client
        good = data_root / "bottle" / "test" / "good" / "000.png"
        defect = data_root / "bottle" / "test" / "broken_large" / "000.png"
        assert daemon.inspect(product, good).status_code == 409  # no captures, no head

        captures = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))[:40]
        assert daemon.upload(product, captures).status_code == 201
        first = _first_verdict(daemon, product, good)  # no POST /train anywhere before
        assert first["head"] == "padim" and first["model_version"] == "head-padim"
        assert first["verdict"] in ("pass", "reject")
        bad = daemon.inspect(product, defect).json()
        assert bad["head"] == "padim" and bad["score"] > first["score"]
        assert c.get(bad["map_url"]).status_code == 200
        # an operator's threshold is on the scale of the path that answers when it is set
        url = f"/products/{product}/threshold"
        put = c.put(url, json={"image": first["threshold"] * 1.5}).json()
        assert put["served_by"] == "padim" and put["threshold_override"]["set_for"] == "padim"
        assert put["threshold_override"]["active"] is True
        assert put["thresholds"]["image"] == pytest.approx(first["threshold"])
        assert daemon.inspect(product, good).json()["threshold"] == pytest.approx(
            first["threshold"] * 1.5)

        status = c.get("/status").json()
        assert status["products"][0]["served_by"] == "padim"
        assert status["products"][0]["trained"] is False
        # MACs per part through the head: the 288 px features graph (counted by the child
        # that exported it) and the head's scoring, under the student graph's 207.8 M
        assert 180e6 < status["heads"]["products"][str(product)]["macs"] < 207_785_984
        state = c.get(f"/products/{product}/head").json()
        assert state["status"] == "ready" and state["captures"] == 40
        assert 0 < state["bytes"] <= MAX_BYTES and status["heads"]["bytes"] == state["bytes"]
        assert (tmp_path / "data" / "heads" / f"{product}.npz").stat().st_size == state["bytes"]
        assert status["torch_imported"] is False
        gauges = {sample.name: sample.value for family in
                  text_string_to_metric_families(c.get("/metrics").text)
                  for sample in family.samples}
        assert gauges["edge_runtime_head_bytes"] == state["bytes"]

        # train while a line keeps inspecting: no request fails across the promotion
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def line() -> None:
            with httpx.Client(base_url=daemon.url, timeout=60) as client:
                while not stop.is_set():
                    response = client.post("/inspect", data={"product": str(product)},
                                           files={"file": (good.name, good.read_bytes())})
                    answers.append((response.status_code, response.json().get("head")))
                    time.sleep(0.2)

        thread = threading.Thread(target=line)
        thread.start()
        try:
            job = c.post(f"/products/{product}/train", json={"epochs": 2}).json()
            job = daemon.wait_job(job["id"])
            assert job["status"] == "succeeded", job
            daemon.wait_live(job["version"])
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join()
        assert answers and all(code == 200 for code, _ in answers), answers
        heads = [head for _, head in answers]
        # the head answers until the choice for the new version is made, then the chosen
        # path: at most one switch, never back and forth
        assert heads[0] == "padim"
        assert sum(a != b for a, b in zip(heads, heads[1:], strict=False)) <= 1, heads
        choice = _serving_choice(c, product, job["version"])
        assert choice["choice"] in ("student", "head") and choice["defects"] > 0
        chosen = "padim" if choice["choice"] == "head" else "student"
        after = daemon.inspect(product, good).json()
        assert after["head"] == chosen
        assert after["model_version"] == ("head-padim" if chosen == "padim" else job["version"])
        assert c.get("/status").json()["products"][0]["served_by"] == chosen
        # the head's override decides only the head's verdicts, never the student's
        view = c.get(f"/products/{product}").json()
        assert view["served_by"] == chosen and view["trained"] is True
        assert view["threshold_override"]["active"] is (chosen == "padim")
        in_use = (view["threshold_override"]["image"] if chosen == "padim"
                  else view["thresholds"]["image"])
        assert after["threshold"] == pytest.approx(in_use)
        assert c.delete(url).status_code == 200
    finally:
        daemon.stop()


def _head_ready(c: httpx.Client, product: int, captures: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = c.get(f"/products/{product}/head").json()
        if state.get("status") == "ready" and state.get("captures") == captures:
            return state
        time.sleep(0.2)
    raise TimeoutError(f"no head fitted on {captures} captures")


def test_a_refit_sets_the_operators_override_aside(tmp_path, data_root):
    """An override is a number on the scale of the calibration it was set on: once the head
    is refitted (more captures) it no longer decides, and the product says why."""
    daemon, product = _bottle_daemon(tmp_path)
    try:
        c = daemon.client
        good = data_root / "bottle" / "test" / "good" / "000.png"
        captures = sorted((data_root / "bottle" / "train" / "good").glob("*.png"))
        assert daemon.upload(product, captures[:30]).status_code == 201
        _head_ready(c, product, 30)
        url = f"/products/{product}/threshold"
        before = c.get(f"/products/{product}").json()["thresholds"]
        put = c.put(url, json={"image": before["image"] * 2}).json()["threshold_override"]
        assert put["active"] is True and put["recalibrated"] is False
        assert put["set_on"] == {"image": before["image"], "pixel": before["pixel"]}
        assert daemon.inspect(product, good).json()["threshold"] == pytest.approx(
            before["image"] * 2)

        assert daemon.upload(product, captures[30:40]).status_code == 201
        _head_ready(c, product, 40)
        view = c.get(f"/products/{product}").json()
        after = view["thresholds"]
        assert after["image"] != before["image"]
        override = view["threshold_override"]
        assert override["recalibrated"] is True and override["active"] is False
        assert override["image"] == pytest.approx(before["image"] * 2)  # kept, not applied
        assert daemon.inspect(product, good).json()["threshold"] == pytest.approx(after["image"])
        # set again, on the new calibration: it decides again
        again = c.put(url, json={"image": after["image"] * 2}).json()["threshold_override"]
        assert again["active"] is True and again["set_on"]["image"] == after["image"]
        assert daemon.inspect(product, good).json()["threshold"] == pytest.approx(
            after["image"] * 2)
    finally:
        daemon.stop()

    # an upgrade: the override was set by a release that kept no basis, and heads now read
    # another size, so the head is refitted at start-up: the override was on the old head's
    # scale and is set aside
    with sqlite3.connect(tmp_path / "data" / "state.db") as conn:
        conn.execute("UPDATE products SET override_basis_image = NULL, "
                     "override_basis_pixel = NULL")
    conn.close()
    upgraded = Daemon(tmp_path / "data", env={"EDGE_RUNTIME_HEADS_MAX_BYTES": str(MAX_BYTES),
                                              "EDGE_RUNTIME_HEADS_IMAGE_SIZE": "256"})
    upgraded.start()
    try:
        _head_ready(upgraded.client, product, 40)
        view = upgraded.client.get(f"/products/{product}").json()
        override = view["threshold_override"]
        assert override["set_on"]["image"] == after["image"]  # the 288 px head's calibration
        assert override["recalibrated"] is True and override["active"] is False
        assert upgraded.inspect(product, good).json()["threshold"] == pytest.approx(
            view["thresholds"]["image"])
    finally:
        upgraded.stop()

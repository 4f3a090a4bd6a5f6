"""The daemon on the line: a serial TRIGGER captures a camera frame and gets a verdict."""

from __future__ import annotations

from test_serial_bridge import Sim, _wait

from edge_runtime.daemon_process import Daemon


def test_trigger_to_verdict_through_the_daemon(tmp_path, data_root):
    link = tmp_path / "ttyLINE"
    sim = Sim(link)
    camera = data_root / "bottle" / "test" / "good"
    daemon = Daemon(tmp_path / "data", env={
        "EDGE_RUNTIME_SERIAL_URL": str(link), "EDGE_RUNTIME_SERIAL_DEADLINE_MS": "3000",
        "EDGE_RUNTIME_SERIAL_HEARTBEAT_S": "0.2",
        "EDGE_RUNTIME_CAMERA_KIND": "directory", "EDGE_RUNTIME_CAMERA_DIRECTORY": str(camera)})
    daemon.start()
    try:
        c = daemon.client
        product = c.post("/products", json={"name": "bottle"}).json()
        # captures straight from the (directory) camera
        shot = c.post(f"/products/{product['id']}/captures", params={"camera_frames": 8})
        assert shot.status_code == 201 and shot.json()["captures"][0]["source"].startswith(
            "camera:")
        job = daemon.train(product["id"])
        daemon.wait_live(job["version"])
        answer = sim.ask(f"trigger {product['id']}")
        assert answer["verdict"] in ("PASS", "REJECT") and answer["flags"] == 0
        unknown = sim.ask("trigger 777")
        assert unknown["verdict"] == "REJECT" and unknown["flags"] & 0x02  # error, fail-safe
        assert _wait(lambda: c.get("/status").json()["serial_bridge"]["state"] == "up")
        bridge = c.get("/status").json()["serial_bridge"]
        assert bridge["counters"]["verdicts"] == 2
        assert bridge["trigger_to_verdict"]["p50_ms"] > 0
        inspections = [i for i in range(1, 10)
                       if c.get(f"/inspections/{i}").status_code == 200]
        assert c.get(f"/inspections/{inspections[-1]}").json()["source"] == "serial"
    finally:
        daemon.stop()
        sim.close()

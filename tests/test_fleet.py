"""A line of boards, with real components: daemons on loopback, a Mosquitto broker stopped
and restarted under them, the serial line over a pty, bundles moved between two daemons,
/metrics read with prometheus_client's own parser."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import time
from pathlib import Path

import jsonschema_rs
import numpy as np
import pytest
from mosquitto import Mosquitto, Subscriber
from prometheus_client.parser import text_string_to_metric_families
from test_serial_bridge import Sim, _wait

from edge_runtime.daemon_process import Daemon
from edge_runtime.events.schemas import SCHEMAS
from edge_runtime.inference import model_dir as md
from edge_runtime.replay.codecs import make_codec
from edge_runtime.replay.store import ReplayStore

REPO = Path(__file__).resolve().parents[1]


def _board(tmp_path: Path, name: str, model: Path | None, env: dict | None = None) -> Daemon:
    """A daemon whose data dir already holds ``model`` as v000001 (no training needed)."""
    data = tmp_path / name
    if model is not None:
        shutil.copytree(model, data / "models" / "v000001")
        (data / "models" / md.CURRENT).write_text("v000001")
    return Daemon(data, env=env)


def _mqtt_env(broker: Mosquitto, device: str) -> dict:
    return {"EDGE_RUNTIME_MQTT_ENABLED": "true", "EDGE_RUNTIME_MQTT_URL": broker.url,
            "EDGE_RUNTIME_MQTT_DEVICE_ID": device}


def _metrics(daemon: Daemon) -> dict[tuple[str, tuple], float]:
    text = daemon.client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _valid(message: dict) -> None:
    jsonschema_rs.validate(SCHEMAS[message["schema"]],
                           {k: v for k, v in message.items() if not k.startswith("_")})


@pytest.fixture()
def images(data_root) -> list[Path]:
    return sorted((data_root / "bottle" / "test").glob("*/00[0-9].png"))


def test_200_verdicts_arrive_once_in_order_through_outage_and_restart(
        tmp_path, bottle_model, images):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    sub = Subscriber(broker, "edge-runtime/line-1/#")
    daemon = _board(tmp_path, "board", bottle_model, _mqtt_env(broker, "line-1"))
    daemon.start()
    answered = []

    def inspect(count: int) -> None:
        for _ in range(count):
            response = daemon.inspect("bottle", images[len(answered) % len(images)])
            assert response.status_code == 200, response.text
            answered.append(response.json())

    try:
        daemon.client.post("/products", json={"name": "bottle"}).raise_for_status()
        inspect(60)
        broker.stop()  # the broker is down for the next 90 inspections and a restart
        inspect(50)
        daemon.stop()
        daemon.start()
        inspect(40)
        assert _metrics(daemon)[("edge_runtime_outbox_messages", (("sink", "mqtt"),))] >= 40
        broker.start()
        inspect(50)
        verdicts = sub.wait_for(200, timeout=60, kind="verdict")
        assert [v["inspection_id"] for v in verdicts] == [a["id"] for a in answered]
        for verdict, answer in zip(verdicts, answered, strict=True):
            assert verdict["score"] == pytest.approx(answer["score"], abs=1e-9)
            assert (verdict["verdict"], verdict["model_version"], verdict["source"]) == (
                answer["verdict"], "v000001", "upload")
            assert verdict["threshold"] == answer["threshold"] and verdict["latency_ms"] > 0
            assert verdict["trigger_seq"] is None
            _valid(verdict)
        assert _wait(lambda: _metrics(daemon)[
            ("edge_runtime_outbox_messages", (("sink", "mqtt"),))] == 0, timeout=10)
        metrics = _metrics(daemon)
        # counters restart with the process: 90 inspections since the restart
        assert sum(v for (name, labels), v in metrics.items()
                   if name == "edge_runtime_inspections_total") == 90
        assert metrics[("edge_runtime_inference_latency_seconds_count", ())] == 90
        assert metrics[("edge_runtime_outbox_dropped_total", (("sink", "mqtt"),))] == 0
        assert metrics[("edge_runtime_mqtt_connected", ())] == 1
        assert metrics[("edge_runtime_model_info", (("products", "bottle"),
                                                    ("version", "v000001")))] == 1
        assert metrics[("edge_runtime_training_jobs_total", (("status", "succeeded"),))] == 0
        assert metrics[("process_resident_memory_bytes", ())] > 20e6
        status = [m for m in sub.messages if m["schema"] == "status"]
        assert status and status[-1]["state"] == "online" and status[-1]["outbox_dropped"] == 0
    finally:
        daemon.stop()
        sub.close()
        broker.stop()


def _scores(daemon: Daemon, images: list[Path]) -> list[float]:
    return [daemon.inspect("bottle", path).json()["score"] for path in images]


def _retar(bundle: bytes, change) -> bytes:
    """The same archive with ``change(name, data) -> data`` applied to each member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(bundle)) as src, tarfile.open(fileobj=out,
                                                                        mode="w") as dst:
        for member in src:
            data = change(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out.getvalue()


def test_bundle_round_trip_between_two_daemons(tmp_path, bottle_model, images):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    sub = Subscriber(broker, "edge-runtime/board-b/model")
    a = _board(tmp_path, "a", bottle_model)
    store = ReplayStore(a.data_dir / "replay", make_codec("uint8_channel"), capacity=8)
    store.add("bottle", np.random.default_rng(0).random((8, 16, 4, 4), dtype=np.float32))
    b = _board(tmp_path, "b", None, _mqtt_env(broker, "board-b"))
    a.start()
    b.start()
    try:
        for board in (a, b):
            board.client.post("/products", json={"name": "bottle"}).raise_for_status()
        response = a.client.get("/models/v000001/bundle", params={"replay": "true"})
        assert response.status_code == 200, response.text
        bundle = response.content
        with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
            names = tar.getnames()
        assert names[0] == "bundle.json" and "model/paste.onnx" in names
        assert "replay/store.json" in names

        def post(data: bytes, **params) -> object:
            return b.client.post("/models/import", params=params,
                                 files={"bundle": ("b.tar", data, "application/x-tar")})

        tampered = _retar(bundle, lambda n, d: d[:-1] + bytes([d[-1] ^ 1])
                          if n == "model/paste.onnx" else d)
        refused = post(tampered)
        assert refused.status_code == 422 and "fails its checksum" in refused.json()["detail"]

        def newer(name: str, data: bytes) -> bytes:
            if name != "bundle.json":
                return data
            return json.dumps(json.loads(data) | {"bundle_format": 99}).encode()

        refused = post(_retar(bundle, newer))
        assert refused.status_code == 422 and "upgrade edge-runtime" in refused.json()["detail"]
        assert b.client.get("/models").json() == []  # nothing half-installed

        installed = post(bundle, replay="true")  # installs, does not promote
        assert installed.status_code == 200, installed.text
        version = installed.json()["version"]
        assert installed.json()["replay_installed"]
        assert b.client.get("/status").json()["replay_store"]["samples"] == 8
        refused = post(bundle, replay="true")
        assert refused.status_code == 409 and "replay store" in refused.json()["detail"]
        assert re.fullmatch(r"v000000-import-[0-9a-f]{10}", version)
        assert b.client.get("/status").json()["model_version"] is None
        assert b.inspect("bottle", images[0]).status_code == 409  # not live yet
        again = post(bundle, promote="true")
        assert again.json()["already_installed"] and again.json()["version"] == version
        b.wait_live(version)
        assert _scores(b, images) == pytest.approx(_scores(a, images), abs=1e-5)
        event = sub.wait_for(1, kind="model")
        assert event and event[0]["model_version"] == version
        assert (event[0]["origin"], event[0]["previous_version"]) == ("import", None)
        _valid(event[0])

        def other_spec(name: str, data: bytes) -> bytes:
            if name != "bundle.json":
                return data
            index = json.loads(data)
            return json.dumps(index | {"spec": index["spec"] | {"image_size": 224}}).encode()

        refused = post(_retar(bundle, other_spec))
        assert refused.status_code == 409 and "model spec" in refused.json()["detail"]
    finally:
        a.stop()
        b.stop()
        sub.close()
        broker.stop()


def test_serial_trigger_verdict_names_its_sequence_and_metrics_show_the_line(
        tmp_path, bottle_model, data_root):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    sub = Subscriber(broker, "edge-runtime/line-2/verdict")
    link = tmp_path / "ttyLINE"
    sim = Sim(link)
    daemon = _board(tmp_path, "board", bottle_model, _mqtt_env(broker, "line-2") | {
        "EDGE_RUNTIME_SERIAL_URL": str(link), "EDGE_RUNTIME_SERIAL_DEADLINE_MS": "3000",
        "EDGE_RUNTIME_SERIAL_HEARTBEAT_S": "0.2", "EDGE_RUNTIME_CAMERA_KIND": "directory",
        "EDGE_RUNTIME_CAMERA_DIRECTORY": str(data_root / "bottle" / "test" / "good")})
    daemon.start()
    try:
        product = daemon.client.post("/products", json={"name": "bottle"}).json()
        answers = [sim.ask(f"trigger {product['id']}") for _ in range(3)]
        assert all(a["flags"] == 0 for a in answers)
        verdicts = sub.wait_for(3, kind="verdict")
        assert [(v["source"], v["trigger_seq"]) for v in verdicts] == [
            ("serial", a["seq"]) for a in answers]
        assert _wait(lambda: _metrics(daemon).get(("edge_runtime_serial_link_up", ())) == 1)
        metrics = _metrics(daemon)
        assert metrics[("edge_runtime_serial_triggers_total", ())] == 3
        assert metrics[("edge_runtime_serial_verdicts_total", ())] == 3
        assert metrics[("edge_runtime_serial_deadline_missed_total", ())] == 0
        names = {name for name, _ in metrics}
        dashboard = (REPO / "deploy" / "grafana-fleet-dashboard.json").read_text()
        used = set(re.findall(r"\b((?:edge_runtime|process)_[a-z_]+)", dashboard))
        later = {"edge_runtime_replay_bytes"}  # appears with the first replay store
        missing = {n for n in used - later if n not in names}
        assert not missing, f"the dashboard queries metrics /metrics lacks: {missing}"
    finally:
        daemon.stop()
        sim.close()
        sub.close()
        broker.stop()


def test_command_topic_sets_a_threshold_under_the_token_rule(tmp_path, bottle_model, images):
    token = "a-token-of-sixteen+"
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    sub = Subscriber(broker, "edge-runtime/line-4/command_result")
    daemon = _board(tmp_path, "board", bottle_model, _mqtt_env(broker, "line-4") | {
        "EDGE_RUNTIME_MQTT_COMMANDS": "true", "EDGE_RUNTIME_API_TOKEN": token})
    daemon.client.headers["Authorization"] = f"Bearer {token}"
    topic = "edge-runtime/line-4/command"

    def command(retain: bool = False, **payload) -> None:
        sub.client.publish(topic, json.dumps(payload), qos=1, retain=retain).wait_for_publish(5)

    # a stale retained command, delivered when the daemon subscribes: must not run
    command(command="set_threshold", product="bottle", image=0.7, token=token,
            request_id="r0", retain=True)
    daemon.start()
    try:
        product = daemon.client.post("/products", json={"name": "bottle"}).json()
        command(command="set_threshold", product="bottle", image=0.5, token="wrong",
                request_id="r1")
        command(command="set_threshold", product="bottle", image=0.5, token=token,
                request_id="r3")
        command(command="set_threshold", product="bottle", image=0.9, token=token,
                request_id="r3")  # the same request again: not run twice
        command(command="set_threshold", product="bottle", image=-1, token=token,
                request_id="r4")
        command(command="train", product=str(product["id"]), token=token, request_id="r5")
        results = sub.wait_for(4, kind="command_result")
        assert [(r["request_id"], r["ok"]) for r in results] == [
            ("r1", False), ("r3", True), ("r4", False), ("r5", False)]
        assert "token" in results[0]["detail"] and "greater than 0" in results[2]["detail"]
        assert "captures" in results[3]["detail"]  # reached the jobs service, which refused
        for result in results:
            _valid(result)
        override = daemon.client.get(f"/products/{product['id']}").json()["threshold_override"]
        assert override["image"] == 0.5
        assert daemon.inspect("bottle", images[0]).json()["threshold"] == 0.5
        time.sleep(0.5)
        assert len(sub.wait_for(5, timeout=0.1, kind="command_result")) == 4
        log = (tmp_path / f"daemon-{daemon.port}.log").read_text()
        assert "ignored a retained MQTT command" in log  # r0 arrived, and did not run
    finally:
        sub.client.publish(topic, b"", qos=1, retain=True)  # clear the retained command
        daemon.stop()
        sub.close()
        broker.stop()

"""The bridge over a real pseudo-terminal pair, against a simulated device process."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_bridge import protocol as p
from firmware_bridge.bridge import Bridge, BridgeConfig

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_bridge" / "firmware"


class Sim:
    def __init__(self, link: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name(
            "device_sim.py")), str(link)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        assert json.loads(self.proc.stdout.readline())["ready"]

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(5)


def handler(product: int) -> tuple[p.Verdict, float]:
    if product == 99:  # a slow inspection: misses the deadline
        time.sleep(0.5)
    return (p.Verdict.REJECT if product == 2 else p.Verdict.PASS), 0.25 * product


def _wait(predicate, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture()
def rig(tmp_path):
    link = tmp_path / "ttyLINE"
    sim = Sim(link)
    bridge = Bridge(BridgeConfig(str(link), deadline_ms=150, heartbeat_s=0.1), handler).start()
    assert _wait(lambda: bridge.link.state == "up")
    yield sim, bridge
    bridge.close()
    sim.close()


def test_triggers_answered_by_sequence_number(rig):
    sim, bridge = rig
    first, second = sim.ask("trigger 1"), sim.ask("trigger 2")
    assert first["verdict"] == "PASS" and first["flags"] == 0 and first["score"] == 0.25
    assert second["verdict"] == "REJECT" and second["seq"] == first["seq"] + 1
    assert bridge.status()["counters"]["verdicts"] == 2
    assert bridge.status()["trigger_to_verdict"]["p50_ms"] < 150


def test_missed_deadline_gets_the_failsafe_verdict(rig):
    sim, bridge = rig
    late = sim.ask("trigger 99")
    assert late["verdict"] == "REJECT" and late["flags"] & p.FLAG_FAILSAFE
    assert 140 <= late["ms"] < 400
    assert _wait(lambda: bridge.counters["late_answers"] == 1)
    assert bridge.counters["deadline_missed"] == 1


def test_garbage_is_survived_and_counted(rig):
    sim, bridge = rig
    sim.ask("garbage 500")
    assert sim.ask("trigger 1")["verdict"] == "PASS"
    assert bridge.decoder.corrupt >= 1
    assert bridge.counters["triggers"] == 1  # the corrupted trigger was not acted on


def test_heartbeats_flow_and_unplug_replug_is_recovered(rig):
    sim, bridge = rig
    assert _wait(lambda: sim.ask("heartbeats")["heartbeats"] >= 2)
    assert _wait(lambda: bridge.link_state() == "up")  # the device's heartbeats arrive
    sim.ask("unplug")
    assert _wait(lambda: bridge.link.state == "down")
    time.sleep(0.3)  # the reader retries against a missing path meanwhile
    sim.ask("plug")
    assert _wait(lambda: bridge.link.state == "up")
    assert bridge.link.reconnects == 1
    assert sim.ask("trigger 2")["verdict"] == "REJECT"


def test_python_and_c_agree_byte_for_byte(tmp_path):
    build = tmp_path / "build"
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"OUT={build}", "host"], check=True)
    rng = random.Random(7)
    messages = [p.Message(rng.choice([1, 2, 3, 4, 9]), rng.randrange(65536),
                          bytes(rng.choice([0, 0xFF, rng.randrange(256)])
                                for _ in range(rng.randrange(p.MAX_BODY + 1))))
                for _ in range(300)]
    stream = b"".join(p.encode(m) for m in messages)
    noisy = b"\x01\x02\x00" + stream[:40] + b"\x13\x37" + stream
    crc_input = bytes(range(256))
    commands = [f"E {m.type} {m.seq} {m.body.hex() or '-'}" for m in messages]
    commands += [f"S {noisy.hex()}", f"R {crc_input.hex()}"]
    done = subprocess.run([str(build / "host_vectors")], input="\n".join(commands) + "\n",
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[: len(messages)] == [p.encode(m).hex() for m in messages]
    c_messages = [line for line in lines[len(messages):] if line.startswith("M ")]
    py_messages = p.FrameDecoder().feed(noisy)
    assert c_messages == [f"M {m.type} {m.seq} {m.body.hex() or '-'}" for m in py_messages]
    decoder = p.FrameDecoder()
    decoder.feed(noisy)
    assert f"C {decoder.corrupt}" in lines and decoder.corrupt >= 1
    assert f"K {p.crc16(crc_input):04x}" in lines


def test_firmware_builds_with_avr_gcc(tmp_path):
    done = subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"OUT={tmp_path}", "firmware"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    hex_file = (tmp_path / "line_controller.hex").read_text()
    assert hex_file.startswith(":") and hex_file.rstrip().endswith(":00000001FF")


def test_decoder_never_raises_on_random_bytes():
    rng = random.Random(3)
    decoder = p.FrameDecoder()
    for _ in range(200):
        decoder.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
    assert decoder.corrupt + decoder.overflow > 0

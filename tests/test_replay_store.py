import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.replay.codecs import make_codec
from edge_runtime.replay.store import MANIFEST, ReplayStore, ReplayStoreError, quotas

SHAPE = (24, 32, 32)


def _features(product: str, count: int = 10) -> np.ndarray:
    seed = sum(map(ord, product))
    return np.random.default_rng(seed).standard_normal((count, *SHAPE)).astype(np.float32)


def test_capacity_is_shared_equally_and_survives_restart(tmp_path):
    store = ReplayStore(tmp_path, make_codec("uint8_channel"), capacity=10)
    store.add("a", _features("a", 12))
    assert store.accounting()["products"]["a"]["samples"] == 10
    store.add("b", _features("b", 12))
    store.add("c", _features("c", 12))
    counts = {p: v["samples"] for p, v in store.accounting()["products"].items()}
    assert counts == {"a": 4, "b": 3, "c": 3} and quotas(10, 3) == [4, 3, 3]
    before = store.decode_product("a")
    reopened = ReplayStore(tmp_path)
    assert reopened.products == ["a", "b", "c"] and len(reopened) == 10
    np.testing.assert_array_equal(reopened.decode_product("a"), before)
    acc = reopened.accounting()
    assert acc["payload_bytes"] == 10 * int(np.prod(SHAPE))
    assert acc["metadata_bytes"] == 10 * 24 * 8


def test_eviction_keeps_a_nested_seeded_subset(tmp_path):
    store = ReplayStore(tmp_path, make_codec("fp32"), capacity=6)
    store.add("a", _features("a", 6))
    full = store.decode_product("a")
    store.add("b", _features("b", 6))
    np.testing.assert_array_equal(store.decode_product("a"), full[:3])
    source = _features("a", 6)
    assert all(any(np.array_equal(row, s) for s in source) for row in full)


def test_sample_draws_one_decoded_batch(tmp_path):
    store = ReplayStore(tmp_path, make_codec("fp16"), capacity=8)
    store.add("a", _features("a"))
    store.add("b", _features("b"))
    batch = store.sample(np.random.default_rng(0), 5)
    assert batch.shape == (5, *SHAPE) and batch.dtype == np.float32


def test_wrong_codec_and_shape_are_refused_corruption_is_dropped(tmp_path, caplog):
    store = ReplayStore(tmp_path, make_codec("fp16"), capacity=4)
    store.add("a", _features("a"))
    with pytest.raises(ReplayStoreError, match="created with codec fp16"):
        ReplayStore(tmp_path, make_codec("fp32"))
    with pytest.raises(ReplayStoreError, match="shape"):
        store.add("b", np.zeros((2, 3, 4, 4), np.float32))
    group = tmp_path / json.loads((tmp_path / MANIFEST).read_text())["groups"][0]["file"]
    data = bytearray(group.read_bytes())
    data[10] ^= 0xFF
    group.write_bytes(bytes(data))
    reopened = ReplayStore(tmp_path)  # a damaged group is dropped with a log line (issue 10)
    assert reopened.products == [] and "fails its checksum" in caplog.text


WRITER = """
import sys
import numpy as np
from edge_runtime.replay.codecs import make_codec
from edge_runtime.replay.store import ReplayStore
sys.path.insert(0, {tests!r})
from test_replay_store import STEPS, _features
store = ReplayStore({directory!r}, make_codec("uint8_channel"), capacity=12)
print("ready", flush=True)
for product in STEPS:
    store.add(product, _features(product, 10))
print("done", flush=True)
"""

STEPS = ["p0", "p1", "p2", "p3", "p4", "p0", "p5", "p2", "p1"] * 8


def _open(directory: Path) -> ReplayStore:
    """Open as the daemon would after a crash (creating the store if it never committed)."""
    return ReplayStore(directory, make_codec("uint8_channel"), capacity=12)


def _state(directory: Path) -> tuple:
    return tuple((g.product, g.count, g.sha256) for g in _open(directory).groups)


def test_sigkill_at_random_points_leaves_store_before_or_after(tmp_path):
    """Kill the writer with SIGKILL at random times; every survivor must open cleanly,
    pass its checksums and equal one of the states a clean run goes through."""
    reference = ReplayStore(tmp_path / "reference", make_codec("uint8_channel"), capacity=12)
    valid = {()}
    for product in STEPS:
        reference.add(product, _features(product, 10))
        valid.add(_state(tmp_path / "reference"))
    rng = random.Random(1234)
    kills, mid_run = 12, 0
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for trial in range(kills):
        directory = tmp_path / f"trial{trial}"
        code = WRITER.format(tests=str(Path(__file__).parent), directory=str(directory))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        mid_run += b"done" not in rest
        state = _state(directory)
        assert state in valid, f"trial {trial}: store state after SIGKILL is not a clean state"
        store = _open(directory)
        leftovers = {p.name for p in directory.iterdir()}
        assert leftovers <= {MANIFEST} | {g.file for g in store.groups}, "garbage survived"
        if state:
            assert store.sample(np.random.default_rng(0), 4).shape[0] == 4
    assert mid_run >= kills // 3, "too few kills landed while the writer was working"


def test_a_missing_group_or_corrupt_manifest_is_dropped_and_the_store_goes_on(tmp_path, caplog):
    store = ReplayStore(tmp_path, make_codec("fp16"), capacity=4)
    store.add("a", _features("a"))
    store.add("b", _features("b"))
    first = next(g for g in store.groups if g.product == "a")
    (tmp_path / first.file).unlink()
    reopened = ReplayStore(tmp_path, make_codec("fp16"), capacity=4)
    assert reopened.products == ["b"] and "missing" in caplog.text
    reopened.add("c", _features("c"))  # training goes on
    assert ReplayStore(tmp_path).products == ["b", "c"]
    (tmp_path / MANIFEST).write_text('{"format_version": 1, "gro')
    fresh = ReplayStore(tmp_path, make_codec("fp16"), capacity=4)
    assert len(fresh) == 0 and list(tmp_path.glob(f"{MANIFEST}.corrupt-*"))
    fresh.add("d", _features("d"))
    assert ReplayStore(tmp_path).products == ["d"]

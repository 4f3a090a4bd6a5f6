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
    batch = next(store.epoch_batches(np.random.default_rng(0), 1, 5))
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
            batch = next(store.epoch_batches(np.random.default_rng(0), 1, 4))
            assert len(batch) == max(4, len(store.groups))  # every product at least once
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


# ---- byte budgets -------------------------------------------------------------------------
def _group_file_bytes(directory: Path) -> int:
    """What the store really wrote: the group files the manifest names."""
    groups = json.loads((directory / MANIFEST).read_text())["groups"]
    return sum((directory / g["file"]).stat().st_size for g in groups)


@pytest.mark.parametrize("codec,params", [("fp32", {}), ("uint8_channel", {}),
                                          ("pq", {"num_subvectors": 4, "bits": 4}),
                                          ("pca", {"components": 4})])
def test_budget_is_never_exceeded_as_products_arrive(tmp_path, codec, params):
    """Shares shrink with every new product; codebooks, bases and scales count."""
    budget = 200_000
    store = ReplayStore(tmp_path, make_codec(codec, **params), budget_bytes=budget)
    for index, product in enumerate(["a", "b", "c", "d", "e"]):
        store.add(product, _features(product, 12))
        acc = store.accounting()
        assert acc["bytes"] == acc["payload_bytes"] + acc["metadata_bytes"]
        assert acc["bytes"] == _group_file_bytes(tmp_path) <= budget
        assert all(v["bytes"] <= budget // (index + 1) for v in acc["products"].values())
        if codec in ("pq", "pca"):  # shared metadata is in the products' bytes
            assert all(v["metadata_bytes"] > 0 for v in acc["products"].values()
                       if v["samples"])
    assert ReplayStore(tmp_path).accounting() == acc


def test_budget_buys_more_samples_with_a_smaller_codec(tmp_path):
    per_uint8 = int(np.prod(SHAPE)) + 24 * 8  # codes + per-channel min/scale
    budget = 2 * 8 * per_uint8  # 8 uint8 samples per product for two products
    counts = {}
    for codec in ("fp32", "uint8_channel", "pq"):
        store = ReplayStore(tmp_path / codec, make_codec(codec, num_subvectors=4, bits=4)
                            if codec == "pq" else make_codec(codec), budget_bytes=budget)
        store.add("a", _features("a", 40))
        store.add("b", _features("b", 40))
        counts[codec] = [v["samples"] for v in store.accounting()["products"].values()]
        assert store.accounting()["bytes"] <= budget
    assert counts["uint8_channel"] == [8, 8]
    assert counts["fp32"] == [2, 2]  # (8 * per_uint8) // (4 * 24576)
    assert min(counts["pq"]) > 8  # codes of 4 bytes per position, plus the codebooks


def test_a_share_too_small_for_one_sample_keeps_none_but_stays_exact(tmp_path):
    one_fp32 = 4 * int(np.prod(SHAPE))
    store = ReplayStore(tmp_path, make_codec("fp32"), budget_bytes=one_fp32 + 10)
    store.add("a", _features("a", 3))
    assert store.accounting()["products"]["a"]["samples"] == 1
    store.add("b", _features("b", 3))
    acc = store.accounting()
    assert {p: v["samples"] for p, v in acc["products"].items()} == {"a": 0, "b": 0}
    assert acc["bytes"] == _group_file_bytes(tmp_path) == 0
    with pytest.raises(ReplayStoreError, match="empty"):
        store.epoch_plan(np.random.default_rng(0), 1, 2)
    reopened = ReplayStore(tmp_path)
    assert reopened.products == ["a", "b"] and len(reopened) == 0


def test_shrinking_under_a_budget_is_nested_and_keeps_the_codebook(tmp_path):
    store = ReplayStore(tmp_path, make_codec("pq", num_subvectors=4, bits=4),
                        budget_bytes=120_000)
    kept = store.add("a", _features("a", 30))
    full = store.decode_product("a")
    codebook = store.groups[0].shared_len
    store.add("b", _features("b", 30))
    np.testing.assert_array_equal(store.decode_product("a"), full[: store.groups[0].count])
    assert store.groups[0].count < len(full) and store.groups[0].shared_len == codebook
    assert len(kept) == len(full) and len(set(kept.tolist())) == len(kept)


def test_both_limits_hold_and_changing_the_budget_on_open_shrinks(tmp_path):
    store = ReplayStore(tmp_path, make_codec("uint8_channel"), capacity=10,
                        budget_bytes=10**9)
    store.add("a", _features("a", 12))
    assert len(store) == 10  # the sample capacity binds
    per = int(np.prod(SHAPE)) + 24 * 8
    reopened = ReplayStore(tmp_path, budget_bytes=3 * per + per // 2)
    assert len(reopened) == 3 and reopened.capacity == 10
    assert ReplayStore(tmp_path).budget_bytes == 3 * per + per // 2
    with pytest.raises(ValueError, match="budget_bytes"):
        ReplayStore(tmp_path, budget_bytes=0)


# ---- selection and epoch plans -----------------------------------------------------------
def test_kcenter_keeps_the_outlying_cluster_that_random_misses(tmp_path):
    """90 near-duplicates and 10 distinct samples: 5 k-center picks cover both clusters."""
    rng = np.random.default_rng(0)
    samples = np.repeat(rng.standard_normal((1, *SHAPE)), 100, axis=0).astype(np.float32)
    samples += 0.01 * rng.standard_normal(samples.shape).astype(np.float32)
    samples[90:] += 5.0
    picks = {}
    for policy in ("random", "kcenter"):
        store = ReplayStore(tmp_path / policy, make_codec("fp32"), capacity=5,
                            selection=policy)
        picks[policy] = store.add("a", samples)
        assert store.accounting()["selection"] == policy
    assert np.any(picks["kcenter"] >= 90) and np.any(picks["kcenter"] < 90)
    assert len(set(picks["kcenter"].tolist())) == 5
    with pytest.raises(ValueError, match="selection"):
        ReplayStore(tmp_path / "x", make_codec("fp32"), selection="herding")


def test_kcenter_order_is_nested_under_shrinking(tmp_path):
    store = ReplayStore(tmp_path, make_codec("fp16"), capacity=8, selection="kcenter")
    kept = store.add("a", _features("a", 20))
    store.add("b", _features("b", 20))
    np.testing.assert_array_equal(
        store.decode_product("a"),
        _features("a", 20)[kept[:4]].astype(np.float16).astype(np.float32))


def test_every_stored_product_is_replayed_every_epoch(tmp_path):
    """40 products and an epoch of 2 steps x 8: still every product appears once."""
    store = ReplayStore(tmp_path, make_codec("fp16"), capacity=80)
    products = [f"p{i}" for i in range(40)]
    for product in products:
        store.add(product, _features(product, 3))
    rng = np.random.default_rng(0)
    starts = np.cumsum([0] + [g.count for g in store.groups])
    for steps, count in ((2, 8), (10, 8)):
        plan = store.epoch_plan(rng, steps, count)
        flat = np.concatenate(plan)
        assert len(plan) == steps and len(flat) == max(steps * count, 40)
        seen = np.searchsorted(starts, flat, side="right") - 1
        per_product = np.bincount(seen, minlength=40)
        assert per_product.min() >= 1 and per_product.max() - per_product.min() <= 1
    batches = list(store.epoch_batches(rng, 3, 4))
    assert [len(b) for b in batches] == [14, 13, 13]
    assert batches[0].shape[1:] == SHAPE and batches[0].dtype == np.float32


def test_a_deleted_product_is_removed_and_its_bytes_freed(tmp_path):
    store = ReplayStore(tmp_path, make_codec("fp16"), capacity=6)
    store.add("a", _features("a"))
    store.add("b", _features("b"))
    before = store.accounting()["bytes"]
    store.remove("a")
    assert ReplayStore(tmp_path).products == ["b"]
    assert 0 < store.accounting()["bytes"] < before

import json
import subprocess
import sys
import time
from pathlib import Path

from edge_runtime.inference.heads import HeadConfig

REPO = Path(__file__).resolve().parents[1]
KEYS = {"pixel_f1", "pixel_auroc", "pixel_ap", "aupro", "image_auroc", "image_f1",
        "operational_pixel_f1", "forgetting", "additional_memory_bytes", "train_seconds",
        "peak_rss_mb"}


def _run(out: Path, data_root: Path, strategies: str, *extra: str) -> tuple[dict, float]:
    """Run the quick benchmark; return its last JSON line and the wall time."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "continual.py"), "--quick",
           "--data", str(data_root), "--categories", "bottle,transistor",
           "--models", "paste,stfpm", "--strategies", strategies,
           "--max-test-images", "2", "--out", str(out), *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def test_quick_benchmark_end_to_end_resumes_and_merges(tmp_path, data_root):
    first, _ = _run(tmp_path, data_root, "finetune,replay_uint8_channel",
                    "--replay-bytes", "samples,0.1")
    assert set(first["runs"]) == {"paste/finetune", "paste/replay_uint8_channel",
                                  "paste/replay_uint8_channel@0.1MB", "stfpm/finetune"}
    by_bytes = first["runs"]["paste/replay_uint8_channel@0.1MB"]
    assert by_bytes["budget_bytes"] == 100_000 and by_bytes["replayed_in_last_task"] == [4]
    assert by_bytes["samples_per_product"] == [2, 2]  # 50 kB each: 2 x (24 kB + scales)
    assert by_bytes["additional_memory_bytes"] == 4 * (24 * 32 * 32 + 24 * 8) <= 100_000
    for figures in first["runs"].values():
        assert set(figures) >= KEYS
        assert 0.0 <= figures["pixel_auroc"] <= 1.0
    assert first["runs"]["paste/finetune"]["additional_memory_bytes"] == 0
    replay_bytes = first["runs"]["paste/replay_uint8_channel"]["additional_memory_bytes"]
    assert replay_bytes >= 14 * 24 * 32 * 32  # one task's train split, 8-bit, plus scales
    # a second invocation with another strategy merges; finished runs are not redone
    finished = (tmp_path / "runs" / "paste_finetune.json").stat().st_mtime_ns
    second, _ = _run(tmp_path, data_root, "finetune,replay_image")
    assert (tmp_path / "runs" / "paste_finetune.json").stat().st_mtime_ns == finished
    assert {"paste/finetune", "paste/replay_image", "stfpm/replay_image"} <= set(second["runs"])
    state = json.loads((tmp_path / "runs" / "paste_finetune.json").read_text())
    assert state["tasks"] == ["bottle", "transistor"] and len(state["matrix"][1]) == 2
    table = (tmp_path / "results.md").read_text()
    assert "paste/replay_image" in table and "paste/finetune" in table
    assert "Equal bytes" in table and "\n| 0.1 | " in table
    assert (tmp_path / "pixel_f1.png").read_bytes()[:4] == b"\x89PNG"


def test_memory_bank_rows_are_task_agnostic_and_bounded(tmp_path, data_root):
    result, _ = _run(tmp_path, data_root, "padim,patchcore")
    assert set(result["runs"]) == {"paste/padim", "paste/patchcore"}  # no STFPM variant
    for figures in result["runs"].values():
        assert set(figures) >= KEYS and 0.5 < figures["pixel_auroc"] <= 1.0
        assert 0 < figures["additional_memory_bytes"] <= HeadConfig().max_bytes
    assert result["runs"]["paste/patchcore"]["forgetting"] < 0.1  # one coreset per task
    state = json.loads((tmp_path / "runs" / "paste_patchcore.json").read_text())
    assert state["tasks"] == ["bottle", "transistor"] and len(state["matrix"][1]) == 2
    # their inference MACs: the features graph plus the numpy scoring (PaDiM under the
    # student graph's 207.8 M at 256 px; PatchCore searches every task's bank)
    macs = {run: r["inference_macs"]
            for run, r in json.loads((tmp_path / "results.json").read_text()).items()}
    assert 150e6 < macs["paste/padim"] < 207_785_984 < macs["paste/patchcore"]

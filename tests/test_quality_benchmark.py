import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = {"pixel_auroc", "image_auroc", "aupro", "pixel_f1", "operational_image_f1",
        "false_reject_rate", "train_seconds", "inference_macs"}


def test_quality_rows_for_the_prior_and_its_mac_budget(tmp_path, data_root):
    """The prior rows run end to end on a tiny subset; the shorter student pays for it; the
    head alone costs fewer MACs, ``select`` serves exactly one of student and head, and
    MemKD's memory counts its recall."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--quick",
           "--data", str(data_root), "--categories", "bottle",
           "--recipes", "new", "new_prior", "prior_student_6_10_12", "head", "select",
           "new_memkd",
           "--max-train-images", "12", "--max-test-images", "1", "--target-steps", "6",
           "--cache", str(tmp_path / "cache")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out) == {"new", "new_prior", "prior_student_6_10_12", "head", "select",
                        "new_memkd"}
    rows = {name: per["bottle"] for name, per in out.items()}
    for row in rows.values():
        assert set(row) == KEYS
        assert 0.0 <= row["pixel_auroc"] <= 1.0 and 0.0 <= row["false_reject_rate"] <= 1.0
    new = rows["new"]["inference_macs"]
    # the prior alone costs MACs (projection + whitening); with the student cut at
    # layer 12 the graph is cheaper than the new recipe's, teacher still to layer 14
    assert rows["new_prior"]["inference_macs"] > new
    assert rows["prior_student_6_10_12"]["inference_macs"] < new
    assert rows["head"]["inference_macs"] < new
    # MemKD's recall: (similarities + weighted values) x 50 items at layers 6 and 10
    assert rows["new_memkd"]["inference_macs"] - new == 2 * 50 * (24 * 32 * 32 + 40 * 16 * 16)
    chosen = [name for name in ("new", "head")
              if rows[name]["inference_macs"] == rows["select"]["inference_macs"]]
    assert len(chosen) == 1
    assert rows["select"]["pixel_auroc"] == rows[chosen[0]]["pixel_auroc"]


def test_prior_beside_a_trained_student_reports_each_map(tmp_path, data_root, bottle_model):
    """prior_continual.py on a real model directory: the pixel F1 of each map per product
    (and of the one the daemon's rule would serve), and the
    prior's path (features graph + PaDiM scoring) costs fewer MACs than the student graph."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "prior_continual.py"), str(bottle_model),
           "--data", str(data_root), "--categories", "bottle", "--max-train-images", "16",
           "--quick", "--max-test-images", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    row = out["per_task"]["bottle"]
    assert set(row) == {"student", "prior", "combined", "selected"}
    assert row["selected"] in (row["student"], row["prior"])
    assert all(0.0 < value <= 1.0 for value in row.values())
    assert out["mean_pixel_f1"] == row
    macs = out["macs"]
    assert 0 < macs["features_graph_and_prior"] < macs["student_graph"]

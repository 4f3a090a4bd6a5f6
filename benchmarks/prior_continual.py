"""A per-product PaDiM prior beside a continual student: pixel F1 per task after the last one.

Takes the final model of a continual run (``benchmarks/continual.py``: ``RUN.ckpt/model``)
and, for each product, fits the memory-bank head's PaDiM (inference/heads.py) on the same
training images (its held-out split excluded), at the head's input size (``--head-size``,
default the daemon's; its maps are resized to the student's). The teacher is frozen, so a
product's
Gaussians never change when later products are learned: the prior cannot forget. Three
maps per test image: the student's, the prior's alone, and the two combined as in
``quality.py``'s NormalityPrior (geometric mean, each over its held-out normals' 99th
percentile pixel). Pixel F1 is the max over thresholds, as in the continual table.

    .venv/bin/python benchmarks/continual.py --max-train-images 200 --models paste_new \
        --strategies replay_uint8_channel
    .venv/bin/python benchmarks/prior_continual.py \
        runs/continual/runs/paste_new_replay_uint8_channel.ckpt/model

``selected``: the path the daemon would serve (evaluation/serving_choice.py: student or
prior alone, chosen on the held-out images and synthetic defects made from them).

Last line: ``{"per_task": {CATEGORY: {"student", "prior", "combined", "selected"}}, "mean_pixel_f1":
{...}, "macs": {"student_graph", "features_graph_and_prior"}}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import SHARED, emit_json, print_table
from onboarding import features_graph
from quality import combine_maps
from tqdm import tqdm

from edge_runtime.dataset import test_samples, train_images
from edge_runtime.evaluation import metrics, serving_choice
from edge_runtime.inference import model_dir as md
from edge_runtime.inference.heads import (
    IMAGE_SIZE,
    FeatureRunner,
    Head,
    HeadConfig,
    fit_head,
    resize_maps,
)
from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.inference.preprocess import fit_rgb, load_mask, load_rgb, normalise, preprocess
from edge_runtime.training.loop import TrainConfig, holdout_split

ROWS = ("student", "prior", "combined", "selected")


def student_maps(inferencer: AnomalyInferencer, paths: list, desc: str) -> np.ndarray:
    maps = []
    for start in tqdm(range(0, len(paths), 8), desc=desc, leave=False):
        maps += [r.anomaly_map for r in inferencer.predict_many(paths[start : start + 8])]
    return np.stack(maps)


def embeddings(runner: FeatureRunner, paths: list, desc: str) -> np.ndarray:
    return np.concatenate([
        runner.embed(np.stack([preprocess(p, runner.image_size)
                               for p in paths[start : start + 8]]))
        for start in tqdm(range(0, len(paths), 8), desc=desc, leave=False)])


def one_product(category: str, args, inferencer, runner) -> tuple[dict[str, float], Head]:
    size = inferencer.image_size
    images = train_images(args.data, category, args.max_train_images)
    train_idx, hold_idx = holdout_split(len(images), args.val_fraction, args.seed)
    train = embeddings(runner, [images[i] for i in train_idx], f"{category} fit")
    head = fit_head(train, HeadConfig(), runner.image_size, runner.grid)
    hold = [images[i] for i in hold_idx]
    student_ref = float(np.quantile(student_maps(inferencer, hold, "held-out"), 0.99))
    prior_ref = float(np.quantile(head.maps(embeddings(runner, hold, "held-out"))[0], 0.99))
    samples = test_samples(args.data, category, args.max_test_images)
    paths = [s.image for s in samples]
    masks = np.stack([load_mask(s.mask, size) for s in samples])
    student = student_maps(inferencer, paths, f"{category} student")
    prior = resize_maps(head.maps(embeddings(runner, paths, f"{category} prior"))[0], size)
    combined = combine_maps(student, prior, student_ref, prior_ref)
    choice = choose(inferencer, runner, head, hold, size, args.seed)
    tqdm.write(f"{category}: {json.dumps(choice)}")
    selected = prior if choice["choice"] == serving_choice.HEAD else student
    return {name: metrics.f1_max(masks, maps)
            for name, maps in zip(ROWS, (student, prior, combined, selected), strict=True)}, head


def choose(inferencer, runner, head, hold: list, size: int, seed: int) -> dict:
    """The daemon's choice (workers/choose_path.py) on the held-out images."""
    def student(rgb):
        maps, scores = inferencer.forward(normalise(rgb))
        return maps[:, 0], scores

    def prior(rgb):  # resized to the head's input and back, as in workers/choose_path.py
        maps, scores = head.maps(runner.embed(normalise(
            np.stack([fit_rgb(image, runner.image_size) for image in rgb]))))
        return resize_maps(maps, size), scores

    normals = [load_rgb(p, size) for p in hold]
    return serving_choice.compare(normals, {serving_choice.STUDENT: student,
                                            serving_choice.HEAD: prior}, seed)


def graph_macs(heads: list[Head]) -> dict[str, int]:
    """The student graph's MACs vs the features graph's plus the costliest head's numpy
    scoring, as the daemon's /status counts them."""
    from edge_runtime.model.macs import features_graph_macs, inference_macs
    from edge_runtime.model.torch_model import ModelSpec, build_parts

    spec = ModelSpec.paste()
    trunk, teacher, student = build_parts(spec)
    graph = features_graph_macs(trunk, teacher, heads[0].image_size)
    return {"student_graph": inference_macs(spec, trunk, teacher, student)["total"],
            "features_graph_and_prior": graph + max(h.scoring_macs for h in heads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a continual run's final model directory")
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--categories", default="bottle,magnetic_tile,transistor")
    parser.add_argument("--max-train-images", type=int, default=200)
    parser.add_argument("--max-test-images", type=int, default=None, help="per defect kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--head-size", type=int, default=IMAGE_SIZE,
                        help="the head's input side (the daemon's heads.image_size)")
    parser.add_argument("--quick", action="store_true", help="4 test images per defect kind")
    args = parser.parse_args()
    if args.quick:
        args.max_test_images = args.max_test_images or 4
    args.val_fraction = TrainConfig.for_recipe("new", seed=args.seed).val_fraction
    inferencer = AnomalyInferencer(args.model / md.MERGED, 256, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        graph = features_graph(Path(tmp) / "features.onnx", args.head_size)
        runner = FeatureRunner(graph, args.head_size, args.threads)
        done = {c: one_product(c, args, inferencer, runner)
                for c in tqdm(args.categories.split(","), desc="products")}
    per_task = {c: rows for c, (rows, _) in done.items()}
    means = {row: float(np.mean([v[row] for v in per_task.values()])) for row in ROWS}
    print_table(["product", *ROWS], [[c, *(round(v[r], 4) for r in ROWS)]
                                     for c, v in [*per_task.items(), ("MEAN", means)]])
    emit_json({"per_task": per_task, "mean_pixel_f1": means,
               "macs": graph_macs([head for _, head in done.values()])})


if __name__ == "__main__":
    main()

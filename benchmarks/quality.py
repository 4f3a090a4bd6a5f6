"""Detection quality: the papers' recipe against the new one, per category, side by side.

Single-product training on cached trunk features (trunk in ONNX Runtime, computed once per
image and kept in ``--cache``), then pixel/image AUROC, AU-PRO, pixel F1 (max over
thresholds), and what an operator sees: image F1 and false-reject rate at the threshold
calibrated on held-out normal images only.

Two modes:
- default: each recipe trains on all training images of the category and is scored on its
  test split (report it once; never choose anything on it).
- ``--ablation``: the levers one at a time and combined, on a VALIDATION split carved from
  the training images plus synthetic (CutPaste-style) anomalies made from it; the recipe
  sees only the remaining training images. This is where choices are made.

Last line: ``{"paper": {CATEGORY: {...}}, "new": {CATEGORY: {...}}}`` (ablation: one key per
variant).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from _common import SHARED, emit_json, print_table

KEYS = ["pixel_auroc", "image_auroc", "aupro", "pixel_f1", "operational_image_f1",
        "false_reject_rate", "train_seconds", "inference_macs"]


# ---------------------------------------------------------------- recipe pieces
@dataclass(frozen=True)
class Schedule:
    """How long and how the student trains; the papers' is 10 epochs of constant SGD 0.4."""

    lr: float = 0.4
    epochs: int = 10  # used when target_steps == 0
    target_steps: int = 0  # > 0: epochs from the data size, ceil(target_steps / steps/epoch)
    max_epochs: int = 200
    warmup: float = 0.0  # fraction of the planned steps with a linear warm-up
    cosine: bool = False
    patience: int = 7  # evaluations without a relative improvement of min_delta
    min_delta: float = 0.0
    evals_per_run: int = 0  # 0: one evaluation per epoch; else spread over the planned steps
    time_budget_s: float = math.inf
    batch_size: int = 8


@dataclass(frozen=True)
class MapRecipe:
    """How the per-layer discrepancies become the anomaly map and the image score."""

    combine: str = "product"  # "product" | "sum" (each layer divided by its normal mean)
    resolution: int = 0  # 0: at the input size; else compose at this size, then upsample
    sigma: float = 0.0  # Gaussian smoothing in input pixels (STFPM uses 4)
    topk: float = 0.0  # 0: score = max pixel; else mean of the top fraction of pixels


@dataclass(frozen=True)
class CalibrationRecipe:
    method: str = "paper"  # "paper": 1.1 x q99; "frr": upper bound on the (1-frr) quantile
    frr: float = 0.01
    confidence: float = 0.9


@dataclass(frozen=True)
class Recipe:
    name: str
    schedule: Schedule = field(default_factory=Schedule)
    map: MapRecipe = field(default_factory=MapRecipe)
    calibration: CalibrationRecipe = field(default_factory=CalibrationRecipe)
    holdout_fraction: float = 0.1


PAPER = Recipe("paper")
NEW_SCHEDULE = Schedule(lr=0.4, target_steps=1500, warmup=0.05, cosine=True, patience=4,
                        min_delta=0.01, evals_per_run=20)
NEW = Recipe("new", NEW_SCHEDULE, MapRecipe("product", 64, 4.0, 0.01),
             CalibrationRecipe("frr", 0.01, 0.9))


# ---------------------------------------------------------------- data and caches
def image_split(count: int, seed: int, fraction: float = 0.15, cap: int = 40):
    """(recipe, validation) indices for the ablation: the validation part never trains."""
    import numpy as np

    order = np.random.default_rng(seed + 1000).permutation(count)
    held = min(cap, max(4, int(round(count * fraction))))
    return np.sort(order[held:]), np.sort(order[:held])


def synthetic_anomaly(rgb, rng):
    """A CutPaste-style defect: a patch (or thin scar) of the same image, slightly
    recoloured and partly blended, pasted elsewhere; returns (image, mask).

    Kept subtle on purpose (small, mild jitter, partial opacity): obvious pastes saturate
    every variant at AUROC 1.0 and cannot rank them.
    """
    import numpy as np

    size = rgb.shape[0]
    out, mask = rgb.astype(np.float32).copy(), np.zeros(rgb.shape[:2], bool)
    if rng.random() < 0.5:  # patch
        area = rng.uniform(0.002, 0.02) * size * size
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        h, w = int(math.sqrt(area * aspect)), int(math.sqrt(area / aspect))
    else:  # scar
        h, w = int(rng.uniform(0.06, 0.2) * size), int(rng.uniform(0.008, 0.02) * size) + 2
        if rng.random() < 0.5:
            h, w = w, h
    h, w = int(np.clip(h, 3, size // 2)), int(np.clip(w, 3, size // 2))
    sy, sx = rng.integers(0, size - h), rng.integers(0, size - w)
    margin = size // 8
    ty, tx = rng.integers(margin, size - h - margin), rng.integers(margin, size - w - margin)
    patch = out[sy : sy + h, sx : sx + w] * rng.uniform(0.85, 1.15, 3) + rng.uniform(-15, 15, 3)
    alpha = rng.uniform(0.4, 1.0)
    out[ty : ty + h, tx : tx + w] = alpha * patch + (1 - alpha) * out[ty : ty + h, tx : tx + w]
    mask[ty : ty + h, tx : tx + w] = True
    return np.clip(out, 0, 255).astype(np.uint8), mask


class FeatureCache:
    """Trunk outputs per image list, computed once in ORT and kept as .npy files."""

    def __init__(self, directory: Path, engine) -> None:
        self.directory = directory
        self.engine = engine
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"

    def images(self, paths: list) -> object:
        import numpy as np

        path = self._path("img|" + "|".join(str(p) for p in paths))
        if not path.exists():
            np.save(path, self.engine.features(paths))
        return np.load(path)

    def arrays(self, key: str, make) -> object:
        """Features of in-memory images (normalised NCHW) made by ``make()``."""
        import numpy as np

        path = self._path("arr|" + key)
        if not path.exists():
            batch = make()
            chunks = [self.engine.trunk_runner().features(batch[i : i + 4])
                      for i in range(0, len(batch), 4)]
            np.save(path, np.concatenate(chunks))
        return np.load(path)


# ---------------------------------------------------------------- training
def _lr_at(step: int, planned: int, s: Schedule) -> float:
    warm = int(s.warmup * planned)
    if warm and step < warm:
        return s.lr * (step + 1) / warm
    if not s.cosine:
        return s.lr
    progress = min(1.0, (step - warm) / max(1, planned - warm))
    return s.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _batched(net, x, size: int = 32) -> list:
    """Per-layer outputs of ``net`` over ``x``, computed ``size`` samples at a time."""
    import torch

    outputs = [net(x[i : i + size]) for i in range(0, len(x), size)]
    return [torch.cat(layer) for layer in zip(*outputs, strict=True)]


def train_student(teacher, student, features, holdout, schedule: Schedule, seed: int = 0):
    """Returns (seconds, info). Teacher outputs are computed once (the teacher is frozen)."""
    import copy

    import numpy as np
    import torch

    from edge_runtime.torch_model import stfpm_loss

    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        x = torch.from_numpy(features)
        targets = _batched(teacher, x)
        hx = torch.from_numpy(holdout) if len(holdout) else x[: min(16, len(x))]
        h_targets = _batched(teacher, hx)
    s = schedule
    per_epoch = math.ceil(len(x) / s.batch_size)
    epochs = (min(s.max_epochs, max(1, math.ceil(s.target_steps / per_epoch)))
              if s.target_steps else s.epochs)
    planned = epochs * per_epoch
    eval_every = max(1, planned // s.evals_per_run) if s.evals_per_run else per_epoch
    optimizer = torch.optim.SGD(student.parameters(), lr=s.lr, momentum=0.9, weight_decay=1e-4)

    def val_loss() -> float:
        student.eval()
        with torch.no_grad():
            total = 0.0
            for i in range(0, len(hx), 32):
                out = student(hx[i : i + 32])
                total += float(stfpm_loss([t[i : i + 32] for t in h_targets], out)) * len(
                    out[0])
        student.train()
        return total / len(hx)

    best, best_state, stale, step, history = math.inf, None, 0, 0, []
    student.train()
    stopped = "planned"
    while step < planned:
        order = rng.permutation(len(x))
        for start in range(0, len(x), s.batch_size):
            index = torch.from_numpy(order[start : start + s.batch_size])
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, planned, s)
            loss = stfpm_loss([t[index] for t in targets], student(x[index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % eval_every == 0 or step == planned:
                value = val_loss()
                history.append((step, round(value, 5)))
                if value < best * (1 - s.min_delta):
                    best, stale = value, 0
                    best_state = copy.deepcopy(student.state_dict())
                else:
                    stale += 1
                    if value < best:  # small gain: keep the weights, still count as stale
                        best, best_state = value, copy.deepcopy(student.state_dict())
                if stale >= s.patience:
                    stopped = "early"
                    break
                if time.perf_counter() - started > s.time_budget_s:
                    stopped = "budget"
                    break
            if step >= planned:
                break
        if stopped != "planned":
            break
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    info = {"steps": step, "planned_steps": planned, "stopped": stopped,
            "best_val_loss": best, "history": history}
    return time.perf_counter() - started, info


# ---------------------------------------------------------------- maps and scores
def layer_distances(teacher, student, features) -> list:
    """Per-layer 0.5*||n(Ft)-n(Fs)||^2 at each layer's own resolution, float32 arrays."""
    import torch

    from edge_runtime.torch_model import layer_distance

    parts = []
    with torch.no_grad():
        for i in range(0, len(features), 32):
            x = torch.from_numpy(features[i : i + 32])
            parts.append([layer_distance(t, s) for t, s in zip(teacher(x), student(x),
                                                               strict=True)])
    return [torch.cat(p).numpy() for p in zip(*parts, strict=True)]


def _gaussian(sigma: float):
    import torch

    radius = max(1, int(math.ceil(3 * sigma)))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    return kernel / kernel.sum()


def compose(distances: list, recipe: MapRecipe, size: int, layer_means=None):
    """(maps (N, size, size), scores (N,)) from per-layer distances, as the graph would."""
    import torch
    import torch.nn.functional as F

    res = recipe.resolution or size
    out = None
    for index, d in enumerate(distances):
        t = F.interpolate(torch.from_numpy(d), size=(res, res), mode="bilinear",
                          align_corners=False)
        if recipe.combine == "sum":
            t = t / float(layer_means[index])
            out = t if out is None else out + t
        else:
            out = t if out is None else out * t
    if recipe.sigma > 0:
        kernel = _gaussian(recipe.sigma * res / size)
        pad = len(kernel) // 2
        out = F.conv2d(F.pad(out, (pad, pad, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        out = F.conv2d(F.pad(out, (0, 0, pad, pad), mode="replicate"), kernel.view(1, 1, -1, 1))
    flat = out.flatten(1)
    if recipe.topk > 0:
        k = max(1, int(round(recipe.topk * flat.shape[1])))
        scores = flat.topk(k, dim=1).values.mean(dim=1)
    else:
        scores = flat.amax(dim=1)
    if res != size:
        out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
    return out[:, 0].numpy(), scores.numpy()


# ---------------------------------------------------------------- calibration
def normals_needed(frr: float, confidence: float) -> int:
    """Normals for which their maximum bounds the (1-frr) quantile with ``confidence``."""
    return int(math.ceil(math.log(1 - confidence) / math.log(1 - frr)))


def calibrate_threshold(scores, recipe: CalibrationRecipe) -> tuple[float, str]:
    """Threshold from normal scores alone; (threshold, how it was chosen)."""
    import numpy as np
    from scipy import stats

    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    if recipe.method == "paper":
        return float(np.quantile(scores, 0.99) * 1.1), "paper"
    # distribution-free: the r-th order statistic bounds the quantile when
    # P(Binomial(n, 1-frr) <= r-1) >= confidence
    ranks = np.arange(1, n + 1)
    ok = stats.binom.cdf(ranks - 1, n, 1 - recipe.frr) >= recipe.confidence
    if ok.any():
        return float(scores[int(np.argmax(ok))]), "order-statistic"
    # too few normals: one-sided normal tolerance bound on log scores (warn the operator)
    logs = np.log(np.maximum(scores, 1e-12))
    z = stats.norm.ppf(1 - recipe.frr)
    k = stats.nct.ppf(recipe.confidence, df=n - 1, nc=z * math.sqrt(n)) / math.sqrt(n)
    return float(max(np.exp(logs.mean() + k * logs.std(ddof=1)), scores[-1])), "log-normal"


# ---------------------------------------------------------------- evaluation
def score_maps(maps, scores, masks, labels, threshold: float, fast: bool) -> dict:
    import numpy as np

    from edge_runtime import metrics

    if fast:  # half resolution: rankings of variants, a quarter of the pixels
        maps, masks = maps[:, ::2, ::2], masks[:, ::2, ::2]
    normal = ~labels
    predicted = scores > threshold
    return {
        "pixel_auroc": metrics.auroc(masks, maps),
        "image_auroc": metrics.auroc(labels, scores),
        "aupro": metrics.aupro(masks, maps),
        "pixel_f1": metrics.f1_max(masks, maps),
        "image_f1": metrics.f1_max(labels, scores),
        "operational_image_f1": metrics.f1_at(labels, scores, threshold),
        "false_reject_rate": float(np.count_nonzero(predicted & normal) / max(1, normal.sum())),
        "miss_rate": float(np.count_nonzero(~predicted & labels) / max(1, labels.sum())),
    }


def new_parts(spec, seed):
    from edge_runtime.torch_model import build_parts

    return build_parts(spec, seed=seed)


_TRAINED: dict = {}


def run_recipe(recipe: Recipe, feats, eval_sets: list, size: int, seed: int, spec):
    """Train with ``recipe`` on ``feats`` (its own holdout carved out), calibrate, score."""
    import numpy as np

    from edge_runtime.macs import inference_macs
    from edge_runtime.training import holdout_split

    train_idx, hold_idx = holdout_split(len(feats), recipe.holdout_fraction, seed)
    key = (id(feats), len(feats), recipe.schedule, recipe.holdout_fraction, seed)
    if key not in _TRAINED:  # variants that differ only after training share one student
        trunk, teacher, student = new_parts(spec, seed)
        seconds, info = train_student(teacher, student, feats[train_idx], feats[hold_idx],
                                      recipe.schedule, seed)
        _TRAINED[key] = (trunk, teacher, student, seconds, info)
    trunk, teacher, student, seconds, info = _TRAINED[key]
    hold_d = layer_distances(teacher, student, feats[hold_idx])
    means = [float(d.mean()) for d in hold_d]
    _, hold_scores = compose(hold_d, recipe.map, size, means)
    threshold, how = calibrate_threshold(hold_scores, recipe.calibration)
    macs = inference_macs(spec, trunk, teacher, student)["total"] + map_macs(recipe.map, size)
    results = []
    for feats_eval, masks, labels, fast in eval_sets:
        maps, scores = compose(layer_distances(teacher, student, feats_eval), recipe.map, size,
                               means)
        row = score_maps(maps, scores, masks, labels, threshold, fast)
        row["scores"] = {"holdout": np.asarray(hold_scores).tolist(),
                         "eval": np.asarray(scores).tolist(), "labels": labels.tolist()}
        row |= {"train_seconds": round(seconds, 1), "inference_macs": macs,
                "threshold_method": how, "holdout_normals": int(len(hold_idx)),
                "steps": info["steps"], "stopped": info["stopped"]}
        results.append(row)
    return results, info, np.asarray(hold_scores)


def map_macs(recipe: MapRecipe, size: int) -> int:
    """Multiply-adds of the Gaussian smoothing (the only map op that is a convolution)."""
    if recipe.sigma <= 0:
        return 0
    res = recipe.resolution or size
    taps = len(_gaussian(recipe.sigma * res / size))
    return 2 * taps * res * res


def test_set(cache: FeatureCache, data: Path, category: str, size: int, limit):
    import numpy as np

    from edge_runtime.dataset import test_samples
    from edge_runtime.preprocess import load_mask

    samples = test_samples(data, category, limit)
    feats = cache.images([s.image for s in samples])
    masks = np.stack([load_mask(s.mask, size) for s in samples])
    labels = np.array([s.is_anomalous for s in samples])
    return feats, masks, labels


def validation_set(cache: FeatureCache, images: list, size: int, seed: int):
    """Held-out normals + one synthetic anomaly made from each of them."""
    import numpy as np

    from edge_runtime.preprocess import load_rgb, normalise

    normal = cache.images(images)
    rng = np.random.default_rng(seed)

    def make():
        made = [synthetic_anomaly(load_rgb(p, size), rng) for p in images]
        np.save(cache._path("mask2|" + "|".join(map(str, images))), np.stack([m for _, m in made]))
        return np.stack([normalise(img) for img, _ in made])

    anomalous = cache.arrays("synth2|" + "|".join(map(str, images)), make)
    masks_path = cache._path("mask2|" + "|".join(map(str, images)))
    if not masks_path.exists():
        make()
    masks = np.concatenate([np.zeros((len(images), size, size), bool), np.load(masks_path)])
    labels = np.r_[np.zeros(len(images), bool), np.ones(len(images), bool)]
    return np.concatenate([normal, anomalous]), masks, labels


# ---------------------------------------------------------------- ablation variants
def ablation_recipes(quick: bool, target_steps: int | None) -> list[Recipe]:
    sched_cos = replace(NEW_SCHEDULE, target_steps=target_steps or (150 if quick else
                                                                    NEW_SCHEDULE.target_steps))
    blur = MapRecipe("product", 64, 4.0, 0.0)
    topk = MapRecipe("product", 0, 0.0, 0.01)
    both = MapRecipe("product", 64, 4.0, 0.01)
    cal = CalibrationRecipe("frr", 0.01, 0.9)
    return [
        PAPER,
        Recipe("schedule", sched_cos),
        Recipe("schedule_const", replace(sched_cos, cosine=False, warmup=0.0)),
        Recipe("blur", map=blur),
        Recipe("topk", map=topk),
        Recipe("blur_topk", map=both),
        Recipe("layer_sum", map=MapRecipe("sum", 64, 4.0, 0.01)),
        Recipe("calibration", calibration=cal),
        Recipe("new", sched_cos, both, cal),
        Recipe("new_sum", sched_cos, MapRecipe("sum", 64, 4.0, 0.01), cal),
    ]


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--categories", nargs="*", default=None)
    parser.add_argument("--quick", action="store_true", help="small subsets, ~1 minute")
    parser.add_argument("--ablation", action="store_true", help="levers on a validation split")
    parser.add_argument("--recipes", nargs="*", default=None, help="ablation: only these")
    parser.add_argument("--max-train-images", type=int, default=None)
    parser.add_argument("--max-test-images", type=int, default=None, help="per defect kind")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "edge-runtime-quality")
    parser.add_argument("--target-steps", type=int, default=None,
                        help="override the new schedule's planned steps")
    parser.add_argument("--save-scores", type=Path, default=None,
                        help="write each run's image scores and val-loss history here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch
    from tqdm import tqdm

    from edge_runtime.dataset import list_categories, train_images
    from edge_runtime.engine import Engine
    from edge_runtime.torch_model import ModelSpec

    torch.set_num_threads(args.threads)
    if args.quick:
        args.max_train_images = args.max_train_images or 40
        args.max_test_images = args.max_test_images or 4
    categories = args.categories or list_categories(args.data)
    spec = ModelSpec.paste()
    size = spec.image_size
    cache = FeatureCache(args.cache, Engine(spec, seed=args.seed, threads=args.threads))
    if args.ablation:
        recipes = ablation_recipes(args.quick, args.target_steps)
        if args.recipes:
            recipes = [r for r in recipes if r.name in args.recipes]
    else:
        steps = args.target_steps or (150 if args.quick else NEW.schedule.target_steps)
        recipes = [PAPER, replace(NEW, schedule=replace(NEW.schedule, target_steps=steps))]
    out: dict = {r.name: {} for r in recipes}
    extra: dict = {r.name: {} for r in recipes}
    for category in categories:
        images = train_images(args.data, category, args.max_train_images)
        if args.ablation:
            rec_idx, val_idx = image_split(len(images), args.seed)
            feats = cache.images([images[i] for i in rec_idx])
            eval_sets = [(*validation_set(cache, [images[i] for i in val_idx], size,
                                          args.seed), True)]
        else:
            feats = cache.images(images)
            eval_sets = [(*test_set(cache, args.data, category, size, args.max_test_images),
                          False)]
        _TRAINED.clear()
        for recipe in tqdm(recipes, desc=category, unit="recipe"):
            rows, info, hold_scores = run_recipe(recipe, feats, eval_sets, size, args.seed,
                                                 spec)
            out[recipe.name][category] = {k: rows[0][k] for k in KEYS}
            extra[recipe.name][category] = {k: rows[0][k] for k in rows[0] if k not in KEYS}
            extra[recipe.name][category]["history"] = info["history"]
            scores = extra[recipe.name][category].pop("scores")
            if args.save_scores:
                args.save_scores.mkdir(parents=True, exist_ok=True)
                target = args.save_scores / f"{recipe.name}_{category}.json"
                target.write_text(json.dumps(scores | {"history": info["history"]}))
            rows[0].pop("scores")
            tqdm.write(f"{category} {recipe.name}: " + json.dumps(
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[0].items()}))
    headers = ["recipe", "category", "pixAUROC", "imgAUROC", "AU-PRO", "pixF1", "opImgF1",
               "FRR", "train_s", "MACs(M)", "steps", "stop"]
    table = []
    for name, per in out.items():
        for category, row in per.items():
            e = extra[name][category]
            table.append([name, category, row["pixel_auroc"], row["image_auroc"], row["aupro"],
                          row["pixel_f1"], row["operational_image_f1"],
                          row["false_reject_rate"], row["train_seconds"],
                          round(row["inference_macs"] / 1e6, 2), e["steps"], e["stopped"]])
        if per:
            means = [float(np.nanmean([r[k] for r in per.values()])) for k in KEYS[:6]]
            table.append([name, "MEAN", *means, "", "", "", ""])
    print_table(headers, table)
    emit_json(out)


if __name__ == "__main__":
    main()

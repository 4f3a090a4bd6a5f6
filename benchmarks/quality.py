"""Detection quality: the papers' recipe against the new one, per category, side by side.

Single-product training on cached trunk features (trunk in ONNX Runtime, computed once per
image and kept in ``--cache``), then pixel/image AUROC, AU-PRO, pixel F1 (max over
thresholds), and what an operator sees: image F1 and false-reject rate at the threshold
calibrated on held-out normal images only.

Two modes:
- default: each recipe trains on all training images of the category and is scored on its
  test split (report it once; never choose anything on it). ``--recipes`` names any rows.
- ``--ablation``: the levers one at a time and combined, on a VALIDATION split carved from
  the training images plus synthetic (CutPaste-style) anomalies made from it; the recipe
  sees only the remaining training images. This is where choices are made.

Rows beyond the two recipes (``ablation_recipes``): each lever of the new recipe alone;
other feature layers within the MAC budget (``layers_*``: the split moves, so the trunk
features are cached apart); and the student's map times a per-product PaDiM prior on the
frozen teacher's features (``new_prior*``, ``prior_student_*``: see NormalityPrior); that
prior alone, the daemon's memory-bank head (``head``: no training, the features graph's
MACs); and ``select``, per product the student or the head by the daemon's rule
(evaluation/serving_choice.py) on the recipe's held-out normals and synthetic defects made
from them, never on the evaluation set.

- ``--daemon``: what the operator sees, through a real daemon on its embedded defaults (one
  per recipe and category: ``training.recipe`` = paper or new): ``--max-train-images``
  captures uploaded over HTTP (default 200), one training job, then ``--parts`` good and
  ``--parts`` defective test parts inspected (evenly spread over the defect kinds); counts
  the correct verdicts, once the daemon has chosen the product's serving path (student or
  memory-bank head, ``heads.serve = auto``), and which answered.

Last line: ``{"paper": {CATEGORY: {...}}, "new": {CATEGORY: {...}}}`` (ablation: one key per
variant; daemon: ``correct``, ``parts``, ``false_rejects``, ``missed_defects``,
``learn_seconds``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from _common import SHARED, emit_json, print_table

KEYS = ["pixel_auroc", "image_auroc", "aupro", "pixel_f1", "operational_image_f1",
        "false_reject_rate", "train_seconds", "inference_macs"]


# ---------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """What a benchmark row trains and serves: schedule, map head, calibration policy."""

    name: str
    train: str = "paper"  # TrainConfig.for_recipe(train)
    map: str = "paper"  # ModelSpec.paste(recipe=map)
    calibration: str = "paper"  # "paper" or "frr" (CalibrationPolicy defaults)
    train_overrides: tuple = ()
    geometry: tuple = ()  # (split, feature_layers, image_size); () = ModelSpec.paste()
    prior: str = ""  # "" or a PaDiM covariance: the student map x a per-product prior
    serve: str = "student"  # or "head" (the PaDiM alone), "select" (per product, below)
    head_size: int = 0  # the head's input side; 0: the daemon's (inference/heads.py)
    memory: int = 0  # > 0: MemKD's normality memory with this many items in the student

    def config(self, seed: int):
        from edge_runtime.training.loop import TrainConfig

        return TrainConfig.for_recipe(self.train, seed=seed, **dict(self.train_overrides))

    def spec(self):
        from edge_runtime.model.torch_model import ModelSpec

        spec = ModelSpec.paste(recipe=self.map)
        if self.geometry:
            split, layers, size = self.geometry
            spec = replace(spec, split=split, feature_layers=tuple(layers), image_size=size)
        return spec

    def policy(self):
        from edge_runtime.inference.thresholds import PAPER_POLICY, CalibrationPolicy

        return PAPER_POLICY if self.calibration == "paper" else CalibrationPolicy()


# The prior rows' projection width: the heads' before issue 16's ninth session, at which
# they were measured; the daemon's 62 would put the prior beside a student over the budget.
PRIOR_DIM = 27

PAPER = Recipe("paper")
NEW = Recipe("new", "new", "new", "frr")


@dataclass(frozen=True)
class Samples:
    """The same images as trunk features at the student's input and at the head's, which
    reads another size (``head`` is ``student`` when the two are equal). Indexing selects
    the same images from both."""

    student: object
    head: object

    def __len__(self) -> int:
        return len(self.student)

    def __getitem__(self, rows) -> Samples:
        return Samples(self.student[rows], self.head[rows])


# ---------------------------------------------------------------- data and caches
def image_split(count: int, seed: int, fraction: float = 0.15, cap: int = 40):
    """(recipe, validation) indices for the ablation: the validation part never trains."""
    import numpy as np

    order = np.random.default_rng(seed + 1000).permutation(count)
    held = min(cap, max(4, int(round(count * fraction))))
    return np.sort(order[held:]), np.sort(order[:held])


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


# ---------------------------------------------------------------- evaluation
def score_maps(maps, scores, masks, labels, threshold: float, fast: bool) -> dict:
    import numpy as np

    from edge_runtime.evaluation import metrics

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


def maps_and_scores(model, features, batch: int = 16):
    """The served graph's outputs, from cached trunk features (same modules, no trunk)."""
    import numpy as np
    import torch

    maps, scores = [], []
    with torch.no_grad():
        for i in range(0, len(features), batch):
            x = torch.from_numpy(features[i : i + batch])
            amap, score = model.head(model.teacher(x), model.student(x))
            maps.append(amap[:, 0].numpy())
            scores.append(score.numpy())
    return np.concatenate(maps), np.concatenate(scores)


class NormalityPrior:
    """The student's map times a per-product PaDiM map on the frozen teacher's patch
    embeddings (the memory-bank head's, inference/heads.py), as a geometric mean of the two,
    each divided by its held-out normals' 99th-percentile pixel. The teacher features are
    already computed by the merged graph; the prior adds its aggregation, projection,
    whitening and map (``macs``, counted as the daemon counts a head's; ``teacher_macs``:
    the teacher tail up to layer 14, which one graph runs once for both; ``trunk_macs``:
    what the head alone adds). A benchmark lever: not (yet) what the daemon serves."""

    def __init__(self, train_feats, hold_feats, hold_maps, covariance: str, spec,
                 dim: int = 0) -> None:
        """``hold_maps``: the student's on the held-out normals (None: the prior serves
        alone, as the daemon's memory-bank head). ``dim``: the projection's width, 0 for
        the daemon's (inference/heads.py DIMS)."""
        import numpy as np
        import torch

        from edge_runtime.inference.heads import HeadConfig, fit_head
        from edge_runtime.model.macs import embedding_macs, inference_macs
        from edge_runtime.model.onnx_export import PatchEmbedding
        from edge_runtime.model.torch_model import ModelSpec, Trunk, build_parts

        # the heads' layers 6/10/14, whatever the student taps, at the features' input size
        heads_spec = ModelSpec.paste(spec.image_size)
        if spec.split != heads_spec.split:
            raise ValueError("the prior reads the trunk features of the papers' split")
        trunk, teacher, _ = build_parts(heads_spec)
        parts = inference_macs(heads_spec, trunk, teacher, teacher)
        self.trunk_macs, self.teacher_macs = parts["trunk"], parts["teacher_tail"]
        self.embedding = PatchEmbedding(Trunk([]), teacher).eval()
        self.spec = spec
        embeddings = self.embed(train_feats)
        self.grid = int(round(math.sqrt(embeddings.shape[1])))
        self.config = HeadConfig(covariance=covariance, dim=dim)
        self.head = fit_head(embeddings, self.config, spec.image_size, self.grid)
        self.student_ref = None if hold_maps is None else float(np.quantile(hold_maps, 0.99))
        self.prior_ref = float(np.quantile(self.head.maps(self.embed(hold_feats))[0], 0.99))
        with torch.no_grad():
            taps = teacher(torch.from_numpy(train_feats[:1]))
        self.macs = embedding_macs(taps) + self.head.scoring_macs

    def out_of_fold(self, train_feats):
        """Cross-fitted scores of the images it was fitted on, as the daemon's head fit
        calibrates (inference/heads.py, fit_cross_fitted)."""
        from edge_runtime.inference.heads import fit_cross_fitted

        embeddings = self.embed(train_feats)
        _, scores = fit_cross_fitted(lambda rows: [embeddings[rows]], len(embeddings),
                                     embeddings.shape[-1], self.config, self.spec.image_size,
                                     self.grid)
        return () if scores is None else scores  # too few images: the held-out ones alone

    def embed(self, feats, batch: int = 16):
        import numpy as np
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(feats), batch):
                patches = self.embedding(torch.from_numpy(feats[i : i + batch]))[-1]
                out.append(patches.flatten(2).transpose(1, 2).numpy())
        return np.concatenate(out)

    def maps(self, feats):
        """The head alone: its smoothed map at the input size and max score (as served)."""
        return self.head.maps(self.embed(feats))

    def combine(self, student_maps, feats):
        import numpy as np

        prior_maps, _ = self.head.maps(self.embed(feats))
        maps = combine_maps(student_maps, prior_maps, self.student_ref, self.prior_ref)
        flat = maps.reshape(len(maps), -1)
        k = max(1, round(self.spec.score_topk * flat.shape[1])) if self.spec.score_topk else 1
        return maps, np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def combine_maps(student, prior, student_ref: float, prior_ref: float):
    """The geometric mean of the two maps, each over its held-out normals' 99th-percentile
    pixel (so neither's scale decides)."""
    import numpy as np

    return np.sqrt(np.maximum(student, 0) / student_ref
                   * np.maximum(prior, 0) / prior_ref).astype(np.float32)


_TRAINED: dict = {}


def _trained(recipe: Recipe, spec, feats, train_idx, hold_idx, seed: int):
    """Train once per (data, schedule, geometry): variants that differ after training share it."""
    from edge_runtime.model.torch_model import build_parts
    from edge_runtime.training.loop import StudentTrainer

    config = recipe.config(seed)
    key = (id(feats), len(feats), config, recipe.geometry, recipe.memory)
    if key not in _TRAINED:
        trunk, teacher, student = build_parts(spec, seed=seed)
        if recipe.memory:
            import numpy as np
            import torch

            from edge_runtime.model.normality_memory import with_memory

            probe = torch.from_numpy(np.ascontiguousarray(feats[:1]))
            student = with_memory(student, teacher, probe, recipe.memory, seed)
        result = StudentTrainer(teacher, student, config).fit(feats[train_idx],
                                                               feats[hold_idx])
        _TRAINED[key] = (trunk, teacher, student, result)
    return _TRAINED[key]


def run_recipe(recipe: Recipe, feats: Samples, eval_sets: list, seed: int, selection=None):
    """Train with ``recipe`` on ``feats`` (its own hold-out carved out), calibrate on the
    hold-out normals exactly as the daemon does, score every evaluation set. ``select``
    rows choose the student or the head per product as the daemon does
    (evaluation/serving_choice.py), on ``selection(hold_idx)``: the held-out normals and
    synthetic defects made from them, as Samples. The head reads its own input size
    (``feats.head``); its maps are resized to the student's, where the masks are."""
    import time

    import numpy as np

    from edge_runtime.inference.thresholds import calibrate
    from edge_runtime.model.macs import inference_macs
    from edge_runtime.model.torch_model import ModelSpec, PasteModel
    from edge_runtime.training.loop import holdout_split

    config = recipe.config(seed)
    train_idx, hold_idx = holdout_split(len(feats), config.val_fraction, seed)
    spec = recipe.spec()
    paths, macs, info = {}, {}, {}
    if recipe.serve != "head":
        trunk, teacher, student, result = _trained(recipe, spec, feats.student, train_idx,
                                                   hold_idx, seed)
        model = PasteModel(spec, trunk, teacher, student).eval()
        parts = inference_macs(spec, trunk, teacher, student)
        macs["student"], seconds = parts["total"], result.seconds
        paths["student"] = lambda f: maps_and_scores(model, f.student)
        info = {"steps": result.epochs_run * -(-len(train_idx) // config.batch_size),
                "epochs": f"{result.epochs_run}/{config.planned_epochs(len(train_idx))}",
                "best_epoch": result.best_epoch, "history": result.history}
        if recipe.prior:
            hold_maps = paths["student"](feats[hold_idx])[0]
            prior = NormalityPrior(feats.student[train_idx], feats.student[hold_idx],
                                   hold_maps, recipe.prior, spec, PRIOR_DIM)
            paths["student"] = lambda f: prior.combine(maps_and_scores(model, f.student)[0],
                                                       f.student)
            macs["student"] += prior.macs + max(0, prior.teacher_macs - parts["teacher_tail"])
    if recipe.serve in ("head", "select"):
        from edge_runtime.inference.heads import IMAGE_SIZE, resize_maps

        head_spec = ModelSpec.paste(recipe.head_size or IMAGE_SIZE)
        started = time.perf_counter()
        head = NormalityPrior(feats.head[train_idx], feats.head[hold_idx], None, "full",
                              head_spec)
        fit = time.perf_counter() - started
        seconds = fit if recipe.serve == "head" else seconds + fit
        # as the daemon reports it: the features graph, then the head's numpy scoring
        macs["head"] = head.trunk_macs + head.teacher_macs + head.macs

        def head_path(f: Samples):
            maps, scores = head.maps(f.head)
            return resize_maps(maps, spec.image_size), scores

        paths["head"] = head_path
    served = recipe.serve if recipe.serve != "select" else _select(paths, selection(hold_idx))
    if recipe.serve == "select":
        info["selection"] = served
        served = served["choice"]
    hold_maps, hold_scores = paths[served](feats[hold_idx])
    if served == "head":  # calibrated as the daemon's head is
        hold_scores = np.r_[hold_scores, head.out_of_fold(feats.head[train_idx])]
    thresholds = calibrate(hold_maps, hold_scores, recipe.policy())
    rows = []
    for feats_eval, masks, labels, fast in eval_sets:
        maps, scores = paths[served](feats_eval)
        row = score_maps(maps, scores, masks, labels, thresholds.image, fast)
        row |= {"train_seconds": round(seconds, 1), "inference_macs": macs[served],
                "served": served, "threshold_method": thresholds.method,
                "holdout_normals": int(len(hold_idx)), "steps": info.get("steps", 0),
                "epochs": info.get("epochs", "-"), "best_epoch": info.get("best_epoch"),
                "warning": thresholds.warning, "selection": info.get("selection"),
                "scores": {"holdout": hold_scores.tolist(), "eval": scores.tolist(),
                           "labels": labels.tolist(), "history": info.get("history")}}
        rows.append(row)
    return rows


def _select(paths: dict, selection: tuple) -> dict:
    """The daemon's rule (serving_choice.decide) on the selection set's trunk features."""
    from edge_runtime.evaluation import serving_choice

    feats, masks, labels = selection
    outputs = {name: paths[name](feats) for name in (serving_choice.STUDENT, serving_choice.HEAD)}
    return serving_choice.decide(outputs, masks, labels, int((~labels).sum()))


def selection_features(cache: FeatureCache, images: list, size: int, seed: int,
                       head: tuple[FeatureCache, int]):
    """The held-out normals and the defects serving_choice.selection_set makes from them
    at the student's input size, as trunk features (cached) for the student and for the
    head (``head``: its cache and input size; resized as the daemon's choice does), with
    their masks and labels."""
    from edge_runtime.evaluation.serving_choice import selection_set
    from edge_runtime.inference.preprocess import load_rgb

    rgb, masks, labels = selection_set([load_rgb(p, size) for p in images], seed)
    key = f"select|{hashlib.sha1(rgb.tobytes()).hexdigest()}"  # changes with the generator
    feats = _rgb_features(cache, key, rgb, size)
    head_cache, head_size = head
    head_feats = feats if head_cache is cache else _rgb_features(head_cache, key, rgb, head_size)
    return Samples(feats, head_feats), masks, labels


def _rgb_features(cache: FeatureCache, key: str, rgb, size: int):
    import numpy as np

    from edge_runtime.inference.preprocess import fit_rgb, normalise

    return cache.arrays(f"{key}|{size}", lambda: np.stack([normalise(fit_rgb(image, size))
                                                           for image in rgb]))


def test_set(cache: FeatureCache, data: Path, category: str, size: int, limit):
    import numpy as np

    from edge_runtime.dataset import test_samples
    from edge_runtime.inference.preprocess import load_mask

    samples = test_samples(data, category, limit)
    feats = cache.images([s.image for s in samples])
    masks = np.stack([load_mask(s.mask, size) for s in samples])
    labels = np.array([s.is_anomalous for s in samples])
    return feats, masks, labels


def validation_set(cache: FeatureCache, images: list, size: int, seed: int,
                   structural: float = 0.0, features_size: int = 0):
    """Held-out normals + one synthetic anomaly made from each of them (at ``size``; their
    features at ``features_size``, e.g. the head's, when given)."""
    import numpy as np

    from edge_runtime.evaluation.synthetic import VERSION, synthetic_anomaly
    from edge_runtime.inference.preprocess import fit_rgb, load_rgb, normalise

    normal = cache.images(images)
    key = f"{seed}|{structural}|v{VERSION}|" + "|".join(map(str, images))
    masks_path = cache._path("mask3|" + key)
    features_size = features_size or size

    def make():
        rng = np.random.default_rng(seed)  # the same defects however often it is called
        made = [synthetic_anomaly(load_rgb(p, size), rng, structural) for p in images]
        np.save(masks_path, np.stack([m for _, m in made]))
        return np.stack([normalise(fit_rgb(img, features_size)) for img, _ in made])

    sized = "" if features_size == size else f"|{features_size}"
    anomalous = cache.arrays("synth3|" + key + sized, make)
    if not masks_path.exists():
        make()
    masks = np.concatenate([np.zeros((len(images), size, size), bool), np.load(masks_path)])
    labels = np.r_[np.zeros(len(images), bool), np.ones(len(images), bool)]
    return np.concatenate([normal, anomalous]), masks, labels


def evaluation_data(args: argparse.Namespace, cache: FeatureCache, category: str,
                    images: list, size: int) -> tuple:
    """(training features, evaluation sets, training image paths): the test split, or for
    ``--ablation`` the recipe's part of the training images and the validation set made from
    the rest."""
    if args.ablation:
        rec_idx, val_idx = image_split(len(images), args.seed)
        validation = validation_set(cache, [images[i] for i in val_idx], size, args.seed,
                                    args.structural)
        recipe_images = [images[i] for i in rec_idx]
        return cache.images(recipe_images), [(*validation, True)], recipe_images
    test = test_set(cache, args.data, category, size, args.max_test_images)
    return cache.images(images), [(*test, False)], images


def head_features(args: argparse.Namespace, cache: FeatureCache, category: str,
                  images: list, size: int, head_size: int) -> tuple:
    """The same images as evaluation_data's, as trunk features at the head's input size
    (``cache``: its engine): (training features, evaluation features). Synthetic defects
    are made at the student's ``size`` and resized, as the daemon's choice does."""
    from edge_runtime.dataset import test_samples

    if args.ablation:
        rec_idx, val_idx = image_split(len(images), args.seed)
        held = [images[i] for i in val_idx]
        validation = validation_set(cache, held, size, args.seed, args.structural, head_size)
        return cache.images([images[i] for i in rec_idx]), validation[0]
    samples = test_samples(args.data, category, args.max_test_images)
    return cache.images(images), cache.images([s.image for s in samples])


# ---------------------------------------------------------------- ablation variants
def ablation_recipes(target_steps: int | None) -> list[Recipe]:
    """Each lever alone on top of the papers' recipe, then combined."""
    steps = (("target_steps", target_steps),) if target_steps else ()
    return [
        PAPER,
        Recipe("schedule", train="new", train_overrides=steps),
        Recipe("map", map="new"),
        Recipe("calibration", calibration="frr"),
        replace(NEW, train_overrides=steps),
        # Finer feature maps within the MAC budget (64x64 first tap; trunk output 2.7x bigger)
        replace(NEW, name="layers_4_6_10", train_overrides=steps, geometry=(4, (4, 6, 10), 256)),
        replace(NEW, name="layers_5_8_12", train_overrides=steps, geometry=(5, (5, 8, 12), 256)),
        # The student's map x a per-product PaDiM prior on the teacher's features
        replace(NEW, name="new_prior", train_overrides=steps, prior="full"),
        replace(NEW, name="new_prior_diag", train_overrides=steps, prior="diagonal"),
        # ... paid for by a shorter student (the teacher still runs to 14 for the prior)
        replace(NEW, name="prior_student_6_8_10", train_overrides=steps, prior="full",
                geometry=(6, (6, 8, 10), 256)),
        replace(NEW, name="prior_student_6_10_12", train_overrides=steps, prior="full",
                geometry=(6, (6, 10, 12), 256)),
        # MemKD's normality memory in the student (model/normality_memory.py)
        replace(NEW, name="new_memkd", train_overrides=steps, memory=50),
        # The memory-bank head alone (at the daemon's input size, and at the student's), and
        # the daemon's per-product choice of the two
        replace(NEW, name="head", train_overrides=steps, serve="head"),
        replace(NEW, name="head_256", train_overrides=steps, serve="head", head_size=256),
        replace(NEW, name="select", train_overrides=steps, serve="select"),
    ]


# ---------------------------------------------------------------- through the daemon
def daemon_verdicts(data: Path, category: str, recipe: str, captures: int, parts: int,
                    epochs: int | None = None, serve: str = "auto") -> dict:
    """One daemon on its defaults (``training.recipe`` = ``recipe``, ``heads.serve`` =
    ``serve``): upload, train, inspect."""
    import shutil
    import tempfile
    import time

    from edge_runtime.daemon_process import Daemon
    from edge_runtime.dataset import spread, test_samples, train_images

    root = Path(tempfile.mkdtemp(prefix="edge-quality-"))
    daemon = Daemon(root / "data", env={"EDGE_RUNTIME_TRAINING_RECIPE": recipe,
                                         "EDGE_RUNTIME_HEADS_SERVE": serve})
    samples = test_samples(data, category)
    good = spread([s for s in samples if s.defect == "good"], parts)
    bad = spread([s for s in samples if s.defect != "good"], parts)
    try:
        daemon.start(timeout=120)
        product = daemon.client.post("/products", json={"name": category}).json()
        images = train_images(data, category, captures)
        for start in range(0, len(images), 20):
            assert daemon.upload(product["id"], images[start : start + 20]).is_success
        started = time.monotonic()
        body = {"epochs": epochs} if epochs else {}  # none: as the recipe plans
        job = daemon.client.post(f"/products/{product['id']}/train", json=body).json()
        job = daemon.wait_job(job["id"], timeout=3600)
        assert job["status"] == "succeeded", job
        daemon.wait_live(job["version"], timeout=60)
        choice = (_serving_choice(daemon, product["id"], job["version"]) if serve == "auto"
                  else {"choice": serve})
        learn_seconds = time.monotonic() - started
        verdicts, answered = {}, set()
        for sample in good + bad:
            response = daemon.inspect(category, sample.image)
            assert response.status_code == 200, response.text
            verdicts[sample.image] = response.json()["verdict"]
            answered.add(response.json()["head"])
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    false_rejects = sum(verdicts[s.image] == "reject" for s in good)
    missed = sum(verdicts[s.image] == "pass" for s in bad)
    return {"correct": len(good) + len(bad) - false_rejects - missed,
            "parts": len(good) + len(bad), "false_rejects": false_rejects,
            "missed_defects": missed, "learn_seconds": round(learn_seconds, 1),
            "answered_by": sorted(answered), "serving_choice": choice}


def _serving_choice(daemon, product_id: int, version: str, timeout: float = 300) -> dict:
    """The daemon's choice of student or head for the new version (made in seconds after
    the promotion; until then the head answers): verdicts are counted after it."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heads = daemon.client.get("/status").json()["heads"]["products"]
        choice = heads.get(str(product_id), {}).get("serving_choice") or {}
        if choice.get("version") == version:
            return choice
        time.sleep(0.5)
    raise TimeoutError(f"no serving choice for {version} within {timeout:.0f} s")


def run_daemon(args: argparse.Namespace, categories: list[str]) -> None:
    from tqdm import tqdm

    recipes = args.recipes or ["paper", "new"]
    out: dict = {recipe: {} for recipe in recipes}
    for category in categories:
        for recipe in tqdm(recipes, desc=f"{category} through the daemon", unit="recipe"):
            out[recipe][category] = daemon_verdicts(
                args.data, category, recipe, args.max_train_images or 200, args.parts,
                2 if args.quick else None, args.serve)
            tqdm.write(f"{category} {recipe}: {json.dumps(out[recipe][category])}")
    print_table(["recipe", "category", "correct", "false rejects (good)",
                 "missed defects", "train -> serving s", "answered by"],
                [[recipe, category, f"{r['correct']}/{r['parts']}", r["false_rejects"],
                  r["missed_defects"], r["learn_seconds"], ",".join(r["answered_by"])]
                 for recipe, per in out.items() for category, r in per.items()])
    emit_json(out)


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--categories", nargs="*", default=None)
    parser.add_argument("--quick", action="store_true", help="small subsets, ~1 minute")
    parser.add_argument("--ablation", action="store_true", help="levers on a validation split")
    parser.add_argument("--recipes", nargs="*", default=None, help="only these rows (e.g. new)")
    parser.add_argument("--max-train-images", type=int, default=None)
    parser.add_argument("--max-test-images", type=int, default=None, help="per defect kind")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "edge-runtime-quality")
    parser.add_argument("--structural", type=float, default=0.5,
                        help="--ablation: fraction of synthetic defects that are misplaced "
                             "parts rather than subtle pastes (0: pastes only)")
    parser.add_argument("--target-steps", type=int, default=None,
                        help="override the new schedule's planned steps")
    parser.add_argument("--save-scores", type=Path, default=None,
                        help="write each run's image scores and val-loss history here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--daemon", action="store_true",
                        help="verdicts of test parts through a real daemon per recipe")
    parser.add_argument("--parts", type=int, default=10,
                        help="--daemon: good and defective test parts inspected, each")
    parser.add_argument("--serve", choices=("auto", "student", "head"), default="auto",
                        help="--daemon: heads.serve (who answers for a trained product)")
    args = parser.parse_args()
    if args.daemon:
        from edge_runtime.dataset import list_categories

        if args.quick:
            args.max_train_images, args.parts = args.max_train_images or 40, 4
        run_daemon(args, args.categories or list_categories(args.data))
        return

    import numpy as np
    import torch
    from tqdm import tqdm

    from edge_runtime.dataset import list_categories, train_images
    from edge_runtime.inference.heads import IMAGE_SIZE as HEAD_SIZE
    from edge_runtime.model.torch_model import ModelSpec
    from edge_runtime.training.bundle import ModelBundle

    torch.set_num_threads(args.threads)
    if args.quick:
        args.max_train_images = args.max_train_images or 40
        args.max_test_images = args.max_test_images or 4
    categories = args.categories or list_categories(args.data)
    engines: dict = {}

    def cache_for(spec: ModelSpec) -> FeatureCache:
        """Trunk features differ per geometry: one engine and cache directory each."""
        key = (spec.split, spec.image_size)
        if key not in engines:
            default = ModelSpec.paste()
            tag = "" if key == (default.split, default.image_size) else "s{}_{}".format(*key)
            engines[key] = FeatureCache(args.cache / tag if tag else args.cache,
                                        ModelBundle(spec, seed=args.seed, threads=args.threads))
        return engines[key]

    named = {r.name: r for r in ablation_recipes(args.target_steps or
                                                 (150 if args.quick else None))}
    unknown = set(args.recipes or ()) - set(named)
    if unknown:
        raise SystemExit(f"unknown --recipes {sorted(unknown)}; rows: {', '.join(named)}")
    # the test split: papers' and new recipe unless rows are named; ablation: every row
    default = list(named) if args.ablation else ["paper", "new"]
    recipes = [named[name] for name in args.recipes or default]
    out: dict = {r.name: {} for r in recipes}
    extra: dict = {r.name: {} for r in recipes}
    for category in categories:
        images = train_images(args.data, category, args.max_train_images)
        _TRAINED.clear()
        loaded: dict = {}  # one array per geometry, so rows that train alike share it
        for recipe in tqdm(recipes, desc=category, unit="recipe"):
            spec = recipe.spec()
            cache, size = cache_for(spec), spec.image_size
            if cache not in loaded:
                loaded[cache] = evaluation_data(args, cache, category, images, size)
            train, eval_sets, paths = loaded[cache]
            head_size = recipe.head_size or HEAD_SIZE  # the head's trunk features, if it serves
            head_cache = (cache_for(ModelSpec.paste(head_size))
                          if recipe.serve in ("head", "select") else cache)
            if head_cache is cache:
                head_train, head_eval = train, eval_sets[0][0]
            else:
                if (cache, head_cache) not in loaded:
                    loaded[cache, head_cache] = head_features(args, head_cache, category, images,
                                                              size, head_size)
                head_train, head_eval = loaded[cache, head_cache]
            feats_eval, masks, labels, fast = eval_sets[0]
            rows = run_recipe(recipe, Samples(train, head_train),
                              [(Samples(feats_eval, head_eval), masks, labels, fast)], args.seed,
                              lambda hold, c=cache, p=paths, s=size, h=(head_cache, head_size):
                              selection_features(c, [p[i] for i in hold], s, args.seed, h))
            out[recipe.name][category] = {k: rows[0][k] for k in KEYS}
            extra[recipe.name][category] = {k: rows[0][k] for k in rows[0] if k not in KEYS}
            scores = extra[recipe.name][category].pop("scores")
            if args.save_scores:
                args.save_scores.mkdir(parents=True, exist_ok=True)
                target = args.save_scores / f"{recipe.name}_{category}.json"
                target.write_text(json.dumps(scores))
            rows[0].pop("scores")
            tqdm.write(f"{category} {recipe.name}: " + json.dumps(
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[0].items()}))
    headers = ["recipe", "category", "pixAUROC", "imgAUROC", "AU-PRO", "pixF1", "opImgF1",
               "FRR", "train_s", "MACs(M)", "steps", "epochs", "served"]
    table = []
    for name, per in out.items():
        for category, row in per.items():
            e = extra[name][category]
            table.append([name, category, row["pixel_auroc"], row["image_auroc"], row["aupro"],
                          row["pixel_f1"], row["operational_image_f1"],
                          row["false_reject_rate"], row["train_seconds"],
                          round(row["inference_macs"] / 1e6, 2), e["steps"], e["epochs"],
                          e["served"]])
        if per:
            means = [float(np.nanmean([r[k] for r in per.values()])) for k in KEYS[:6]]
            table.append([name, "MEAN", *means, "", "", "", "", ""])
    print_table(headers, table)
    emit_json(out)


if __name__ == "__main__":
    main()

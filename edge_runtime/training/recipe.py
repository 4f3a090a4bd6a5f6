"""The one training recipe: how a product is learned, whoever asks.

The CLI, the daemon's worker, the tests and the benchmarks all call ``learn_product``:
hold out normal images -> trunk features -> train the student (with replay of earlier
products when the trainer has a store) -> remember the product in the replay store ->
save a complete model directory -> calibrate every product's thresholds on its held-out
normal images with the saved graph, exactly as the daemon will run it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.inference import model_dir as md
from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.inference.thresholds import PAPER_POLICY, CalibrationPolicy, Thresholds
from edge_runtime.model.macs import inference_macs
from edge_runtime.training.continual import ContinualTrainer, TaskData
from edge_runtime.training.loop import Progress, TrainConfig, TrainResult, holdout_split

ImagePath = str | os.PathLike[str]


def _ignore(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """Where the recipe reports to: a progress bar, a jobs table, or nowhere."""

    phase: Callable[[str], None] = _ignore
    features: Callable[[int, int], None] | None = None
    progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None


@dataclass
class LearnedProduct:
    directory: Path
    thresholds: dict[str, Thresholds]  # every product the new model knows
    result: TrainResult
    task: TaskData


RECIPES = ("new", "paper")


def calibration_policy(recipe: str) -> CalibrationPolicy:
    """``paper``: 1.1 x q99 of held-out scores. ``new``: a false-reject rate <= 5% with 90%
    confidence (warned about when there are too few held-out normals to promise it)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    return PAPER_POLICY if recipe == "paper" else CalibrationPolicy()


def heldout_images(images: Sequence[ImagePath], config: TrainConfig) -> list[Path]:
    """The held-out normal images of a product (the same split training used); all of
    them when there are too few to hold any out."""
    _, held = holdout_split(len(images), config.val_fraction, config.seed)
    return [Path(images[i]) for i in held] or [Path(i) for i in images]


def learn_product(
    trainer: ContinualTrainer,
    product: str,
    images: Sequence[ImagePath],
    target: ImagePath,
    earlier: Mapping[str, Sequence[ImagePath]] | None = None,
    training_info: dict | None = None,
    hooks: Hooks | None = None,
    policy: CalibrationPolicy | None = None,
) -> LearnedProduct:
    """Learn ``product`` from its normal ``images`` and write the model to ``target``.

    ``earlier`` maps the products the model already knows to their training images: their
    thresholds are recalibrated on their held-out part, since the student has moved."""
    hooks = hooks or Hooks()
    hooks.phase("features")
    task = trainer.prepare(product, images, hooks.features)
    hooks.phase("training")
    result = trainer.learn(task, hooks.progress, hooks.should_stop)
    hooks.phase("saving")
    bundle = trainer.bundle
    # counted after training: the counting forward's buffers stay off the training peak
    info = {"product": product, "images": len(task.images), "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "seconds": round(result.seconds, 2),
            "macs": inference_macs(bundle.spec, bundle.trunk, bundle.teacher, bundle.student)}
    directory = bundle.save(target, training=info | (training_info or {}))
    hooks.phase("calibrating")
    inferencer = AnomalyInferencer(directory / md.MERGED, bundle.spec.image_size,
                                   bundle.threads, arena=False)  # one pass: no arena
    normals = {name: heldout_images(paths, trainer.config)
               for name, paths in (earlier or {}).items() if name != product and paths}
    normals[product] = task.val_images or task.images
    thresholds = {name: inferencer.calibrate(paths, policy) for name, paths in normals.items()}
    md.set_thresholds(directory, thresholds)
    return LearnedProduct(directory, thresholds, result, task)

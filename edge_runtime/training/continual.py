"""Continual training across products: fine-tuning, replay (any codec), joint training.

Each product is a task. With replay, every step mixes a batch of the current product with
a batch decoded from the store of earlier products; after a product is learned, its
samples are encoded into the store. Avalanche-style split: the store decides *what* is
kept (replay/store.py), this module decides *how* it is replayed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.inference.preprocess import load_rgb
from edge_runtime.replay.codecs import FEATURE_CODECS, make_codec
from edge_runtime.replay.store import MANIFEST, ReplayStore
from edge_runtime.training.bundle import ModelBundle
from edge_runtime.training.loop import (
    Progress,
    StudentTrainer,
    TrainConfig,
    TrainResult,
    holdout_split,
)

STRATEGIES = ("finetune", "joint", "replay")
log = logging.getLogger("edge_runtime.training")


class StrategyError(ValueError):
    """A strategy or codec that cannot work with this model."""


class TrunkReplay:
    """Raw-image replay for PaSTe: decoded images go through the ORT trunk, one batch at a
    time, so the student sees the same trunk features as for live images."""

    def __init__(self, store: ReplayStore, bundle: ModelBundle) -> None:
        self.store, self.bundle = store, bundle

    def __len__(self) -> int:
        return len(self.store)

    def epoch_plan(self, rng: np.random.Generator, steps: int, count: int) -> list[np.ndarray]:
        return self.store.epoch_plan(rng, steps, count)

    def decode(self, indices: np.ndarray) -> np.ndarray:
        return self.bundle.trunk_runner().features(self.store.decode(indices))

    def decode_all(self) -> np.ndarray:
        """Trunk features of every stored image, a few decoded images at a time."""
        runner, total = self.bundle.trunk_runner(), len(self.store)
        return np.concatenate([runner.features(self.store.decode(np.arange(i, min(i + 4, total))))
                               for i in range(0, total, 4)])


@dataclass
class TaskData:
    """One product's training images, split once into train and held-out normal images."""

    product: str
    images: list[Path]
    train_index: np.ndarray
    val_index: np.ndarray
    features: np.ndarray | None = None  # trunk output of every image, computed once

    @property
    def val_images(self) -> list[Path]:
        return [self.images[i] for i in self.val_index]


@dataclass
class ContinualTrainer:
    bundle: ModelBundle
    strategy: str = "replay"
    codec: str = "uint8_channel"
    store_dir: str | os.PathLike[str] | None = None
    capacity: int | None = 100  # samples shared by all products (the papers' setting)
    config: TrainConfig = field(default_factory=TrainConfig)
    codec_params: dict = field(default_factory=dict)
    budget_bytes: int | None = None  # bytes shared by all products (the operator's setting)
    selection: str = "random"  # replay/selection.py
    # the teacher's outputs held per image (loop.TeacherTargets): PaSTe's are smaller than
    # a step's activations; STFPM's (from the raw image on) are not, so it recomputes them.
    # None: PaSTe caches them unless low_memory
    cache_targets: bool | None = None
    # the daemon's training.low_memory: blocks recomputed in backward (loop.StudentTrainer's
    # checkpoint: -170 MB peak, ~25% slower steps) and the teacher run each step instead of
    # its outputs held (~73 MB for 300 samples): with recomputed blocks a step's time is the
    # student's, and the epoch takes the same time (benchmarks/memory.py, "daemon" row)
    low_memory: bool = False
    channels_last: bool = True  # loop.StudentTrainer: the student in NHWC (faster steps)
    store: ReplayStore | None = field(init=False, default=None)
    _seen: list[TaskData] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise StrategyError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.strategy != "replay":
            return
        if self.bundle.spec.mode == "stfpm" and self.codec in FEATURE_CODECS:
            raise StrategyError(
                f"STFPM mode has no frozen trunk, so it can only replay raw images; codec "
                f"{self.codec!r} stores trunk features (use codec 'image')"
            )
        if self.store_dir is None:
            self.store_dir = self.bundle.work_dir / "replay"
        # a store keeps the codec it was made with (its samples are encoded with it): the
        # setting chooses the codec of a new store, never breaks training on an old one
        existing = (Path(self.store_dir) / MANIFEST).exists()
        codec = None if existing else make_codec(self.codec, **self.codec_params)
        self.store = ReplayStore(self.store_dir, codec, self.capacity, self.config.seed,
                                 self.budget_bytes, self.selection)
        if existing and self.store.codec.name != self.codec:
            log.warning("replay store %s keeps its codec %s (setting: %s); delete it to change",
                        self.store_dir, self.store.codec.name, self.codec)
        self.store.set_limits(self.capacity, self.budget_bytes)  # the settings rule

    def prepare(self, product: str, images: Sequence[str | os.PathLike[str]],
                progress: Callable[[int, int], None] | None = None) -> TaskData:
        images = [Path(i) for i in images]
        train_idx, val_idx = holdout_split(len(images), self.config.val_fraction,
                                           self.config.seed)
        task = TaskData(product, images, train_idx, val_idx)
        task.features = self.bundle.features(images, progress)
        return task

    def _replay_source(self):
        if self.store is None or len(self.store) == 0:
            return None
        if self.store.codec.input_kind == "image" and self.bundle.spec.mode == "paste":
            return TrunkReplay(self.store, self.bundle)
        return self.store

    def learn(
        self,
        task: TaskData,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train on one more product, then remember it (replay) or keep it (joint)."""
        assert task.features is not None
        tasks = [*[t for t in self._seen if t.product != task.product], task]
        if self.strategy == "joint":
            train = np.concatenate([t.features[t.train_index] for t in tasks])
            val = np.concatenate([t.features[t.val_index] for t in tasks])
        else:
            train, val = task.features[task.train_index], task.features[task.val_index]
        replay = self._replay_source() if self.strategy == "replay" else None
        cache = self.bundle.spec.mode == "paste" and not self.low_memory \
            if self.cache_targets is None else self.cache_targets
        trainer = StudentTrainer(self.bundle.teacher, self.bundle.student, self.config, cache,
                                 channels_last=self.channels_last, checkpoint=self.low_memory)
        result = trainer.fit(train, val, replay, on_progress, should_stop)
        if self.store is not None:
            self.store.add(task.product, self._store_samples(task))
        self._seen = tasks if self.strategy == "joint" else [*tasks[:-1], _light(task)]
        return result

    @property
    def seen(self) -> tuple[TaskData, ...]:
        """The products learned (or kept) so far, in order."""
        return tuple(self._seen)

    def keep(self, task: TaskData) -> None:
        """Hold an earlier product's data as if it had been learned here: joint training
        learns every kept product at once with the next one (its upper bound)."""
        self._seen = [*[t for t in self._seen if t.product != task.product], task]

    def _store_samples(self, task: TaskData) -> np.ndarray:
        if self.store is not None and self.store.codec.input_kind == "image":
            size = self.bundle.spec.image_size
            return np.stack([load_rgb(task.images[i], size) for i in task.train_index])
        return task.features[task.train_index]


def _light(task: TaskData) -> TaskData:
    """Forget a learned product's features: only joint training may keep them in RAM."""
    return TaskData(task.product, task.images, task.train_index, task.val_index, None)

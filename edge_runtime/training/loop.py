"""The student training loop on cached trunk features (STFPM loss, SGD, early stopping).

Each step takes a batch of the current product and, when a replay source is given, a
batch decoded from the replay memory of earlier products (8 + 8 in the reference setup).
The replay source plans each epoch's batches so that every stored product is replayed in
every epoch, however many products are stored.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from edge_runtime.model.torch_model import Tail, stfpm_loss


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8
    replay_batch_size: int = 8
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    patience: int = 7
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.replay_batch_size < 0:
            raise ValueError("epochs and batch_size must be >= 1, replay_batch_size >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")


@dataclass(frozen=True)
class Progress:
    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the epoch
    steps: int
    loss: float
    val_loss: float | None = None  # set on the last step of an epoch


class ReplaySource(Protocol):
    """Decoded trunk features of earlier products, one epoch of batches at a time."""

    def __len__(self) -> int: ...

    def epoch_batches(self, rng: np.random.Generator, steps: int,
                      count: int) -> Iterator[np.ndarray]: ...


class TrainingCancelled(RuntimeError):
    """should_stop() returned True; the live model is untouched."""


@dataclass
class TrainResult:
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def holdout_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, held-out) indices; at least one held out when count >= 4."""
    order = np.random.default_rng(seed).permutation(count)
    held = int(round(count * fraction))
    if fraction > 0 and count >= 4:
        held = max(held, 1)
    return np.sort(order[held:]), np.sort(order[:held])


class StudentTrainer:
    """Trains ``student`` to mimic the frozen ``teacher`` on trunk features."""

    def __init__(self, teacher: Tail, student: Tail, config: TrainConfig) -> None:
        self.teacher = teacher.eval()
        self.student = student
        self.config = config
        self.optimizer = torch.optim.SGD(
            student.parameters(), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay,
        )

    def _step(self, batch: torch.Tensor) -> float:
        with torch.no_grad():
            target = self.teacher(batch)
        loss = stfpm_loss(target, self.student(batch))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_loss(self, features: np.ndarray, batch_size: int = 16) -> float:
        self.student.eval()
        total = 0.0
        for start in range(0, len(features), batch_size):
            batch = torch.from_numpy(features[start : start + batch_size])
            total += float(stfpm_loss(self.teacher(batch), self.student(batch))) * len(batch)
        return total / max(len(features), 1)

    def fit(
        self,
        features: np.ndarray,
        val_features: np.ndarray | None = None,
        replay: ReplaySource | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train for up to ``epochs``; keep the weights of the best validation epoch."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        result, started = TrainResult(), time.perf_counter()
        best_state, stale = copy.deepcopy(self.student.state_dict()), 0
        steps = math.ceil(len(features) / cfg.batch_size)
        use_replay = replay is not None and len(replay) > 0 and cfg.replay_batch_size > 0
        for epoch in range(1, cfg.epochs + 1):
            self.student.train()
            order, losses = rng.permutation(len(features)), []
            replayed = replay.epoch_batches(rng, steps, cfg.replay_batch_size) \
                if use_replay else None
            for step in range(1, steps + 1):
                if should_stop and should_stop():
                    raise TrainingCancelled("training cancelled")
                index = order[(step - 1) * cfg.batch_size : step * cfg.batch_size]
                batch = features[index]
                if replayed is not None:
                    batch = np.concatenate([batch, next(replayed)])
                losses.append(self._step(torch.from_numpy(np.ascontiguousarray(batch))))
                if on_progress and step < steps:
                    on_progress(Progress(epoch, cfg.epochs, step, steps, losses[-1]))
            train_loss = float(np.mean(losses))
            has_val = val_features is not None and len(val_features) > 0
            val_loss = self.validation_loss(val_features) if has_val else train_loss
            result.history.append({"epoch": epoch, "loss": train_loss, "val_loss": val_loss})
            result.epochs_run = epoch
            if on_progress:
                on_progress(Progress(epoch, cfg.epochs, steps, steps, losses[-1], val_loss))
            if val_loss < result.best_val_loss:
                result.best_val_loss, result.best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy(self.student.state_dict())
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        self.student.load_state_dict(best_state)
        self.student.eval()
        result.seconds = time.perf_counter() - started
        return result

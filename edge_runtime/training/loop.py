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
from collections.abc import Callable
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
    patience: int = 7  # validations without progress before stopping
    val_fraction: float = 0.1
    seed: int = 0
    # schedule: the defaults are the papers' (fixed epochs, constant learning rate)
    target_steps: int = 0  # > 0: epochs from the data size, ceil(target_steps / steps/epoch)
    max_epochs: int = 200  # cap for target_steps on tiny data sets
    lr_schedule: str = "constant"  # or "cosine" (decay to 0 over the planned steps)
    warmup_fraction: float = 0.0  # linear warm-up over this fraction of the planned steps
    min_delta: float = 0.0  # relative val-loss gain that counts as progress
    validations: int = 0  # > 0: validate about this many times per run instead of per epoch

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.replay_batch_size < 0:
            raise ValueError("epochs and batch_size must be >= 1, replay_batch_size >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.lr_schedule not in ("constant", "cosine") or not 0 <= self.warmup_fraction < 1:
            raise ValueError("lr_schedule is 'constant' or 'cosine'; warmup_fraction in [0, 1)")

    @classmethod
    def for_recipe(cls, recipe: str = "new", **overrides) -> TrainConfig:
        """``paper``: 10 epochs of constant SGD 0.4 (under-trained: the best epoch is always
        the last). ``new``: ~600 steps whatever the data size, 5% warm-up then cosine
        decay, validated 20 times, stopped after 4 validations without a 1% gain (chosen
        on a validation split: benchmarks/quality.py --ablation)."""
        if recipe == "paper":
            return cls(**overrides)
        if recipe != "new":
            raise ValueError(f"recipe must be 'new' or 'paper', got {recipe!r}")
        new = {"target_steps": 600, "lr_schedule": "cosine", "warmup_fraction": 0.05,
               "min_delta": 0.01, "validations": 20, "patience": 4}
        return cls(**new | overrides)

    def planned_epochs(self, samples: int) -> int:
        if not self.target_steps:
            return self.epochs
        per_epoch = max(1, math.ceil(samples / self.batch_size))
        return max(1, min(self.max_epochs, math.ceil(self.target_steps / per_epoch)))

    def lr_factor(self, step: int, planned: int) -> float:
        """Multiplier of ``lr`` at 0-based ``step`` of ``planned`` steps."""
        warm = int(self.warmup_fraction * planned)
        if warm and step < warm:
            return (step + 1) / warm
        if self.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, planned - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


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

    def epoch_plan(self, rng: np.random.Generator, steps: int,
                   count: int) -> list[np.ndarray]: ...

    def decode(self, indices: np.ndarray) -> np.ndarray: ...

    def decode_all(self) -> np.ndarray: ...


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


class TeacherTargets:
    """The frozen teacher's outputs for a fixed set of inputs, computed once.

    The teacher never changes and neither do cached trunk features (nor decoded replay
    samples), so every step would recompute the same tensors: holding them costs less RAM
    than one step's activations and saves the teacher's forward pass (about a quarter of a
    step's MACs). Filled in place: a concatenation would hold them twice at the start of
    training."""

    def __init__(self, teacher: Tail, features: np.ndarray, batch_size: int = 16) -> None:
        self.layers: list[torch.Tensor] = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                outputs = self._forward(teacher, features[start : start + batch_size])
                if not self.layers:
                    self.layers = [torch.empty((len(features), *o.shape[1:]))
                                   for o in outputs]
                for layer, output in zip(self.layers, outputs, strict=True):
                    layer[start : start + len(output)] = output

    @staticmethod
    def _forward(teacher: Tail, features: np.ndarray) -> list[torch.Tensor]:
        return teacher(torch.from_numpy(np.ascontiguousarray(features)))

    def take(self, index: np.ndarray) -> list[torch.Tensor]:
        rows = torch.from_numpy(np.asarray(index, dtype=np.int64))
        return [layer.index_select(0, rows) for layer in self.layers]


def _concat_targets(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.cat([x, y]) for x, y in zip(a, b, strict=True)]


class _Recomputed(torch.autograd.Function):
    """One block run without saving its activations, run again in backward (classic
    gradient checkpointing). Not torch.utils.checkpoint, which imports torch._dynamo (+86
    MB). The parameters are inputs only so that the output requires grad; their gradients
    accumulate in the recomputed block's own backward."""

    @staticmethod
    def forward(ctx, block: torch.nn.Module, x: torch.Tensor, *params: torch.Tensor):
        ctx.block = block
        ctx.save_for_backward(x)
        with torch.enable_grad():  # the kernels of the recomputation, so values are equal
            return block(x.detach().requires_grad_(x.requires_grad)).detach()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        x = x.detach().requires_grad_(x.requires_grad)
        with torch.enable_grad():
            out = ctx.block(x)
            # = backward(out, grad), exactly (1.0 * grad); passing grad itself would make
            # autograd import sympy for its shape check (+20 MB)
            (out * grad).sum().backward()
        return (None, x.grad, *([None] * len(ctx.needs_input_grad[2:])))


class MomentumSGD:
    """SGD with momentum and weight decay: torch.optim.SGD's CPU arithmetic, step for step
    (a test holds them bitwise equal). Not torch.optim because building any of its
    optimizers imports torch._dynamo and sympy: +86 MB the training worker kept to its end.
    The learning rate comes with each step (the schedule is ``TrainConfig.lr_factor``)."""

    def __init__(self, params, momentum: float, weight_decay: float) -> None:
        self.params = list(params)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = param.grad
            if self.weight_decay:
                grad = grad.add(param, alpha=self.weight_decay)
            if self.momentum:
                buffer = self.buffers[index]
                if buffer is None:
                    buffer = self.buffers[index] = grad.detach().clone()
                else:
                    buffer.mul_(self.momentum).add_(grad)
                grad = buffer
            param.add_(grad, alpha=-lr)


class StudentTrainer:
    """Trains ``student`` to mimic the frozen ``teacher`` on trunk features.

    ``cache_targets`` (default) computes the teacher's outputs once per training image and
    per replayed sample; False recomputes them every step (the reference; and with
    ``checkpoint``, the daemon's low-memory mode: as fast, without holding them).
    ``channels_last`` (default) trains the student in NHWC: the convolution backward, two
    thirds of an NCHW step, is the depthwise kernels', which oneDNN runs far faster in
    NHWC (2-2.6x per epoch on x86). Losses equal NCHW's to ~1e-5 per step; rounding drifts
    over epochs, within noise of the detection figures (continual replay row, full data,
    same seed: final pixel F1 0.4974 vs 0.4962). All variants draw the same batches."""

    def __init__(self, teacher: Tail, student: Tail, config: TrainConfig,
                 cache_targets: bool = True, channels_last: bool = True,
                 checkpoint: bool = False) -> None:
        if checkpoint and hasattr(student, "auxiliary_loss"):
            raise ValueError("a student with a normality memory trains without checkpointing")
        self.teacher = teacher.eval()
        self.student = student
        self.config = config
        self.cache_targets = cache_targets
        self.checkpoint = checkpoint
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.optimizer = MomentumSGD(student.parameters(), config.momentum, config.weight_decay)

    def _step(self, lr: float, batch: torch.Tensor,
              target: list[torch.Tensor] | None = None) -> float:
        batch = batch.contiguous(memory_format=self.memory_format)
        if target is None:
            with torch.no_grad():
                target = self.teacher(batch)
        if not self.checkpoint:
            loss = stfpm_loss(target, self.student(batch))
            auxiliary = getattr(self.student, "auxiliary_loss", None)  # MemKD's memory terms
            if auxiliary is not None:
                loss = loss + auxiliary(target)
            self.optimizer.zero_grad()
            loss.backward()
        else:
            loss = stfpm_loss(target, self._checkpointed(batch))
            self.optimizer.zero_grad()
            stats = [b.clone() for b in self.student.buffers()]
            loss.backward()  # recomputes each block's forward, BN statistics included
            for buffer, kept in zip(self.student.buffers(), stats, strict=True):
                buffer.copy_(kept)  # so BN running statistics move once per step, as before
        self.optimizer.step(lr)
        return float(loss.detach())

    def _checkpointed(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The student's forward keeping only each block's input for backward (opt-in
        ``checkpoint``): saved activations ~256 -> ~40 MB at batch 16, one more student
        forward per step."""
        features, x = [], batch
        for index, layer in enumerate(self.student.layers):
            x = _Recomputed.apply(layer, x, *layer.parameters())
            if index in self.student.taps:
                features.append(x)
        return features

    @torch.no_grad()
    def validation_loss(self, features: np.ndarray, batch_size: int = 16,
                        targets: TeacherTargets | None = None) -> float:
        self.student.eval()
        total = 0.0
        for start in range(0, len(features), batch_size):
            batch = torch.from_numpy(features[start : start + batch_size])
            target = targets.take(np.arange(start, start + len(batch))) if targets \
                else self.teacher(batch)
            total += float(stfpm_loss(target, self.student(batch))) * len(batch)
        return total / max(len(features), 1)

    def _batches(self, features: np.ndarray, replay: ReplaySource | None):
        """A function (index, picks) -> (batch, targets or None) for one training step;
        ``picks`` are the replay rows the epoch's plan drew for this step (None: no replay)."""
        if not self.cache_targets:
            def recomputed(index, picks):
                batch = features[index]
                if picks is not None:
                    batch = np.concatenate([batch, replay.decode(picks)])
                return torch.from_numpy(np.ascontiguousarray(batch)), None
            return recomputed
        targets = TeacherTargets(self.teacher, features)
        if replay is not None:
            replayed = np.ascontiguousarray(replay.decode_all())
            replay_targets = TeacherTargets(self.teacher, replayed)

        def cached(index, picks):
            batch, target = features[index], targets.take(index)
            if picks is not None:
                batch = np.concatenate([batch, replayed[picks]])
                target = _concat_targets(target, replay_targets.take(picks))
            return torch.from_numpy(np.ascontiguousarray(batch)), target
        return cached

    def fit(
        self,
        features: np.ndarray,
        val_features: np.ndarray | None = None,
        replay: ReplaySource | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train for up to the planned epochs; keep the weights of the best validation."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        result, started = TrainResult(), time.perf_counter()
        self.student.to(memory_format=self.memory_format)
        best_state, stale = copy.deepcopy(self.student.state_dict()), 0
        steps = math.ceil(len(features) / cfg.batch_size)
        epochs = cfg.planned_epochs(len(features))
        every = max(1, round(epochs / cfg.validations)) if cfg.validations else 1
        done = 0  # steps taken: the learning rate of step i is lr * lr_factor(i, planned)
        use_replay = replay is not None and len(replay) > 0 and cfg.replay_batch_size > 0
        next_batch = self._batches(features, replay if use_replay else None)
        has_val = val_features is not None and len(val_features) > 0
        val_targets = TeacherTargets(self.teacher, val_features) \
            if has_val and self.cache_targets else None
        for epoch in range(1, epochs + 1):
            self.student.train()
            order, losses = rng.permutation(len(features)), []
            # every stored product replayed each epoch (replay/store.py epoch_plan)
            plan = replay.epoch_plan(rng, steps, cfg.replay_batch_size) if use_replay else None
            for step in range(1, steps + 1):
                if should_stop and should_stop():
                    raise TrainingCancelled("training cancelled")
                index = order[(step - 1) * cfg.batch_size : step * cfg.batch_size]
                picks = plan[step - 1] if plan is not None else None
                lr = cfg.lr * cfg.lr_factor(done, epochs * steps)
                losses.append(self._step(lr, *next_batch(index, picks)))
                done += 1
                if on_progress and step < steps:
                    on_progress(Progress(epoch, epochs, step, steps, losses[-1]))
            train_loss = float(np.mean(losses))
            if epoch % every and epoch != epochs:
                if on_progress:
                    on_progress(Progress(epoch, epochs, steps, steps, losses[-1]))
                continue
            val_loss = self.validation_loss(val_features, targets=val_targets) \
                if has_val else train_loss
            result.history.append({"epoch": epoch, "loss": train_loss, "val_loss": val_loss})
            result.epochs_run = epoch
            if on_progress:
                on_progress(Progress(epoch, epochs, steps, steps, losses[-1], val_loss))
            progressed = val_loss < result.best_val_loss * (1 - cfg.min_delta)
            if val_loss < result.best_val_loss:
                result.best_val_loss, result.best_epoch = val_loss, epoch
                best_state = copy.deepcopy(self.student.state_dict())
            stale = 0 if progressed else stale + 1
            if stale >= cfg.patience:
                break
        self.student.to(memory_format=torch.contiguous_format)
        self.student.load_state_dict(best_state)
        self.student.eval()
        result.seconds = time.perf_counter() - started
        return result

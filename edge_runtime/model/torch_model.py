"""The PaSTe / STFPM networks as plain torch modules, apart from any training glue.

PaSTe shares a frozen trunk (layers 0..split-1) between a frozen teacher tail and a
trainable student tail (layers split..max(feature_layers)). STFPM is the same with
split = 0: no shared trunk, a full teacher and a full student.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_runtime.model.backbone import build_mcunet, numbered_layers
from edge_runtime.model.weights import BackboneFiles

MODES = ("paste", "stfpm")


@dataclass(frozen=True)
class ModelSpec:
    """Where the network is split and which layers the anomaly map compares."""

    mode: str = "paste"
    split: int = 6
    feature_layers: tuple[int, ...] = (6, 10, 14)
    image_size: int = 256

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        layers = tuple(self.feature_layers)
        if not layers or sorted(layers) != list(layers) or layers[0] < self.split:
            raise ValueError("feature_layers must be ascending and at or after the split")
        if layers[-1] > 17 or self.split < 0:
            raise ValueError("layers are numbered 0..17")
        if self.image_size % 32:
            raise ValueError("image_size must be a multiple of 32")
        object.__setattr__(self, "feature_layers", layers)

    @classmethod
    def paste(cls, image_size: int = 256) -> ModelSpec:
        return cls("paste", 6, (6, 10, 14), image_size)

    @classmethod
    def stfpm(cls, image_size: int = 256) -> ModelSpec:
        return cls("stfpm", 0, (2, 6, 14), image_size)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(data["mode"], data["split"], tuple(data["feature_layers"]), data["image_size"])

    def to_dict(self) -> dict:
        return asdict(self) | {"feature_layers": list(self.feature_layers)}


class Trunk(nn.Module):
    """Frozen shared layers; the identity in STFPM mode, where the 'features' are the image."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Tail(nn.Module):
    """Layers split..last that return the feature maps of the chosen layers."""

    def __init__(self, layers: Sequence[nn.Module], split: int, feature_layers: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.taps = [layer - split for layer in feature_layers]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in self.taps:
                features.append(x)
        return features


def _tail_layers(net: nn.Module, spec: ModelSpec) -> list[nn.Module]:
    return numbered_layers(net)[spec.split : spec.feature_layers[-1] + 1]


def build_parts(
    spec: ModelSpec, files: BackboneFiles | None = None, seed: int = 0
) -> tuple[Trunk, Tail, Tail]:
    """Trunk and teacher tail from the ImageNet weights; a randomly initialised student tail."""
    teacher_net = build_mcunet(files, pretrained=True)
    trunk = Trunk(copy.deepcopy(numbered_layers(teacher_net)[: spec.split])).eval()
    teacher = Tail(_tail_layers(teacher_net, spec), spec.split, spec.feature_layers).eval()
    teacher.requires_grad_(False)
    torch.manual_seed(seed)
    student_net = build_mcunet(files, pretrained=False)
    student = Tail(_tail_layers(student_net, spec), spec.split, spec.feature_layers)
    return trunk, teacher, student


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, p=2.0, dim=1)


def layer_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """0.5 * ||n(Ft) - n(Fs)||^2 per position, shape (N, 1, h, w)."""
    diff = _normalise(teacher) - _normalise(student)
    return 0.5 * (diff * diff).sum(dim=1, keepdim=True)


def stfpm_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean per-position distance (the STFPM objective)."""
    return sum(layer_distance(t, s).mean() for t, s in zip(teacher, student, strict=True))


def anomaly_map(
    teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], size: int
) -> torch.Tensor:
    """Per-layer distances upsampled (bilinear) to the input size and multiplied."""
    result = None
    for t, s in zip(teacher, student, strict=True):
        layer_map = F.interpolate(
            layer_distance(t, s), size=(size, size), mode="bilinear", align_corners=False
        )
        result = layer_map if result is None else result * layer_map
    assert result is not None
    return result


class PasteModel(nn.Module):
    """Image in, (anomaly map, image score) out: the graph exported to ONNX."""

    def __init__(self, spec: ModelSpec, trunk: Trunk, teacher: Tail, student: Tail) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.teacher = teacher
        self.student = student

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(image)
        amap = anomaly_map(self.teacher(features), self.student(features), self.spec.image_size)
        return amap, amap.amax(dim=(1, 2, 3))

"""The PaSTe / STFPM networks as plain torch modules, apart from any training glue.

PaSTe shares a frozen trunk (layers 0..split-1) between a frozen teacher tail and a
trainable student tail (layers split..max(feature_layers)). STFPM is the same with
split = 0: no shared trunk, a full teacher and a full student.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_runtime.model.backbone import build_mcunet, numbered_layers
from edge_runtime.model.weights import BackboneFiles

MODES = ("paste", "stfpm")
RECIPES = ("new", "paper")  # "paper": the papers' map (product at full size, max pixel)
# The new map (chosen on a validation split, benchmarks/quality.py --ablation): compose at
# 64x64, Gaussian smoothing (sigma 4 input pixels, as STFPM), image score = mean of the top
# 1% of map pixels. About 57k extra MACs at 256 px (0.03%).
NEW_MAP = {"map_size": 64, "map_sigma": 4.0, "score_topk": 0.01}
PAPER_MAP = {"map_size": 0, "map_sigma": 0.0, "score_topk": 0.0}


@dataclass(frozen=True)
class ModelSpec:
    """Where the network is split and which layers the anomaly map compares."""

    mode: str = "paste"
    split: int = 6
    feature_layers: tuple[int, ...] = (6, 10, 14)
    image_size: int = 256
    map_size: int = NEW_MAP["map_size"]  # compose the map at this size (0: input size)
    map_sigma: float = NEW_MAP["map_sigma"]  # Gaussian smoothing, in input pixels (0: none)
    score_topk: float = NEW_MAP["score_topk"]  # score = mean of this top fraction (0: max)

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
        if self.map_size < 0 or self.map_sigma < 0 or not 0 <= self.score_topk < 1:
            raise ValueError("map_size, map_sigma >= 0 and score_topk in [0, 1)")
        object.__setattr__(self, "feature_layers", layers)

    @classmethod
    def paste(cls, image_size: int = 256, recipe: str = "new") -> ModelSpec:
        return cls("paste", 6, (6, 10, 14), image_size, **_map(recipe))

    @classmethod
    def stfpm(cls, image_size: int = 256, recipe: str = "new") -> ModelSpec:
        return cls("stfpm", 0, (2, 6, 14), image_size, **_map(recipe))

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        """Manifests written before the map options existed used the papers' map."""
        extra = {k: data.get(k, v) for k, v in PAPER_MAP.items()}
        return cls(data["mode"], data["split"], tuple(data["feature_layers"]), data["image_size"],
                   **extra)

    def to_dict(self) -> dict:
        return asdict(self) | {"feature_layers": list(self.feature_layers)}


def _map(recipe: str) -> dict:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    return NEW_MAP if recipe == "new" else PAPER_MAP


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
                x = self.after_tap(len(features) - 1, x)
        return features

    def after_tap(self, tap: int, x: torch.Tensor) -> torch.Tensor:
        """What the next layer reads after tapped layer ``tap``: the feature itself here
        (model/normality_memory.py adds what its memory recalls)."""
        return x


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


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    return kernel / kernel.sum()


class MapHead(nn.Module):
    """Per-layer distances -> anomaly map (input size) and image score, as ``spec`` says.

    The papers' map: product of the layers upsampled to the input size, score = its max.
    The new map composes at ``map_size`` (cheap), smooths it with a separable Gaussian
    (STFPM's blur; it damps single-position noise that a max would pick up), scores the
    mean of the top ``score_topk`` fraction, then upsamples the map for display.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.size = spec.map_size or spec.image_size
        self.topk = max(1, round(spec.score_topk * self.size * self.size))  # static for ONNX
        sigma = spec.map_sigma * self.size / spec.image_size
        self.register_buffer("kernel", gaussian_kernel(sigma) if sigma > 0 else torch.ones(0),
                             persistent=False)

    @property
    def macs(self) -> int:
        """The separable blur: two 1-D convolutions over the map (the rest is no MAC)."""
        return 2 * self.size * self.size * len(self.kernel)

    def smooth(self, amap: torch.Tensor) -> torch.Tensor:
        pad = len(self.kernel) // 2
        amap = F.conv2d(F.pad(amap, (pad, pad, 0, 0), mode="replicate"),
                        self.kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(amap, (0, 0, pad, pad), mode="replicate"),
                        self.kernel.view(1, 1, -1, 1))

    def forward(self, teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        amap = anomaly_map(teacher, student, self.size)
        if len(self.kernel):
            amap = self.smooth(amap)
        flat = amap.flatten(1)
        if self.spec.score_topk > 0:
            score = flat.topk(self.topk, dim=1).values.mean(dim=1)
        else:
            score = flat.amax(dim=1)
        if self.size != self.spec.image_size:
            size = (self.spec.image_size, self.spec.image_size)
            amap = F.interpolate(amap, size=size, mode="bilinear", align_corners=False)
        return amap, score


class PasteModel(nn.Module):
    """Image in, (anomaly map, image score) out: the graph exported to ONNX."""

    def __init__(self, spec: ModelSpec, trunk: Trunk, teacher: Tail, student: Tail) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.teacher = teacher
        self.student = student
        self.head = MapHead(spec)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(image)
        return self.head(self.teacher(features), self.student(features))

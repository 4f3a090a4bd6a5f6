"""Export the merged PaSTe graph (image -> map, score) and the trunk alone to ONNX."""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from edge_runtime.atomic import atomic_path
from edge_runtime.model.torch_model import PasteModel, Tail, Trunk

OPSET = 17


def _export(module: nn.Module, example: torch.Tensor, target, inputs, outputs) -> None:
    dynamic = {name: {0: "batch"} for name in (*inputs, *outputs)}
    module = module.eval()
    with atomic_path(target) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(tmp), input_names=list(inputs), output_names=list(outputs),
            dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )


def export_merged(model: PasteModel, target: str | os.PathLike[str]) -> None:
    """One graph, so ORT runs trunk, both tails and the map without leaving C++."""
    size = model.spec.image_size
    _export(model, torch.zeros(1, 3, size, size), target, ["image"], ["anomaly_map", "score"])


def export_trunk(trunk: Trunk, image_size: int, target: str | os.PathLike[str]) -> None:
    """The frozen trunk alone: training runs it once per image and caches its output."""
    example = torch.zeros(1, 3, image_size, image_size)
    _export(_Named(trunk), example, target, ["image"], ["features"])


def export_features(
    trunk: Trunk, teacher: Tail, feature_layers: tuple[int, ...], image_size: int,
    target: str | os.PathLike[str],
) -> list[str]:
    """Trunk + frozen teacher tail: one output per tapped layer (``layer6``, ...) and
    ``patches``, the memory-bank heads' patch embeddings (see PatchEmbedding).

    Nothing in it is trained, so a head can serve a product from this graph before any
    student exists. Returns the output names."""
    outputs = [f"layer{layer}" for layer in feature_layers] + ["patches"]
    example = torch.zeros(1, 3, image_size, image_size)
    _export(PatchEmbedding(trunk, teacher), example, target, ["image"], outputs)
    return outputs


class PatchEmbedding(nn.Module):
    """Each tapped layer averaged over 3x3 neighbourhoods (PatchCore's local aggregation),
    resampled to the first layer's grid, L2-normalised per layer so that no layer's raw
    scale dominates a distance, weighted by mean width / its width, and concatenated:
    (N, sum of channels, grid, grid). The weights (2.22, 1.33, 0.56 for 24, 40 and 96
    channels) let the narrow, finer layers count for more in the heads' distances and
    random projections than one unit vector each. Chosen on the validation split among
    (mean width / width)^k for k = 0, 0.5, 1, 2 (README). Done here, in ORT,
    because the same in numpy costs more than the network on a board."""

    def __init__(self, trunk: Trunk, teacher: Tail) -> None:
        super().__init__()
        self.trunk, self.teacher = trunk, teacher

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers = self.teacher(self.trunk(image))
        grid = layers[0].shape[-2:]
        mean_width = sum(layer.shape[1] for layer in layers) / len(layers)
        parts = []
        for layer in layers:
            part = F.avg_pool2d(layer, 3, stride=1, padding=1, count_include_pad=False)
            if part.shape[-2:] != grid:
                part = F.interpolate(part, size=grid, mode="bilinear", align_corners=False)
            weight = mean_width / layer.shape[1]
            parts.append(F.normalize(part, p=2.0, dim=1, eps=1e-6) * weight)
        return (*layers, torch.cat(parts, dim=1))


class _Named(nn.Module):
    """Wraps the trunk so an empty (STFPM) trunk still exports a graph with one output."""

    def __init__(self, trunk: Trunk) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.trunk(image) * 1.0 if len(self.trunk.layers) == 0 else self.trunk(image)

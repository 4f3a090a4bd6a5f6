"""Export the merged PaSTe graph (image -> map, score) and the trunk alone to ONNX."""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from edge_runtime.atomic import atomic_path
from edge_runtime.model.torch_model import PasteModel, Trunk

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


class _Named(nn.Module):
    """Wraps the trunk so an empty (STFPM) trunk still exports a graph with one output."""

    def __init__(self, trunk: Trunk) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.trunk(image) * 1.0 if len(self.trunk.layers) == 0 else self.trunk(image)

"""MemKD's normality recall memory in the student tail, as a measured student option.

MemKD (../shared/papers/memkd-memory-guided-distillation.md) gives the student, after a
tapped stage, L key/value items: each position's feature recalls a softmax(cosine to the
keys)-weighted mix of the values, which the next stage reads beside the feature. The
values are pulled toward the teacher's features of other normal images (normality
memorisation) and the keys kept apart from the values (orthogonality), so that what the
next stage sees is "normal", and a defect's discrepancy grows downstream.

At edge cost the recalled feature is added to the query with a learned per-channel gain
(zero at start) instead of concatenated: the MCUNet layers keep their shapes and the only
MACs added are the recall's two (L x C) products per position. The exemplars are the
previous step's teacher features (other normal images, as the paper's randomly drawn set,
without a second teacher pass). Benchmarked by ``quality.py --ablation`` (row
``new_memkd``); not served by the daemon (README says why).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge_runtime.model.torch_model import Tail

ITEMS = 50  # L, as in the paper
MEMORISATION_WEIGHT = 0.1  # lambda_1
ORTHOGONALITY_WEIGHT = 0.1  # lambda_2


class NormalityMemory(nn.Module):
    """L key/value pairs over C channels: query (N, C, H, W) -> recalled (N, C, H, W)."""

    def __init__(self, channels: int, items: int = ITEMS, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.keys = nn.Parameter(torch.randn(items, channels, generator=generator))
        self.values = nn.Parameter(torch.randn(items, channels, generator=generator) * 0.1)
        self.gain = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def _read(self, features: torch.Tensor, addresses: torch.Tensor) -> torch.Tensor:
        """softmax over items of cos(feature, address), then the weighted sum of values."""
        n, c, h, w = features.shape
        flat = F.normalize(features.flatten(2).transpose(1, 2), dim=-1)  # (N, HW, C)
        weights = torch.softmax(flat @ F.normalize(addresses, dim=-1).T, dim=-1)
        return (weights @ self.values).transpose(1, 2).reshape(n, c, h, w)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return query + self.gain * self._read(query, self.keys)

    def memorisation_loss(self, exemplars: torch.Tensor) -> torch.Tensor:
        """Teacher features of normal exemplars rebuilt from the values (addressed by the
        values themselves): squared error per position, averaged."""
        rebuilt = self._read(exemplars, self.values)
        return (exemplars - rebuilt).pow(2).sum(dim=1).mean()

    def orthogonality_loss(self) -> torch.Tensor:
        """Mean squared cosine between keys and values (the paper's pairwise term, squared
        so that it asks for orthogonal rather than opposite items)."""
        cos = F.normalize(self.keys, dim=-1) @ F.normalize(self.values, dim=-1).T
        return cos.pow(2).mean()

    def macs(self, positions: int) -> int:
        """Similarities to the keys and the weighted sum of values (model/macs.py counts it)."""
        items, channels = self.keys.shape
        return 2 * positions * items * channels


class MemoryTail(Tail):
    """A student tail with a NormalityMemory after every tapped layer but the last."""

    def __init__(self, layers: Sequence[nn.Module], split: int, feature_layers: Sequence[int],
                 channels: Sequence[int], items: int = ITEMS, seed: int = 0) -> None:
        super().__init__(layers, split, feature_layers)
        self.memories = nn.ModuleList(NormalityMemory(c, items, seed + i)
                                      for i, c in enumerate(channels[:-1]))
        self._exemplars: list[torch.Tensor] | None = None

    def after_tap(self, tap: int, x: torch.Tensor) -> torch.Tensor:
        return self.memories[tap](x) if tap < len(self.memories) else x

    def auxiliary_loss(self, teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        """lambda_1 memorisation (on the previous step's teacher features) + lambda_2
        orthogonality; the current targets become the next step's exemplars."""
        exemplars, self._exemplars = self._exemplars, [t.detach() for t in teacher]
        loss = ORTHOGONALITY_WEIGHT * sum(m.orthogonality_loss() for m in self.memories)
        if exemplars is not None:
            loss = loss + MEMORISATION_WEIGHT * sum(
                m.memorisation_loss(e) for m, e in zip(self.memories, exemplars, strict=False))
        return loss


def with_memory(student: Tail, teacher: Tail, trunk_output: torch.Tensor,
                items: int = ITEMS, seed: int = 0) -> MemoryTail:
    """The same (untrained) student layers with memories sized from the teacher's taps."""
    with torch.no_grad():
        taps = teacher(trunk_output[:1])
    # taps are already relative to the split: split 0 keeps them as they are
    return MemoryTail(list(student.layers), 0, student.taps, [t.shape[1] for t in taps],
                      items, seed)

"""Multiply-accumulates per part: inference from forward hooks on convolutions and linear
layers; a training step by torch's FlopCounterMode (MACs = FLOPs / 2), which also sees
the backward pass.

Counts convolutions and matmuls, as the papers do; element-wise ops are not MACs.
torch's stock formula for convolution_backward ignores ``groups`` when it counts the
weight gradient, which inflates depthwise convolutions (all of MCUNet's 3x3/5x5/7x7
layers) about 50-fold; one corrected formula replaces it here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edge_runtime.model.normality_memory import NormalityMemory
from edge_runtime.model.torch_model import MapHead, ModelSpec, Tail, Trunk, stfpm_loss


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation,
                         transposed, output_padding, groups, output_mask, **kwargs) -> int:
    """Each requested gradient (input, weight) costs what the forward convolution costs."""
    forward = 2 * prod(grad_out_shape) * prod(w_shape[1:])  # w_shape[1] is C_in / groups
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _count(fn: Callable[[], object]) -> int:
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops()) // 2


def _forward_macs(module: nn.Module, x: torch.Tensor) -> tuple[int, object]:
    """MACs of convolutions, linear layers and MemKD's recall (two matrix products per
    position, which no layer hook would see) in one forward pass, from module hooks.

    The same count as FlopCounterMode for a forward pass, without it: its first use costs
    the training worker ~80 MB of RSS (torch's dispatch and decomposition tables)."""
    total = 0

    def count(layer: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            total += output.numel() * layer.in_channels // layer.groups * prod(layer.kernel_size)
        elif isinstance(layer, NormalityMemory):
            total += len(output) * layer.macs(output.shape[-2] * output.shape[-1])
        else:
            total += output.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in module.modules()
             if isinstance(m, nn.Conv2d | nn.Linear | NormalityMemory)]
    try:
        out = module(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total, out


def inference_macs(spec: ModelSpec, trunk: Trunk, teacher: Tail, student: Tail) -> dict[str, int]:
    """MACs of one image through trunk, teacher tail, student tail and the map head (its
    Gaussian smoothing is a convolution; the papers' map has none, so 0 there)."""
    image = torch.zeros(1, 3, spec.image_size, spec.image_size)
    head = MapHead(spec)
    with torch.no_grad():
        trunk_macs, features = _forward_macs(trunk, image)
        parts = {
            "trunk": trunk_macs,
            "teacher_tail": _forward_macs(teacher, features)[0],
            "student_tail": _forward_macs(student, features)[0],
            "map": head.macs,
        }
    return parts | {"total": sum(parts.values())}


def features_graph_macs(trunk: Trunk, teacher: Tail, image_size: int) -> int:
    """MACs of the memory-bank heads' features graph (onnx_export.PatchEmbedding): trunk,
    teacher tail, each tap's 3x3 averaging and its bilinear resampling to the first tap's
    grid (what the head then does in numpy is Head.scoring_macs)."""
    image = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        trunk_macs, features = _forward_macs(trunk, image)
        teacher_macs, taps = _forward_macs(teacher, features)
    return int(trunk_macs + teacher_macs + embedding_macs(taps))


def embedding_macs(taps: Sequence[torch.Tensor]) -> int:
    """PatchEmbedding's work on the teacher's taps: 3x3 averaging, then bilinear resampling
    (4 MACs per value) of each tap not on the first one's grid."""
    grid = taps[0].shape[-1]
    pooling = sum(t[0].numel() * 9 for t in taps)
    resample = sum(t.shape[1] * grid * grid * 4 for t in taps if t.shape[-1] != grid)
    return int(pooling + resample)


def training_step_macs(
    spec: ModelSpec, trunk: Trunk, teacher: Tail, student: Tail, batch_size: int = 8
) -> dict[str, int]:
    """MACs of one training step on cached trunk features, per sample and per step.

    The trunk is not in the step: its output is computed once per image and cached.
    """
    with torch.no_grad():
        features = trunk(torch.zeros(batch_size, 3, spec.image_size, spec.image_size))
    was_training = student.training
    student.train()

    def step() -> None:
        with torch.no_grad():
            target = teacher(features)
        stfpm_loss(target, student(features)).backward()

    teacher_macs = _count(lambda: teacher(features))
    total = _count(step)
    student.zero_grad(set_to_none=True)
    student.train(was_training)
    return {
        "teacher_tail_forward": teacher_macs,
        "student_tail_forward_backward": total - teacher_macs,
        "per_step": total,
        "per_sample": total // batch_size,
        "batch_size": batch_size,
        "trunk_once_per_image": inference_macs(spec, trunk, teacher, student)["trunk"],
    }

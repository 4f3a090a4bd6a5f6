"""Build MCUNet-in3 and expose it as the papers' numbered layers.

Layer i is ``blocks[i]``, with ``first_conv`` folded into layer 0; the last layer is 17.
This numbering reproduces the papers' MAC and memory figures.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from edge_runtime.model.weights import BackboneFiles, resolve_backbone_files


def _network_class():
    try:
        from mcunet.tinynas.nn.networks import ProxylessNASNets
    except ImportError as exc:  # pragma: no cover - install problem, not a code path
        raise RuntimeError(
            "the 'mcunet' package is missing: install it with 'pip install --no-deps mcunet'"
        ) from exc
    return ProxylessNASNets


def build_mcunet(files: BackboneFiles | None = None, pretrained: bool = True) -> nn.Module:
    """The full classifier; random initialisation (torch defaults) when not pretrained."""
    files = files or resolve_backbone_files()
    config = json.loads(files.config.read_text())
    net = _network_class().build_from_config(config)
    if pretrained:
        state = torch.load(files.weights, map_location="cpu", weights_only=False)
        net.load_state_dict(state.get("state_dict", state))
    return net.eval()


def numbered_layers(net: nn.Module) -> list[nn.Module]:
    """The 18 feature layers in the papers' numbering (first_conv folded into layer 0)."""
    blocks = list(net.blocks)
    return [nn.Sequential(net.first_conv, blocks[0]), *blocks[1:]]

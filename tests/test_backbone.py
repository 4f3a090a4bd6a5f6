import numpy as np
import pytest
import torch

from edge_runtime.inference.preprocess import normalise
from edge_runtime.model.backbone import build_mcunet, numbered_layers
from edge_runtime.model.weights import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    WeightsNotFoundError,
    resolve_backbone_files,
)


def test_real_weights_classify_a_cat(backbone_files):
    from PIL import Image
    from skimage.data import chelsea

    net = build_mcunet(backbone_files)
    rgb = np.asarray(Image.fromarray(chelsea()).resize((176, 176), Image.BILINEAR))
    with torch.no_grad():
        logits = net(torch.from_numpy(normalise(rgb))[None])
    top = int(logits.argmax())
    assert 281 <= top <= 285, f"chelsea classified as ImageNet class {top}"


def test_numbered_layers_fold_first_conv_into_layer_0(backbone_files):
    layers = numbered_layers(build_mcunet(backbone_files))
    assert len(layers) == 18
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for layer in layers[:6]:
            x = layer(x)
    assert tuple(x.shape) == (1, 24, 28, 28)


def test_missing_weights_give_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr("edge_runtime.model.weights.MCUNET_CACHE", tmp_path / "cache")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_backbone_files(tmp_path / "nowhere", allow_download=False)
    message = str(info.value)
    assert CONFIG_FILE in message and WEIGHTS_FILE in message
    assert "EDGE_RUNTIME_WEIGHTS_DIR" in message


def test_explicit_dir_wins_over_cache(tmp_path, backbone_files, monkeypatch):
    import shutil

    for f in (backbone_files.config, backbone_files.weights):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setattr("edge_runtime.model.weights.MCUNET_CACHE", backbone_files.config.parent)
    found = resolve_backbone_files(tmp_path, allow_download=False)
    assert found.weights == tmp_path / WEIGHTS_FILE

"""Shared fixtures: the real weights and data from ../shared (or the mcunet cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_RUNTIME_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"

os.environ.setdefault("EDGE_RUNTIME_WEIGHTS_DIR", str(SHARED / "models" / "mcunet"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "bottle" / "train" / "good").is_dir(), f"evaluation data missing at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def backbone_files():
    from edge_runtime.weights import resolve_backbone_files

    return resolve_backbone_files(allow_download=False)


@pytest.fixture(scope="session")
def bottle_model(tmp_path_factory, data_root, backbone_files) -> Path:
    """A small but real PaSTe training on bottle, shared by the tests that need a model."""
    from edge_runtime import model_dir as md
    from edge_runtime.dataset import train_images
    from edge_runtime.engine import Engine, calibrate_product
    from edge_runtime.training import TrainConfig, holdout_split

    images = train_images(data_root, "bottle", limit=40)
    config = TrainConfig(epochs=3, seed=0)
    train_idx, val_idx = holdout_split(len(images), config.val_fraction, config.seed)
    engine = Engine(files=backbone_files, seed=0)
    features = engine.features(images)
    engine.train(features[train_idx], features[val_idx], config)
    out = engine.save(tmp_path_factory.mktemp("models") / "bottle")
    thresholds = calibrate_product(out, [images[i] for i in val_idx])
    md.update_products(out, {"bottle": {"thresholds": thresholds}})
    return out

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
    from edge_runtime.model.weights import resolve_backbone_files

    return resolve_backbone_files(allow_download=False)


@pytest.fixture(scope="session")
def bottle_model(tmp_path_factory, data_root, backbone_files) -> Path:
    """A small but real PaSTe training on bottle, shared by the tests that need a model."""
    from edge_runtime.dataset import train_images
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.continual import ContinualTrainer
    from edge_runtime.training.loop import TrainConfig
    from edge_runtime.training.recipe import learn_product

    images = train_images(data_root, "bottle", limit=40)
    trainer = ContinualTrainer(ModelBundle(files=backbone_files, seed=0), "finetune",
                               config=TrainConfig(epochs=3, seed=0))
    out = tmp_path_factory.mktemp("models") / "bottle"
    return learn_product(trainer, "bottle", images, out).directory

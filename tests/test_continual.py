import numpy as np
import pytest

from edge_runtime.dataset import train_images
from edge_runtime.model.torch_model import ModelSpec
from edge_runtime.training.bundle import ModelBundle
from edge_runtime.training.continual import ContinualTrainer, StrategyError
from edge_runtime.training.loop import TrainConfig

CONFIG = TrainConfig(epochs=1, seed=0)


class CountingReplay:
    """The store, counting the replay rows each training step asks for."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __len__(self):
        return len(self.inner)

    def epoch_plan(self, rng, steps, count):  # every stored product, each epoch
        plan = self.inner.epoch_plan(rng, steps, count)
        self.batches += [(len(picks), *self.inner.sample_shape) for picks in plan]
        return plan

    def decode(self, indices):  # teacher targets recomputed each step
        return self.inner.decode(indices)

    def decode_all(self):  # the teacher-target cache decodes the store once
        return self.inner.decode_all()


@pytest.fixture(scope="module")
def paste_bundle(backbone_files):
    return ModelBundle(files=backbone_files, seed=0)


def test_replay_mixes_8_plus_8_and_remembers_each_product(paste_bundle, data_root, tmp_path):
    trainer = ContinualTrainer(paste_bundle, "replay", "uint8_channel", tmp_path / "store",
                               capacity=20, config=CONFIG)
    first = trainer.prepare("bottle", train_images(data_root, "bottle", 16))
    trainer.learn(first)
    assert trainer.store.products == ["bottle"] and len(trainer.store) == 14  # train split
    counting = CountingReplay(trainer.store)
    trainer._replay_source = lambda: counting
    second = trainer.prepare("transistor", train_images(data_root, "transistor", 16))
    trainer.learn(second)
    assert counting.batches and all(shape == (8, 24, 32, 32) for shape in counting.batches)
    acc = trainer.store.accounting()
    assert [v["samples"] for v in acc["products"].values()] == [10, 10]
    assert acc["payload_bytes"] == 20 * 24 * 32 * 32


def test_image_replay_goes_through_the_trunk(paste_bundle, data_root, tmp_path):
    trainer = ContinualTrainer(paste_bundle, "replay", "image", tmp_path / "images",
                               capacity=4, config=CONFIG)
    trainer.learn(trainer.prepare("bottle", train_images(data_root, "bottle", 8)))
    source = trainer._replay_source()
    plan = source.epoch_plan(np.random.default_rng(0), 2, 3)
    batches = [source.decode(picks) for picks in plan]
    assert [b.shape for b in batches] == [(3, 24, 32, 32)] * 2
    assert source.decode_all().shape == (4, 24, 32, 32)  # trunk features of every image
    assert trainer.store.accounting()["payload_bytes"] == 4 * 256 * 256 * 3


def test_finetune_stores_nothing_and_joint_keeps_all_features(paste_bundle, data_root):
    finetune = ContinualTrainer(paste_bundle, "finetune", config=CONFIG)
    joint = ContinualTrainer(paste_bundle, "joint", config=CONFIG)
    assert finetune.store is None and joint.store is None
    for trainer in (finetune, joint):
        for category in ("bottle", "transistor"):
            trainer.learn(trainer.prepare(category, train_images(data_root, category, 8)))
    assert [t.features is None for t in finetune.seen] == [True, True]
    assert all(t.features is not None for t in joint.seen)


def test_stfpm_refuses_feature_codecs(backbone_files, tmp_path):
    bundle = ModelBundle(ModelSpec.stfpm(), backbone_files)
    with pytest.raises(StrategyError, match="only replay raw images"):
        ContinualTrainer(bundle, "replay", "pq", tmp_path)
    ContinualTrainer(bundle, "replay", "image", tmp_path / "ok")  # allowed


def test_unknown_strategy(paste_bundle):
    with pytest.raises(StrategyError):
        ContinualTrainer(paste_bundle, "ewc")

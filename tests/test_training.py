import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge_runtime.evaluation.evaluate import evaluate
from edge_runtime.inference import model_dir as md
from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.model.torch_model import ModelSpec, build_parts
from edge_runtime.training.loop import StudentTrainer, TrainConfig, holdout_split


def test_trained_maps_find_real_defects(bottle_model, data_root):
    inferencer = AnomalyInferencer(bottle_model / md.MERGED, 256)
    result = evaluate(inferencer, data_root, "bottle", limit_per_kind=4, with_aupro=False)
    assert result["test_images"] == 16
    assert result["pixel_auroc"] > 0.85, result
    assert result["image_auroc"] > 0.7, result


def test_model_dir_is_verified(bottle_model, tmp_path):
    import shutil

    manifest = md.read_manifest(bottle_model)
    assert set(manifest.files) == {md.MERGED, md.STUDENT, md.TRUNK}
    assert manifest.thresholds["bottle"].image > 0
    broken = tmp_path / "broken"
    shutil.copytree(bottle_model, broken)
    with open(broken / md.MERGED, "ab") as handle:
        handle.write(b"x")
    try:
        md.read_manifest(broken)
    except md.ModelDirError as exc:
        assert "checksum" in str(exc)
    else:
        raise AssertionError("a tampered graph passed verification")


def test_training_is_deterministic_under_a_seed(backbone_files):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((10, 24, 32, 32)).astype(np.float32)
    losses, weights = [], []
    for _ in range(2):
        _, teacher, student = build_parts(ModelSpec.paste(), backbone_files, seed=3)
        seen: list[float] = []
        trainer = StudentTrainer(teacher, student, TrainConfig(epochs=2, seed=3))
        trainer.fit(features[:8], features[8:],
                    on_progress=lambda p, seen=seen: seen.append(p.loss))
        losses.append(seen)
        weights.append(next(iter(student.parameters())).detach().clone())
    assert losses[0] == losses[1] and len(losses[0]) == 2 * 1
    assert torch.equal(weights[0], weights[1])


def test_early_stopping_keeps_the_best_epoch(backbone_files):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((16, 24, 32, 32)).astype(np.float32)
    _, teacher, student = build_parts(ModelSpec.paste(), backbone_files, seed=0)
    # a huge learning rate makes validation loss worse quickly: training must stop early
    config = TrainConfig(epochs=12, lr=50.0, patience=2, seed=0)
    result = StudentTrainer(teacher, student, config).fit(features[:12], features[12:])
    assert result.epochs_run <= result.best_epoch + config.patience
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)


def test_holdout_split_is_disjoint_and_stable():
    train, held = holdout_split(20, 0.1, seed=5)
    assert len(held) == 2 and not set(train) & set(held) and len(train) + len(held) == 20
    assert np.array_equal(held, holdout_split(20, 0.1, seed=5)[1])


def test_cli_inspect_writes_overlay_and_rejects_corrupt_input(bottle_model, data_root, tmp_path):
    image = data_root / "bottle" / "test" / "broken_large" / "000.png"
    out = tmp_path / "map.png"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "inspect", str(image),
           "--model", str(bottle_model), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["verdict"] in {"pass", "reject"} and out.read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    cmd[4] = str(bad)
    failed = subprocess.run(cmd, capture_output=True, text=True)
    assert failed.returncode == 2
    assert "not a readable PNG or JPEG" in failed.stderr and "Traceback" not in failed.stderr


def test_cached_teacher_targets_give_the_same_training(backbone_files, tmp_path):
    """Teacher outputs computed once per image and per replayed sample (and the student in
    channels-last): the same batches, the same loss curve and weights to float rounding as
    recomputing them every step (random features and lr 0.4 amplify rounding the most)."""
    from edge_runtime.replay.codecs import make_codec
    from edge_runtime.replay.store import ReplayStore

    rng = np.random.default_rng(2)
    features = rng.standard_normal((14, 24, 32, 32)).astype(np.float32)
    store = ReplayStore(tmp_path / "replay", make_codec("uint8_channel"), 6, 0)
    store.add("earlier", rng.standard_normal((6, 24, 32, 32)).astype(np.float32))
    picks = store.epoch_plan(np.random.default_rng(7), 2, 4)[0]
    assert np.array_equal(store.decode(picks), store.decode_all()[picks])
    runs = []
    buffers = []
    for cache, channels_last, checkpoint in ((False, False, False), (True, False, False),
                                             (True, False, True), (True, True, False),
                                             (True, True, True), (False, True, True)):
        _, teacher, student = build_parts(ModelSpec.paste(), backbone_files, seed=3)
        config = TrainConfig(epochs=2, batch_size=4, replay_batch_size=2, seed=3)
        trainer = StudentTrainer(teacher, student, config, cache_targets=cache,
                                 channels_last=channels_last, checkpoint=checkpoint)
        result = trainer.fit(features[:12], features[12:], store)
        runs.append((result.history, next(iter(student.parameters())).detach().clone()))
        buffers.append(torch.cat([b.double().ravel() for b in student.buffers()]))
    # checkpointing recomputes blocks with the same kernels (gradients differ only in the
    # order three terms are summed, ~1e-9), BN running statistics move once per step
    for checkpointed, plain in ((2, 1), (4, 3)):  # NCHW, NHWC
        for a, b in zip(runs[checkpointed][0], runs[plain][0], strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=2e-3)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=2e-3)
        assert torch.allclose(buffers[checkpointed], buffers[plain], rtol=1e-2, atol=5e-3)
    (before, w_before), *variants = runs
    # the last: training.low_memory (teacher each step, NHWC, blocks recomputed)
    for (after, w_after), tolerance in zip(variants, (1e-4, 2e-3, 2e-3, 2e-3, 2e-3),
                                           strict=True):
        for a, b in zip(before, after, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=tolerance)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=tolerance)
        assert torch.allclose(w_before, w_after, atol=10 * tolerance)
    assert w_after.is_contiguous()  # the student leaves training in the default layout


def test_new_schedule_plans_epochs_from_the_data_and_decays():
    config = TrainConfig.for_recipe("new")
    assert config.planned_epochs(80) == 60  # 10 steps per epoch -> 600 steps
    assert config.planned_epochs(800) == 6
    assert config.planned_epochs(2) == config.max_epochs
    assert TrainConfig.for_recipe("paper").planned_epochs(800) == 10
    planned = 600
    factors = [config.lr_factor(step, planned) for step in range(planned)]
    assert factors[0] == pytest.approx(1 / 30) and factors[29] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[30:], factors[31:], strict=False))
    assert factors[-1] < 1e-4
    assert all(TrainConfig().lr_factor(s, planned) == 1.0 for s in (0, 500, 999))
    with pytest.raises(ValueError):
        TrainConfig.for_recipe("magic")


def test_validations_are_spread_and_patience_needs_a_real_gain(backbone_files):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((12, 24, 32, 32)).astype(np.float32)
    _, teacher, student = build_parts(ModelSpec.paste(), backbone_files, seed=0)
    # 2 steps per epoch, 16 planned epochs, validated every 4th; a 50% gain is required,
    # so the patience of 2 validations ends training early
    config = TrainConfig.for_recipe("new", target_steps=32, validations=4, patience=2,
                                    min_delta=0.5, lr=0.05)
    result = StudentTrainer(teacher, student, config).fit(features[:10], features[10:])
    epochs = [h["epoch"] for h in result.history]
    assert epochs == list(range(4, 4 * len(epochs) + 1, 4)) and len(epochs) < 4
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)


def test_a_job_reuses_the_live_trunk_graph_instead_of_exporting(bottle_model, backbone_files,
                                                               data_root, tmp_path):
    """The trunk is frozen: the worker runs the live version's trunk graph (no ONNX export
    before training), and its features are those of a freshly exported one."""
    from edge_runtime.dataset import train_images
    from edge_runtime.training.bundle import ModelBundle

    images = train_images(data_root, "bottle", 3)
    spec = ModelSpec.from_dict(md.read_manifest(bottle_model).spec)
    reused = ModelBundle(spec, backbone_files, work_dir=tmp_path / "reused")
    reused.reuse_trunk_graph(bottle_model)
    assert (tmp_path / "reused" / md.TRUNK).read_bytes() == (bottle_model / md.TRUNK).read_bytes()
    exported = ModelBundle(spec, backbone_files, work_dir=tmp_path / "exported")
    np.testing.assert_allclose(reused.features(images), exported.features(images), atol=1e-5)
    other = ModelBundle(ModelSpec.stfpm(), backbone_files, work_dir=tmp_path / "other")
    other.reuse_trunk_graph(bottle_model)  # another spec: its own trunk, exported
    assert not (tmp_path / "other" / md.TRUNK).exists()


def test_momentum_sgd_steps_like_torch_optim_sgd():
    """The loop's optimizer is torch.optim.SGD's arithmetic (bitwise), without importing
    torch._dynamo, which every torch.optim optimizer does (+86 MB in the worker)."""
    from edge_runtime.training.loop import MomentumSGD

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, groups=8, bias=False).to(memory_format=torch.channels_last)
    other = torch.nn.Conv2d(8, 8, 3, groups=8, bias=False).to(memory_format=torch.channels_last)
    other.load_state_dict(conv.state_dict())
    ours = MomentumSGD(conv.parameters(), momentum=0.9, weight_decay=1e-4)
    reference = torch.optim.SGD(other.parameters(), lr=0.4, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(reference, lambda i: 1 / (1 + i))
    for step in range(5):
        x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
        for module in (conv, other):
            module(x).square().mean().backward()
        ours.step(0.4 / (1 + step))
        reference.step()
        schedule.step()
        ours.zero_grad()
        reference.zero_grad(set_to_none=True)
        assert torch.equal(conv.weight, other.weight)


def test_the_training_loop_does_not_import_torch_dynamo(backbone_files):
    code = (
        "import sys\nfrom pathlib import Path\nimport numpy as np\n"
        "from edge_runtime.model.torch_model import ModelSpec, build_parts\n"
        "from edge_runtime.model.weights import BackboneFiles\n"
        "from edge_runtime.training.loop import StudentTrainer, TrainConfig\n"
        f"files = BackboneFiles(Path({str(backbone_files.config)!r}),\n"
        f"                      Path({str(backbone_files.weights)!r}))\n"
        "_, teacher, student = build_parts(ModelSpec.paste(), files)\n"
        "x = np.random.default_rng(0).standard_normal((6, 24, 32, 32)).astype(np.float32)\n"
        "StudentTrainer(teacher, student, TrainConfig(epochs=1, batch_size=4),\n"
        "               checkpoint=True).fit(x[:4], x[4:])\n"
        "assert 'torch._dynamo' not in sys.modules and 'sympy' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)

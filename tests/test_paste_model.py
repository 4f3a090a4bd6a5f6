import numpy as np
import pytest
import torch

from edge_runtime.inference.inferencer import AnomalyInferencer, TrunkRunner
from edge_runtime.model.macs import inference_macs, training_step_macs
from edge_runtime.model.onnx_export import export_merged, export_trunk
from edge_runtime.model.torch_model import MapHead, ModelSpec, PasteModel, build_parts


@pytest.fixture(scope="module")
def paste_parts(backbone_files):
    return build_parts(ModelSpec.paste(), backbone_files, seed=0)


def test_shapes_at_256(paste_parts):
    trunk, teacher, student = paste_parts
    with torch.no_grad():
        features = trunk(torch.zeros(2, 3, 256, 256))
        shapes = [tuple(t.shape) for t in teacher(features)]
        amap, score = PasteModel(ModelSpec.paste(), *paste_parts)(torch.randn(2, 3, 256, 256))
    assert tuple(features.shape) == (2, 24, 32, 32)
    assert shapes == [(2, 24, 32, 32), (2, 40, 16, 16), (2, 96, 8, 8)]
    assert tuple(amap.shape) == (2, 1, 256, 256) and tuple(score.shape) == (2,)


def test_student_is_random_and_teacher_is_pretrained(paste_parts):
    _, teacher, student = paste_parts
    t = dict(teacher.named_parameters())
    s = dict(student.named_parameters())
    assert t.keys() == s.keys()
    assert all(not p.requires_grad for p in teacher.parameters())
    assert any(not torch.allclose(t[k], s[k]) for k in t)


def test_merged_ort_graph_matches_torch(paste_parts, tmp_path):
    model = PasteModel(ModelSpec.paste(), *paste_parts).eval()
    export_merged(model, tmp_path / "paste.onnx")
    export_trunk(paste_parts[0], 256, tmp_path / "trunk.onnx")
    x = torch.randn(3, 3, 256, 256)
    with torch.no_grad():
        amap, score = model(x)
        features = paste_parts[0](x)
    ort_map, ort_score = AnomalyInferencer(tmp_path / "paste.onnx", 256).forward(x.numpy())
    ort_features = TrunkRunner(tmp_path / "trunk.onnx", 256).features(x.numpy())
    np.testing.assert_allclose(ort_map, amap.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ort_score, score.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ort_features, features.numpy(), rtol=1e-4, atol=1e-4)


def test_macs_match_the_papers(backbone_files):
    spec = ModelSpec.stfpm(224, recipe="paper")
    stfpm = inference_macs(spec, *build_parts(spec, backbone_files))
    assert round(stfpm["total"] / 1e6, 1) == 224.3
    spec = ModelSpec.paste(224, recipe="paper")
    paste = inference_macs(spec, *build_parts(spec, backbone_files))
    assert round(paste["trunk"] / 1e6, 1) == 65.3
    assert round(paste["total"] / 1e6, 1) == 159.0
    assert paste["map"] == 0


def test_new_map_costs_next_to_nothing(paste_parts):
    """The new recipe's smoothing is the only extra convolution: < 0.1% of the MACs."""
    new = inference_macs(ModelSpec.paste(), *paste_parts)
    paper = inference_macs(ModelSpec.paste(recipe="paper"), *paste_parts)
    assert new["map"] > 0 and paper["map"] == 0
    assert new["total"] - paper["total"] == new["map"] < 0.001 * paper["total"]


@pytest.mark.parametrize("recipe", ["new", "paper"])
def test_score_follows_the_recipe(paste_parts, recipe):
    """Papers: the max pixel. New: the mean of the top 1% of the smoothed map, which is
    never above its max; both give a full-size map."""
    model = PasteModel(ModelSpec.paste(recipe=recipe), *paste_parts).eval()
    with torch.no_grad():
        amap, score = model(torch.randn(2, 3, 256, 256))
    assert tuple(amap.shape) == (2, 1, 256, 256)
    peak = amap.amax(dim=(1, 2, 3))
    if recipe == "paper":
        torch.testing.assert_close(score, peak)
    else:
        assert bool((score < peak).all()) and bool((score > 0).all())


def test_old_manifests_keep_the_papers_map():
    old = {"mode": "paste", "split": 6, "feature_layers": [6, 10, 14], "image_size": 256}
    assert ModelSpec.from_dict(old) == ModelSpec.paste(recipe="paper")
    assert ModelSpec.from_dict(ModelSpec.paste().to_dict()) == ModelSpec.paste()


def test_hooked_macs_equal_torch_flop_counter(paste_parts):
    """The worker's hook count (no FlopCounterMode, ~80 MB less RSS) is torch's count."""
    from edge_runtime.model.macs import _count

    trunk, teacher, student = paste_parts
    image = torch.zeros(1, 3, 256, 256)
    with torch.no_grad():
        features = trunk(image)
        expected = {"trunk": _count(lambda: trunk(image)),
                    "teacher_tail": _count(lambda: teacher(features)),
                    "student_tail": _count(lambda: student(features))}
        outputs = teacher(features), student(features)
        new_map = _count(lambda: MapHead(ModelSpec.paste())(*outputs))
    counted = inference_macs(ModelSpec.paste(recipe="paper"), *paste_parts)
    assert counted == expected | {"map": 0, "total": sum(expected.values())}
    assert counted["total"] == 207_728_640
    new = inference_macs(ModelSpec.paste(), *paste_parts)  # the smoothed map's blur
    assert new["map"] == new_map == 57_344 and new["total"] == 207_728_640 + 57_344


def test_training_step_macs_exclude_the_cached_trunk(paste_parts):
    step = training_step_macs(ModelSpec.paste(), *paste_parts, batch_size=2)
    forward = inference_macs(ModelSpec.paste(), *paste_parts)["student_tail"]
    # backward costs about twice the forward pass
    assert 2.5 * forward < step["student_tail_forward_backward"] / 2 < 3.5 * forward
    assert step["per_sample"] == step["per_step"] // 2


def test_spec_rejects_nonsense():
    with pytest.raises(ValueError):
        ModelSpec("paste", 6, (2, 6, 14))
    with pytest.raises(ValueError):
        ModelSpec("other", 0, (2, 6, 14))

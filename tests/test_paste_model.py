import numpy as np
import pytest
import torch

from edge_runtime.inference.inferencer import AnomalyInferencer, TrunkRunner
from edge_runtime.model.macs import inference_macs, training_step_macs
from edge_runtime.model.onnx_export import export_merged, export_trunk
from edge_runtime.model.torch_model import ModelSpec, PasteModel, build_parts


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
    stfpm = inference_macs(ModelSpec.stfpm(224), *build_parts(ModelSpec.stfpm(224), backbone_files))
    assert round(stfpm["total"] / 1e6, 1) == 224.3
    paste = inference_macs(ModelSpec.paste(224), *build_parts(ModelSpec.paste(224), backbone_files))
    assert round(paste["trunk"] / 1e6, 1) == 65.3
    assert round(paste["total"] / 1e6, 1) == 159.0


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
    counted = inference_macs(ModelSpec.paste(), *paste_parts)
    assert counted == expected | {"total": sum(expected.values())}
    assert counted["total"] == 207_728_640


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

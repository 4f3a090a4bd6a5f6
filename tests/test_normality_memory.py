"""MemKD's normality memory (a benchmarked student option): it starts as the plain student,
trains through the ordinary trainer, and its values learn the teacher's normal features."""

import numpy as np
import torch

from edge_runtime.model.macs import inference_macs
from edge_runtime.model.normality_memory import MemoryTail, with_memory
from edge_runtime.model.torch_model import ModelSpec, build_parts
from edge_runtime.training.loop import StudentTrainer, TrainConfig


def test_memory_student_starts_as_the_plain_student_and_learns_normal_values(backbone_files):
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.standard_normal((12, 24, 32, 32)).astype(np.float32))
    spec = ModelSpec.paste()
    trunk, teacher, student = build_parts(spec, backbone_files, seed=1)
    student.eval()
    with torch.no_grad():
        plain = student(features[:2])
    plain_macs = inference_macs(spec, trunk, teacher, student)["student_tail"]
    memory = with_memory(student, teacher, features, items=8).eval()
    assert isinstance(memory, MemoryTail) and len(memory.memories) == 2
    # the recall after layers 6 (32 x 32 at 256 px) and 10 (16 x 16) is counted
    memory_macs = inference_macs(spec, trunk, teacher, memory)["student_tail"]
    assert memory_macs - plain_macs == 2 * 8 * (24 * 1024 + 40 * 256)
    with torch.no_grad():
        # the gain starts at zero: the memory changes nothing until it has learned
        for a, b in zip(plain, memory(features[:2]), strict=True):
            assert torch.allclose(a, b)
        pairs = list(zip(memory.memories, teacher(features[:4])[:2], strict=True))
        before = [float(m.memorisation_loss(e)) for m, e in pairs]
    config = TrainConfig(epochs=6, batch_size=4, lr=0.05, seed=0)
    StudentTrainer(teacher, memory, config).fit(features.numpy()[:8], features.numpy()[8:])
    with torch.no_grad():
        after = [float(m.memorisation_loss(e)) for m, e in pairs]
        assert any(float(m.gain.abs().max()) > 0 for m in memory.memories)
    # the values moved toward the teacher's features of normal images
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)

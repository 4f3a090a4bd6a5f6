"""The choice between a trained product's student and its memory-bank head: the rule, the
synthetic defects it is made on, and the head service making it in a child process on a
real trained model and a real head."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edge_runtime import dataset
from edge_runtime.evaluation import metrics
from edge_runtime.evaluation import serving_choice as sc
from edge_runtime.evaluation.synthetic import (
    VISIBLE,
    deformed_part,
    misplaced_part,
    missing_part,
    structural_defect,
    synthetic_anomaly,
)
from edge_runtime.inference.preprocess import load_rgb


def test_selection_set_is_seeded_and_labels_every_defect(data_root):
    normals = [load_rgb(p, 128) for p in dataset.train_images(data_root, "bottle", limit=3)]
    images, masks, labels = sc.selection_set(normals, seed=3)
    again, masks_again, _ = sc.selection_set(normals, seed=3)
    assert np.array_equal(images, again) and np.array_equal(masks, masks_again)
    made = 3 * sc.DEFECTS_PER_IMAGE
    assert len(images) == 3 + made and labels.sum() == made
    assert not masks[:3].any() and all(m.any() for m in masks[3:])
    changed = [(images[i] != normals[i % 3]).any(axis=-1) for i in range(3, 3 + made)]
    assert not any((c & ~m).any() for c, m in zip(changed, masks[3:], strict=True))


def test_a_misplaced_part_keeps_the_images_colours_and_moves_a_square():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out, mask = misplaced_part(rgb, rng)
    assert 0.02 <= mask.mean() <= 0.09 and (out[mask] != rgb[mask]).any()
    assert np.array_equal(out[~mask], rgb[~mask])
    pasted, scar = synthetic_anomaly(rgb, np.random.default_rng(1))
    assert pasted.dtype == np.uint8 and scar.any()


def test_missing_and_bent_parts_change_only_what_their_masks_say(data_root):
    rgb = load_rgb(dataset.train_images(data_root, "transistor", limit=1)[0], 128)
    rng = np.random.default_rng(0)
    for make in (missing_part, deformed_part, structural_defect):
        for _ in range(5):
            out, mask = make(rgb, rng)
            assert out.dtype == np.uint8 and out.shape == rgb.shape
            assert np.array_equal(out[~mask], rgb[~mask])  # nothing changed outside
            change = np.abs(out.astype(int) - rgb).max(-1)
            if make is not structural_defect:  # (a misplaced square's mask is the square)
                assert (change[mask] > VISIBLE).all()  # every masked pixel visibly changed
    # a bend on a flat image changes nothing; structural_defect then moves a part instead
    flat = np.full((64, 64, 3), 90, np.uint8)
    assert not deformed_part(flat, rng)[1].any()
    flat[16:48, 16:48] = 200
    assert structural_defect(flat, np.random.default_rng(4))[1].mean() > 0.004


def _paths(student_gap: float, head_gap: float, captures: int = 20, seed: int = 0):
    """Maps and scores of two paths on a selection set of ``captures`` normals: defects
    lifted by ``*_gap`` above unit noise."""
    rng = np.random.default_rng(seed)
    n = captures * (1 + sc.DEFECTS_PER_IMAGE)
    labels = np.arange(n) >= captures
    masks = np.zeros((n, 16, 16), bool)
    masks[labels, 4:10, 4:10] = True

    def path(gap):
        maps = rng.normal(size=masks.shape) + gap * masks
        return maps, maps.reshape(n, -1).max(1)
    return {"student": path(student_gap), "head": path(head_gap)}, masks, labels


def test_the_student_answers_only_when_clearly_better():
    outputs, masks, labels = _paths(2.0, 0.5)
    clear = sc.decide(outputs, masks, labels, 20)
    assert clear["choice"] == "student" and clear["student_better"] >= sc.CONFIDENCE
    assert clear["student"]["score"] > clear["head"]["score"]
    outputs, masks, labels = _paths(1.0, 1.0)
    tie = sc.decide({"student": outputs["student"], "head": outputs["student"]}, masks,
                    labels, 20)
    assert tie["choice"] == "head" and tie["student_better"] == 0.0  # a tie: the cheaper
    level = sc.decide(outputs, masks, labels, 20)  # the same quality, different noise
    assert 0.0 < level["student_better"] < 1.0
    assert sc.decide(outputs, masks, labels, 20) == level  # seeded resamples
    assert sc.decide(*_paths(0.5, 2.0), 20)["student_better"] == 0.0
    perfect = sc.evaluate(np.zeros((2, 4, 4)) + np.eye(4)[None], np.array([0.0, 1.0]),
                          np.zeros((2, 4, 4), bool) | np.eye(4, dtype=bool)[None],
                          np.array([False, True]))
    assert perfect == {"pixel_auroc": 1.0, "image_auroc": 1.0, "score": 1.0}


def test_resampled_auroc_with_unit_weights_is_the_auroc():
    outputs, masks, labels = _paths(0.3, 0.3, captures=6)
    maps, scores = outputs["student"]
    source = np.arange(len(labels)) % 6
    resampled = sc._Resampled(scores, labels, source)
    assert resampled.auroc(np.ones(6)) == pytest.approx(metrics.auroc(labels, scores))
    twice = np.r_[2.0, np.ones(5)]  # capture 0 drawn twice: its images count twice
    heavy = np.r_[scores, scores[source == 0]], np.r_[labels, labels[source == 0]]
    assert resampled.auroc(twice) == pytest.approx(metrics.auroc(heavy[1], heavy[0]))


@pytest.fixture()
def service(tmp_path, data_root, backbone_files):
    from edge_runtime.model.onnx_export import export_features
    from edge_runtime.model.torch_model import ModelSpec, build_parts
    from edge_runtime.services.heads import HeadOptions, HeadService

    spec = ModelSpec.paste()
    trunk, teacher, _ = build_parts(spec, backbone_files)
    service = HeadService(tmp_path / "heads", HeadOptions(max_bytes=300_000))
    # the head reads 288 px, the student 256: the choice compares them on the same masks
    assert service.options.image_size == 288
    export_features(trunk, teacher, spec.feature_layers, 288, service.graph_path)
    images = dataset.train_images(data_root, "bottle", limit=40)
    assert service.request_fit(7, lambda: images).result(120)["status"] == "ready"
    # calibrated on its 4 held-out captures and the 36 fitted ones' cross-fitted scores
    assert service.head(7).thresholds.normal_count == 40
    yield service, images
    service.shutdown()


def test_head_service_chooses_per_version_and_head_in_a_child(service, bottle_model):
    service, images = service
    version = bottle_model.name
    choice = service.request_choice(7, bottle_model, lambda: images).result(180)
    assert choice["version"] == version and choice["choice"] in ("student", "head")
    assert choice["normals"] == 4 and choice["defects"] == 4 * sc.DEFECTS_PER_IMAGE
    for path in ("student", "head"):
        assert 0.0 <= choice[path]["pixel_auroc"] <= 1.0
        assert 0.0 <= choice[path]["image_auroc"] <= 1.0
    assert service._runner is None  # both graphs ran in the child
    assert service.serves(7, version) == (choice["choice"] == "head")
    assert service.request_choice(7, bottle_model, lambda: images) is None  # already made
    assert service.status()["products"]["7"]["serving_choice"]["choice"] == choice["choice"]
    assert not service.serves(7, "v999999")  # made for another version: the student
    assert 0.0 <= choice["student_better"] <= 1.0 and choice["rule"] == sc.RULE
    # a choice made under an earlier rule is made again after an upgrade
    earlier = {k: v for k, v in choice.items() if k != "rule"}
    service.choice_path(7).write_text(json.dumps(earlier))
    upgraded = type(service)(service.root, service.options)
    upgraded.load_all()
    assert upgraded._current_choice(7, version) is None
    upgraded.shutdown()
    service.choice_path(7).write_text(json.dumps(choice))
    # a restart finds it; a refit of the head makes it stale
    again = type(service)(service.root, service.options)
    again.load_all()
    assert again.serves(7, version) == service.serves(7, version)
    time.sleep(0.01)
    assert again.request_fit(7, lambda: images[:30]).result(120)["status"] == "ready"
    assert again._current_choice(7, version) is None and not again.serves(7, version)
    again.shutdown()


def test_pinned_serving_and_a_product_without_a_head(service, bottle_model):
    from dataclasses import replace

    service, images = service
    for serve, expected in (("head", True), ("student", False)):
        pinned = type(service)(service.root, replace(service.options, serve=serve))
        pinned.load_all()
        assert pinned.serves(7, bottle_model.name) is expected
        assert pinned.request_choice(7, bottle_model, lambda: images) is None
        pinned.shutdown()
    assert not service.serves(8, bottle_model.name)
    assert service.request_choice(8, bottle_model, lambda: images) is None


def test_no_comparison_means_the_student_and_status_says_why(service, tmp_path, bottle_model):
    from edge_runtime.inference.model_dir import MANIFEST, MERGED

    service, images = service
    broken = tmp_path / "v000042"
    broken.mkdir()
    (broken / MANIFEST).write_bytes((bottle_model / MANIFEST).read_bytes())
    (broken / MERGED).write_bytes(b"not an onnx graph")
    failed = service.request_choice(7, broken, lambda: images).result(120)
    assert failed["choice"] == "student"
    assert failed["reason"].startswith("RuntimeError: no serving choice: ")
    assert not service.serves(7, "v000042")
    few = tmp_path / "v000043"
    few.mkdir()
    (few / MERGED).write_bytes(b"")
    state = service.request_choice(7, few, lambda: images[:12]).result(60)
    assert state["reason"] == "1 held-out captures; a choice needs 4"
    reported = service.status()["products"]["7"]["serving_choice"]
    assert reported["version"] == "v000043" and reported["choice"] == "student"



def test_an_override_decides_only_the_path_it_was_set_for():
    from edge_runtime.inference.thresholds import Thresholds
    from edge_runtime.services.inspection import Answerer, InspectionService

    head = Answerer(None, Thresholds(8.0, 9.0), "head-padim", "padim")
    student = Answerer(None, Thresholds(0.01, 0.02), "v000001", "student")
    service = InspectionService.__new__(InspectionService)

    def decided(path: Answerer, set_for: str | None) -> float:
        service.calibrated = lambda product: path
        product = {"image_threshold_override": 12.0, "pixel_threshold_override": None,
                   "threshold_override_for": set_for}
        return service.answerer(product).thresholds.image

    assert decided(head, "padim") == 12.0 and decided(student, "padim") == 0.01
    assert decided(student, "student") == 12.0 and decided(head, "student") == 8.0
    assert decided(student, None) == 12.0 and decided(head, None) == 8.0  # untagged: student's


def test_an_override_is_set_aside_when_its_path_is_recalibrated():
    from edge_runtime.inference.thresholds import Thresholds
    from edge_runtime.services.inspection import Answerer, InspectionService

    service = InspectionService.__new__(InspectionService)
    product = {"image_threshold_override": 12.0, "pixel_threshold_override": None,
               "threshold_override_for": "padim", "override_basis_image": 8.0,
               "override_basis_pixel": 9.0}

    def decided(calibrated: Thresholds) -> float:
        service.calibrated = lambda _: Answerer(None, calibrated, "head-padim", "padim")
        return service.answerer(product).thresholds.image

    assert decided(Thresholds(8.0, 9.0)) == 12.0  # the calibration it was set on
    assert decided(Thresholds(8.4, 9.0)) == 8.4  # refitted: on a new scale, set aside
    assert decided(Thresholds(8.0, 9.5)) == 8.0
    legacy = product | {"override_basis_image": None, "override_basis_pixel": None}
    service.calibrated = lambda _: Answerer(None, Thresholds(8.4, 9.0), "head-padim", "padim")
    assert service.answerer(legacy).thresholds.image == 12.0  # set before bases were kept

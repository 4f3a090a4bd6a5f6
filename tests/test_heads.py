"""Memory-bank heads on the real features graph and real bottle images."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import dataset
from edge_runtime.evaluation import metrics
from edge_runtime.inference import heads as H
from edge_runtime.inference.preprocess import load_mask

SIZE = 256


@pytest.fixture(scope="module")
def features_graph(tmp_path_factory, backbone_files) -> Path:
    from edge_runtime.model.onnx_export import export_features
    from edge_runtime.model.torch_model import ModelSpec, build_parts

    spec = ModelSpec.paste()
    trunk, teacher, _ = build_parts(spec, backbone_files)
    path = tmp_path_factory.mktemp("heads") / H.FEATURES
    names = export_features(trunk, teacher, spec.feature_layers, SIZE, path)
    assert names == ["layer6", "layer10", "layer14", "patches"]
    return path


@pytest.fixture(scope="module")
def runner(features_graph) -> H.FeatureRunner:
    return H.FeatureRunner(features_graph, SIZE, threads=1)


@pytest.fixture(scope="module")
def bottle(runner, data_root) -> dict:
    """30 normal captures (27 fitted, 3 held out) and 4 test images per kind."""
    images = dataset.train_images(data_root, "bottle", limit=30)
    samples = dataset.test_samples(data_root, "bottle", limit=4)
    return {
        "train": runner.embed_sources(images),
        "test": runner.embed_sources([s.image for s in samples]),
        "labels": np.array([s.is_anomalous for s in samples]),
        "masks": np.stack([load_mask(s.mask, SIZE) for s in samples]),
    }


@pytest.mark.parametrize("kind", ["padim", "patchcore"])
def test_cross_fitted_scores_come_from_heads_fitted_without_them(bottle, runner, kind):
    config = H.HeadConfig(kind=kind, max_bytes=2**40, bank_patches=256, candidates=4000)
    fitted, held = bottle["train"][:25], bottle["train"][25:]
    asked = []

    def stream(rows):
        asked.append(rows)
        return (fitted[rows[i : i + 7]] for i in range(0, len(rows), 7))  # batches

    head, scores = H.fit_cross_fitted(stream, 25, fitted.shape[-1], config, SIZE, runner.grid)
    # PaDiM reads every capture twice (sums, then its fold's scores); PatchCore refits per fold
    reads = sum(len(rows) for rows in asked)
    assert reads == 25 * (2 if kind == "padim" else 1 + H.CROSS_FIT_FOLDS)

    def fit(rows):  # the plain fit, on the same batches
        return H.fit_head_batches(stream(rows), len(rows), fitted.shape[-1], config, SIZE,
                                  runner.grid)

    whole = fit(np.arange(25))
    np.testing.assert_allclose(head.maps(bottle["test"])[1], whole.maps(bottle["test"])[1],
                               rtol=1e-3)
    assert head.meta["images"] == 25
    mine = np.arange(25) % H.CROSS_FIT_FOLDS == 2
    without = fit(np.flatnonzero(~mine))
    np.testing.assert_allclose(scores[mine], without.maps(fitted[mine])[1], rtol=1e-3)
    assert np.median(scores) > np.median(head.maps(fitted)[1])  # unseen: not flattered
    thresholds = H.calibrate_head(head, held, scores)
    assert thresholds.normal_count == 30 and thresholds.method == "log-normal"
    assert thresholds.image >= max(scores)
    few = H.MIN_CROSS_FIT - 1  # too few to cross-fit: the held-out captures calibrate alone
    small, none = H.fit_cross_fitted(stream, few, fitted.shape[-1], config, SIZE, runner.grid)
    assert none is None and small.meta["images"] == few
    with pytest.raises(H.HeadError, match="expected 25 captures' embeddings, got 20"):
        H.fit_cross_fitted(lambda rows: stream(rows[:20]), 25, fitted.shape[-1], H.HeadConfig(),
                           SIZE, runner.grid)


def test_features_graph_has_the_teacher_layers_and_normalised_patches(runner, features_graph):
    from edge_runtime.inference.inferencer import open_session

    session = open_session(features_graph, 1)
    image = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    layer6, layer10, layer14, patches = session.run(None, {"image": image})
    assert layer6.shape == (2, 24, 32, 32) and layer10.shape == (2, 40, 16, 16)
    assert layer14.shape == (2, 96, 8, 8) and patches.shape == (2, 160, 32, 32)
    # per layer a unit vector weighted by mean width / width: 2.22, 1.33, 0.56
    for start, stop in ((0, 24), (24, 64), (64, 160)):
        norms = np.linalg.norm(patches[:, start:stop], axis=1)
        np.testing.assert_allclose(norms, 160 / 3 / (stop - start), rtol=1e-4)
    assert runner.grid == 32 and runner.embed(image).shape == (2, 1024, 160)


@pytest.mark.parametrize("config", [
    H.HeadConfig(),
    H.HeadConfig(kind="padim", covariance="shared", dim=64),
    H.HeadConfig(kind="padim", covariance="diagonal", dim=64),
    H.HeadConfig(kind="patchcore", dim=64, bank_patches=512, candidates=8000),
], ids=lambda c: f"{c.kind}-{c.covariance}")
def test_head_scores_defective_bottles_above_good_ones(bottle, runner, config):
    train, val = H.holdout_split(len(bottle["train"]))
    head = H.fit_head(bottle["train"][train], config, SIZE, runner.grid)
    thresholds = H.calibrate_head(head, bottle["train"][val])
    maps, scores = head.maps(bottle["test"])
    assert maps.shape == (len(scores), SIZE, SIZE)
    assert metrics.auroc(bottle["labels"], scores) > 0.9
    assert metrics.auroc(bottle["masks"], maps) > 0.9
    good = scores[~bottle["labels"]]
    assert thresholds.normal_count == len(val)
    assert np.mean(good <= thresholds.image) >= 0.75  # most good parts pass


@pytest.mark.parametrize("config", [
    H.HeadConfig(max_bytes=60_000),
    H.HeadConfig(kind="padim", covariance="shared", dim=160, max_bytes=60_000),
    H.HeadConfig(kind="padim", covariance="diagonal", dim=160, max_bytes=60_000),
    H.HeadConfig(kind="patchcore", dim=64, max_bytes=60_000, candidates=8000),
], ids=lambda c: f"{c.kind}-{c.covariance}")
def test_head_bytes_are_bounded_by_the_setting(bottle, runner, tmp_path, config):
    head = H.fit_head(bottle["train"], config, SIZE, runner.grid)
    written = head.save(tmp_path / "head.npz")
    assert written == (tmp_path / "head.npz").stat().st_size <= config.max_bytes
    roomy = H.fit_head(bottle["train"], H.HeadConfig(
        kind=config.kind, covariance=config.covariance, dim=config.dim,
        candidates=config.candidates), SIZE, runner.grid)
    assert written < roomy.nbytes <= H.HeadConfig().max_bytes  # the budget did shrink it
    with pytest.raises(H.HeadError):
        H.fit_head(bottle["train"], H.HeadConfig(kind=config.kind, covariance=config.covariance,
                                                 max_bytes=5_000), SIZE, runner.grid)


def test_saved_head_gives_the_same_maps_and_rejects_a_corrupt_file(bottle, runner, tmp_path):
    head = H.fit_head(bottle["train"], H.HeadConfig(), SIZE, runner.grid)
    H.calibrate_head(head, bottle["train"][:3])
    head.save(tmp_path / "head.npz")
    loaded = H.Head.load(tmp_path / "head.npz")
    assert loaded.thresholds == head.thresholds and loaded.kind == "padim"
    np.testing.assert_array_equal(loaded.maps(bottle["test"][:2])[0],
                                  head.maps(bottle["test"][:2])[0])
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(H.HeadError):
        H.Head.load(tmp_path / "bad.npz")


def test_head_inferencer_serves_images_like_the_student(bottle, runner, data_root):
    head = H.fit_head(bottle["train"], H.HeadConfig(), SIZE, runner.grid)
    inferencer = H.HeadInferencer(runner, head)
    image = dataset.test_samples(data_root, "bottle", limit=1)[0].image
    one = inferencer.predict(image)
    many = inferencer.predict_many([image, image])
    assert one.anomaly_map.shape == (SIZE, SIZE)
    assert one.score == pytest.approx(float(one.anomaly_map.max()))
    assert many[1].score == pytest.approx(one.score, rel=1e-5)


def test_greedy_k_center_takes_one_point_of_every_cluster():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8)) * 50
    points = np.concatenate([c + rng.standard_normal((200, 8)) for c in centres])
    chosen = H.greedy_k_center(points.astype(np.float32), 5, selection_dim=8)
    assert sorted(set(chosen // 200)) == [0, 1, 2, 3, 4]


def test_holdout_split_is_the_students():
    from edge_runtime.training.loop import holdout_split

    for count in (3, 4, 40, 200):
        for a, b in zip(H.holdout_split(count), holdout_split(count, 0.1, 0), strict=True):
            np.testing.assert_array_equal(a, b)


def test_heads_module_does_not_import_torch():
    code = ("import sys, edge_runtime.inference.heads; "
            "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_head_service_fits_off_thread_persists_and_reloads(tmp_path, data_root, features_graph):
    from edge_runtime.services.heads import HeadOptions, HeadService

    images = dataset.train_images(data_root, "bottle", limit=12)
    options = HeadOptions(max_bytes=300_000, image_size=SIZE)
    service = HeadService(tmp_path / "heads", options)
    service.graph_path.write_bytes(features_graph.read_bytes())
    assert service.request_fit(7, lambda: images[:2]).result(60)["status"] == "waiting"
    assert service.inferencer(7) is None
    def slowly_listed() -> list:
        time.sleep(0.5)  # more captures arrive while this fit lists them
        return images

    running = service.request_fit(7, slowly_listed)
    while not running.running():
        time.sleep(0.01)
    newer = service.request_fit(7, lambda: images)
    state = newer.result(120)
    assert running.result(1)["status"] == "queued"  # it stopped for the newer one
    assert service._runner is None  # fitted by a child process: nothing opened here
    assert state["status"] == "ready" and 0 < state["bytes"] <= options.max_bytes
    assert service.head_path(7).stat().st_size == state["bytes"]
    assert service.status()["bytes"] == state["bytes"]
    result = service.inferencer(7).predict(images[0])
    assert result.anomaly_map.shape == (SIZE, SIZE)
    # unused (the student serves the product): the features session closes, and opens
    # again, with the same answer, when a head is needed
    assert not service.release_idle(idle_seconds=60) and service._runner is not None
    assert service.release_idle(idle_seconds=0) and service._runner is None
    assert service.status()["products"]["7"]["status"] == "ready"
    assert service.inferencer(7).predict(images[0]).score == result.score
    service.shutdown()
    again = HeadService(tmp_path / "heads", options)
    assert again.load_all() == [] and again.state(7)["status"] == "ready"
    assert again.inferencer(7).predict(images[0]).score == pytest.approx(result.score, rel=1e-5)
    again.shutdown()
    assert again.head(7).meta["embedding"] == H.EMBEDDING
    # a head of an earlier release's patch embedding is named for a refit too
    earlier = H.Head.load(service.head_path(7))
    earlier.meta["embedding"] = H.EMBEDDING - 1
    (tmp_path / "earlier").mkdir()
    earlier.save(tmp_path / "earlier" / "7.npz")
    old = HeadService(tmp_path / "earlier", options)
    assert old.load_all() == [7] and old.inferencer(7) is None and 7 in old.replaced
    old.shutdown()
    # so is one fitted with another covariance regulariser (or before it was recorded)
    assert again.head(7).meta["epsilon"] == H.EPSILON
    earlier.meta["embedding"] = H.EMBEDDING
    del earlier.meta["epsilon"]
    earlier.save(tmp_path / "earlier" / "7.npz")
    old = HeadService(tmp_path / "earlier", options)
    assert old.load_all() == [7] and old.inferencer(7) is None and 7 in old.replaced
    old.shutdown()
    # and one stored with square whitening matrices (an earlier release's, narrower)
    earlier.meta["epsilon"] = H.EPSILON
    earlier.arrays["precision"] = H.unpack_lower(earlier.arrays.pop("precision_lower").T)
    del earlier.meta["whitening"]
    earlier.save(tmp_path / "earlier" / "7.npz")
    old = HeadService(tmp_path / "earlier", options)
    assert old.load_all() == [7] and old.inferencer(7) is None and 7 in old.replaced
    old.shutdown()
    # heads.image_size changed (or an upgrade from 256): the head is not served but named
    # for a refit from the stored captures, and the other size's graph is removed
    fitted = again.head(7).thresholds
    resized = HeadService(tmp_path / "heads", HeadOptions(max_bytes=300_000, image_size=288))
    assert resized.load_all() == [7] and resized.inferencer(7) is None
    assert resized.replaced == {7: fitted}  # what an override on it was set on
    assert not service.graph_path.exists() and resized.state(7)["status"] == "none"
    resized.shutdown()
    again.forget(7)
    assert not service.head_path(7).exists() and again.inferencer(7) is None


def test_task_banks_keep_a_fixed_memory_and_pick_the_right_task(bottle, runner, data_root):
    transistor = runner.embed_sources(dataset.train_images(data_root, "transistor", limit=12))
    banks = H.TaskBanks(H.HeadConfig(kind="patchcore", dim=32, candidates=6000), 600,
                        SIZE, runner.grid)
    banks.add_task(bottle["train"])
    assert len(banks.banks[0].arrays["bank"]) == 600
    banks.add_task(transistor)
    assert [len(b.arrays["bank"]) for b in banks.banks] == [300, 300]
    scores = np.stack([b.patch_scores(bottle["test"]) for b in banks.banks]).mean(axis=2)
    assert np.all(scores.argmin(axis=0) == 0)  # bottle images go to the bottle coreset
    maps, image_scores = banks.maps(bottle["test"])
    assert metrics.auroc(bottle["labels"], image_scores) > 0.9


def test_padim_moments_average_tasks_like_algorithm_1(bottle):
    proj = H.projection(160, 8, 0)
    first = H.PadimMoments.of(bottle["train"][:10], proj, "full")
    second = H.PadimMoments.of(bottle["train"][10:20], proj, "full")
    third = H.PadimMoments.of(bottle["train"][20:30], proj, "full")
    merged = first.average(second, 1).average(third, 2)
    np.testing.assert_allclose(merged.mean, (first.mean + second.mean + third.mean) / 3,
                               atol=1e-5)
    np.testing.assert_allclose(merged.cov, (first.cov + second.cov + third.cov) / 3, atol=1e-5)
    assert merged.head(0.01, SIZE, 32).maps(bottle["test"][:1])[0].shape == (1, SIZE, SIZE)


def test_packed_triangular_whitening_gives_the_mahalanobis_distance(bottle, runner):
    train = bottle["train"]
    head = H.fit_head(train, H.HeadConfig(dim=24, max_bytes=2**40), SIZE, runner.grid)
    dim, positions = 24, runner.grid ** 2
    assert head.arrays["precision_lower"].shape == (dim * (dim + 1) // 2, positions)
    lower = H.unpack_lower(head.arrays["precision_lower"].T)
    assert not np.triu(lower, 1).any()  # only the triangle is stored
    np.testing.assert_array_equal(H.pack_lower(lower).T, head.arrays["precision_lower"])
    # against the covariance inverted in float64, from the same (fp16) projection and mean
    projected = train.astype(np.float64) @ head.arrays["projection"].astype(np.float64)
    centred = projected - projected.mean(axis=0)
    cov = np.einsum("npd,npe->pde", centred, centred) / (len(train) - 1) + H.EPSILON * np.eye(dim)
    query = bottle["test"][:3].astype(np.float64) @ head.arrays["projection"].astype(np.float64)
    diff = query - head.arrays["mean"].astype(np.float64)
    exact = np.sqrt(np.einsum("npd,pde,npe->np", diff, np.linalg.inv(cov), diff))
    np.testing.assert_allclose(head.patch_scores(bottle["test"][:3]), exact, rtol=2e-3)


def test_fitting_batch_by_batch_equals_fitting_at_once(bottle, runner):
    train = bottle["train"]
    for covariance in H.COVARIANCES:
        config = H.HeadConfig(covariance=covariance, dim=16)
        whole = H.fit_head(train, config, SIZE, runner.grid)
        parts = H.fit_head_batches(iter([train[:7], train[7:20], train[20:]]), len(train),
                                   runner.dim, config, SIZE, runner.grid)
        np.testing.assert_allclose(parts.maps(bottle["test"][:2])[0],
                                   whole.maps(bottle["test"][:2])[0], rtol=2e-2, atol=1e-3)


def test_the_head_at_its_input_size_costs_less_than_the_student_graph(backbone_files, bottle,
                                                                      runner):
    from edge_runtime.model.macs import features_graph_macs, inference_macs
    from edge_runtime.model.torch_model import ModelSpec, build_parts

    spec = ModelSpec.paste()
    trunk, teacher, student = build_parts(spec, backbone_files)
    student_graph = inference_macs(spec, trunk, teacher, student)["total"]
    graph = features_graph_macs(trunk, teacher, H.IMAGE_SIZE)
    grid = H.IMAGE_SIZE // 8  # layer 6's stride
    dim = H.padim_dim(H.HeadConfig(), runner.dim, grid * grid)
    rng = np.random.default_rng(0)  # only the shapes count
    head = H.fit_head(rng.standard_normal((4, grid * grid, runner.dim)).astype(np.float32),
                      H.HeadConfig(), H.IMAGE_SIZE, grid)
    assert head.arrays["projection"].shape == (runner.dim, dim)
    assert graph + head.scoring_macs < student_graph  # the budget IMAGE_SIZE was chosen in
    assert features_graph_macs(trunk, teacher, 320) > student_graph  # the next size is not
    assert dim == H.DIMS["padim"]  # the default bytes hold the chosen width
    fitted = {kind: H.fit_head(bottle["train"], H.HeadConfig(kind=kind, dim=16, max_bytes=2**40,
                                                             bank_patches=100), SIZE, 32)
              for kind in H.KINDS}
    # per position: projection, then the triangle of a 16 x 16 whitening or 100 bank
    # distances of 16
    resize = SIZE * 1024 + SIZE * SIZE * 32
    assert fitted["padim"].scoring_macs == 1024 * (runner.dim * 16 + 16 * 17 // 2) + resize
    assert fitted["patchcore"].scoring_macs == 1024 * (runner.dim * 16 + 100 * 16) + resize


def test_head_settings_name_the_heads_choices_and_reject_others():
    from edge_runtime.settings import HEAD_COVARIANCES, HEAD_KINDS, SettingsError, load_settings

    assert set(HEAD_KINDS) == set(H.KINDS) and HEAD_COVARIANCES == H.COVARIANCES
    assert load_settings(environ={}).heads.max_bytes == H.HeadConfig().max_bytes
    assert load_settings(environ={}).heads.image_size == H.IMAGE_SIZE
    with pytest.raises(SettingsError, match="heads.image_size must be a multiple of 32"):
        load_settings(environ={"EDGE_RUNTIME_HEADS_IMAGE_SIZE": "300"})
    with pytest.raises(SettingsError, match="heads.kind"):
        load_settings(environ={"EDGE_RUNTIME_HEADS_KIND": "knn"})
    with pytest.raises(SettingsError, match="heads.max_bytes"):
        load_settings(environ={"EDGE_RUNTIME_HEADS_MAX_BYTES": "1000"})
    assert load_settings(environ={}).heads.serve == "auto"
    with pytest.raises(SettingsError, match="heads.serve must be one of auto, student, head"):
        load_settings(environ={"EDGE_RUNTIME_HEADS_SERVE": "both"})


def test_a_head_fit_without_weights_says_why(tmp_path, data_root):
    """The features graph is written by a child process; its reason reaches /status."""
    from edge_runtime.services.heads import HeadOptions, HeadService

    empty = tmp_path / "no-weights"
    empty.mkdir()
    service = HeadService(tmp_path / "heads", HeadOptions(weights_dir=str(empty)))
    images = dataset.train_images(data_root, "bottle", limit=6)
    state = service.request_fit(3, lambda: images).result(120)
    service.shutdown()
    assert state["status"] == "failed", state
    assert "features graph could not be written" in state["error"]
    assert "MCUNet-in3 files not found" in state["error"], state["error"]


def test_a_head_fit_that_fails_in_its_child_says_why(tmp_path, data_root, features_graph):
    from edge_runtime.services.heads import HeadOptions, HeadService

    service = HeadService(tmp_path / "heads", HeadOptions(image_size=SIZE))
    service.graph_path.write_bytes(features_graph.read_bytes())
    images = dataset.train_images(data_root, "bottle", limit=5)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    state = service.request_fit(4, lambda: [*images, broken]).result(120)
    service.shutdown()
    assert state["status"] == "failed", state
    assert state["error"].startswith("RuntimeError: the head could not be fitted: ")
    assert "PNG or JPEG" in state["error"], state["error"]  # the child's own reason
    assert not service.head_path(4).exists()

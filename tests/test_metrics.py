import numpy as np
import pytest

from edge_runtime.evaluation import metrics


def test_auroc_and_f1_on_a_hand_computed_case():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.auroc(labels, scores) == pytest.approx(0.75)
    # best threshold 0.35: tp=2, fp=1, fn=0 -> F1 = 4/5
    assert metrics.f1_max(labels, scores) == pytest.approx(0.8)
    # AP = sum over recall steps of precision: 0.5*1 + 0.5*(2/3)
    assert metrics.average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)


def test_operational_f1_uses_the_given_threshold():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.f1_at(labels, scores, 0.5) == pytest.approx(2 * 1 / (1 + 2))
    assert metrics.f1_at(labels, scores, 0.05) == pytest.approx(2 * 2 / (4 + 2))


def test_aupro_weights_regions_equally():
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 0:2, 0:2] = True  # small region, found
    mask[0, 5:10, 5:10] = True  # big region, missed
    amap = np.full((1, 10, 10), 0.5)
    amap[0, 0:2, 0:2] = 1.0
    amap[0, 5:10, 5:10] = 0.0
    # up to FPR 1 the small region has overlap 1 and the big one 0 -> PRO = 0.5
    assert metrics.aupro(mask, amap) == pytest.approx(0.5, abs=1e-9)
    perfect = mask.astype(float)
    assert metrics.aupro(mask, perfect) == pytest.approx(1.0)
    # all scores tied: one point at (1, 1), interpolated -> PRO(f) = f, area/0.3 = 0.15
    assert metrics.aupro(mask, np.zeros((1, 10, 10))) == pytest.approx(0.15)


def test_degenerate_labels_give_nan():
    assert np.isnan(metrics.auroc(np.zeros(4), np.arange(4)))
    assert np.isnan(metrics.aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))))


def test_forgetting_matches_the_reference_definition():
    f1 = [[0.5], [0.4, 0.6], [0.25, 0.3, 0.7]]
    # task 0: best earlier 0.5 -> 1 - 0.25/0.5 = 0.5; task 1: 1 - 0.3/0.6 = 0.5
    assert metrics.average_forgetting(f1) == pytest.approx(0.5)
    assert metrics.average_forgetting([[0.5], [0.6, 0.6]]) == 0.0
    assert metrics.average_forgetting([[0.5]]) == 0.0


def test_exact_metrics_match_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + labels * 0.4, 2)  # many ties
    assert metrics.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores))
    precision, recall, _ = precision_recall_curve(labels, scores)
    best = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    assert metrics.f1_max(labels, scores) == pytest.approx(best)


def test_streamed_pixel_metrics_match_scikit_learn_on_real_maps(bottle_model, data_root):
    """The histogram curves, fed batch by batch, against scikit-learn and the exact AU-PRO
    on every pixel of real anomaly maps (bottle test images, defects and good)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    from edge_runtime.dataset import test_samples
    from edge_runtime.inference import model_dir as md
    from edge_runtime.inference.inferencer import AnomalyInferencer
    from edge_runtime.inference.preprocess import load_mask

    samples = test_samples(data_root, "bottle", 6)
    inferencer = AnomalyInferencer(bottle_model / md.MERGED, 256)
    maps = np.stack([p.anomaly_map for p in inferencer.predict_many([s.image for s in samples])])
    masks = np.stack([load_mask(s.mask, 256) for s in samples])
    threshold = float(np.quantile(maps, 0.97))
    curves = metrics.PixelCurves(threshold)
    for start in range(0, len(samples), 5):
        curves.add(masks[start : start + 5], maps[start : start + 5])
    labels, values = masks.ravel(), maps.ravel()
    assert curves.auroc() == pytest.approx(roc_auc_score(labels, values), abs=1e-3)
    assert curves.average_precision() == pytest.approx(
        average_precision_score(labels, values), abs=1e-3)
    precision, recall, _ = precision_recall_curve(labels, values)
    f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    assert curves.f1_max() == pytest.approx(f1, abs=1e-3)
    assert curves.aupro() == pytest.approx(metrics.aupro(masks, maps), abs=1e-3)
    assert curves.operational_f1() == pytest.approx(metrics.f1_at(masks, maps, threshold))
    assert 0.5 < curves.auroc() <= 1.0 and 0.0 < curves.aupro() <= 1.0


def test_pixel_curves_order_negative_and_positive_scores():
    curves = metrics.PixelCurves(with_aupro=False)
    labels = np.array([[[False, False, True, True]]])
    curves.add(labels, np.array([[[-2.0, -1.0, 0.5, 3.0]]]))
    assert curves.auroc() == pytest.approx(1.0)
    curves.add(labels, np.array([[[3.0, 0.5, -1.0, -2.0]]]))
    assert curves.auroc() == pytest.approx(0.5)
    assert np.isnan(curves.aupro())

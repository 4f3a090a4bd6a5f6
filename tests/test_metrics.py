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

"""Calibration from normal scores alone: the stated promise, the warning, the paper rule."""

import numpy as np
import pytest

from edge_runtime.inference.thresholds import (
    PAPER_POLICY,
    CalibrationPolicy,
    Thresholds,
    calibrate,
    normals_needed,
)


def _maps(scores: np.ndarray) -> np.ndarray:
    return np.ones((len(scores), 4, 4), np.float32) * scores[:, None, None].astype(np.float32)


def test_normals_needed_for_a_stated_confidence():
    # the maximum of n normals bounds the (1 - frr) quantile when 1 - (1 - frr)^n >= conf
    assert normals_needed(0.05, 0.9) == 45
    assert normals_needed(0.01, 0.9) == 230
    assert normals_needed(0.01, 0.95) == 299
    n = normals_needed(0.05, 0.9)
    assert 1 - 0.95**n >= 0.9 > 1 - 0.95 ** (n - 1)


def test_enough_normals_give_a_distribution_free_threshold_without_warning():
    scores = np.random.default_rng(0).lognormal(0.0, 0.5, 400)
    t = calibrate(_maps(scores), scores, CalibrationPolicy("frr", 0.05, 0.9))
    assert t.method == "order-statistic" and t.warning is None
    assert t.image in scores and t.pixel == t.image  # one number: verdict and colour scale
    # an order statistic above the empirical 95th percentile, below the maximum
    assert np.quantile(scores, 0.95) < t.image < scores.max()
    assert t.normal_count == 400 and t.score_stats["max"] == pytest.approx(scores.max())


def test_the_promise_holds_on_fresh_normals():
    """Over many draws, the false-reject rate on new normals exceeds the target in at most
    about 1 - confidence of the calibrations."""
    rng = np.random.default_rng(1)
    policy = CalibrationPolicy("frr", 0.05, 0.9)
    broken = 0
    for _ in range(200):
        scores = rng.gamma(2.0, 1.0, 60)
        threshold = calibrate(_maps(scores), scores, policy).image
        broken += np.mean(rng.gamma(2.0, 1.0, 4000) > threshold) > 0.05
    assert broken / 200 <= 0.15


def test_too_few_normals_warn_and_say_how_many_are_needed():
    scores = np.random.default_rng(2).lognormal(0.0, 0.3, 12)
    t = calibrate(_maps(scores), scores, CalibrationPolicy("frr", 0.05, 0.9))
    assert t.method == "log-normal" and t.image >= scores.max()
    assert "only 12 held-out normal images" in t.warning and "needs 45" in t.warning
    tiny = calibrate(_maps(scores[:2]), scores[:2])
    assert tiny.method == "max-margin" and tiny.warning


def test_paper_policy_is_unchanged():
    scores = np.linspace(1.0, 2.0, 21)
    maps = _maps(scores)
    t = calibrate(maps, scores, PAPER_POLICY)
    assert t.image == pytest.approx(np.quantile(scores, 0.99) * 1.1)
    assert t.pixel == pytest.approx(np.quantile(maps, 0.999) * 1.1)
    assert t.method == "paper" and t.warning is None


def test_round_trip_and_old_manifests():
    scores = np.random.default_rng(3).lognormal(0.0, 0.3, 30)
    t = calibrate(_maps(scores), scores)
    assert Thresholds.from_dict(t.to_dict()) == t
    old = Thresholds.from_dict({"image": 1.5, "pixel": 2.0, "normal_count": 20})
    assert old.method == "paper" and old.warning is None and old.verdict(1.6) == "reject"


def test_override_moves_the_colour_scale_with_the_verdict():
    scores = np.random.default_rng(4).lognormal(0.0, 0.3, 30)
    t = calibrate(_maps(scores), scores)
    moved = t.overridden(5.0, None)
    assert moved.image == moved.pixel == 5.0
    assert t.overridden(5.0, 7.0).pixel == 7.0
    paper = calibrate(_maps(scores), scores, PAPER_POLICY)
    assert paper.overridden(5.0, None).pixel == paper.pixel


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        CalibrationPolicy("frr", 0.0, 0.9)
    with pytest.raises(ValueError):
        CalibrationPolicy("magic")
    with pytest.raises(ValueError):
        calibrate(np.zeros((0, 4, 4)), np.zeros(0))


def test_tolerance_factor_and_binomial_match_scipy():
    from scipy import stats

    from edge_runtime.inference.thresholds import _binomial_cdf, tolerance_factor

    for n, rel in ((5, 0.07), (10, 0.03), (21, 0.015), (44, 0.01)):
        exact = stats.nct.ppf(0.9, df=n - 1, nc=stats.norm.ppf(0.95) * n**0.5) / n**0.5
        assert tolerance_factor(n, 0.95, 0.9) == pytest.approx(exact, rel=rel)
    np.testing.assert_allclose(_binomial_cdf(60, 0.95), stats.binom.cdf(np.arange(61), 60, 0.95),
                               rtol=1e-9, atol=1e-12)

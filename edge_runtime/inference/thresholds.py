"""Thresholds and the verdict: the one place that decides pass or reject.

On a line, nobody has defect labels when a product is added, so the verdict threshold comes
from held-out normal scores alone, never from a label-tuned optimum. The default policy
states what it promises: a false-reject rate of at most ``target_frr`` with probability
``confidence``. With enough normals that promise is distribution-free (an order
statistic); with fewer it rests on a log-normal fit of the scores and the thresholds carry
a warning saying how many normals the promise needs. The map's colour scale uses the same
number as the verdict, so what looks hot is what gets rejected.
The operator may override it; the override and the calibrated value meet here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist

import numpy as np

IMAGE_QUANTILE = 0.99
PIXEL_QUANTILE = 0.999
MARGIN = 1.1  # the papers' rule: held-out sets are small; the max of 20 scores under-estimates

PASS = "pass"
REJECT = "reject"

POLICIES = ("frr", "paper")


@dataclass(frozen=True)
class CalibrationPolicy:
    """``frr``: an upper confidence bound on the (1 - target_frr) quantile of normal scores;
    ``paper``: 1.1 x the 99th percentile (image) and 99.9th (pixel), as the papers did."""

    method: str = "frr"
    target_frr: float = 0.05  # 1 part in 20 re-inspected for nothing, at most ...
    confidence: float = 0.9  # ... with 90% confidence: 45 normals make it distribution-free

    def __post_init__(self) -> None:
        if self.method not in POLICIES:
            raise ValueError(f"calibration method must be one of {POLICIES}")
        if not 0.0 < self.target_frr < 0.5 or not 0.5 <= self.confidence < 1.0:
            raise ValueError("target_frr must be in (0, 0.5) and confidence in [0.5, 1)")


PAPER_POLICY = CalibrationPolicy("paper")


def normals_needed(target_frr: float, confidence: float) -> int:
    """Held-out normals for which their maximum score is a distribution-free threshold:
    P(false-reject rate <= target_frr) >= confidence needs 1 - (1 - frr)^n >= confidence.
    (5% at 90%: 45 images; 1% at 90%: 230.)"""
    return int(math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_frr)))


@dataclass(frozen=True)
class Thresholds:
    image: float  # verdict threshold on the image score
    pixel: float  # colour scale of the map: pixels above it are anomalous
    normal_count: int = 0  # held-out normal images it was calibrated on
    # their image scores, so an operator can see where the threshold sits among them
    normal_scores: tuple[float, ...] = ()
    method: str = "paper"  # how ``image`` was chosen (see calibrate)
    target_frr: float | None = None
    confidence: float | None = None
    warning: str | None = None  # for the operator: the promise rests on too few normals
    score_stats: dict = field(default_factory=dict)  # the normal scores, summarised

    def verdict(self, score: float) -> str:
        return REJECT if score > self.image else PASS

    def overridden(self, image: float | None, pixel: float | None) -> Thresholds:
        """The operator's values where set, the calibrated ones elsewhere. Outside the
        papers' policy the colour scale follows an overridden verdict threshold."""
        tied = self.method != "paper" and image and not pixel
        return replace(self, image=image or self.image,
                       pixel=image if tied else pixel or self.pixel)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known | {"image": float(data["image"]), "pixel": float(data["pixel"]),
                              "normal_count": int(data.get("normal_count", 0)),
                              "normal_scores": tuple(float(x)
                                                     for x in data.get("normal_scores", ()))})


def _stats(scores: np.ndarray) -> dict:
    return {"mean": float(scores.mean()), "std": float(scores.std()),
            "p50": float(np.quantile(scores, 0.5)), "p95": float(np.quantile(scores, 0.95)),
            "max": float(scores.max())}


def _binomial_cdf(n: int, p: float) -> np.ndarray:
    """P(Binomial(n, p) <= k) for k = 0..n (log-space pmf; no scipy on the serving side)."""
    k = np.arange(n + 1)
    lgamma = np.vectorize(math.lgamma)
    log_pmf = (lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
               + k * math.log(p) + (n - k) * math.log1p(-p))
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def tolerance_factor(n: int, coverage: float, confidence: float) -> float:
    """One-sided normal tolerance factor k: mean + k sd bounds the ``coverage`` quantile
    with ``confidence``. Natrella's approximation (standard library only, so serving never
    imports scipy): 1% below the exact non-central t value at n = 21, 2.5% at n = 10, 6% at
    n = 5 — slightly liberal exactly where the threshold already carries a warning."""
    normal = NormalDist()
    zp, zg = normal.inv_cdf(coverage), normal.inv_cdf(confidence)
    a = 1.0 - zg * zg / (2.0 * (n - 1))
    b = zp * zp - zg * zg / n
    return (zp + math.sqrt(zp * zp - a * b)) / a


def frr_threshold(scores: np.ndarray, policy: CalibrationPolicy) -> tuple[float, str, str | None]:
    """(threshold, method, warning) for ``policy`` from normal image scores."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(ordered)
    # the r-th smallest score bounds the (1 - frr) quantile with the wanted confidence
    # when P(Binomial(n, 1 - frr) <= r - 1) >= confidence: take the smallest such r
    ok = _binomial_cdf(n, 1.0 - policy.target_frr)[:n] >= policy.confidence
    if ok.any():
        return float(ordered[int(np.argmax(ok))]), "order-statistic", None
    needed = normals_needed(policy.target_frr, policy.confidence)
    warning = (f"only {n} held-out normal images: a false-reject rate <= "
               f"{policy.target_frr:.0%} at {policy.confidence:.0%} confidence needs {needed} "
               f"for a distribution-free threshold; this one extrapolates a log-normal fit")
    if n < 3:
        return float(ordered[-1]) * MARGIN, "max-margin", warning
    logs = np.log(np.maximum(ordered, 1e-12))
    k = tolerance_factor(n, 1.0 - policy.target_frr, policy.confidence)
    bound = float(np.exp(logs.mean() + k * logs.std(ddof=1)))
    return max(bound, float(ordered[-1])), "log-normal", warning


def calibrate(normal_maps: np.ndarray, normal_scores: np.ndarray,
              policy: CalibrationPolicy | None = None) -> Thresholds:
    """Thresholds from held-out normal images only."""
    policy = policy or CalibrationPolicy()
    scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    if len(scores) == 0:
        raise ValueError("calibration needs at least one held-out normal image")
    kept = tuple(round(float(x), 7) for x in scores)
    if policy.method == "paper":
        image = float(np.quantile(scores, IMAGE_QUANTILE)) * MARGIN
        pixel = float(np.quantile(normal_maps, PIXEL_QUANTILE)) * MARGIN
        return Thresholds(image, pixel, len(scores), kept, "paper", score_stats=_stats(scores))
    image, method, warning = frr_threshold(scores, policy)
    return Thresholds(image, image, len(scores), kept, method, policy.target_frr,
                      policy.confidence, warning, _stats(scores))

"""Statistics that can rank methods from a handful of seeds: interquartile means with bootstrap intervals, and the
probability that one method does better than another (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice"; the resampling is ``scipy.stats.bootstrap``'s).

One bench setting is one task, so the stratified bootstrap of that paper is a bootstrap over the seeds of each
method. Everything is seeded: the same runs give the same intervals. Recovery times that never happened are
counted at the horizon (the generations left in the run): a lower bound, which keeps the statistics finite and
still ranks a run that never recovered behind every run that did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 5000
SEED = 0


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % of the values (robust to a few outliers, less noisy than
    the median)."""
    return float(stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25))


def _interval(result: stats._resampling.BootstrapResult | None, point: float) -> list[float]:
    if result is None:
        return [point, point]
    low, high = result.confidence_interval
    # scipy gives NaN when every resample has the same value (degenerate data): the interval is that value
    return [point if math.isnan(low) else float(low), point if math.isnan(high) else float(high)]


def iqm_interval(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = SEED) -> dict:
    """IQM of ``values`` and its percentile-bootstrap confidence interval: ``{"iqm", "ci": [low, high], "n"}``."""
    x = np.asarray(values, dtype=np.float64)
    point = iqm(x)
    result = None
    if len(x) > 1 and np.ptp(x) > 0:
        result = stats.bootstrap((x,), lambda s, axis: stats.trim_mean(s, 0.25, axis=axis), n_resamples=resamples,
                                 confidence_level=confidence, method="percentile", vectorized=True,
                                 random_state=np.random.default_rng(seed))
    return {"iqm": point, "ci": _interval(result, point), "n": int(len(x))}


def probability_lower(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X < Y) + P(X = Y) / 2 for a run X of the first method and a run Y of the second (for times: the chance the
    first is faster; 0.5 means no difference)."""
    a, b = np.asarray(x, dtype=np.float64)[:, None], np.asarray(y, dtype=np.float64)[None, :]
    return float(np.mean((a < b) + 0.5 * (a == b)))


def improvement_interval(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE,
                         resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """:func:`probability_lower` of ``x`` against ``y`` and its bootstrap interval (seeds of each resampled on
    their own): ``{"p", "ci": [low, high], "n": [len(x), len(y)]}``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    point = probability_lower(x, y)

    def statistic(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
        lower = (a[..., :, None] < b[..., None, :]) + 0.5 * (a[..., :, None] == b[..., None, :])
        return lower.mean(axis=(-1, -2))

    result = None
    if len(x) > 1 and len(y) > 1 and np.ptp(np.concatenate([x, y])) > 0:
        result = stats.bootstrap((x, y), statistic, n_resamples=resamples, confidence_level=confidence,
                                 method="percentile", vectorized=True, paired=False,
                                 random_state=np.random.default_rng(seed))
    return {"p": point, "ci": _interval(result, point), "n": [int(len(x)), int(len(y))]}

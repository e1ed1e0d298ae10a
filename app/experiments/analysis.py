"""The statistics of an experiment's results: rates with 95% confidence intervals, lift against
the control, two-sided p-values and the sample-ratio-mismatch check.

Every function broadcasts over numpy arrays, so thousands of simulated experiments are analysed
in one call (the tests check the false-positive rate that way).

Two kinds of metric:

- a **proportion of users** (conversion rate: users with at least one conversion / users). The
  user is the unit of randomisation, so users are independent draws: Wilson intervals and the
  pooled two-proportion z-test apply as they are.
- a **ratio of sums** (CTR: clicks / exposures). One user sees many answers, so exposures are
  not independent; treating them as such understates the variance and over-claims. The
  variance comes from per-user sums by the delta method (Deng et al., "Applying the Delta
  Method in Metric Analytics", 2018), and the test is a z-test on the difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


def _stats() -> Any:
    """scipy.stats, imported on the first analysis: importing it costs every API process
    tens of megabytes that only the results endpoint needs."""
    from scipy import stats

    return stats


ALPHA = 0.05
# A sample ratio mismatch is a broken split, not a subtle effect: flag it only when the odds of
# chance are tiny, as is customary, so that a healthy experiment is almost never flagged.
SRM_ALPHA = 0.001


def _z(alpha: float) -> float:
    return float(_stats().norm.ppf(1.0 - alpha / 2.0))


def _floats(value: ArrayLike) -> FloatArray:
    return np.asarray(value, dtype=np.float64)


def _divide(numerator: ArrayLike, denominator: ArrayLike) -> FloatArray:
    """``numerator / denominator``, NaN where the denominator is 0."""
    num, den = np.broadcast_arrays(_floats(numerator), _floats(denominator))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def wilson_interval(
    successes: ArrayLike, trials: ArrayLike, alpha: float = ALPHA
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval of a proportion; NaN where ``trials`` is 0.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and keeps its coverage for
    proportions near 0, which click and conversion rates usually are.
    """
    x, n = np.broadcast_arrays(_floats(successes), _floats(trials))
    z = _z(alpha)
    p = _divide(x, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denominator
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def two_proportion_test(
    successes_a: ArrayLike, trials_a: ArrayLike, successes_b: ArrayLike, trials_b: ArrayLike
) -> FloatArray:
    """Two-sided p-value of the pooled two-proportion z-test that both rates are equal.

    1.0 where the pooled rate is 0 or 1 (no variation: no evidence of a difference); NaN where
    either side has no trials.
    """
    xa, na, xb, nb = np.broadcast_arrays(
        _floats(successes_a), _floats(trials_a), _floats(successes_b), _floats(trials_b)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (xa + xb) / (na + nb)
        se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb))
        z = (xb / nb - xa / na) / se
        p = 2.0 * _stats().norm.sf(np.abs(z))
    p = np.where(se == 0, 1.0, p)
    return np.where((na == 0) | (nb == 0), np.nan, p)


def proportion_variance(successes: ArrayLike, trials: ArrayLike) -> FloatArray:
    """Variance of an observed proportion, ``p (1 - p) / n``; NaN where ``trials`` is 0."""
    p = _divide(successes, trials)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _divide(p * (1.0 - p), trials)


def ratio_metric(
    units: ArrayLike,
    sum_x: ArrayLike,
    sum_y: ArrayLike,
    sum_xx: ArrayLike,
    sum_yy: ArrayLike,
    sum_xy: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """A ratio of sums over units and its delta-method variance.

    Parameters
    ----------
    units : array_like
        Number of independent units (users), ``n``.
    sum_x, sum_y : array_like
        Sums over units of the numerator ``x_u`` (clicks) and denominator ``y_u`` (exposures).
    sum_xx, sum_yy, sum_xy : array_like
        Sums over units of ``x_u**2``, ``y_u**2`` and ``x_u * y_u``.

    Returns
    -------
    ratio : ndarray
        ``sum_x / sum_y``; NaN where ``sum_y`` is 0.
    variance : ndarray
        ``(s_xx - 2 r s_xy + r**2 s_yy) / (n * ybar**2)`` with sample (co)variances ``s``;
        NaN for fewer than two units.
    """
    n, sx, sy, sxx, syy, sxy = np.broadcast_arrays(
        _floats(units),
        _floats(sum_x),
        _floats(sum_y),
        _floats(sum_xx),
        _floats(sum_yy),
        _floats(sum_xy),
    )
    ratio = _divide(sx, sy)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_x = (sxx - sx * sx / n) / (n - 1.0)
        var_y = (syy - sy * sy / n) / (n - 1.0)
        cov_xy = (sxy - sx * sy / n) / (n - 1.0)
        mean_y = sy / n
        variance = (var_x - 2.0 * ratio * cov_xy + ratio * ratio * var_y) / (n * mean_y * mean_y)
    variance = np.where(n < 2, np.nan, np.maximum(variance, 0.0))
    return ratio, variance


def normal_interval(
    estimate: ArrayLike, variance: ArrayLike, alpha: float = ALPHA
) -> tuple[FloatArray, FloatArray]:
    """``estimate -/+ z * sqrt(variance)``."""
    half = _z(alpha) * np.sqrt(_floats(variance))
    est = _floats(estimate)
    return est - half, est + half


def difference_test(
    estimate_a: ArrayLike, variance_a: ArrayLike, estimate_b: ArrayLike, variance_b: ArrayLike
) -> FloatArray:
    """Two-sided p-value of the z-test that two independent estimates are equal.

    1.0 where both variances are 0 and the estimates are equal; 0.0 where both variances are 0
    and the estimates differ; NaN where an input is NaN.
    """
    a, va, b, vb = np.broadcast_arrays(
        _floats(estimate_a), _floats(variance_a), _floats(estimate_b), _floats(variance_b)
    )
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 * _stats().norm.sf(np.abs(b - a) / se)
    return np.where(se == 0, np.where(a == b, 1.0, 0.0), p)


def relative_lift(
    control: ArrayLike,
    variance_control: ArrayLike,
    treatment: ArrayLike,
    variance_treatment: ArrayLike,
    alpha: float = ALPHA,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``treatment / control - 1`` with a delta-method confidence interval.

    ``var(t / c) ~= var_t / c**2 + t**2 var_c / c**4`` for independent ``t`` and ``c``.
    NaN where the control is 0 (no relative change can be stated).
    """
    c, vc, t, vt = np.broadcast_arrays(
        _floats(control), _floats(variance_control), _floats(treatment), _floats(variance_treatment)
    )
    lift = _divide(t, c) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where(c != 0, vt / (c * c) + t * t * vc / (c**4), np.nan)
    low, high = normal_interval(lift, variance, alpha)
    return lift, low, high


def sample_ratio_mismatch(observed: ArrayLike, shares: ArrayLike) -> float | None:
    """p-value of the chi-square goodness-of-fit test of users per variant against the
    configured shares; ``None`` while an expected count is under 5 (the test's approximation
    does not hold yet)."""
    counts = _floats(observed)
    weights = _floats(shares)
    expected = counts.sum() * weights / weights.sum()
    if counts.size < 2 or (expected < 5).any():
        return None
    result: Any = _stats().chisquare(counts, f_exp=expected)
    return float(result.pvalue)

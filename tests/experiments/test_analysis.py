"""The statistics: hand-checked examples, and simulations of many experiments (vectorised) that
show the tests keep their false-positive rate and find a real effect."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from app.experiments.analysis import (
    ALPHA,
    difference_test,
    ratio_metric,
    relative_lift,
    sample_ratio_mismatch,
    two_proportion_test,
    wilson_interval,
)

SIMULATIONS = 4000
# The observed false-positive rate of SIMULATIONS experiments stays within 4 standard errors of
# alpha unless the test is miscalibrated.
TOLERANCE = 4 * np.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)


def test_wilson_interval_known_value() -> None:
    """10 of 100: the textbook Wilson 95% interval is 0.0552 to 0.1744."""
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.05523, abs=1e-4)
    assert high == pytest.approx(0.17437, abs=1e-4)


def test_wilson_interval_stays_in_bounds_and_handles_no_trials() -> None:
    low, high = wilson_interval([0, 5, 0], [50, 5, 0])
    assert low[0] == pytest.approx(0.0, abs=1e-12)
    assert 0 < high[0] < 0.1
    assert high[1] == pytest.approx(1.0)
    assert low[1] > 0.5
    assert np.isnan(low[2])
    assert np.isnan(high[2])


def test_two_proportion_test_equals_the_chi_square_test() -> None:
    """The pooled z-test is the 2x2 chi-square test without continuity correction."""
    p = float(two_proportion_test(100, 1000, 130, 1000))
    table = [[100, 900], [130, 870]]
    assert p == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert p == pytest.approx(0.0355, abs=1e-3)


def test_two_proportion_test_edge_cases() -> None:
    assert float(two_proportion_test(0, 100, 0, 100)) == 1.0
    assert np.isnan(two_proportion_test(0, 0, 5, 100))


def test_ratio_metric_is_the_linearised_variance() -> None:
    """Against a direct computation from per-user values: var(x - R y) / (n ybar^2)."""
    rng = np.random.default_rng(3)
    exposures = rng.integers(1, 8, size=500)
    clicks = rng.binomial(exposures, 0.2)
    ratio, variance = ratio_metric(
        500,
        clicks.sum(),
        exposures.sum(),
        (clicks**2).sum(),
        (exposures**2).sum(),
        (clicks * exposures).sum(),
    )
    r = clicks.sum() / exposures.sum()
    linearised = (clicks - r * exposures) / exposures.mean()
    assert ratio == pytest.approx(r)
    assert variance == pytest.approx(linearised.var(ddof=1) / 500)


def test_ratio_metric_with_one_exposure_per_user_is_a_proportion() -> None:
    """When every user sees one answer, CTR is a proportion and its variance p(1-p)/n (up to
    the sample variance's n/(n-1))."""
    n, clicks = 1000, 80
    _, variance = ratio_metric(n, clicks, n, clicks, n, clicks)
    assert variance == pytest.approx(0.08 * 0.92 / n * n / (n - 1))


def test_relative_lift_and_its_interval() -> None:
    lift, low, high = relative_lift(0.10, 0.0001, 0.12, 0.0001)
    assert lift == pytest.approx(0.2)
    assert low < 0.2 < high
    assert np.isnan(relative_lift(0.0, 0.0, 0.1, 0.001)[0])


def _clustered_ctr(
    rng: np.random.Generator, users: int, ctr: float, simulations: int = SIMULATIONS
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per-user exposures and clicks of many experiments' arms, shape (simulations, users):
    some users click much more than others, as real users do."""
    exposures = 1 + rng.poisson(4, size=(simulations, users))
    propensity = rng.beta(0.3, 0.3 * (1 - ctr) / ctr, size=(simulations, users))
    clicks = rng.binomial(exposures, propensity)
    return exposures, clicks


def _delta_p_values(
    arms: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
) -> npt.NDArray[np.float64]:
    estimates = []
    for exposures, clicks in arms:
        estimates.append(
            ratio_metric(
                exposures.shape[1],
                clicks.sum(axis=1),
                exposures.sum(axis=1),
                (clicks**2).sum(axis=1),
                (exposures**2).sum(axis=1),
                (clicks * exposures).sum(axis=1),
            )
        )
    (ra, va), (rb, vb) = estimates
    return difference_test(ra, va, rb, vb)


@pytest.mark.parametrize("seed", [1, 2])
def test_aa_conversion_is_not_flagged_more_often_than_alpha(seed: int) -> None:
    """Thousands of A/A experiments (both arms 4% conversion, 2,000 users each): about 5% of
    them come out significant, as alpha promises."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(2000, 0.04, size=SIMULATIONS)
    b = rng.binomial(2000, 0.04, size=SIMULATIONS)
    false_positives = (two_proportion_test(a, 2000, b, 2000) < ALPHA).mean()
    assert abs(false_positives - ALPHA) < TOLERANCE, false_positives


@pytest.mark.parametrize("seed", [1, 2])
def test_aa_ctr_is_not_flagged_more_often_than_alpha(seed: int) -> None:
    """A/A experiments where users see several answers and differ in how much they click: the
    delta-method test holds alpha, while counting exposures as independent trials (the naive
    binomial test) raises far more false alarms."""
    rng = np.random.default_rng(seed)
    arm_a = _clustered_ctr(rng, 500, 0.05)
    arm_b = _clustered_ctr(rng, 500, 0.05)
    false_positives = (_delta_p_values([arm_a, arm_b]) < ALPHA).mean()
    assert abs(false_positives - ALPHA) < TOLERANCE, false_positives

    naive = two_proportion_test(
        arm_a[1].sum(axis=1), arm_a[0].sum(axis=1), arm_b[1].sum(axis=1), arm_b[0].sum(axis=1)
    )
    assert (naive < ALPHA).mean() > ALPHA + 2 * TOLERANCE


def test_a_truly_better_variant_is_detected() -> None:
    """B converts 6% of users where A converts 5% (20,000 users each): the test calls nearly
    every such experiment significant, and the lift interval covers the true +20% about 95% of
    the time."""
    rng = np.random.default_rng(7)
    n = 20_000
    a = rng.binomial(n, 0.05, size=SIMULATIONS)
    b = rng.binomial(n, 0.06, size=SIMULATIONS)
    p = two_proportion_test(a, n, b, n)
    assert (p < ALPHA).mean() > 0.95
    _, low, high = relative_lift(a / n, a / n * (1 - a / n) / n, b / n, b / n * (1 - b / n) / n)
    coverage = ((low < 0.2) & (high > 0.2)).mean()
    assert 0.93 < coverage < 0.97


def test_a_truly_better_ctr_is_detected() -> None:
    rng = np.random.default_rng(8)
    arms = [_clustered_ctr(rng, 2000, ctr, simulations=400) for ctr in (0.05, 0.065)]
    assert (_delta_p_values(arms) < ALPHA).mean() > 0.9


def test_sample_ratio_mismatch() -> None:
    """A 51/49 split of 100,000 users configured as 50/50 is flagged (p ~ 2.5e-10); a 50.5/49.5
    one is within chance (p ~ 0.0016, above the 0.001 threshold); tiny samples are not
    tested."""
    assert (sample_ratio_mismatch([51_000, 49_000], [5000, 5000]) or 1.0) < 1e-9
    assert (sample_ratio_mismatch([50_500, 49_500], [5000, 5000]) or 0.0) == pytest.approx(
        0.00157, abs=1e-4
    )
    assert sample_ratio_mismatch([3, 4], [5000, 5000]) is None
    assert (sample_ratio_mismatch([60_000, 40_000], [6000, 4000]) or 0.0) == pytest.approx(1.0)

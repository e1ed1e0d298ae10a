"""An experiment's results as the API answers them: tallies turned into rates, intervals,
comparisons with the control, the sample-ratio check and a verdict that does not over-claim."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.db.models import Experiment
from app.experiments.analysis import (
    ALPHA,
    SRM_ALPHA,
    difference_test,
    normal_interval,
    proportion_variance,
    ratio_metric,
    relative_lift,
    sample_ratio_mismatch,
    two_proportion_test,
    wilson_interval,
)
from app.experiments.attribution import BY_RECOMMENDATION_ID, BY_WINDOW, Tallies, VariantTally
from app.schemas import (
    AttributionOut,
    ComparisonOut,
    ExperimentResultsOut,
    RateOut,
    SampleRatioOut,
    VariantResultOut,
)

# Fewest successes (and failures) over both arms before a z-test's normal approximation is
# trusted: the usual "at least 5 per cell" rule, summed over the two arms.
MIN_OUTCOMES = 10


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _percent(value: float) -> str:
    return f"{value * 100:+.1f}%"


def _p(value: float) -> str:
    return "p < 0.0001" if value < 0.0001 else f"p = {value:.4f}"


@dataclass(frozen=True)
class _Metric:
    """One arm's estimate of a metric and the variance of that estimate."""

    value: float
    variance: float


def _ctr(t: VariantTally) -> _Metric:
    ratio, variance = ratio_metric(
        t.users, t.clicks, t.exposures, t.clicks_sq, t.exposures_sq, t.clicks_exposures
    )
    return _Metric(float(ratio), float(variance))


def _conversion(t: VariantTally) -> _Metric:
    return _Metric(
        float(t.converting_users / t.users) if t.users else math.nan,
        float(proportion_variance(t.converting_users, t.users)),
    )


def _compare(
    label: str,
    control: _Metric,
    treatment: _Metric,
    p_value: float,
    enough: bool,
    missing: str,
    alpha: float,
) -> ComparisonOut:
    lift, low, high = (
        float(v)
        for v in relative_lift(control.value, control.variance, treatment.value, treatment.variance)
    )
    difference = treatment.value - control.value
    if not enough:
        return ComparisonOut(
            absolute_difference=_number(difference),
            relative_lift=_number(lift),
            lift_ci_low=_number(low),
            lift_ci_high=_number(high),
            p_value=None,
            significant=None,
            enough_data=False,
            note=f"{label}: not enough data ({missing})",
        )
    significant = bool(p_value < alpha)
    verdict = "significant" if significant else "not significant"
    if math.isfinite(lift) and math.isfinite(low) and math.isfinite(high):
        change = f"{_percent(lift)} (95% CI {_percent(low)} to {_percent(high)})"
    else:
        change = f"{control.value:.4g} in the control, {treatment.value:.4g} here"
    return ComparisonOut(
        absolute_difference=_number(difference),
        relative_lift=_number(lift),
        lift_ci_low=_number(low),
        lift_ci_high=_number(high),
        p_value=_number(p_value),
        significant=significant,
        enough_data=True,
        note=f"{label} {change}, {_p(p_value)}: {verdict}",
    )


def _short_of(names: Sequence[str], tallies: Sequence[VariantTally], min_users: int) -> list[str]:
    return [
        f"{name} has {t.users} of the {min_users} users needed"
        for name, t in zip(names, tallies, strict=True)
        if t.users < min_users
    ]


def build_results(
    experiment: Experiment, tallies: Tallies, min_users: int, now: datetime
) -> ExperimentResultsOut:
    """Rates, comparisons and a verdict from an experiment's tallies."""
    stored = experiment.variants
    names = [str(v["name"]) for v in stored]
    shares_bp = [int(v["share_bp"]) for v in stored]
    per_variant = [tallies.variants.get(name, VariantTally()) for name in names]
    control_name, control = names[0], per_variant[0]
    treatments = len(names) - 1
    # Several treatments against one control: Bonferroni keeps the chance of any false alarm
    # at alpha.
    alpha = ALPHA / max(treatments, 1)

    observed = [t.users for t in per_variant]
    total_users = sum(observed)
    srm_p = sample_ratio_mismatch(observed, shares_bp)
    mismatch = srm_p is not None and srm_p < SRM_ALPHA
    sample_ratio = SampleRatioOut(
        p_value=srm_p,
        mismatch=mismatch,
        expected_users={n: total_users * s / 10_000 for n, s in zip(names, shares_bp, strict=True)},
        observed_users=dict(zip(names, observed, strict=True)),
    )

    control_ctr, control_conversion = _ctr(control), _conversion(control)
    results: list[VariantResultOut] = []
    ctr_comparisons: list[tuple[str, ComparisonOut]] = []
    ctr_missing: list[str] = []  # why CTR comparisons cannot be tested yet
    for index, (name, share, t) in enumerate(zip(names, shares_bp, per_variant, strict=True)):
        ctr, conversion = _ctr(t), _conversion(t)
        ctr_low, ctr_high = normal_interval(ctr.value, ctr.variance)
        conv_low, conv_high = wilson_interval(t.converting_users, t.users)
        result = VariantResultOut(
            name=name,
            share=share / 100,
            is_control=index == 0,
            users=t.users,
            exposures=t.exposures,
            clicks=t.clicks,
            conversions=t.conversions,
            converting_users=t.converting_users,
            ctr=RateOut(
                value=_number(ctr.value),
                ci_low=_number(max(float(ctr_low), 0.0)),
                ci_high=_number(ctr_high),
            ),
            conversion_rate=RateOut(
                value=_number(conversion.value),
                ci_low=_number(conv_low),
                ci_high=_number(conv_high),
            ),
        )
        if index > 0:
            short = _short_of([control_name, name], [control, t], min_users)
            clicks = control.clicks + t.clicks
            ctr_short = [*short]
            if clicks < MIN_OUTCOMES:
                ctr_short.append(f"{clicks} clicks of the {MIN_OUTCOMES} needed")
            result.ctr_vs_control = _compare(
                "CTR",
                control_ctr,
                ctr,
                float(
                    difference_test(
                        control_ctr.value, control_ctr.variance, ctr.value, ctr.variance
                    )
                ),
                not ctr_short,
                "; ".join(ctr_short),
                alpha,
            )
            converted = control.converting_users + t.converting_users
            not_converted = control.users + t.users - converted
            conv_short = [*short]
            if converted < MIN_OUTCOMES:
                conv_short.append(f"{converted} converting users of the {MIN_OUTCOMES} needed")
            elif not_converted < MIN_OUTCOMES:
                conv_short.append("almost every user converted: nothing left to compare")
            result.conversion_rate_vs_control = _compare(
                "conversion rate",
                control_conversion,
                conversion,
                float(
                    two_proportion_test(
                        control.converting_users, control.users, t.converting_users, t.users
                    )
                ),
                not conv_short,
                "; ".join(conv_short),
                alpha,
            )
            ctr_comparisons.append((name, result.ctr_vs_control))
            ctr_missing.extend(ctr_short)
        results.append(result)

    verdict, summary = _verdict(
        experiment, per_variant, names, mismatch, srm_p, ctr_comparisons, ctr_missing
    )
    return ExperimentResultsOut(
        experiment=experiment.name,
        status=experiment.status,
        started_at=experiment.started_at,
        stopped_at=experiment.stopped_at,
        computed_at=now,
        verdict=verdict,
        summary=summary,
        alpha=ALPHA,
        min_users_per_variant=min_users,
        sample_ratio=sample_ratio,
        attribution=AttributionOut(
            window_seconds=experiment.attribution_window_seconds,
            by_recommendation_id=tallies.rules[BY_RECOMMENDATION_ID],
            by_window=tallies.rules[BY_WINDOW],
        ),
        variants=results,
    )


def _verdict(
    experiment: Experiment,
    per_variant: Sequence[VariantTally],
    names: Sequence[str],
    mismatch: bool,
    srm_p: float | None,
    comparisons: Sequence[tuple[str, ComparisonOut]],
    missing: Sequence[str],
) -> tuple[Any, str]:
    """The experiment's verdict and a one-line summary; CTR, the primary metric, decides."""
    if experiment.status == "draft" and not any(t.exposures for t in per_variant):
        return "not_started", "the experiment has not started: no user has seen a variant yet"
    if mismatch:
        observed = ", ".join(f"{n} {t.users}" for n, t in zip(names, per_variant, strict=True))
        return (
            "sample_ratio_mismatch",
            f"sample ratio mismatch ({_p(srm_p or 0.0)}): users split {observed}, far from the "
            "configured shares; assignment or exposure logging is broken, so no conclusion "
            "should be drawn",
        )
    if missing:
        return "not_enough_data", "not enough data: " + "; ".join(dict.fromkeys(missing))
    notes = "; ".join(f"{name}: {c.note}" for name, c in comparisons)
    if any(c.significant for _, c in comparisons):
        return "significant", notes
    return "not_significant", notes

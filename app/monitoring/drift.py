"""Data drift: live events of a sliding window against the training data of the served version.

Training stores a *reference* with each version (``reference()``, kept in the artifact's
``stats["drift"]``): for every feature the distribution of its training events over fixed
buckets. The monitor counts the same buckets over a window of stored events with a few
``GROUP BY`` queries (``window_counts()``), and ``compare()`` gives per feature

- the population stability index, ``sum((live - ref) * ln(live / ref))`` over the buckets
  (shares smoothed by ``EPSILON``, so a bucket empty on one side counts, boundedly), and
- a test of the live counts against the reference: chi-square goodness of fit for buckets,
  Kolmogorov-Smirnov against the reference quantiles for a numeric attribute and the scores,

and a verdict: ``drift`` when the PSI reaches ``RECSYS_DRIFT_PSI_DRIFT`` and the test's p-value
is below ``RECSYS_DRIFT_ALPHA``, ``warn`` likewise from ``RECSYS_DRIFT_PSI_WARN``, else ``ok``;
``insufficient_data`` while the window holds fewer than ``RECSYS_DRIFT_MIN_EVENTS`` events.

The features:

``event_type``
    the mix of event types;
``item_popularity``
    events per popularity bucket of the model's items (top 1 % of items by training
    popularity, the next 9 %, the next 40 %, the rest) and on items it does not know;
``unknown_items``
    the share of events on items the model does not know (a two-bucket view of the same);
``events_per_user_hour``
    how many events a user sends in one clock hour (1, 2, 3-4, 5-8, 9-16, 17+);
``category``
    the category mix of the items acted on (the reference's 20 commonest, other, none);
``attribute:NAME``
    each numeric item attribute the model uses, over the events' items (training deciles);
``score``
    the scores of the lists served by that version against those it gave validation users.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

EPSILON = 1e-4
POPULARITY_BUCKETS = ("top_1pct", "top_10pct", "top_50pct", "rest", "unknown")
# Cumulative shares of the catalogue (by training popularity) where the buckets end.
POPULARITY_EDGES = (0.01, 0.10, 0.50)
USER_HOUR_BUCKETS = ("1", "2", "3-4", "5-8", "9-16", "17+")
TOP_CATEGORIES = 20
OTHER, NONE = "(other)", "(none)"
QUANTILES = 101  # 0 %, 1 %, ..., 100 %
MAX_ATTRIBUTES = 20
OK, WARN, DRIFT, INSUFFICIENT = "ok", "warn", "drift", "insufficient_data"
STATUS_CODES = {OK: 0, WARN: 1, DRIFT: 2}


# -- Buckets shared by the reference and the live window --------------------------------------


def popularity_buckets(popularity: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Bucket index (into ``POPULARITY_BUCKETS``) of every item, by its rank in ``popularity``;
    ties keep the item order, so the same array always gives the same buckets."""
    values = np.asarray(popularity, dtype=np.float64)
    n = len(values)
    order = np.argsort(-values, kind="stable")
    rank_share = np.empty(n, dtype=np.float64)
    rank_share[order] = (np.arange(n) + 1) / max(n, 1)
    return np.searchsorted(np.asarray(POPULARITY_EDGES), rank_share, side="left").astype(np.int8)


def user_hour_bucket(count: int) -> str:
    """The bucket of a user who sent ``count`` events in one hour: 1, 2, 3-4, ..., 17+."""
    if count <= 2:
        return USER_HOUR_BUCKETS[max(count, 1) - 1]
    return USER_HOUR_BUCKETS[min(math.ceil(math.log2(count)), len(USER_HOUR_BUCKETS) - 1)]


def numeric_attributes(attributes: Mapping[str, Any]) -> dict[str, float]:
    """The numeric attributes of an item as the model reads them (booleans as 0/1)."""
    out: dict[str, float] = {}
    for name, value in attributes.items():
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def _shares(counts: Mapping[str, float], buckets: Sequence[str]) -> dict[str, float]:
    total = sum(counts.get(b, 0.0) for b in buckets)
    return {b: (counts.get(b, 0.0) / total if total else 0.0) for b in buckets}


def _category_counts(
    items: Iterable[tuple[Sequence[str], float]], known: Sequence[str] | None
) -> dict[str, float]:
    """Counts of each category over events (an event on an item of two categories gives each
    half); with ``known``, categories outside it count as ``OTHER``."""
    allowed = None if known is None else set(known)
    counts: dict[str, float] = defaultdict(float)
    for categories, weight in items:
        if not categories:
            counts[NONE] += weight
            continue
        share = weight / len(categories)
        for category in categories:
            counts[category if allowed is None or category in allowed else OTHER] += share
    return counts


def _quantile_summary(
    values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """Deciles (bucket edges) and percentiles (for the KS test) of a weighted sample."""
    order = np.argsort(values, kind="stable")
    sorted_values, cumulative = values[order], np.cumsum(weights[order])
    total = cumulative[-1]

    def quantile(q: float) -> float:
        index = int(np.searchsorted(cumulative, q * total, side="left"))
        return float(sorted_values[min(index, len(sorted_values) - 1)])

    quantiles = [quantile(q) for q in np.linspace(0, 1, QUANTILES)]
    edges = sorted(set(quantiles[10:100:10]))
    counts = _histogram(values, weights, edges)
    return {"edges": edges, "shares": (counts / counts.sum()).tolist(), "quantiles": quantiles}


def _histogram(
    values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], edges: Sequence[float]
) -> npt.NDArray[np.float64]:
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(index, weights=weights, minlength=len(edges) + 1).astype(np.float64)


# -- The reference, computed by training ------------------------------------------------------


def reference(
    *,
    type_names: Sequence[str],
    types: npt.NDArray[np.integer[Any]],
    users: npt.NDArray[np.integer[Any]],
    items: npt.NDArray[np.integer[Any]],
    timestamps: npt.NDArray[np.floating[Any]],
    popularity: npt.ArrayLike,
    item_categories: Sequence[Sequence[str]],
    item_attributes: Sequence[Mapping[str, Any]],
    scores: npt.ArrayLike,
) -> dict[str, Any]:
    """The reference of every feature, from the training events as parallel arrays (``items``
    index ``popularity``, ``item_categories`` and ``item_attributes``) and the scores of the
    lists the model gave validation users."""
    n = len(items)
    per_type = np.bincount(types[types >= 0], minlength=len(type_names))
    event_type = {name: float(per_type[i]) for i, name in enumerate(type_names)}

    buckets = popularity_buckets(popularity)
    per_bucket = np.bincount(buckets[items], minlength=len(POPULARITY_BUCKETS))
    item_popularity = {name: float(per_bucket[i]) for i, name in enumerate(POPULARITY_BUCKETS)}

    hours = np.floor(np.asarray(timestamps, dtype=np.float64) / 3600).astype(np.int64)
    pairs = np.unique(np.stack([users.astype(np.int64), hours]), axis=1, return_counts=True)[1]
    user_hour: Counter[str] = Counter(user_hour_bucket(int(c)) for c in pairs)

    per_item = np.bincount(items, minlength=len(item_categories)).astype(np.float64)
    acted = np.flatnonzero(per_item).tolist()
    categories = _category_counts(
        ((item_categories[i], float(per_item[i])) for i in acted), known=None
    )
    commonest = sorted(categories, key=lambda c: (-categories[c], c))
    top = [c for c in commonest if c != NONE][:TOP_CATEGORIES]
    category = _category_counts(((item_categories[i], float(per_item[i])) for i in acted), top)

    attributes: dict[str, Any] = {}
    values: dict[str, list[tuple[float, float]]] = {}
    for i in acted:
        for name, value in numeric_attributes(item_attributes[i]).items():
            values.setdefault(name, []).append((value, float(per_item[i])))
    for name in sorted(values, key=lambda a: -len(values[a]))[:MAX_ATTRIBUTES]:
        pairs_of = np.asarray(values[name], dtype=np.float64)
        attributes[name] = _quantile_summary(pairs_of[:, 0], pairs_of[:, 1])

    score_values = np.asarray(scores, dtype=np.float64)
    score_values = score_values[np.isfinite(score_values)]
    return {
        "n_events": n,
        "event_type": _shares(event_type, list(type_names)),
        "item_popularity": _shares(item_popularity, POPULARITY_BUCKETS),
        "events_per_user_hour": _shares(user_hour, USER_HOUR_BUCKETS),
        "category": _shares(category, [*top, OTHER, NONE]),
        "attributes": attributes,
        "score": (
            _quantile_summary(score_values, np.ones_like(score_values))
            if score_values.size
            else None
        ),
    }


# -- The live window ---------------------------------------------------------------------------


@dataclass
class WindowCounts:
    """What the monitor counted over one window of stored events."""

    events: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_item: Counter[str] = field(default_factory=Counter)
    by_user_hour: Counter[int] = field(default_factory=Counter)  # events in the hour -> pairs
    scores: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    verdict: str
    psi: float | None
    test: str
    statistic: float | None
    p_value: float | None
    live_events: int
    reference: dict[str, float] = field(default_factory=dict)
    live: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float
    psi_drift: float
    alpha: float
    min_events: int


def psi(reference_shares: npt.ArrayLike, live_shares: npt.ArrayLike) -> float:
    e = np.clip(np.asarray(reference_shares, dtype=np.float64), EPSILON, None)
    a = np.clip(np.asarray(live_shares, dtype=np.float64), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def chi_square_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-square with a whole number of degrees of freedom, exactly:
    a finite sum (``erfc`` and ``exp`` terms, in logs so large statistics do not overflow).

    The monitor runs in API processes, and ``scipy.stats`` (or ``scipy.special``) would cost
    each of them 60 MB (17 MB); the tests check this against ``scipy.stats``."""
    if statistic <= 0:
        return 1.0
    half = statistic / 2
    if dof % 2 == 0:
        terms = (-half + i * math.log(half) - math.lgamma(i + 1) for i in range(dof // 2))
        return min(1.0, sum(math.exp(t) for t in terms))
    tail = math.erfc(math.sqrt(half))
    lead = 0.5 * math.log(2 * statistic / math.pi) - half
    for j in range(1, (dof - 1) // 2 + 1):
        # x^(j-1) / (1 * 3 * ... * (2j - 1)), with (2j - 1)!! = (2j)! / (2^j j!)
        log_double_factorial = math.lgamma(2 * j + 1) - j * math.log(2) - math.lgamma(j + 1)
        tail += math.exp(lead + (j - 1) * math.log(statistic) - log_double_factorial)
    return min(1.0, tail)


def kolmogorov_sf(value: float) -> float:
    """The Kolmogorov distribution's survival function, ``2 sum (-1)^(k-1) exp(-2 k^2 x^2)``
    (the limit of ``sqrt(n) D``); its series converges within a few terms where it matters."""
    if value < 0.2:
        return 1.0
    total, sign = 0.0, 1.0
    for k in range(1, 101):
        total += sign * math.exp(-2.0 * k * k * value * value)
        sign = -sign
    return max(0.0, min(1.0, 2.0 * total))


def chi_square(
    observed: npt.NDArray[np.float64], expected: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Pearson's goodness-of-fit statistic and its p-value (``len - 1`` degrees of freedom)."""
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, chi_square_sf(statistic, max(len(observed) - 1, 1))


def kolmogorov_smirnov(
    values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], quantiles: npt.ArrayLike
) -> tuple[float, float]:
    """One-sample Kolmogorov-Smirnov test of a weighted sample (a weight is a count of events)
    against the distribution whose percentiles are ``quantiles``: D, and its asymptotic
    p-value ``Q(sqrt(n) D)`` (n is at least ``RECSYS_DRIFT_MIN_EVENTS`` when it is judged)."""
    order = np.argsort(values, kind="stable")
    x, w = values[order], weights[order]
    n = float(w.sum())
    points = np.asarray(quantiles, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, len(points))
    # The reference CDF, linear between its percentiles; ties in them keep the highest level.
    reference = np.interp(x, points, levels, left=0.0, right=1.0)
    after = np.cumsum(w) / n
    before = after - w / n
    statistic = float(max(np.max(after - reference), np.max(reference - before), 0.0))
    return statistic, kolmogorov_sf(math.sqrt(n) * statistic)


def _verdict(value: float, p_value: float | None, n: int, thresholds: Thresholds) -> str:
    if n < thresholds.min_events:
        return INSUFFICIENT
    significant = p_value is None or p_value < thresholds.alpha
    if value >= thresholds.psi_drift and significant:
        return DRIFT
    if value >= thresholds.psi_warn and significant:
        return WARN
    return OK


def _judged(
    feature: str,
    test: str,
    value: float,
    statistic: float | None,
    p_value: float | None,
    n: float,
    reference: Mapping[str, float],
    live_shares: npt.NDArray[np.float64],
    t: Thresholds,
) -> FeatureDrift:
    """A feature's figures with its verdict; ``live_shares`` are in ``reference``'s order."""
    return FeatureDrift(
        feature,
        _verdict(value, p_value, int(n), t),
        value,
        test,
        statistic,
        p_value,
        int(n),
        {k: float(v) for k, v in reference.items()},
        {k: float(v) for k, v in zip(reference, live_shares, strict=True)},
    )


def _categorical(
    feature: str, ref: Mapping[str, float], live_counts: Mapping[str, float], t: Thresholds
) -> FeatureDrift:
    buckets = list(ref)
    # A bucket the reference has not seen (a new event type, say) is a bucket of its own.
    buckets += [b for b in live_counts if b not in ref and live_counts[b] > 0]
    observed = np.asarray([live_counts.get(b, 0.0) for b in buckets], dtype=np.float64)
    n = float(observed.sum())
    expected_shares = np.clip(np.asarray([ref.get(b, 0.0) for b in buckets]), EPSILON, None)
    expected_shares /= expected_shares.sum()
    live_shares = observed / n if n else np.zeros_like(observed)
    value = psi(expected_shares, live_shares)
    p_value: float | None = None
    statistic: float | None = None
    if n > 0:
        statistic, p_value = chi_square(observed, expected_shares * n)
    reference = {b: float(ref.get(b, 0.0)) for b in buckets}
    return _judged(feature, "chi-square", value, statistic, p_value, n, reference, live_shares, t)


def _numeric(
    feature: str,
    summary: Mapping[str, Any],
    values: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    t: Thresholds,
) -> FeatureDrift:
    edges = list(summary["edges"])
    labels = [f"<={e:g}" for e in edges] + [f">{edges[-1]:g}" if edges else "all"]
    ref = dict(zip(labels, summary["shares"], strict=True))
    counts = _histogram(values, weights, edges)
    n = float(counts.sum())
    live_shares = counts / n if n else counts
    value = psi(summary["shares"], live_shares)
    statistic: float | None = None
    p_value: float | None = None
    if n > 0:
        statistic, p_value = kolmogorov_smirnov(values, weights, summary["quantiles"])
    return _judged(feature, "kolmogorov-smirnov", value, statistic, p_value, n, ref, live_shares, t)


@dataclass(frozen=True)
class ItemInfo:
    """What drift reads of one catalogue item."""

    categories: Sequence[str]
    attributes: Mapping[str, float]


def compare(
    ref: Mapping[str, Any],
    live: WindowCounts,
    model_index: Mapping[str, int],
    buckets: npt.NDArray[np.int8],
    catalogue: Mapping[str, ItemInfo],
    thresholds: Thresholds,
) -> list[FeatureDrift]:
    """Every feature of ``live`` against ``ref``. ``model_index`` maps the served version's
    item ids to rows of ``buckets`` (``popularity_buckets`` of its popularity); ``catalogue``
    describes the window's items."""
    out = [_categorical("event_type", ref["event_type"], live.by_type, thresholds)]

    by_bucket: Counter[str] = Counter()
    for item_id, count in live.by_item.items():
        row = model_index.get(item_id)
        bucket = POPULARITY_BUCKETS[-1] if row is None else POPULARITY_BUCKETS[buckets[row]]
        by_bucket[bucket] += count
    out.append(_categorical("item_popularity", ref["item_popularity"], by_bucket, thresholds))
    unknown_ref = ref["item_popularity"].get("unknown", 0.0)
    out.append(
        _categorical(
            "unknown_items",
            {"known": 1.0 - unknown_ref, "unknown": unknown_ref},
            {"known": live.events - by_bucket["unknown"], "unknown": by_bucket["unknown"]},
            thresholds,
        )
    )

    user_hours: Counter[str] = Counter()
    for events, pairs in live.by_user_hour.items():
        user_hours[user_hour_bucket(events)] += pairs
    out.append(
        _categorical("events_per_user_hour", ref["events_per_user_hour"], user_hours, thresholds)
    )

    known = [c for c in ref["category"] if c not in (OTHER, NONE)]
    category = _category_counts(
        (
            (catalogue[i].categories if i in catalogue else (), float(count))
            for i, count in live.by_item.items()
        ),
        known,
    )
    out.append(_categorical("category", ref["category"], category, thresholds))

    for name, summary in ref.get("attributes", {}).items():
        pairs_of = [
            (catalogue[i].attributes[name], float(count))
            for i, count in live.by_item.items()
            if i in catalogue and name in catalogue[i].attributes
        ]
        array = np.asarray(pairs_of, dtype=np.float64).reshape(-1, 2)
        out.append(_numeric(f"attribute:{name}", summary, array[:, 0], array[:, 1], thresholds))

    if ref.get("score") and live.scores:
        scores = np.asarray(live.scores, dtype=np.float64)
        out.append(_numeric("score", ref["score"], scores, np.ones_like(scores), thresholds))
    return out


def overall(features: Sequence[FeatureDrift]) -> str:
    """The worst verdict of the features that could be judged."""
    judged = [f.verdict for f in features if f.verdict in STATUS_CODES]
    if not judged:
        return INSUFFICIENT
    return max(judged, key=STATUS_CODES.__getitem__)


def describe_window(since: datetime, until: datetime) -> dict[str, str]:
    return {"from": since.isoformat(), "until": until.isoformat()}

"""Online quality: how the lists served in a window did, per model version and variant.

Every list the recommendations route makes, and every page asked of one, is recorded in
``served_lists`` (by the served-list writer, off the request path). A list counts as *clicked*
when an event of a click type names its ``recommendation_id`` and an item it showed, and as
*converted* likewise with a conversion type; each list counts once however often it was shown
or paged. Frontends that do not send the ``recommendation_id`` back get no online CTR
(experiments also attribute by time window; this report does not guess).

Per version and variant, over each window:

- ``lists``: distinct lists served, ``answers``: answers recorded (a list made, and each page
  asked of it; a kept list answered again is not recorded again);
- ``ctr``: clicked lists / lists, ``conversion_rate``: converted lists / lists;
- ``coverage``: distinct items shown / items eligible now;
- ``novelty_bits``: mean ``-log2`` of each shown item's share of the training popularity,
  ``popularity_percentile``: its mean percentile (1 is the most popular item);
- ``latency_p50_ms`` and ``latency_p99_ms`` of the answers.

The item-level figures (coverage, novelty, popularity, latency) are taken over the newest
``ITEM_SAMPLE`` (20,000) answers of a window, so a busy day costs no more than a quiet one to read.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from app.experiments.analysis import two_proportion_test

ITEM_SAMPLE = 20_000
Key = tuple[str, str]  # (model_version, variant)
NO_MODEL = "none"


@dataclass
class Served:
    """Counts of one version and variant, before they become rates."""

    lists: int = 0
    answers: int = 0
    clicked: int = 0
    converted: int = 0
    shown: Counter[str] = field(default_factory=Counter)  # item id -> times shown
    novelty: float | None = None  # means over the items shown
    percentile: float | None = None
    latencies: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class QualityRow:
    model_version: str
    variant: str
    lists: int
    answers: int
    clicked: int
    converted: int
    ctr: float | None
    conversion_rate: float | None
    coverage: float | None
    novelty_bits: float | None
    popularity_percentile: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Popularity:
    """Novelty and popularity percentile of items, from a model's popularity array."""

    def __init__(self, index: Mapping[str, int], popularity: npt.ArrayLike) -> None:
        """``index`` maps item ids to rows of ``popularity`` (the served model's own map)."""
        values = np.clip(np.asarray(popularity, dtype=np.float64), 0.0, None)
        total = float(values.sum())
        order = np.argsort(values, kind="stable")
        percentile = np.empty(len(values), dtype=np.float64)
        percentile[order] = (np.arange(len(values)) + 1) / max(len(values), 1)
        floor = 1.0 / max(total, 1.0)  # an item never chosen counts as chosen once
        shares = np.maximum(values / total if total else np.zeros_like(values), floor)
        self._index = index
        self._bits = -np.log2(shares)
        self._percentile = percentile
        self._unknown_bits = float(-math.log2(floor))

    def of(self, item_id: str) -> tuple[float, float]:
        """(novelty bits, popularity percentile) of one item."""
        i = self._index.get(item_id)
        if i is None:  # not in the model: as novel as can be, least popular
            return self._unknown_bits, 0.0
        return float(self._bits[i]), float(self._percentile[i])

    def sums(self, shown: Counter[str]) -> tuple[float, float]:
        """Sums of novelty bits and percentiles over ``shown`` (item id -> times shown)."""
        bits = percentile = 0.0
        for item_id, times in shown.items():
            b, p = self.of(item_id)
            bits += b * times
            percentile += p * times
        return bits, percentile


def tally(
    lists: Iterable[tuple[str | None, str, int, int]],
    outcomes: Iterable[tuple[str | None, str, str, bool]],
    sample: Iterable[tuple[str | None, str, Sequence[str], float]],
    popularity: Mapping[str, Popularity],
) -> dict[Key, Served]:
    """Counts per (version, variant).

    ``lists``: (version, variant, distinct lists, answers); ``outcomes``: (version, variant,
    recommendation_id, converted?) for each clicked or converted list (a list may appear as
    both); ``sample``: (version, variant, items shown, latency ms) of the newest answers;
    ``popularity`` by version, for novelty.
    """
    out: dict[Key, Served] = defaultdict(Served)
    for version, variant, distinct, answers in lists:
        served = out[(version or NO_MODEL, variant)]
        served.lists += distinct
        served.answers += answers
    clicked: set[tuple[Key, str]] = set()
    converted: set[tuple[Key, str]] = set()
    for version, variant, recommendation_id, is_conversion in outcomes:
        key = (version or NO_MODEL, variant)
        (converted if is_conversion else clicked).add((key, recommendation_id))
    for key, _ in clicked:
        out[key].clicked += 1
    for key, _ in converted:
        out[key].converted += 1
    for version, variant, items, latency in sample:
        served = out[(version or NO_MODEL, variant)]
        served.latencies.append(latency)
        served.shown.update(items)
    for (version, _), served in out.items():
        scale = popularity.get(version)
        times = served.shown.total()
        if scale is not None and times:
            bits, percentile = scale.sums(served.shown)
            served.novelty, served.percentile = bits / times, percentile / times
    return dict(out)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(np.asarray(values), q)) if values else None


def rows(counts: Mapping[Key, Served], eligible_items: int) -> list[QualityRow]:
    out = []
    for (version, variant), s in sorted(counts.items()):
        out.append(
            QualityRow(
                model_version=version,
                variant=variant,
                lists=s.lists,
                answers=s.answers,
                clicked=s.clicked,
                converted=s.converted,
                ctr=_rate(s.clicked, s.lists),
                conversion_rate=_rate(s.converted, s.lists),
                coverage=(len(s.shown) / eligible_items) if eligible_items and s.shown else None,
                novelty_bits=s.novelty,
                popularity_percentile=s.percentile,
                latency_p50_ms=_quantile(s.latencies, 0.5),
                latency_p99_ms=_quantile(s.latencies, 0.99),
            )
        )
    return out


@dataclass(frozen=True)
class Regression:
    """The active version's CTR against the previous version's over one window."""

    active_version: str
    previous_version: str
    active_ctr: float | None
    previous_ctr: float | None
    p_value: float | None
    regressed: bool | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def regression(
    rows_of: Sequence[QualityRow],
    active: str | None,
    previous: str | None,
    alpha: float,
    min_lists: int,
) -> Regression | None:
    """Whether ``active`` does significantly worse on CTR than ``previous`` (every variant
    pooled); ``regressed`` is None while either served fewer than ``min_lists`` lists."""
    if active is None or previous is None:
        return None
    lists = {active: 0, previous: 0}
    clicks = {active: 0, previous: 0}
    for row in rows_of:
        if row.model_version in lists:
            lists[row.model_version] += row.lists
            clicks[row.model_version] += row.clicked
    a_ctr, p_ctr = _rate(clicks[active], lists[active]), _rate(clicks[previous], lists[previous])
    if min(lists.values()) < min_lists:
        return Regression(
            active,
            previous,
            a_ctr,
            p_ctr,
            None,
            None,
            f"too few lists to compare ({lists[active]:,} and {lists[previous]:,}; "
            f"{min_lists:,} each needed)",
        )
    p_value = float(
        two_proportion_test(clicks[previous], lists[previous], clicks[active], lists[active])
    )
    worse = a_ctr is not None and p_ctr is not None and a_ctr < p_ctr and p_value < alpha
    verdict = "significantly below" if worse else "not significantly below"
    return Regression(
        active,
        previous,
        a_ctr,
        p_ctr,
        p_value,
        worse,
        f"CTR {a_ctr:.4f} vs {p_ctr:.4f} of {previous}, p = {p_value:.4g}: {verdict}",
    )


def sampled(user_id: str, share: float) -> bool:
    """Whether the answers of ``user_id`` are recorded, for ``RECSYS_SERVED_LISTS_SHARE``: the
    same users always, so a sampled user's clicks meet their lists."""
    if share >= 1.0:
        return True
    return share > 0.0 and zlib.crc32(user_id.encode()) < share * 2**32


def served_row(
    recommendation_id: str,
    user_id: str,
    model_version: str | None,
    experiment: str | None,
    variant: str,
    items: Sequence[str],
    scores: Sequence[float],
    latency_ms: float,
    shown_at: datetime,
) -> dict[str, Any]:
    """One row of ``served_lists``."""
    return {
        "recommendation_id": recommendation_id,
        "user_id": user_id,
        "model_version": model_version,
        "experiment": experiment,
        "variant": variant,
        "items": list(items),
        "scores": [round(float(s), 6) for s in scores],
        "latency_ms": latency_ms,
        "shown_at": shown_at,
    }

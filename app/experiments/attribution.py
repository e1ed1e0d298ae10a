"""Attribution: which stored events count for which variant, computed when results are asked
for (ingestion stays as fast as without experiments).

An event counts for a variant when the user saw its item in a recommendation answer of that
variant and either

1. the event carries that answer's ``recommendation_id`` (any time later), or
2. it happened within the experiment's attribution window after the answer was shown
   (``shown_at <= occurred_at <= shown_at + window``), for frontends that do not send the id.

Only events of the experiment's click and conversion types are considered; each event counts at
most once (for the answer it names, else for the latest answer before it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, func, or_, select

from app.db.models import Event, Experiment, ExperimentExposure

BY_RECOMMENDATION_ID = "recommendation_id"
BY_WINDOW = "window"
STREAM_ROWS = 5000


@dataclass
class VariantTally:
    """Sums over one variant's users: what the statistics need, and no per-user lists.

    ``n_u`` is a user's exposures, ``c_u`` their attributed clicks.
    """

    users: int = 0
    exposures: int = 0  # sum n_u
    exposures_sq: int = 0  # sum n_u**2
    clicks: int = 0  # sum c_u
    clicks_sq: int = 0  # sum c_u**2
    clicks_exposures: int = 0  # sum c_u * n_u
    conversions: int = 0
    converting_users: int = 0


@dataclass
class Tallies:
    variants: dict[str, VariantTally] = field(default_factory=dict)
    rules: Counter[str] = field(default_factory=Counter)


def tally(connection: Connection, experiment: Experiment) -> Tallies:
    """Per-variant sums for ``experiment`` from its exposures and the stored events."""
    click_types = set(experiment.click_event_types)
    conversion_types = set(experiment.conversion_event_types)
    clicks: Counter[tuple[str, str]] = Counter()
    conversions: Counter[tuple[str, str]] = Counter()
    out = Tallies()

    x = ExperimentExposure
    candidates = (
        select(
            Event.id,
            Event.type,
            Event.item_id,
            Event.recommendation_id,
            x.variant,
            x.user_id,
            x.recommendation_id,
            x.items,
        )
        .join(x, Event.user_id == x.user_id)
        .where(
            x.experiment_id == experiment.id,
            Event.type.in_(sorted(click_types | conversion_types)),
            or_(
                Event.recommendation_id == x.recommendation_id,
                and_(Event.occurred_at >= x.shown_at, Event.occurred_at <= x.attributable_until),
            ),
        )
        # Per event, the latest answer first: the one a window match is credited to.
        .order_by(Event.id, x.shown_at.desc(), x.id.desc())
    )
    stream = connection.execution_options(yield_per=STREAM_ROWS).execute(candidates)

    def credit(event_type: str, variant: str, user_id: str, rule: str) -> None:
        out.rules[rule] += 1
        if event_type in click_types:
            clicks[(variant, user_id)] += 1
        if event_type in conversion_types:
            conversions[(variant, user_id)] += 1

    current: int | None = None
    chosen: tuple[str, str, str, str] | None = None
    for event_pk, event_type, item_id, event_rec, variant, user_id, shown_rec, items in stream:
        if event_pk != current:
            if chosen is not None:
                credit(*chosen)
            current, chosen = event_pk, None
        if item_id not in items:
            continue
        direct = event_rec is not None and event_rec == shown_rec
        if chosen is None or (direct and chosen[3] != BY_RECOMMENDATION_ID):
            chosen = (event_type, variant, user_id, BY_RECOMMENDATION_ID if direct else BY_WINDOW)
    if chosen is not None:
        credit(*chosen)

    per_user = (
        select(x.variant, x.user_id, func.count())
        .where(x.experiment_id == experiment.id)
        .group_by(x.variant, x.user_id)
    )
    for variant, user_id, n in connection.execution_options(yield_per=STREAM_ROWS).execute(
        per_user
    ):
        sums = out.variants.setdefault(variant, VariantTally())
        c = clicks.get((variant, user_id), 0)
        converted = conversions.get((variant, user_id), 0)
        sums.users += 1
        sums.exposures += n
        sums.exposures_sq += n * n
        sums.clicks += c
        sums.clicks_sq += c * c
        sums.clicks_exposures += c * n
        sums.conversions += converted
        sums.converting_users += converted > 0
    return out

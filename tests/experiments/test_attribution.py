"""Attribution rules: which stored events count for which variant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from app.db.models import ExperimentExposure
from app.experiments.attribution import BY_RECOMMENDATION_ID, BY_WINDOW, tally
from app.services import Services
from tests.experiments.conftest import MakeExperiment

T = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def shown(
    services: Services,
    experiment_id: int,
    window: timedelta,
    *answers: tuple[str, str, str, list[str], timedelta],
) -> None:
    """Store exposures: (user, variant, recommendation_id, items, time after T)."""
    rows = [
        {
            "experiment_id": experiment_id,
            "recommendation_id": rec,
            "variant": variant,
            "user_id": user,
            "model_version": None,
            "items": items,
            "shown_at": T + after,
            "attributable_until": T + after + window,
        }
        for user, variant, rec, items, after in answers
    ]
    with services.engine.begin() as connection:
        connection.execute(insert(ExperimentExposure), rows)


def events(services: Services, *specs: tuple[str, str, str, str | None, timedelta]) -> None:
    """Store events through ingestion: (user, type, item, recommendation_id, time after T)."""
    raw: list[dict[str, Any]] = [
        {
            "user_id": user,
            "type": kind,
            "item_id": item,
            "recommendation_id": rec,
            "timestamp": (T + after).isoformat(),
        }
        for user, kind, item, rec, after in specs
    ]
    assert services.ingestor.ingest_raw(raw).rejected == 0


MIN = timedelta(minutes=1)


def test_attribution_rules(services: Services, make_experiment: MakeExperiment) -> None:
    """u1 saw rec-1 [a, b] at T and rec-2 [a, d] at T+5 min (control); u3 saw rec-3 [a]
    (treatment) and did nothing. Each event below says whether it counts, and why."""
    experiment = make_experiment(window=1800)
    window = timedelta(seconds=1800)
    shown(
        services,
        experiment.id,
        window,
        ("u1", "control", "rec-1", ["a", "b"], 0 * MIN),
        ("u1", "control", "rec-2", ["a", "d"], 5 * MIN),
        ("u3", "treatment", "rec-3", ["a"], 0 * MIN),
    )
    events(
        services,
        ("u1", "click", "a", "rec-1", 120 * MIN),  # yes: names the answer that showed a
        ("u1", "click", "c", "rec-1", 1 * MIN),  # no: c was never shown
        ("u1", "click", "b", None, 10 * MIN),  # yes: b shown 10 min before (window)
        ("u1", "click", "b", None, 40 * MIN),  # no: 40 min after the only answer showing b
        ("u1", "click", "a", None, -5 * MIN),  # no: before any answer
        ("u1", "click", "a", None, 6 * MIN),  # yes, once: both answers showed a
        ("u1", "view", "a", "rec-1", 2 * MIN),  # no: views are neither clicks nor conversions
        ("u1", "purchase", "a", "rec-1", 3 * MIN),  # yes: a conversion
        ("u2", "click", "a", "rec-1", 1 * MIN),  # no: u2 was never shown rec-1
        ("u1", "click", "d", "rec-1", 7 * MIN),  # yes: rec-1 lacks d, but rec-2 showed it
    )
    with services.engine.connect() as connection:
        result = tally(connection, experiment)

    control, treatment = result.variants["control"], result.variants["treatment"]
    assert (control.users, control.exposures, control.clicks) == (1, 2, 4)
    assert (control.conversions, control.converting_users) == (1, 1)
    assert (control.clicks_sq, control.exposures_sq, control.clicks_exposures) == (16, 4, 8)
    assert (treatment.users, treatment.exposures, treatment.clicks) == (1, 1, 0)
    assert result.rules == {BY_RECOMMENDATION_ID: 2, BY_WINDOW: 3}


def test_a_zero_window_counts_only_events_naming_the_answer(
    services: Services, make_experiment: MakeExperiment
) -> None:
    experiment = make_experiment(window=0)
    shown(services, experiment.id, timedelta(0), ("u1", "control", "rec-1", ["a", "b"], 0 * MIN))
    events(
        services,
        ("u1", "click", "a", "rec-1", 1 * MIN),
        ("u1", "click", "b", None, 1 * MIN),
    )
    with services.engine.connect() as connection:
        result = tally(connection, experiment)
    assert result.variants["control"].clicks == 1
    assert result.rules == {BY_RECOMMENDATION_ID: 1}


def test_configured_event_types_decide_clicks_and_conversions(
    services: Services, make_experiment: MakeExperiment
) -> None:
    """With views as clicks and add_to_cart as conversions, clicks and purchases do not count."""
    experiment = make_experiment(clicks=("view",), conversions=("add_to_cart",))
    shown(services, experiment.id, timedelta(minutes=30), ("u1", "control", "r", ["a"], 0 * MIN))
    events(
        services,
        ("u1", "view", "a", "r", 1 * MIN),
        ("u1", "click", "a", "r", 2 * MIN),
        ("u1", "add_to_cart", "a", "r", 3 * MIN),
        ("u1", "purchase", "a", "r", 4 * MIN),
    )
    with services.engine.connect() as connection:
        control = tally(connection, experiment).variants["control"]
    assert (control.clicks, control.conversions) == (1, 1)


def test_other_experiments_exposures_do_not_count(
    services: Services, make_experiment: MakeExperiment
) -> None:
    first = make_experiment(name="first", status="stopped")
    second = make_experiment(name="second")
    shown(services, first.id, timedelta(minutes=30), ("u1", "control", "r1", ["a"], 0 * MIN))
    events(services, ("u1", "click", "a", "r1", 1 * MIN))
    with services.engine.connect() as connection:
        assert tally(connection, second).variants == {}
        assert tally(connection, first).variants["control"].clicks == 1

"""Canaries on real storage: a version that passed the gate is served to a share of users, then
promoted or rolled back on its CTR against the active version with the statistics of the
experiment results; held when another experiment runs; ended cleanly when someone intervenes;
visible in the registry, on the command line and in the gauges."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from rich.console import Console
from sqlalchemy import func, select
from typer.testing import CliRunner

import training.cli as training_cli
import training.cli_shared as training_cli_shared
from app.config import Settings, get_settings
from app.db.engine import session_scope
from app.db.models import Experiment, ExperimentExposure
from app.experiments.assignment import RunningExperiment
from app.experiments.exposures import ExposureWriter, exposure
from app.monitoring.canary import (
    canary_metrics,
    experiment_name,
    review_canaries,
    start_canary,
)
from app.services import Services
from tests.conftest import make_settings
from tests.serving import conftest as serving
from tests.serving.conftest import CHOICE, recs
from tests.training.test_registry import version_row
from training import demo
from training.cli import cli
from training.evaluation import ModelChoice
from training.pipeline import TrainOptions, TrainResult, train
from training.recommenders import ALSParams
from training.registry import (
    ACTIVE,
    CANARY,
    CANDIDATE,
    RETIRED,
    ROLLED_BACK,
    Registry,
    RegistryError,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
OLD, NEW = "20261101T000000Z-aaaaaa", "20261102T000000Z-bbbbbb"
runner = CliRunner()
# The serving tests' demo shop and app, for the path through train() and the API.
shop, app_client, serving_settings = serving.shop, serving.app_client, serving.serving_settings


@pytest.fixture
def canary_settings(services: Services) -> Settings:
    """Half the users on the canary, decided after 400 lists per arm."""
    return make_settings(
        services.settings,
        canary_share=0.5,
        canary_min_exposures=400,
        canary_alpha=0.05,
        experiment_min_users=50,
    )


@pytest.fixture
def registry(services: Services) -> Registry:
    """OLD active, NEW a candidate that passed the gate."""
    reg = Registry(services.sessions)
    reg.add(version_row(OLD, T0))
    reg.add(version_row(NEW, T0 + timedelta(days=1)))
    reg.promote(OLD, now=T0)
    return reg


def experiment(services: Services, name: str) -> Experiment:
    with services.sessions() as session:
        row = session.scalar(select(Experiment).where(Experiment.name == name))
        assert row is not None
        return row


def simulate(
    services: Services,
    name: str,
    users: int,
    ctr: dict[str, float],
    seed: int,
    served: dict[str, str] | None = None,
) -> dict[str, int]:
    """Users of the running experiment ``name`` see two answers of 5 items each, written by
    the exposure writer; each answer is clicked with its arm's CTR, the click posted through
    the ingestion path with the answer's recommendation_id. Returns the lists per arm."""
    row = experiment(services, name)
    running = RunningExperiment.from_row(row)
    served = served or {"control": OLD, "canary": NEW}
    rng = np.random.default_rng(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    writer = ExposureWriter(services.engine, capacity=100_000, batch_size=500, flush_seconds=1)
    events: list[dict[str, Any]] = []
    lists = {"control": 0, "canary": 0}
    for n in range(users):
        user = f"user-{seed}-{n}"
        arm = running.assign(user).name
        for answer in range(2):
            shown_at = start + timedelta(minutes=n % 120, seconds=answer)
            rec = f"rec-{seed}-{n}-{answer}"
            items = [f"sku-{int(i)}" for i in rng.choice(50, size=5, replace=False)]
            assert writer.record(
                exposure(
                    experiment_id=row.id,
                    recommendation_id=rec,
                    variant=arm,
                    user_id=user,
                    model_version=served[arm],
                    items=items,
                    shown_at=shown_at,
                    attributable_until=shown_at + timedelta(minutes=30),
                )
            )
            lists[arm] += 1
            if rng.random() < ctr[arm]:
                events.append(
                    {
                        "user_id": user,
                        "item_id": items[0],
                        "type": "click",
                        "recommendation_id": rec,
                        "timestamp": (shown_at + timedelta(seconds=20)).isoformat(),
                    }
                )
    writer.close()
    assert writer.written == 2 * users
    assert services.ingestor.ingest_raw(events).rejected == 0
    return lists


def canary_of(registry: Registry, version: str = NEW) -> dict[str, Any]:
    canary = registry.get(version).canary
    assert canary is not None
    return canary


def statuses(registry: Registry) -> dict[str, str]:
    return {v.version: v.status for v in registry.all()}


# -- starting ----------------------------------------------------------------------------------


def test_a_canary_runs_as_an_experiment_against_the_active_version(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """The experiment serves the active model to the control and the new version to its
    share; the version is `canary`, the active one stays active."""
    started = start_canary(canary_settings, services.sessions, NEW, OLD)
    assert started.started
    assert started.experiment == experiment_name(NEW)
    row = experiment(services, experiment_name(NEW))
    assert row.status == "running"
    assert row.variants == [
        {"name": "control", "share_bp": 5000, "config": {}},
        {"name": "canary", "share_bp": 5000, "config": {"model_version": NEW}},
    ]
    assert statuses(registry) == {OLD: ACTIVE, NEW: CANARY}
    canary = canary_of(registry)
    assert canary["state"] == "running"
    assert canary["experiment"] == experiment_name(NEW)
    assert canary["share"] == 0.5
    assert canary["active_version"] == OLD
    assert canary["min_exposures"] == 400


def test_a_canary_is_held_while_another_experiment_runs(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """One experiment runs at a time: the canary does not start, the version stays a
    candidate, and the reason names the experiment and how to promote by hand."""
    with session_scope(services.sessions) as session:
        session.add(
            Experiment(
                name="ranker-test",
                status="running",
                salt="s",
                variants=[
                    {"name": "control", "share_bp": 5000, "config": {}},
                    {"name": "b", "share_bp": 5000, "config": {}},
                ],
                attribution_window_seconds=1800,
                click_event_types=["click"],
                conversion_event_types=["purchase"],
                created_at=T0,
                started_at=T0,
            )
        )
    started = start_canary(canary_settings, services.sessions, NEW, OLD)
    assert not started.started
    assert started.state == "held"
    assert "experiment 'ranker-test' is running" in started.reason
    assert f"python -m training models promote {NEW}" in started.reason
    assert statuses(registry) == {OLD: ACTIVE, NEW: CANDIDATE}
    assert canary_of(registry)["state"] == "held"
    assert canary_of(registry)["reason"] == started.reason
    with services.sessions() as session:
        names = set(session.scalars(select(Experiment.name)))
    assert names == {"ranker-test"}
    # Nothing runs as a canary, so a review has nothing to decide.
    assert review_canaries(canary_settings, services.engine, services.sessions) == []


# -- deciding ----------------------------------------------------------------------------------


def test_a_clearly_better_canary_is_promoted_to_everyone(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """Canary lists clicked 15% of the time, control ones 5%: once both arms served 400
    lists the canary becomes the active version, its experiment stops, and the decision
    with its figures is on the version."""
    start_canary(canary_settings, services.sessions, NEW, OLD)
    lists = simulate(services, experiment_name(NEW), 1000, {"control": 0.05, "canary": 0.15}, 1)
    assert min(lists.values()) >= 400

    (decision,) = review_canaries(canary_settings, services.engine, services.sessions)
    assert decision.decision == "promoted", decision.reason
    assert statuses(registry) == {OLD: RETIRED, NEW: ACTIVE}
    assert experiment(services, experiment_name(NEW)).status == "stopped"
    canary = canary_of(registry)
    assert canary["state"] == "promoted"
    assert canary["decided_by"] == "review"
    assert "not significantly worse" in canary["reason"]
    figures = canary["figures"]
    assert figures["exposures"] == lists
    assert 0.03 < figures["ctr"]["control"] < 0.08
    assert 0.11 < figures["ctr"]["canary"] < 0.19
    assert figures["lift"] > 0.5
    assert figures["p_value"] < 0.001
    assert datetime.fromisoformat(canary["decided_at"]) == decision.decided_at
    # Decided once: a second review finds no running canary.
    assert review_canaries(canary_settings, services.engine, services.sessions) == []


def test_a_clearly_worse_canary_is_rolled_back(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """Canary CTR 5% against 15%: rolled back; the active version never stopped being active,
    `models rollback` cannot reach the rolled-back one, and only a forced promote can."""
    start_canary(canary_settings, services.sessions, NEW, OLD)
    simulate(services, experiment_name(NEW), 1000, {"control": 0.15, "canary": 0.05}, 2)

    (decision,) = review_canaries(canary_settings, services.engine, services.sessions)
    assert decision.decision == "rolled_back", decision.reason
    assert statuses(registry) == {OLD: ACTIVE, NEW: ROLLED_BACK}
    assert experiment(services, experiment_name(NEW)).status == "stopped"
    canary = canary_of(registry)
    assert canary["state"] == "rolled_back"
    assert "significantly worse" in canary["reason"]
    assert canary["figures"]["p_value"] < 0.05
    assert canary["figures"]["lift"] < 0
    with pytest.raises(RegistryError, match="only version ever active"):
        registry.rollback()
    registry.promote(NEW)
    assert statuses(registry) == {OLD: RETIRED, NEW: ACTIVE}


def test_a_canary_no_worse_than_the_active_version_is_promoted(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """Equal CTRs: no significant loss, so it is promoted (the canary guards against harm,
    it does not demand a gain)."""
    start_canary(canary_settings, services.sessions, NEW, OLD)
    simulate(services, experiment_name(NEW), 1000, {"control": 0.1, "canary": 0.1}, 3)
    (decision,) = review_canaries(canary_settings, services.engine, services.sessions)
    assert decision.decision == "promoted", decision.reason
    assert canary_of(registry)["figures"]["p_value"] >= 0.05


def test_too_few_lists_decide_nothing(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """A huge difference on fewer lists than RECSYS_CANARY_MIN_EXPOSURES: the canary keeps
    running; the review notes how far it got."""
    settings = make_settings(canary_settings, canary_min_exposures=5000)
    start_canary(settings, services.sessions, NEW, OLD)
    lists = simulate(services, experiment_name(NEW), 1000, {"control": 0.3, "canary": 0.0}, 4)

    (decision,) = review_canaries(settings, services.engine, services.sessions)
    assert decision.decision == "waiting"
    assert not decision.decided
    assert f"control {lists['control']:,} and canary {lists['canary']:,}" in decision.reason
    assert "of the 5,000 each arm needs" in decision.reason
    assert statuses(registry) == {OLD: ACTIVE, NEW: CANARY}
    assert experiment(services, experiment_name(NEW)).status == "running"
    canary = canary_of(registry)
    assert canary["state"] == "running"
    assert canary["last_review"]["reason"] == decision.reason
    assert canary["last_review"]["exposures"] == lists


def test_enough_lists_without_clicks_to_compare_decide_nothing(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """Both arms served their lists but nobody clicked: the results cannot test CTR, so the
    canary is neither promoted blind nor rolled back; the reason is the results' own."""
    start_canary(canary_settings, services.sessions, NEW, OLD)
    simulate(services, experiment_name(NEW), 1000, {"control": 0.0, "canary": 0.0}, 8)
    (decision,) = review_canaries(canary_settings, services.engine, services.sessions)
    assert decision.decision == "waiting"
    assert decision.reason.startswith("CTR: not enough data")
    assert "0 clicks of the 10 needed" in decision.reason
    assert statuses(registry) == {OLD: ACTIVE, NEW: CANARY}


def test_a_canary_the_api_could_not_serve_is_rolled_back(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """Its lists were ranked by the active model (the API could not load it): whatever the
    CTRs say, it was never tried, so it is not promoted."""
    start_canary(canary_settings, services.sessions, NEW, OLD)
    simulate(
        services,
        experiment_name(NEW),
        1000,
        {"control": 0.1, "canary": 0.1},
        5,
        served={"control": OLD, "canary": OLD},
    )
    (decision,) = review_canaries(canary_settings, services.engine, services.sessions)
    assert decision.decision == "rolled_back"
    assert "ranked by another model" in decision.reason
    assert statuses(registry) == {OLD: ACTIVE, NEW: ROLLED_BACK}


# -- interventions -----------------------------------------------------------------------------


def test_a_canary_whose_experiment_was_stopped_by_hand_ends_as_a_candidate(
    client: TestClient, services: Services, registry: Registry, canary_settings: Settings
) -> None:
    start_canary(canary_settings, services.sessions, NEW, OLD)
    stopped = client.post(f"/v1/experiments/{experiment_name(NEW)}/stop")
    assert stopped.status_code == 200, stopped.text

    (decision,) = review_canaries(canary_settings, services.engine, services.sessions)
    assert decision.decision == "ended"
    assert "stopped by hand" in decision.reason
    assert statuses(registry) == {OLD: ACTIVE, NEW: CANDIDATE}
    assert canary_of(registry)["state"] == "ended"


def test_promoting_a_canary_by_hand_ends_it(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    start_canary(canary_settings, services.sessions, NEW, OLD)
    registry.promote(NEW)
    assert statuses(registry) == {OLD: RETIRED, NEW: ACTIVE}
    assert experiment(services, experiment_name(NEW)).status == "stopped"
    canary = canary_of(registry)
    assert canary["state"] == "promoted"
    assert canary["decided_by"] == "hand"
    assert review_canaries(canary_settings, services.engine, services.sessions) == []
    # The ordinary rollback still works: back to the version it replaced.
    restored, retired = registry.rollback()
    assert (restored.version, retired.version) == (OLD, NEW)


def test_a_canary_whose_control_changed_by_hand_ends_without_a_decision(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """Another version promoted by hand during the canary: its comparison no longer holds."""
    registry.add(version_row("20261103T000000Z-cccccc", T0 + timedelta(days=2)))
    start_canary(canary_settings, services.sessions, NEW, OLD)
    registry.promote("20261103T000000Z-cccccc")
    (decision,) = review_canaries(canary_settings, services.engine, services.sessions)
    assert decision.decision == "ended"
    assert f"changed from {OLD} to 20261103T000000Z-cccccc" in decision.reason
    assert registry.get(NEW).status == CANDIDATE
    assert experiment(services, experiment_name(NEW)).status == "stopped"


def test_rolling_back_a_canary_by_hand(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    start_canary(canary_settings, services.sessions, NEW, OLD)
    registry.roll_back_canary(NEW)
    assert statuses(registry) == {OLD: ACTIVE, NEW: ROLLED_BACK}
    assert canary_of(registry)["decided_by"] == "hand"
    assert experiment(services, experiment_name(NEW)).status == "stopped"
    with pytest.raises(RegistryError, match="has no running canary"):
        registry.roll_back_canary(NEW)


# -- gauges ------------------------------------------------------------------------------------


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_gauges_reflect_the_database(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    start_canary(canary_settings, services.sessions, NEW, OLD)
    lists = simulate(services, experiment_name(NEW), 300, {"control": 0.1, "canary": 0.1}, 6)
    with services.sessions() as session:
        stored = dict(
            session.execute(
                select(ExperimentExposure.variant, func.count()).group_by(
                    ExperimentExposure.variant
                )
            ).all()
        )
    assert stored == lists

    canary_metrics(services.sessions)
    assert gauge("recsys_canary_active", version=NEW) == 1
    assert gauge("recsys_canary_exposures", arm="control") == lists["control"]
    assert gauge("recsys_canary_exposures", arm="canary") == lists["canary"]
    assert gauge("recsys_canary_decisions", decision="promoted") == 0
    assert gauge("recsys_canary_decisions", decision="rolled_back") == 0

    registry.roll_back_canary(NEW)
    summary = canary_metrics(services.sessions)
    assert summary["running"] == []
    assert gauge("recsys_canary_active", version=NEW) is None
    assert gauge("recsys_canary_exposures", arm="control") is None
    assert gauge("recsys_canary_decisions", decision="rolled_back") == 1
    assert gauge("recsys_canary_decisions", decision="promoted") == 0


# -- through train() and the API ---------------------------------------------------------------

# A deliberately poor model for the first version, so that the gate promotes the second.
WEAK = ModelChoice(
    als=ALSParams(factors=1, iterations=1, regularization=1000.0, alpha=1.0, random_state=1),
    weights={"als": 1.0, "content": 0.0, "popularity": 0.0},
)


def run_train(services: Services, model_dir: Path, **options: Any) -> TrainResult:
    return train(
        services.engine,
        services.sessions,
        dict(services.settings.event_weights),
        model_dir,
        TrainOptions(eval_users=50, **options),
    )


def test_train_sends_a_version_that_passes_the_gate_out_as_a_canary(
    shop: demo.DemoData,
    services: Services,
    tmp_path: Path,
    app_client: Callable[..., TestClient],
) -> None:
    """With RECSYS_CANARY_SHARE 0.3 the second version is not promoted but served to its
    share of users: their answers name the variant `canary` and its version, everyone else
    keeps the active one; a third that passes the gate meanwhile is held; without the
    setting, or forced, a version is promoted at once."""
    settings = make_settings(services.settings, canary_share=0.3)
    first = run_train(services, tmp_path, choice=WEAK, force=True)
    assert first.outcome == "promoted"

    second = run_train(services, tmp_path, choice=CHOICE, settings=settings)
    assert second.decision.promote, second.decision.reasons
    assert second.outcome == "canary"
    assert second.canary is not None
    assert second.canary.started
    registry = Registry(services.sessions)
    assert statuses(registry) == {first.version: ACTIVE, second.version: CANARY}

    client = app_client()
    variants: dict[str, int] = {"control": 0, "canary": 0}
    users = sorted({e["user_id"] for e in shop.events})
    for user in users:
        body = recs(client, user, k=5)
        assert body["experiment"] == experiment_name(second.version)
        variants[body["variant"]] += 1
        expected = second.version if body["variant"] == "canary" else first.version
        assert body["model_version"] == expected, (user, body["variant"])
    assert 0.1 < variants["canary"] / len(users) < 0.5, variants
    app_services: Services = client.app.state.services  # type: ignore[attr-defined]
    app_services.experiments.exposures.flush()
    with services.sessions() as session:
        served = set(
            session.execute(
                select(ExperimentExposure.variant, ExperimentExposure.model_version)
            ).all()
        )
    assert served == {("control", first.version), ("canary", second.version)}

    third = run_train(services, tmp_path, choice=CHOICE, settings=settings)
    assert third.decision.promote
    assert third.outcome == "held"
    assert third.canary is not None
    assert f"experiment '{experiment_name(second.version)}' is running" in third.canary.reason
    assert registry.get(third.version).status == CANDIDATE

    forced = run_train(services, tmp_path, choice=CHOICE, settings=settings, force=True)
    assert forced.outcome == "promoted"
    assert registry.get(forced.version).status == ACTIVE


def test_train_without_canary_settings_promotes_at_once(
    shop: demo.DemoData, services: Services, tmp_path: Path
) -> None:
    first = run_train(services, tmp_path, choice=WEAK, force=True)
    second = run_train(services, tmp_path, choice=CHOICE)
    assert second.outcome == "promoted"
    third = run_train(services, tmp_path, choice=CHOICE, settings=services.settings)
    assert third.outcome == "candidate"
    assert statuses(Registry(services.sessions)) == {
        first.version: RETIRED,
        second.version: ACTIVE,
        third.version: CANDIDATE,
    }


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli_env(
    canary_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """RECSYS_* pointing the command line at the test database, with the canary settings."""
    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)
    for name, value in {
        "RECSYS_ENV": "test",
        "RECSYS_DATABASE_URL": canary_settings.database_url,
        "RECSYS_REDIS_URL": canary_settings.redis_url,
        "RECSYS_VAR_DIR": str(canary_settings.var_dir),
        "RECSYS_MODEL_DIR": str(tmp_path / "models"),
        "RECSYS_CANARY_SHARE": "0.5",
        "RECSYS_CANARY_MIN_EXPOSURES": "400",
        "RECSYS_EXPERIMENT_MIN_USERS": "50",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training_cli, "out", Console(width=200))
    monkeypatch.setattr(training_cli, "console", Console(width=200, stderr=True))
    monkeypatch.setattr(training_cli_shared, "console", Console(width=200, stderr=True))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(*args: str) -> Any:
    result = runner.invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def flat(output: str) -> str:
    return " ".join(output.split())


def test_the_command_line_reviews_canaries_and_shows_their_decisions(
    services: Services, registry: Registry, canary_settings: Settings, cli_env: None
) -> None:
    """`models canary` decides (here: rolls back a worse canary) and prints it; `models list`
    marks the canary's state; `models show` gives the figures it was decided on."""
    start_canary(canary_settings, services.sessions, NEW, OLD)
    listed = run("models", "list")
    assert listed.exit_code == 0, listed.output
    assert any(
        NEW in line and CANARY in line and "running" in line for line in listed.output.splitlines()
    ), listed.output

    simulate(services, experiment_name(NEW), 1000, {"control": 0.15, "canary": 0.05}, 7)
    reviewed = run("models", "canary")
    assert reviewed.exit_code == 0, reviewed.output
    assert f"{NEW}: rolled_back: CTR" in flat(reviewed.output)

    listed = run("models", "list")
    # The table's row (status and canary state) comes before the reasons under it.
    row = next(line for line in listed.output.splitlines() if NEW in line)
    assert row.count("rolled_back") == 2, row
    assert f"{NEW} canary rolled_back: CTR" in flat(listed.output)

    shown = run("models", "show", NEW)
    assert shown.exit_code == 0, shown.output
    text = flat(shown.output)
    assert "status rolled_back" in text
    assert "canary rolled_back" in text
    assert f"experiment {experiment_name(NEW)}" in text
    assert f"against {OLD}" in text
    assert "by review" in text
    figures = canary_of(registry)["figures"]
    for arm in ("control", "canary"):
        cells = rf"{arm}\W+{figures['exposures'][arm]:,}\W+{figures['users'][arm]:,}\W+"
        cells += rf"{figures['clicks'][arm]:,}\W+{figures['ctr'][arm]:.4f}"
        assert re.search(cells, text), (cells, text)
    assert figures["p_value"] < 0.0001
    assert f"CTR lift {figures['lift']:+.1%}" in text
    assert "p < 0.0001 (alpha 0.05)" in text
    assert "significantly worse" in text

    assert "no canary is running" in run("models", "canary").output
    promoted = run("models", "promote", NEW)
    assert promoted.exit_code == 0
    assert "it had been rolled back as a canary" in flat(promoted.output)


def test_the_command_line_waits_then_rolls_back_by_hand(
    services: Services, registry: Registry, canary_settings: Settings, cli_env: None
) -> None:
    start_canary(canary_settings, services.sessions, NEW, OLD)
    waiting = run("models", "canary")
    assert f"{NEW}: waiting: too few lists yet: control 0 and canary 0" in flat(waiting.output)
    shown = flat(run("models", "show", NEW).output)
    assert "canary running" in shown
    assert "review too few lists yet: control 0 and canary 0 of the 400 each arm needs" in shown
    assert "last review" in shown

    rolled = run("models", "canary", "--rollback", NEW)
    assert rolled.exit_code == 0, rolled.output
    assert f"{NEW} is rolled back" in rolled.output
    assert statuses(registry) == {OLD: ACTIVE, NEW: ROLLED_BACK}
    again = run("models", "canary", "--rollback", NEW)
    assert again.exit_code == 1
    assert "has no running canary" in flat(again.output)
    unknown = run("models", "show", "nosuch")
    assert unknown.exit_code == 1
    assert "no model version 'nosuch'" in unknown.output


def test_train_on_the_command_line_says_the_canary_started_or_was_held(
    shop: demo.DemoData, services: Services, cli_env: None
) -> None:
    """With RECSYS_CANARY_SHARE set, `train` prints the canary instead of a promotion; the
    next version that passes the gate while it runs is held, with how to promote it."""
    first = run("train", "--factors", "1", "--iterations", "1", "--eval-users", "50", "--force")
    assert "promoted" in first.output, first.output
    better = ("--factors", "8", "--iterations", "6", "--eval-users", "50")
    second = run("train", *better)
    assert second.exit_code == 0, second.output
    text = flat(second.output)
    assert "canary started" in text, text
    assert "served to 50.00% of users in experiment canary-" in text
    registry = Registry(services.sessions)
    (canary,) = registry.canaries("running")
    assert canary.status == CANARY

    third = flat(run("train", *better).output)
    assert "passed the gate, canary held" in third, third
    assert f"experiment 'canary-{canary.version}' is running" in third
    assert "python -m training models promote" in third


# -- who decides -------------------------------------------------------------------------------


def test_the_monitor_round_decides_the_running_canary_and_reports_it(
    services: Services, registry: Registry, canary_settings: Settings
) -> None:
    """The service's periodic monitor reviews the canary: no one has to run a command."""
    from app.artifacts import LocalArtifactStore
    from app.monitoring.monitor import Monitor

    start_canary(canary_settings, services.sessions, NEW, OLD)
    monitor = Monitor(
        canary_settings, services.engine, services.sessions, None, LocalArtifactStore(), lambda: 50
    )
    waiting = monitor.compute()["canary"]
    assert waiting["running"] == [NEW]
    assert [d["decision"] for d in waiting["reviewed"]] == ["waiting"]

    simulate(services, experiment_name(NEW), 1000, {"control": 0.05, "canary": 0.15}, 11)
    report = monitor.compute()
    (decided,) = report["canary"]["reviewed"]
    assert (decided["version"], decided["decision"]) == (NEW, "promoted")
    assert report["canary"]["running"] == []
    assert report["canary"]["decisions"]["promoted"] == 1
    assert statuses(registry) == {OLD: RETIRED, NEW: ACTIVE}
    monitor.export(report)
    assert gauge("recsys_canary_decisions", decision="promoted") == 1
    assert gauge("recsys_canary_active", version=NEW) is None


def test_retrain_waits_for_a_running_canary_and_its_round_decides_it(
    services: Services,
    registry: Registry,
    canary_settings: Settings,
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a canary runs nothing is trained; a round decides it first (here: rolled back),
    then finds nothing else to do."""
    monkeypatch.setenv("RECSYS_RETRAIN_MAX_MODEL_AGE_HOURS", "100000")
    get_settings.cache_clear()
    start_canary(canary_settings, services.sessions, NEW, OLD)
    waiting = run("retrain", "--once")
    assert waiting.exit_code == 0, waiting.output
    assert f"nothing to do: the canary {NEW} is running: its decision comes first" in flat(
        waiting.output
    )

    simulate(services, experiment_name(NEW), 1000, {"control": 0.15, "canary": 0.05}, 12)
    decided = run("retrain", "--once", "--min-new-events", "1000000")
    assert decided.exit_code == 0, decided.output
    assert f"canary {NEW}: rolled_back" in flat(decided.output)
    assert "nothing to do" in flat(decided.output)
    assert statuses(registry) == {OLD: ACTIVE, NEW: ROLLED_BACK}

"""The promotion gate (pure) and the model registry on the real database: one active version
at most, promotions retire the replaced one, rollbacks undo them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db.models import ModelVersion
from app.services import Services
from tests.conftest import count_rows
from training.registry import (
    ACTIVE,
    CANDIDATE,
    RETIRED,
    Registry,
    RegistryError,
    decide,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# -- the gate ----------------------------------------------------------------------------------


def test_a_better_candidate_is_promoted_and_the_reason_compares_scores() -> None:
    """A higher validation nDCG than the active version's promotes, saying by how much."""
    decision = decide({"ndcg@10": 0.31}, {"ndcg@10": 0.30}, "v1")
    assert decision.promote
    assert decision.reasons[0].startswith("better: ndcg@10 0.3100 vs the active v1's 0.3000")
    assert (decision.candidate_score, decision.active_score) == (0.31, 0.30)
    assert decision.active_version == "v1"
    assert not decision.forced


def test_a_worse_candidate_stays_a_candidate() -> None:
    """A lower score does not promote, and the reason says it stays a candidate."""
    decision = decide({"ndcg@10": 0.29}, {"ndcg@10": 0.30}, "v1")
    assert not decision.promote
    assert decision.reasons[0].startswith("not better")
    assert "stays a candidate" in decision.reasons[0]


def test_an_equal_candidate_is_not_promoted_strictly_better_is_needed() -> None:
    """Ties keep the active version: retraining on the same data must not churn versions."""
    decision = decide({"ndcg@10": 0.30}, {"ndcg@10": 0.30}, "v1")
    assert not decision.promote


def test_the_margin_is_relative_one_percent_better_does_not_clear_two_percent() -> None:
    """With margin 0.02 a 1% improvement is not enough, a 3% one is."""
    assert not decide({"ndcg@10": 0.303}, {"ndcg@10": 0.30}, "v1", margin=0.02).promote
    assert decide({"ndcg@10": 0.309}, {"ndcg@10": 0.30}, "v1", margin=0.02).promote
    # Without a margin the same 1% is enough.
    assert decide({"ndcg@10": 0.303}, {"ndcg@10": 0.30}, "v1").promote


def test_the_first_candidate_is_promoted_when_none_is_active() -> None:
    decision = decide({"ndcg@10": 0.01}, None, None)
    assert decision.promote
    assert decision.reasons == ["no version is active: the first model is promoted"]


def test_force_promotes_a_worse_candidate_and_says_it_was_forced() -> None:
    decision = decide({"ndcg@10": 0.10}, {"ndcg@10": 0.30}, "v1", force=True)
    assert decision.promote
    assert decision.forced
    assert "forced" in decision.reasons[0]


def test_a_candidate_without_the_metric_is_not_promoted() -> None:
    """No figure on the gate's metric, nothing to compare: the active version stays."""
    decision = decide({"precision@10": 0.5}, {"ndcg@10": 0.30}, "v1")
    assert not decision.promote
    assert decision.reasons == ["the candidate has no ndcg@10 to compare"]


def test_the_gate_uses_the_metric_it_is_given() -> None:
    """metric='map' compares MAP, whatever nDCG says."""
    candidate = {"ndcg@10": 0.1, "map": 0.4}
    active = {"ndcg@10": 0.3, "map": 0.2}
    assert decide(candidate, active, "v1", metric="map").promote
    assert not decide(candidate, active, "v1").promote


# -- the registry on the database --------------------------------------------------------------


def version_row(name: str, created_at: datetime, status: str = CANDIDATE) -> ModelVersion:
    return ModelVersion(
        version=name,
        created_at=created_at,
        status=status,
        data_from=created_at - timedelta(days=30),
        data_until=created_at,
        n_events=100,
        n_users=10,
        n_items=20,
        params={"choice": {}},
        metrics={"validation": {"ndcg@10": 0.2}},
        artifact_path=f"/models/{name}",
        artifact_sha256="0" * 64,
    )


@pytest.fixture
def registry(services: Services) -> Registry:
    """A registry holding three candidates, v1 oldest."""
    reg = Registry(services.sessions)
    for n in range(1, 4):
        reg.add(version_row(f"v{n}", T0 + timedelta(hours=n)))
    return reg


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive UTC times, PostgreSQL aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def statuses(registry: Registry) -> dict[str, str]:
    return {v.version: v.status for v in registry.all()}


def test_all_lists_every_version_oldest_first(registry: Registry) -> None:
    assert [v.version for v in registry.all()] == ["v1", "v2", "v3"]
    assert registry.active() is None


def test_promote_activates_and_retires_the_previous_active_version(
    registry: Registry, services: Services
) -> None:
    """After two promotions exactly one version is active, the replaced one is retired with
    a retirement time, and promote returns the replaced version."""
    assert registry.promote("v1", now=T0 + timedelta(days=1)) is None
    replaced = registry.promote("v2", now=T0 + timedelta(days=2))

    assert replaced is not None
    assert replaced.version == "v1"
    assert statuses(registry) == {"v1": RETIRED, "v2": ACTIVE, "v3": CANDIDATE}
    active = registry.active()
    assert active is not None
    assert active.version == "v2"
    assert active.promoted_at is not None
    assert active.retired_at is None
    v1 = registry.get("v1")
    assert v1.retired_at is not None
    assert as_utc(v1.retired_at) == T0 + timedelta(days=2)
    with services.engine.connect() as connection:
        rows = connection.execute(
            select(ModelVersion.version).where(ModelVersion.status == ACTIVE)
        ).all()
    assert [r.version for r in rows] == ["v2"]


def test_the_database_itself_refuses_a_second_active_row(
    registry: Registry, services: Services
) -> None:
    """The one-active rule holds for writers that bypass Registry: a direct insert of a second
    'active' row fails with IntegrityError and nothing is stored."""
    registry.promote("v1")
    with services.sessions() as session:
        session.add(version_row("rogue", T0, status=ACTIVE))
        with pytest.raises(IntegrityError):
            session.commit()
    assert count_rows(services, "model_versions") == 3
    active = registry.active()
    assert active is not None
    assert active.version == "v1"


def test_promoting_an_unknown_version_raises_and_changes_nothing(registry: Registry) -> None:
    registry.promote("v1")
    with pytest.raises(RegistryError, match="no model version 'nosuch'"):
        registry.promote("nosuch")
    assert statuses(registry) == {"v1": ACTIVE, "v2": CANDIDATE, "v3": CANDIDATE}


def test_promoting_the_active_version_again_is_refused(registry: Registry) -> None:
    registry.promote("v1")
    with pytest.raises(RegistryError, match="already active"):
        registry.promote("v1")
    assert statuses(registry)["v1"] == ACTIVE


def test_rollback_reactivates_the_version_the_active_one_replaced(registry: Registry) -> None:
    """v1 -> v2 -> v3, then rollback: v2 (the one v3 replaced) is active again, v3 retired;
    a second rollback goes back to v3 (the one v2 replaced this time), never to v1."""
    for n, name in enumerate(("v1", "v2", "v3"), start=1):
        registry.promote(name, now=T0 + timedelta(days=n))

    restored, retired = registry.rollback(now=T0 + timedelta(days=10))
    assert (restored.version, retired.version) == ("v2", "v3")
    assert (restored.status, retired.status) == (ACTIVE, RETIRED)
    assert statuses(registry) == {"v1": RETIRED, "v2": ACTIVE, "v3": RETIRED}

    restored, retired = registry.rollback(now=T0 + timedelta(days=11))
    assert (restored.version, retired.version) == ("v3", "v2")
    assert statuses(registry) == {"v1": RETIRED, "v2": RETIRED, "v3": ACTIVE}


def test_rollback_with_nothing_active_says_so(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="no version is active: nothing to roll back"):
        registry.rollback()


def test_rollback_of_the_only_version_ever_active_says_there_is_nothing_to_go_back_to(
    registry: Registry,
) -> None:
    """Candidates that never served are not rollback targets."""
    registry.promote("v2")
    with pytest.raises(RegistryError) as caught:
        registry.rollback()
    assert str(caught.value) == "v2 is the only version ever active: nothing to roll back to"
    assert statuses(registry) == {"v1": CANDIDATE, "v2": ACTIVE, "v3": CANDIDATE}


def test_record_gate_stores_the_decision_on_the_version(registry: Registry) -> None:
    """The gate's verdict and reasons are kept with the version for `models list`."""
    decision = decide({"ndcg@10": 0.1}, {"ndcg@10": 0.3}, "v1")
    registry.record_gate("v2", decision)
    gate = registry.get("v2").gate
    assert gate is not None
    assert gate["promote"] is False
    assert gate["reasons"] == decision.reasons
    assert gate["active_version"] == "v1"

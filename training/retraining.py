"""``training retrain``: whether to train now, and the record of every decision.

A round trains when any trigger holds, each a setting:

- no version is active;
- the newest version trained (active or a candidate the gate kept out) is older than
  ``RECSYS_RETRAIN_MAX_MODEL_AGE_HOURS``;
- at least ``RECSYS_RETRAIN_MIN_NEW_EVENTS`` events happened after its training data ends;
- with ``RECSYS_RETRAIN_ON_DRIFT``, a feature of a monitor window has the verdict ``drift``.

Otherwise, or while a canary runs (its decision comes first), it says why not. Either way the
round is written to ``training_runs`` (outcome ``skipped``, ``promoted``, ``candidate``,
``canary``, ``held`` or ``failed``, with its triggers and reason), which the service exports as
the freshness gauges; the promotion gate, not the trigger, still decides whether a candidate
replaces the active version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import ArtifactStore
from app.config import Settings
from app.db.engine import session_scope
from app.db.models import ModelVersion, TrainingRun
from app.db.queries import as_utc
from app.monitoring.drift import DRIFT
from app.monitoring.monitor import Monitor, events_since
from training.registry import CANARY

SKIPPED, FAILED = "skipped", "failed"


@dataclass
class Due:
    """Whether a round trains: the triggers that hold, and what was checked."""

    triggers: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def train(self) -> bool:
        return bool(self.triggers)

    @property
    def reason(self) -> str:
        return "; ".join(self.triggers if self.triggers else self.checked)


def due(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    artifacts: ArtifactStore,
    now: datetime | None = None,
    min_new_events: int | None = None,
) -> Due:
    """Check every trigger (cheapest first; drift only when nothing else holds)."""
    now = now or datetime.now(UTC)
    out = Due()
    with sessions() as session:
        active = session.scalar(select(ModelVersion).where(ModelVersion.status == "active"))
        if active is not None:
            session.expunge(active)
        canary = session.scalar(select(ModelVersion.version).where(ModelVersion.status == CANARY))
    if canary is not None:
        out.checked.append(f"the canary {canary} is running: its decision comes first")
        return out
    if active is None:
        out.triggers.append("no version is active")
        return out
    # Age and new events count from the newest version trained, promoted or not: a candidate
    # the gate kept out is not trained again every round for the same reason.
    with sessions() as session:
        newest = session.scalar(
            select(ModelVersion).order_by(ModelVersion.created_at.desc()).limit(1)
        )
        assert newest is not None  # the active one at least
        session.expunge(newest)
    age_hours = (now - as_utc(newest.created_at)).total_seconds() / 3600
    limit = settings.retrain_max_model_age_hours
    (out.triggers if age_hours > limit else out.checked).append(
        f"the newest version {newest.version} is {age_hours:,.1f} h old (limit {limit:g} h)"
    )
    needed = settings.retrain_min_new_events if min_new_events is None else min_new_events
    new = events_since(engine, newest)
    (out.triggers if new >= needed else out.checked).append(
        f"{new:,} events since its data ends ({needed:,} needed)"
    )
    if settings.retrain_on_drift and not out.triggers:
        monitor = Monitor(settings, engine, sessions, None, artifacts, eligible_items=lambda: 0)
        report = monitor.drift(now)
        drifted = sorted(
            {
                f"{feature['feature']} ({window['window']}, PSI {feature['psi']:.2f})"
                for window in report["windows"]
                for feature in window["features"]
                if feature["verdict"] == DRIFT
            }
        )
        if drifted:
            out.triggers.append("drift: " + ", ".join(drifted))
        else:
            out.checked.append("no feature drifts")
    return out


def record_run(
    sessions: sessionmaker[Session],
    started_at: datetime,
    outcome: str,
    triggers: list[str],
    reason: str,
    version: str | None = None,
) -> None:
    with session_scope(sessions) as session:
        session.add(
            TrainingRun(
                started_at=started_at,
                finished_at=datetime.now(UTC),
                outcome=outcome,
                version=version,
                triggers=triggers,
                reason=reason[:10_000],
            )
        )

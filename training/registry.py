"""The model registry (``model_versions``) and its promotion gate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import ArtifactStore
from app.db.engine import session_scope
from app.db.models import Experiment, ModelVersion
from app.experiments.assignment import RUNNING
from app.experiments.service import STOPPED

CANDIDATE, ACTIVE, RETIRED = "candidate", "active", "retired"
# Served to a share of users against the active version (``app.monitoring.canary``); the
# active version stays active meanwhile.
CANARY = "canary"
# A canary whose CTR was significantly worse than the active version's: never promoted by a
# gate or a rollback, only by hand (`models promote`).
ROLLED_BACK = "rolled_back"

# The states of ``ModelVersion.canary``: held (it could not start) or running, then promoted,
# rolled_back, or ended (stopped without a decision: its experiment stopped by hand, the
# active version changed under it).
CANARY_HELD, CANARY_RUNNING, CANARY_PROMOTED, CANARY_ROLLED_BACK, CANARY_ENDED = (
    "held",
    "running",
    "promoted",
    "rolled_back",
    "ended",
)


class RegistryError(Exception):
    """A registry operation that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate replaces the active version, and why."""

    promote: bool
    reasons: list[str]
    metric: str
    candidate_score: float | None
    active_version: str | None = None
    active_score: float | None = None
    margin: float = 0.0
    forced: bool = False
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: Mapping[str, float],
    active: Mapping[str, float] | None,
    active_version: str | None,
    metric: str = "ndcg@10",
    margin: float = 0.0,
    force: bool = False,
) -> GateDecision:
    """The promotion gate.

    A candidate is promoted when no version is active, or when its ``metric`` on the shared
    validation data beats the active version's by more than ``margin`` (relative: 0.01 means at
    least 1% better); ``force`` promotes regardless and says so.
    """
    score = candidate.get(metric)
    base = None if active is None else active.get(metric)

    def verdict(promote: bool, reason: str) -> GateDecision:
        return GateDecision(
            promote=promote,
            reasons=[reason],
            metric=metric,
            candidate_score=score,
            active_version=active_version,
            active_score=base,
            margin=margin,
            forced=force,
        )

    if force:
        return verdict(True, "forced by an operator: the gate was not applied")
    if active_version is None:
        return verdict(True, "no version is active: the first model is promoted")
    if score is None:
        return verdict(False, f"the candidate has no {metric} to compare")
    if base is None:
        return verdict(True, f"the active {active_version} has no {metric} on this data")
    needed = base * (1.0 + margin)
    comparison = (
        f"{metric} {score:.4f} vs the active {active_version}'s {base:.4f} "
        f"(must exceed {needed:.4f}, margin {margin:.1%})"
    )
    if score > needed:
        return verdict(True, f"better: {comparison}")
    return verdict(False, f"not better: {comparison}; it stays a candidate")


class Registry:
    """Reads and changes ``model_versions``; every change is one transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(
        self,
        version: ModelVersion,
        directory: Path | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> str:
        """Register ``version``; with ``artifacts``, keep the artifact saved in ``directory``
        there in the same transaction, so a version never exists without its files. Returns
        the artifact's location as registered."""
        with session_scope(self.sessions) as session:
            session.add(version)
            if artifacts is not None and directory is not None:
                # The row first: the artifact's parts refer to it.
                session.flush()
                version.artifact_path = artifacts.put(directory, session)
            return version.artifact_path

    def get(self, version: str) -> ModelVersion:
        with self.sessions() as session:
            row = session.get(ModelVersion, version)
            if row is None:
                raise RegistryError(f"no model version {version!r}; see `models list`")
            return row

    def active(self) -> ModelVersion | None:
        with self.sessions() as session:
            return session.scalar(select(ModelVersion).where(ModelVersion.status == ACTIVE))

    def all(self) -> list[ModelVersion]:
        with self.sessions() as session:
            return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at)))

    def record_gate(self, version: str, decision: GateDecision) -> None:
        with session_scope(self.sessions) as session:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.version == version)
                .values(gate=decision.as_dict())
            )

    def canaries(self, state: str | None = None) -> list[ModelVersion]:
        """Versions that went out as canaries (or were held), oldest first; with ``state``,
        only those whose canary is in it."""
        with self.sessions() as session:
            rows = session.scalars(
                select(ModelVersion)
                .where(ModelVersion.canary.is_not(None))
                .order_by(ModelVersion.created_at)
            )
            return [r for r in rows if state is None or (r.canary or {}).get("state") == state]

    def record_canary(
        self, version: str, canary: Mapping[str, Any], status: str | None = None
    ) -> None:
        """Store ``canary`` on the version (and its new ``status``, when given)."""
        values: dict[str, Any] = {"canary": dict(canary)}
        if status is not None:
            values["status"] = status
        with session_scope(self.sessions) as session:
            session.execute(
                update(ModelVersion).where(ModelVersion.version == version).values(**values)
            )

    def roll_back_canary(
        self, version: str, outcome: Mapping[str, Any] | None = None, now: datetime | None = None
    ) -> ModelVersion:
        """End the running canary of ``version``: its experiment stops, the version is
        ``rolled_back`` (the active one never stopped serving everyone else)."""
        now = now or datetime.now(UTC)
        with session_scope(self.sessions) as session:
            target = self._running_canary(session, version)
            target.status = ROLLED_BACK
            target.retired_at = now
            _close_canary(
                session,
                target,
                CANARY_ROLLED_BACK,
                now,
                outcome or {"decided_by": "hand", "reason": "rolled back by hand"},
            )
            return target

    def end_canary(
        self, version: str, outcome: Mapping[str, Any], now: datetime | None = None
    ) -> ModelVersion:
        """End the running canary of ``version`` without a decision: its experiment stops and
        the version is a candidate again (one that passed the gate, promotable by hand)."""
        now = now or datetime.now(UTC)
        with session_scope(self.sessions) as session:
            target = self._running_canary(session, version)
            if target.status == CANARY:
                target.status = CANDIDATE
            _close_canary(session, target, CANARY_ENDED, now, outcome)
            return target

    @staticmethod
    def _running_canary(session: Session, version: str) -> ModelVersion:
        target = session.get(ModelVersion, version, with_for_update=True)
        if target is None:
            raise RegistryError(f"no model version {version!r}; see `models list`")
        if (target.canary or {}).get("state") != CANARY_RUNNING:
            raise RegistryError(
                f"{version} has no running canary (its status is {target.status}); "
                "`models show` tells its story"
            )
        return target

    def promote(
        self,
        version: str,
        now: datetime | None = None,
        canary_outcome: Mapping[str, Any] | None = None,
    ) -> ModelVersion | None:
        """Make ``version`` active and retire the one it replaces; returns the replaced one.

        A running canary of ``version`` ends with it (its experiment stops), as decided by
        ``canary_outcome`` or else by hand."""
        now = now or datetime.now(UTC)
        with session_scope(self.sessions) as session:
            target = session.get(ModelVersion, version, with_for_update=True)
            if target is None:
                raise RegistryError(f"no model version {version!r}; see `models list`")
            if target.status == ACTIVE:
                raise RegistryError(f"{version} is already active")
            if (target.canary or {}).get("state") == CANARY_RUNNING:
                _close_canary(
                    session,
                    target,
                    CANARY_PROMOTED,
                    now,
                    canary_outcome
                    or {
                        "decided_by": "hand",
                        "reason": "promoted by hand (`models promote`) before the canary "
                        "was decided",
                    },
                )
            previous = session.scalar(
                select(ModelVersion).where(ModelVersion.status == ACTIVE).with_for_update()
            )
            if previous is not None:
                previous.status = RETIRED
                previous.retired_at = now
                # Flush first: the database allows one active row at a time.
                session.flush()
            target.status = ACTIVE
            target.promoted_at = now
            target.retired_at = None
            return previous

    def rollback(self, now: datetime | None = None) -> tuple[ModelVersion, ModelVersion]:
        """Re-activate the version the current one replaced (the one retired most recently).

        Returns (re-activated, retired).
        """
        current = self.active()
        if current is None:
            raise RegistryError("no version is active: nothing to roll back")
        with self.sessions() as session:
            before = session.scalar(
                select(ModelVersion)
                .where(
                    ModelVersion.status == RETIRED,
                    ModelVersion.promoted_at.is_not(None),
                    ModelVersion.retired_at.is_not(None),
                    ModelVersion.version != current.version,
                )
                .order_by(ModelVersion.retired_at.desc())
                .limit(1)
            )
        if before is None:
            raise RegistryError(
                f"{current.version} is the only version ever active: nothing to roll back to"
            )
        self.promote(before.version, now=now)
        return self.get(before.version), self.get(current.version)


def _close_canary(
    session: Session,
    row: ModelVersion,
    state: str,
    now: datetime,
    outcome: Mapping[str, Any],
) -> None:
    """Stop the canary's experiment if it still runs and write the canary's final state."""
    canary = dict(row.canary or {})
    name = canary.get("experiment")
    if name is not None:
        experiment = session.scalar(
            select(Experiment).where(Experiment.name == name).with_for_update()
        )
        if experiment is not None and experiment.status == RUNNING:
            experiment.status = STOPPED
            experiment.stopped_at = now
    row.canary = {
        **canary,
        "decided_by": "review",
        **outcome,
        "state": state,
        "decided_at": now.isoformat(),
    }

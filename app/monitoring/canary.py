"""Canaries: a version that passed the promotion gate goes out first to a share of users.

:func:`start_canary` runs an experiment ``canary-<version>`` with two arms, ``control`` (the
active version) and ``canary`` (the new one, ``RECSYS_CANARY_SHARE`` of users); the version's
status becomes ``canary`` while the active version keeps serving everyone else. Only one
experiment runs at a time, so when another one runs the canary is *held*: the version stays a
candidate that passed the gate, and the reason says how to promote it by hand.

:func:`review_canaries` decides a running canary once both arms have served
``RECSYS_CANARY_MIN_EXPOSURES`` lists, with the statistics of the experiment results endpoint
(per-user delta-method CTR, ``app.experiments.results``): rolled back when the canary's CTR is
below the control's at ``RECSYS_CANARY_ALPHA``, promoted to everyone otherwise. A canary whose
experiment was stopped by hand, or whose control is no longer the active version, ends without
a decision. Every outcome is logged and written with its figures into
``model_versions.canary``; :func:`canary_metrics` exports the registry's view as gauges.

Both run from the training command line without an API; the API processes serve the canary
arm from their next experiment refresh (``RECSYS_EXPERIMENTS_REFRESH_SECONDS``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app import monitoring as metrics
from app.artifacts import ArtifactStore
from app.config import Settings
from app.db.engine import session_scope
from app.db.models import Experiment, ExperimentExposure, ModelVersion
from app.db.queries import as_utc
from app.experiments.assignment import BASIS_POINTS, RUNNING
from app.experiments.attribution import tally
from app.experiments.results import build_results
from app.experiments.serving import ModelVersionUnavailable, load_version
from app.schemas import ExperimentResultsOut
from training.registry import (
    CANARY,
    CANARY_HELD,
    CANARY_PROMOTED,
    CANARY_ROLLED_BACK,
    CANARY_RUNNING,
    Registry,
    RegistryError,
)

log = logging.getLogger(__name__)

CONTROL_ARM, CANARY_ARM = "control", "canary"
Decision = Literal["promoted", "rolled_back", "ended", "waiting"]


def experiment_name(version: str) -> str:
    return f"canary-{version}"


def share_basis_points(share: float) -> int:
    """The canary arm's share in basis points: at least one, and the control keeps one."""
    return min(max(round(share * BASIS_POINTS), 1), BASIS_POINTS - 1)


@dataclass(frozen=True)
class CanaryStart:
    """Whether a version went out as a canary (``running``) or could not (``held``), and why."""

    version: str
    state: Literal["running", "held"]
    reason: str
    active_version: str
    share: float
    experiment: str | None = None

    @property
    def started(self) -> bool:
        return self.state == CANARY_RUNNING


@dataclass(frozen=True)
class CanaryDecision:
    """What one review did with one running canary; ``waiting`` decides nothing yet."""

    version: str
    decision: Decision
    reason: str
    experiment: str | None
    decided_at: datetime
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.decision != "waiting"


def _promote_by_hand(version: str) -> str:
    return f"promote it by hand with `python -m training models promote {version}`"


def start_canary(
    settings: Settings,
    sessions: sessionmaker[Session],
    version: str,
    active_version: str,
    now: datetime | None = None,
    artifacts: ArtifactStore | None = None,
) -> CanaryStart:
    """Serve ``version`` to ``settings.canary_share`` of users against ``active_version``.

    With ``artifacts``, the version's artifact is loaded first, as starting any experiment
    does: a canary that the API could not serve is held instead. The experiment and the
    version's new status are written in one transaction.
    """
    now = now or datetime.now(UTC)
    registry = Registry(sessions)
    share_bp = share_basis_points(settings.canary_share)
    share = share_bp / BASIS_POINTS
    name = experiment_name(version)

    def held(reason: str, otherwise: str = "") -> CanaryStart:
        text = (
            f"{reason}; {version} stays a candidate that passed the gate: "
            f"{_promote_by_hand(version)}{otherwise}"
        )
        registry.record_canary(
            version,
            {
                "state": CANARY_HELD,
                "share": share,
                "active_version": active_version,
                "held_at": now.isoformat(),
                "reason": text,
            },
        )
        log.warning("canary of %s held: %s", version, text)
        return CanaryStart(version, "held", text, active_version, share)

    if artifacts is not None:
        try:
            load_version(sessions, artifacts, version)
        except ModelVersionUnavailable as exc:
            return held(f"it cannot be served: {exc}")
    canary = {
        "state": CANARY_RUNNING,
        "experiment": name,
        "share": share,
        "active_version": active_version,
        "min_exposures": settings.canary_min_exposures,
        "alpha": settings.canary_alpha,
        "started_at": now.isoformat(),
    }
    try:
        with session_scope(sessions) as session:
            running = session.scalar(select(Experiment.name).where(Experiment.status == RUNNING))
            if running is not None:
                blocked = running
            else:
                blocked = None
                session.add(
                    Experiment(
                        name=name,
                        description=f"canary of {version} against the active {active_version}",
                        status=RUNNING,
                        salt=secrets.token_hex(8),
                        variants=[
                            {
                                "name": CONTROL_ARM,
                                "share_bp": BASIS_POINTS - share_bp,
                                "config": {},
                            },
                            {
                                "name": CANARY_ARM,
                                "share_bp": share_bp,
                                "config": {"model_version": version},
                            },
                        ],
                        attribution_window_seconds=settings.attribution_window_seconds,
                        click_event_types=list(settings.quality_click_event_types),
                        conversion_event_types=list(settings.quality_conversion_event_types),
                        created_at=now,
                        started_at=now,
                    )
                )
                row = session.get(ModelVersion, version, with_for_update=True)
                if row is None:
                    raise RegistryError(f"no model version {version!r}; see `models list`")
                row.status = CANARY
                row.canary = canary
                # Here, not at commit: a concurrent start is refused by the database's
                # one-running-experiment index.
                session.flush()
    except IntegrityError:
        return held(
            f"another experiment started at the same moment, or one named {name!r} exists "
            "(one experiment runs at a time)"
        )
    if blocked is not None:
        return held(
            f"experiment {blocked!r} is running and one experiment runs at a time",
            f", or stop {blocked} (POST /v1/experiments/{blocked}/stop) and train again",
        )
    reason = (
        f"served to {share:.2%} of users in experiment {name} against the active "
        f"{active_version}; decided once each arm served {settings.canary_min_exposures:,} lists"
    )
    log.info("canary of %s started: %s", version, reason)
    return CanaryStart(version, "running", reason, active_version, share, name)


def _figure(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _p(value: float) -> str:
    return "p < 0.0001" if value < 0.0001 else f"p = {value:.4f}"


def _figures(results: ExperimentResultsOut, alpha: float, unserved: int) -> dict[str, Any]:
    """What a decision is based on, as stored on the version."""
    arms = {v.name: v for v in results.variants}
    control, canary = arms[CONTROL_ARM], arms[CANARY_ARM]
    comparison = canary.ctr_vs_control
    figures: dict[str, Any] = {
        "exposures": {CONTROL_ARM: control.exposures, CANARY_ARM: canary.exposures},
        "users": {CONTROL_ARM: control.users, CANARY_ARM: canary.users},
        "clicks": {CONTROL_ARM: control.clicks, CANARY_ARM: canary.clicks},
        "ctr": {CONTROL_ARM: control.ctr.value, CANARY_ARM: canary.ctr.value},
        "alpha": alpha,
        "sample_ratio_p_value": results.sample_ratio.p_value,
        "canary_lists_served_by_another_model": unserved,
    }
    if comparison is not None:
        figures.update(
            difference=comparison.absolute_difference,
            lift=comparison.relative_lift,
            lift_ci=[comparison.lift_ci_low, comparison.lift_ci_high],
            p_value=comparison.p_value,
        )
    return figures


def _results(
    settings: Settings, engine: Engine, sessions: sessionmaker[Session], name: str, now: datetime
) -> tuple[Experiment | None, ExperimentResultsOut | None]:
    """The canary's experiment and its results, as GET /v1/experiments/{name}/results says."""
    with sessions() as session:
        experiment = session.scalar(select(Experiment).where(Experiment.name == name))
        if experiment is None:
            return None, None
        session.expunge(experiment)
    if experiment.status != RUNNING:
        return experiment, None
    with engine.connect() as connection:
        tallies = tally(connection, experiment)
    if experiment.started_at is not None:
        experiment.started_at = as_utc(experiment.started_at)
    return experiment, build_results(experiment, tallies, settings.experiment_min_users, now)


def _unserved(sessions: sessionmaker[Session], experiment_id: int, version: str) -> int:
    """Lists of the canary arm that another model ranked (an API that could not load it)."""
    x = ExperimentExposure
    with sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(x)
                .where(
                    x.experiment_id == experiment_id,
                    x.variant == CANARY_ARM,
                    or_(x.model_version.is_(None), x.model_version != version),
                )
            )
            or 0
        )


def _verdict(
    settings: Settings,
    version: str,
    control_version: str,
    results: ExperimentResultsOut,
    figures: Mapping[str, Any],
) -> tuple[Decision, str]:
    """Promote, roll back or wait, and why, from the results of a canary with enough lists."""
    alpha = settings.canary_alpha
    unserved = figures["canary_lists_served_by_another_model"]
    exposures = figures["exposures"]
    if unserved:
        return "rolled_back", (
            f"{unserved:,} of {exposures[CANARY_ARM]:,} canary lists were ranked by another "
            f"model: the API could not serve {version}; rolled back"
        )
    if results.verdict == "sample_ratio_mismatch":
        users = figures["users"]
        return "rolled_back", (
            f"sample ratio mismatch ({_p(results.sample_ratio.p_value or 0.0)}): users split "
            f"control {users[CONTROL_ARM]:,}, canary {users[CANARY_ARM]:,}, far from the "
            "configured shares; the split is broken, so the canary is not trusted; rolled back"
        )
    comparison = next(v for v in results.variants if v.name == CANARY_ARM).ctr_vs_control
    if comparison is None or not comparison.enough_data or comparison.p_value is None:
        note = "no comparison" if comparison is None else comparison.note
        return "waiting", note
    ctr = figures["ctr"]
    lift = comparison.relative_lift
    change = (
        f"CTR {_figure(ctr[CANARY_ARM], '.4f')} vs the active {control_version}'s "
        f"{_figure(ctr[CONTROL_ARM], '.4f')} ({_figure(lift, '+.1%')}, {_p(comparison.p_value)}, "
        f"{exposures[CANARY_ARM]:,} and {exposures[CONTROL_ARM]:,} lists)"
    )
    worse = (comparison.absolute_difference or 0.0) < 0
    if worse and comparison.p_value < alpha:
        return "rolled_back", f"{change}: significantly worse at alpha {alpha:g}; rolled back"
    return "promoted", f"{change}: not significantly worse at alpha {alpha:g}; promoted"


def review_canaries(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    now: datetime | None = None,
) -> list[CanaryDecision]:
    """Decide every running canary that can be decided; one entry per running canary, its
    ``decision`` ``waiting`` while it lacks lists or data."""
    now = now or datetime.now(UTC)
    registry = Registry(sessions)
    active = registry.active()
    out: list[CanaryDecision] = []
    for row in registry.canaries(CANARY_RUNNING):
        canary = dict(row.canary or {})
        version = row.version
        name = str(canary.get("experiment"))
        control_version = str(canary.get("active_version"))

        def end(reason: str, version: str = version, name: str = name) -> CanaryDecision:
            return CanaryDecision(version, "ended", reason, name, now)

        experiment, results = _results(settings, engine, sessions, name, now)
        if experiment is None:
            found = end(f"its experiment {name!r} no longer exists; it ended without a decision")
        elif experiment.status != RUNNING:
            found = end(
                f"its experiment {name} was stopped by hand before a decision; "
                f"{version} is a candidate again: " + _promote_by_hand(version)
            )
        elif row.status != CANARY:
            found = end(f"{version} became {row.status} by hand; the canary ended")
        elif active is None or active.version != control_version:
            now_active = "none" if active is None else active.version
            found = end(
                f"the active version changed from {control_version} to {now_active} during the "
                f"canary, so its comparison no longer holds; {version} is a candidate again: "
                + _promote_by_hand(version)
            )
        else:
            assert results is not None
            figures = _figures(results, settings.canary_alpha, 0)
            exposures = figures["exposures"]
            needed = settings.canary_min_exposures
            if min(exposures.values()) < needed:
                decision: Decision = "waiting"
                reason = (
                    f"too few lists yet: control {exposures[CONTROL_ARM]:,} and canary "
                    f"{exposures[CANARY_ARM]:,} of the {needed:,} each arm needs"
                )
            else:
                figures["canary_lists_served_by_another_model"] = _unserved(
                    sessions, experiment.id, version
                )
                decision, reason = _verdict(settings, version, control_version, results, figures)
            found = CanaryDecision(version, decision, reason, name, now, figures)
        try:
            _apply(registry, found, canary)
        except RegistryError as exc:
            # Another review (or a person) ended it between the read and the write.
            log.info("canary of %s: %s", version, exc)
            continue
        out.append(found)
    return out


def _apply(registry: Registry, found: CanaryDecision, canary: Mapping[str, Any]) -> None:
    """Write a review's outcome into the registry and the log."""
    outcome: dict[str, Any] = {"reason": found.reason, "decided_by": "review"}
    if found.figures:
        outcome["figures"] = found.figures
    at = found.decided_at
    if found.decision == "promoted":
        registry.promote(found.version, now=at, canary_outcome=outcome)
        log.info("canary of %s promoted to everyone: %s", found.version, found.reason)
    elif found.decision == "rolled_back":
        registry.roll_back_canary(found.version, outcome, now=at)
        log.warning("canary of %s rolled back: %s", found.version, found.reason)
    elif found.decision == "ended":
        registry.end_canary(found.version, outcome, now=at)
        log.warning("canary of %s ended without a decision: %s", found.version, found.reason)
    else:
        review = {"reviewed_at": at.isoformat(), "reason": found.reason, **found.figures}
        registry.record_canary(found.version, {**canary, "last_review": review})
        log.info("canary of %s: %s", found.version, found.reason)


def canary_metrics(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Set the canary gauges from the registry and return what they say.

    ``recsys_canary_active{version}`` is 1 for the running canary, ``recsys_canary_exposures
    {arm}`` counts the lists of its arms so far (no sample while none runs), and
    ``recsys_canary_decisions{decision}`` counts the promoted and rolled-back canaries.
    """
    with sessions() as session:
        rows = session.execute(
            select(ModelVersion.version, ModelVersion.status, ModelVersion.canary).where(
                ModelVersion.canary.is_not(None)
            )
        ).all()
        running = [
            (version, canary)
            for version, _status, canary in rows
            if canary.get("state") == CANARY_RUNNING
        ]
        names = [str(canary.get("experiment")) for _, canary in running]
        exposures = {CONTROL_ARM: 0, CANARY_ARM: 0}
        if names:
            x = ExperimentExposure
            for variant, n in session.execute(
                select(x.variant, func.count())
                .join(Experiment, Experiment.id == x.experiment_id)
                .where(Experiment.name.in_(names))
                .group_by(x.variant)
            ):
                exposures[variant] = exposures.get(variant, 0) + int(n)
    decisions = {CANARY_PROMOTED: 0, CANARY_ROLLED_BACK: 0}
    for _, _, canary in rows:
        state = canary.get("state")
        if state in decisions:
            decisions[state] += 1
    metrics.CANARY_ACTIVE.clear()
    metrics.CANARY_EXPOSURES.clear()
    for version, _ in running:
        metrics.CANARY_ACTIVE.labels(version=version).set(1)
    if running:
        for arm, n in exposures.items():
            metrics.CANARY_EXPOSURES.labels(arm=arm).set(n)
    for decision, n in decisions.items():
        metrics.CANARY_DECISIONS.labels(decision=decision).set(n)
    return {
        "running": [version for version, _ in running],
        "exposures": exposures if running else {},
        "decisions": decisions,
    }


__all__ = [
    "CANARY_ARM",
    "CONTROL_ARM",
    "CanaryDecision",
    "CanaryStart",
    "canary_metrics",
    "review_canaries",
    "start_canary",
]

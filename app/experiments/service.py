"""Defining and running experiments: create, list, read, start, stop, results."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.engine import session_scope
from app.db.models import Experiment, ModelVersion
from app.db.queries import as_utc
from app.errors import Conflict, InvalidInput, NotFound
from app.experiments.assignment import RUNNING
from app.experiments.attribution import tally
from app.experiments.results import build_results
from app.experiments.runtime import ExperimentRuntime
from app.experiments.serving import ModelVersionUnavailable
from app.schemas import (
    ExperimentIn,
    ExperimentOut,
    ExperimentResultsOut,
    ExperimentStatus,
    VariantConfig,
    VariantOut,
)

DRAFT, STOPPED = "draft", "stopped"


class ExperimentNotFound(NotFound):
    pass


def describe(row: Experiment) -> ExperimentOut:
    """The wire form of a stored experiment."""
    return ExperimentOut(
        name=row.name,
        description=row.description,
        status=row.status,
        salt=row.salt,
        control=str(row.variants[0]["name"]),
        variants=[
            VariantOut(
                name=v["name"],
                share=int(v["share_bp"]) / 100,
                config=VariantConfig.model_validate(v.get("config") or {}),
            )
            for v in row.variants
        ],
        attribution_window_seconds=row.attribution_window_seconds,
        click_event_types=list(row.click_event_types),
        conversion_event_types=list(row.conversion_event_types),
        created_at=as_utc(row.created_at),
        started_at=None if row.started_at is None else as_utc(row.started_at),
        stopped_at=None if row.stopped_at is None else as_utc(row.stopped_at),
    )


class ExperimentAdmin:
    """The admin operations; each checks what it can before it writes, and says what to do."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
        runtime: ExperimentRuntime,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.runtime = runtime

    def _get(self, session: Session, name: str) -> Experiment:
        row = session.scalar(select(Experiment).where(Experiment.name == name))
        if row is None:
            raise ExperimentNotFound(
                f"experiment {name!r} does not exist; GET /v1/experiments lists them"
            )
        return row

    def create(self, spec: ExperimentIn) -> ExperimentOut:
        named = {v.config.model_version: v.name for v in spec.variants if v.config.model_version}
        with session_scope(self.sessions) as session:
            if named:
                known = set(
                    session.scalars(
                        select(ModelVersion.version).where(ModelVersion.version.in_(named))
                    )
                )
                missing = [f"{named[v]!r} names {v!r}" for v in named if v not in known]
                if missing:
                    raise InvalidInput(
                        f"unknown model versions: variant {'; variant '.join(missing)}; "
                        "`python -m training models list` shows the registered ones"
                    )
            existing = session.scalar(select(Experiment).where(Experiment.name == spec.name))
            if existing is not None:
                raise Conflict(
                    f"an experiment named {spec.name!r} exists already ({existing.status}); "
                    "choose another name"
                )
            row = Experiment(
                name=spec.name,
                description=spec.description,
                status=DRAFT,
                salt=spec.salt or secrets.token_hex(8),
                variants=[
                    {
                        "name": v.name,
                        "share_bp": v.share_bp,
                        "config": v.config.model_dump(exclude_none=True),
                    }
                    for v in spec.variants
                ],
                attribution_window_seconds=(
                    self.settings.attribution_window_seconds
                    if spec.attribution_window_seconds is None
                    else spec.attribution_window_seconds
                ),
                click_event_types=list(spec.click_event_types),
                conversion_event_types=list(spec.conversion_event_types),
                created_at=datetime.now(UTC),
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise Conflict(
                    f"an experiment named {spec.name!r} exists already; choose another name"
                ) from None
            return describe(row)

    def list_experiments(self, status: ExperimentStatus | None = None) -> list[ExperimentOut]:
        with self.sessions() as session:
            query = select(Experiment).order_by(Experiment.created_at.desc(), Experiment.id.desc())
            if status is not None:
                query = query.where(Experiment.status == status)
            return [describe(row) for row in session.scalars(query)]

    def get(self, name: str) -> ExperimentOut:
        with self.sessions() as session:
            return describe(self._get(session, name))

    def start(self, name: str) -> ExperimentOut:
        """Run a draft: its users are assigned from the next request on (in every process
        within ``RECSYS_EXPERIMENTS_REFRESH_SECONDS``)."""
        with session_scope(self.sessions) as session:
            row = self._get(session, name)
            if row.status == RUNNING:
                raise Conflict(f"experiment {name!r} is running already")
            if row.status == STOPPED:
                raise Conflict(
                    f"experiment {name!r} is stopped, and a stopped experiment stays stopped "
                    "(its results would mix two periods); create a new one"
                )
            running = session.scalar(select(Experiment.name).where(Experiment.status == RUNNING))
            if running is not None:
                raise Conflict(
                    f"experiment {running!r} is running; stop it first (one experiment runs "
                    "at a time, so every user sees one variant)"
                )
            for variant in row.variants:
                version = (variant.get("config") or {}).get("model_version")
                if version is None:
                    continue
                try:
                    self.runtime.models.load(version)
                except ModelVersionUnavailable as exc:
                    raise InvalidInput(
                        f"variant {variant['name']!r} cannot be served: {exc}; fix the artifact "
                        "or create an experiment with another version"
                    ) from None
            row.status = RUNNING
            row.started_at = datetime.now(UTC)
            try:
                session.flush()
            except IntegrityError:
                raise Conflict(
                    "another experiment started at the same moment; one experiment runs at a "
                    "time: stop it first"
                ) from None
            out = describe(row)
        # This process serves it from the next request; the others within a refresh period.
        self.runtime.cache.refresh()
        return out

    def stop(self, name: str) -> ExperimentOut:
        """Stop a running experiment for good; its results stay readable."""
        with session_scope(self.sessions) as session:
            row = self._get(session, name)
            if row.status != RUNNING:
                raise Conflict(
                    f"experiment {name!r} is {row.status}; only a running experiment can be stopped"
                )
            row.status = STOPPED
            row.stopped_at = datetime.now(UTC)
            out = describe(row)
        self.runtime.cache.refresh()
        return out

    def results(self, name: str) -> ExperimentResultsOut:
        with self.sessions() as session:
            row = self._get(session, name)
            session.expunge(row)
        # Exposures still queued in this process are counted too.
        self.runtime.exposures.flush()
        with self.engine.connect() as connection:
            tallies = tally(connection, row)
        if row.started_at is not None:
            row.started_at = as_utc(row.started_at)
        if row.stopped_at is not None:
            row.stopped_at = as_utc(row.stopped_at)
        return build_results(row, tallies, self.settings.experiment_min_users, datetime.now(UTC))

"""The experiment machinery of one API process: the cached running experiment, the model
versions its variants serve, and the exposure writer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.experiments.assignment import ExperimentCache, RunningExperiment, VariantPlan
from app.experiments.exposures import ExposureWriter, exposure
from app.experiments.serving import VariantModels
from app.serving.model import ServingModel
from app.serving.store import ModelHolder, Periodic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """A request's place in the running experiment (``request.state.experiment``)."""

    experiment: RunningExperiment
    variant: VariantPlan
    user_id: str


class ExperimentRuntime:
    """Owns the per-process state of experiments; created by ``Services``."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
        models: ModelHolder,
    ) -> None:
        self.settings = settings
        self.models = VariantModels(sessions, models)
        self.cache = ExperimentCache(sessions, on_change=self._prepare)
        self.exposures = ExposureWriter(
            engine,
            capacity=settings.exposure_queue_size,
            batch_size=settings.exposure_batch_size,
            flush_seconds=settings.exposure_flush_seconds,
        )
        self._poller: Periodic | None = None

    @property
    def running(self) -> RunningExperiment | None:
        return self.cache.current

    def _prepare(self, experiment: RunningExperiment | None) -> None:
        # Runs before the experiment becomes visible to requests: its models are ready first.
        self.models.retain(() if experiment is None else experiment.model_versions)

    def start(self) -> None:
        self.exposures.start()
        try:
            self.cache.refresh()
        except Exception:
            log.exception("the running experiment could not be read; retrying in the background")
        self._poller = Periodic(
            "experiment-refresher", self.settings.experiments_refresh_seconds, self.cache.refresh
        )
        self._poller.start()

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self.exposures.close()

    def model_for(self, assignment: Assignment) -> ServingModel | None:
        """The model a variant asked for; ``None`` serves the active one."""
        return self.models.get(assignment.variant.model_version)

    def record(
        self,
        assignment: Assignment,
        recommendation_id: str,
        model_version: str | None,
        items: list[str],
    ) -> bool:
        """Queue the exposure of one answer; False when it had to be dropped."""
        now = datetime.now(UTC)
        experiment = assignment.experiment
        return self.exposures.record(
            exposure(
                experiment_id=experiment.id,
                recommendation_id=recommendation_id,
                variant=assignment.variant.name,
                user_id=assignment.user_id,
                model_version=model_version,
                items=items,
                shown_at=now,
                attributable_until=now + experiment.attribution_window,
            )
        )

"""The model a process serves, and how it follows the registry without a restart.

:class:`ModelHolder` keeps one reference to the current :class:`ServingModel`; a swap is one
assignment, and a request reads the reference once, so no request mixes two versions. A version
whose artifact cannot be loaded is refused: the previous model keeps serving, the failure is
logged and counted, and the same version is not retried until it changes or a reload is forced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import ArtifactStore, LocalArtifactStore
from app.db.models import ModelVersion
from app.memory import release_free_memory
from app.monitoring import MODEL_INFO, MODEL_LOADED, MODEL_RELOAD_FAILURES, MODEL_RELOADS
from app.serving.model import ServingModel
from training.artifact import ArtifactError

log = logging.getLogger(__name__)
ACTIVE = "active"


@dataclass(frozen=True)
class ReloadOutcome:
    """What one check of the registry did."""

    version: str | None
    previous_version: str | None
    changed: bool
    active_version: str | None
    error: str | None = None


class ModelHolder:
    """Holds the served model and swaps in the registry's active version."""

    def __init__(
        self, sessions: sessionmaker[Session], artifacts: ArtifactStore | None = None
    ) -> None:
        self.sessions = sessions
        self.artifacts = artifacts or LocalArtifactStore()
        self.current: ServingModel | None = None
        self.last_error: str | None = None
        self.last_checked_at: datetime | None = None
        self._refused: tuple[str, str] | None = None
        # The registry's active version at the last check (None before the first one).
        self.active_version: str | None = None
        self._lock = threading.Lock()

    @property
    def version(self) -> str | None:
        model = self.current
        return None if model is None else model.version

    def _active(self) -> tuple[str, str, str] | None:
        with self.sessions() as session:
            row = session.execute(
                select(
                    ModelVersion.version, ModelVersion.artifact_path, ModelVersion.artifact_sha256
                ).where(ModelVersion.status == ACTIVE)
            ).first()
        return None if row is None else (row[0], row[1], row[2])

    def check(self, force: bool = False) -> ReloadOutcome:
        """Load the registry's active version if it is not the one served.

        With no active version the current model (if any) keeps serving: an empty registry is
        an operator's slip more likely than a wish to serve nothing. ``force`` retries a version
        refused before.
        """
        with self._lock:
            previous = self.version
            active = self._active()
            self.last_checked_at = datetime.now(UTC)
            self.active_version = None if active is None else active[0]
            if active is None or active[0] == previous:
                if active is not None:
                    self.last_error = None
                return ReloadOutcome(
                    previous, previous, False, None if active is None else active[0]
                )
            version, path, sha = active
            if self._refused == (version, sha) and not force:
                return ReloadOutcome(previous, previous, False, version, self.last_error)
            try:
                artifact = self.artifacts.load(path, sha)
                if artifact.version != version:
                    raise ArtifactError(
                        f"{path} holds version {artifact.version}, the registry says {version}"
                    )
                model = ServingModel.from_artifact(artifact)
            except (ArtifactError, OSError, ValueError, KeyError) as exc:
                self._refused = (version, sha)
                self.last_error = f"version {version} refused: {exc}"
                MODEL_RELOAD_FAILURES.inc()
                log.error(
                    "model %s refused, still serving %s: %s", version, previous or "no model", exc
                )
                return ReloadOutcome(previous, previous, False, version, self.last_error)
            self.install(model)
            del artifact, model
            release_free_memory()  # the loading temporaries
            self._refused = None
            self.last_error = None
            log.info("serving model %s (was %s)", version, previous or "no model")
            return ReloadOutcome(version, previous, True, version)

    def install(self, model: ServingModel | None) -> None:
        """Serve ``model`` from the next request on (one reference assignment)."""
        self.current = model
        if model is not None:
            MODEL_RELOADS.inc()
        MODEL_INFO.clear()
        if model is not None:
            MODEL_INFO.labels(version=model.version).set(1)
        MODEL_LOADED.set(0 if model is None else 1)


class Periodic:
    """Runs ``action`` every ``interval`` seconds on a daemon thread until stopped; an
    exception is logged and the next round tries again."""

    def __init__(self, name: str, interval: float, action: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.action = action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.action()
            except Exception:
                log.exception("%s failed; retrying in %.0f s", self.name, self.interval)

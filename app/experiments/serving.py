"""The model versions that experiment variants serve besides the active one.

Loaded when an experiment starts running in this process (not on a request), kept while it
runs, released when it stops. A version that cannot be loaded is logged and counted once; its
variant is then served by the active model, and the exposures record the version actually served,
so the results never credit a model that did not rank the list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import ArtifactStore
from app.db.models import ModelVersion
from app.monitoring import VARIANT_MODEL_FAILURES
from app.serving.model import ServingModel
from app.serving.store import ModelHolder
from training.artifact import ArtifactError

log = logging.getLogger(__name__)


class ModelVersionUnavailable(Exception):
    """A registered version whose artifact cannot be served; the message says why."""


def load_version(
    sessions: sessionmaker[Session], artifacts: ArtifactStore, version: str
) -> ServingModel:
    """Load a registered version's artifact, checked against the registry's checksum."""
    with sessions() as session:
        row = session.execute(
            select(ModelVersion.artifact_path, ModelVersion.artifact_sha256).where(
                ModelVersion.version == version
            )
        ).first()
    if row is None:
        raise ModelVersionUnavailable(f"model version {version!r} is not in the registry")
    path, sha = row
    try:
        artifact = artifacts.load(path, sha)
        if artifact.version != version:
            raise ArtifactError(
                f"{path} holds version {artifact.version}, the registry says {version}"
            )
        return ServingModel.from_artifact(artifact)
    except (ArtifactError, OSError, ValueError, KeyError) as exc:
        raise ModelVersionUnavailable(f"model version {version!r} cannot be loaded: {exc}") from exc


class VariantModels:
    """Loaded :class:`ServingModel` objects by version, for the running experiment's variants."""

    def __init__(self, sessions: sessionmaker[Session], holder: ModelHolder) -> None:
        self.sessions = sessions
        self.holder = holder
        self._loaded: dict[str, ServingModel] = {}
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, version: str | None) -> ServingModel | None:
        """The model to serve for ``version``; ``None`` means the active one (the default, and
        the stand-in for a version that could not be loaded)."""
        if version is None:
            return None
        current = self.holder.current
        if current is not None and current.version == version:
            return current
        return self._loaded.get(version)

    def load(self, version: str) -> ServingModel:
        """Load ``version`` now (or return it if loaded); :class:`ModelVersionUnavailable` when
        it cannot be served."""
        with self._lock:
            if version in self._loaded:
                return self._loaded[version]
            current = self.holder.current
            # Kept even when it is the active version: the variant must stay on it after the
            # registry promotes another one.
            if current is not None and current.version == version:
                model = current
            else:
                model = load_version(self.sessions, self.holder.artifacts, version)
            # Copy on write: readers take the dict without the lock.
            self._loaded = {**self._loaded, version: model}
            self._refused.pop(version, None)
            return model

    def retain(self, versions: Iterable[str]) -> None:
        """Keep exactly ``versions`` loaded: load the missing ones, release the rest."""
        wanted = set(versions)
        with self._lock:
            self._loaded = {v: m for v, m in self._loaded.items() if v in wanted}
            self._refused = {v: e for v, e in self._refused.items() if v in wanted}
        for version in sorted(wanted):
            if version in self._loaded or version in self._refused:
                continue
            try:
                self.load(version)
            except ModelVersionUnavailable as exc:
                self._refused[version] = str(exc)
                VARIANT_MODEL_FAILURES.inc()
                log.error("%s; its variant is served by the active model", exc)

    @property
    def refused(self) -> dict[str, str]:
        """Versions that could not be loaded, with why."""
        return dict(self._refused)

"""Where model artifacts live: a local folder by default, the database in production.

A registry row names its artifact by a location string. A path (``/srv/models/20261207-...``) is
a directory on this host: the embedded default, where the trainer and the API share one disk. A
location ``database:<version>`` is an artifact kept in the ``model_artifact_files`` table, which
every replica and a trainer running as a job already reach, so no shared volume is needed; a
process copies it once into its local ``model_dir`` (a cache) and loads it from there. Either
way the SHA-256 that the registry keeps is checked on every load, so a damaged copy is refused
(and a cached one fetched again).

The artifact's files and its registry row are written in one transaction: a version is never
registered without its bytes, and a trainer killed half-way leaves no version behind.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ModelArtifactFile
from training.artifact import ARRAYS_FILE, MANIFEST_FILE, ArtifactError, ModelArtifact

log = logging.getLogger(__name__)

DATABASE_PREFIX = "database:"
# Rows of at most 8 MiB: well under every driver's and server's limit on one value, and few
# enough rows that a 1 GB artifact is 128 of them.
PART_BYTES = 8 << 20
StoreKind = Literal["local", "database"]


class ArtifactStore(Protocol):
    """Keeps the files of saved artifacts and gives them back as a local directory."""

    def put(self, directory: Path, session: Session) -> str:
        """Keep the artifact saved in ``directory`` (inside ``session``'s transaction, where
        that matters) and return the location to record in the registry."""
        ...

    def load(self, location: str, sha256: str | None) -> ModelArtifact:
        """The artifact at ``location``, checked against ``sha256``; :class:`ArtifactError`
        when it is missing or does not match."""
        ...


class LocalArtifactStore:
    """Artifacts are directories on this host's disk (the embedded default)."""

    kind: StoreKind = "local"

    def put(self, directory: Path, session: Session) -> str:
        return str(directory.resolve())

    def load(self, location: str, sha256: str | None) -> ModelArtifact:
        if location.startswith(DATABASE_PREFIX):
            raise ArtifactError(
                f"{location} is kept in the database, and this process reads local folders: "
                "set RECSYS_ARTIFACT_STORE=database"
            )
        return ModelArtifact.load(Path(location), expected_sha256=sha256)


class DatabaseArtifactStore:
    """Artifacts are rows of the database every process already uses; ``cache_dir`` keeps this
    process's copies (any local folder: an ``emptyDir`` in Kubernetes)."""

    kind: StoreKind = "database"

    def __init__(self, sessions: sessionmaker[Session], cache_dir: Path) -> None:
        self.sessions = sessions
        self.cache_dir = cache_dir
        self.local = LocalArtifactStore()

    def put(self, directory: Path, session: Session) -> str:
        version = directory.name
        session.execute(delete(ModelArtifactFile).where(ModelArtifactFile.version == version))
        for name in (MANIFEST_FILE, ARRAYS_FILE):
            with (directory / name).open("rb") as handle:
                for part, block in enumerate(iter(lambda: handle.read(PART_BYTES), b"")):
                    row = ModelArtifactFile(version=version, name=name, part=part, data=block)
                    session.add(row)
                    # One part in memory at a time, not the whole artifact.
                    session.flush()
                    session.expunge(row)
        return DATABASE_PREFIX + version

    def load(self, location: str, sha256: str | None) -> ModelArtifact:
        if not location.startswith(DATABASE_PREFIX):
            return self.local.load(location, sha256)
        version = location.removeprefix(DATABASE_PREFIX)
        cached = self.cache_dir / version
        if cached.is_dir():
            try:
                return ModelArtifact.load(cached, expected_sha256=sha256)
            except ArtifactError as exc:
                log.warning("cached copy of %s refused (%s); fetching it again", version, exc)
        self.fetch(version)
        return ModelArtifact.load(cached, expected_sha256=sha256)

    def fetch(self, version: str) -> Path:
        """Copy ``version``'s files from the database into the cache (replacing a stale copy);
        returns the cached directory."""
        final = self.cache_dir / version
        staging = self.cache_dir / f".{version}.fetch-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            written: set[str] = set()
            for name, block in self._parts(version):
                mode = "ab" if name in written else "wb"
                written.add(name)
                with (staging / name).open(mode) as handle:
                    handle.write(block)
            missing = {MANIFEST_FILE, ARRAYS_FILE} - written
            if missing:
                raise ArtifactError(
                    f"model version {version} has no {', '.join(sorted(missing))} in the database"
                )
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def _parts(self, version: str) -> Iterator[tuple[str, bytes]]:
        with self.sessions() as session:
            rows = session.execute(
                select(ModelArtifactFile.name, ModelArtifactFile.data)
                .where(ModelArtifactFile.version == version)
                .order_by(ModelArtifactFile.name, ModelArtifactFile.part)
                .execution_options(yield_per=1)
            )
            for name, data in rows:
                yield name, bytes(data)


def make_artifact_store(
    kind: StoreKind, sessions: sessionmaker[Session], model_dir: Path
) -> LocalArtifactStore | DatabaseArtifactStore:
    """The store that new versions go to. Either one reads local folders, so a registry that
    moved from the local default to the database still serves its older versions here."""
    if kind == "database":
        return DatabaseArtifactStore(sessions, model_dir)
    return LocalArtifactStore()

"""Artifacts kept in the database: a trainer and the replicas share no folder, every copy is
checked against the registry's SHA-256, and a version never exists without its files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from app.artifacts import PART_BYTES, DatabaseArtifactStore, LocalArtifactStore
from app.db.models import ModelArtifactFile, ModelVersion
from app.services import Services
from tests.conftest import count_rows
from tests.serving.conftest import CHOICE, recs
from training import demo
from training.artifact import ARRAYS_FILE, MANIFEST_FILE, ArtifactError, ModelArtifact
from training.pipeline import TrainOptions, TrainResult, train
from training.registry import Registry


@pytest.fixture
def train_to_database(
    services: Services, shop: demo.DemoData, tmp_path: Path
) -> Callable[..., TrainResult]:
    """Train (forced promotion) with the database store, the trainer's own folder as its
    cache, as a training job in a cluster does."""

    def run(**options: Any) -> TrainResult:
        cache = tmp_path / "trainer"
        return train(
            services.engine,
            services.sessions,
            dict(services.settings.event_weights),
            cache,
            TrainOptions(choice=CHOICE, force=True, eval_users=50, **options),
            artifacts=DatabaseArtifactStore(services.sessions, cache),
        )

    return run


def test_a_replica_with_an_empty_disk_loads_what_the_trainer_stored(
    services: Services, train_to_database: Callable[..., TrainResult], tmp_path: Path
) -> None:
    """The registry names `database:<version>`; another process, with nothing on its disk,
    gets the same arrays (checksum verified) and keeps a copy in its own cache."""
    result = train_to_database()
    row = Registry(services.sessions).get(result.version)
    assert row.artifact_path == f"database:{result.version}" == result.location
    with services.sessions() as session:
        names = set(session.scalars(select(ModelArtifactFile.name).distinct()))
    assert names == {MANIFEST_FILE, ARRAYS_FILE}

    replica = DatabaseArtifactStore(services.sessions, tmp_path / "replica")
    loaded = replica.load(row.artifact_path, row.artifact_sha256)
    written = ModelArtifact.load(result.path, row.artifact_sha256)
    assert loaded.version == result.version
    assert loaded.arrays.keys() == written.arrays.keys()
    for name, array in written.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
    assert (tmp_path / "replica" / result.version / ARRAYS_FILE).is_file()


def test_the_api_serves_a_version_kept_only_in_the_database(
    shop: demo.DemoData,
    train_to_database: Callable[..., TrainResult],
    app_client: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """An API process configured for the database store, its model folder empty, serves the
    active version at start-up."""
    result = train_to_database()
    client = app_client(artifact_store="database", model_dir=tmp_path / "api-cache")
    assert client.get("/v1/models/current").json()["version"] == result.version
    body = recs(client, shop.events[0]["user_id"], k=5)
    assert body["model_version"] == result.version
    assert len(body["items"]) == 5


def test_a_damaged_cached_copy_is_fetched_again(
    services: Services, train_to_database: Callable[..., TrainResult], tmp_path: Path
) -> None:
    """A cached copy whose checksum no longer matches is replaced from the database."""
    result = train_to_database()
    row = Registry(services.sessions).get(result.version)
    replica = DatabaseArtifactStore(services.sessions, tmp_path / "replica")
    replica.load(row.artifact_path, row.artifact_sha256)
    cached = tmp_path / "replica" / result.version / ARRAYS_FILE
    cached.write_bytes(cached.read_bytes()[:-100])

    loaded = replica.load(row.artifact_path, row.artifact_sha256)
    assert loaded.version == result.version
    assert cached.read_bytes() == (result.path / ARRAYS_FILE).read_bytes()


def test_damaged_bytes_in_the_database_are_refused(
    services: Services, train_to_database: Callable[..., TrainResult], tmp_path: Path
) -> None:
    """Bytes changed in the database fail the registry's checksum: the load is refused with a
    message saying so, never served."""
    result = train_to_database()
    row = Registry(services.sessions).get(result.version)
    with services.engine.begin() as connection:
        connection.execute(
            update(ModelArtifactFile)
            .where(ModelArtifactFile.name == ARRAYS_FILE, ModelArtifactFile.part == 0)
            .values(data=b"not an artifact")
        )
    replica = DatabaseArtifactStore(services.sessions, tmp_path / "replica")
    with pytest.raises(ArtifactError, match="SHA-256 does not match"):
        replica.load(row.artifact_path, row.artifact_sha256)


def blank_version(name: str) -> ModelVersion:
    """A registry row for files written by hand."""
    return ModelVersion(
        version=name,
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
        status="candidate",
        n_events=0,
        n_users=0,
        n_items=0,
        params={},
        metrics={},
        artifact_path="",
        artifact_sha256="0" * 64,
    )


def test_large_files_are_kept_in_parts_and_put_back_together(
    services: Services, tmp_path: Path
) -> None:
    """A file larger than one part is split, and the parts come back in order."""
    directory = tmp_path / "20261207-000000-big"
    directory.mkdir()
    payload = np.random.default_rng(3).bytes(2 * PART_BYTES + 12_345)
    (directory / ARRAYS_FILE).write_bytes(payload)
    (directory / MANIFEST_FILE).write_text("{}")
    version = blank_version(directory.name)
    store = DatabaseArtifactStore(services.sessions, tmp_path / "cache")
    location = Registry(services.sessions).add(version, directory, store)
    assert count_rows(services, "model_artifact_files") == 3 + 1

    fetched = store.fetch(location.removeprefix("database:"))
    assert (fetched / ARRAYS_FILE).read_bytes() == payload


def test_a_version_is_never_registered_without_its_files(
    services: Services, tmp_path: Path
) -> None:
    """When keeping the files fails, the registry row is rolled back with them."""
    directory = tmp_path / "20261207-000000-half"
    directory.mkdir()
    (directory / MANIFEST_FILE).write_text("{}")  # no arrays file: the put fails half-way
    version = blank_version(directory.name)
    store = DatabaseArtifactStore(services.sessions, tmp_path / "cache")
    with pytest.raises(FileNotFoundError):
        Registry(services.sessions).add(version, directory, store)
    assert count_rows(services, "model_versions") == 0
    assert count_rows(services, "model_artifact_files") == 0


def test_a_local_store_names_the_setting_for_database_artifacts() -> None:
    """A process reading local folders, asked for a version kept in the database, says which
    setting serves it."""
    with pytest.raises(ArtifactError, match="RECSYS_ARTIFACT_STORE=database"):
        LocalArtifactStore().load("database:20261207-000000-x", None)

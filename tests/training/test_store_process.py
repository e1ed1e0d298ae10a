"""The process that stores an event import's batches into SQLite."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from app.db.queries import EventRow
from app.services import Services
from tests.conftest import count_rows
from training.importer import _sqlite_file
from training.store_process import SQLiteStoreProcess, StoreProcessError


@pytest.fixture
def sqlite_services(services: Services) -> Services:
    if services.engine.dialect.name != "sqlite":
        pytest.skip("the store process serves imports into SQLite")
    return services


def rows(prefix: str, items: list[str], now: datetime) -> list[EventRow]:
    return [
        EventRow(f"{prefix}{n}", f"u{n % 2}", item, "view", None, now, now, None, None)
        for n, item in enumerate(items)
    ]


def test_it_answers_as_the_ingestor_does(sqlite_services: Services) -> None:
    """Stored, duplicate and unknown-item rows come back as the in-process transaction
    answers them; its pending marks are written with the events."""
    services = sqlite_services
    services.catalog.upsert_raw([{"item_id": "i1"}])
    now = datetime.now(UTC)
    process = SQLiteStoreProcess(services.settings.sqlalchemy_url, stub_unknown=False)
    try:
        first = rows("a", ["i1", "i1", "ghost"], now)
        stored, unknown = process(first, "batch-1", now)
        assert (stored, unknown) == ({"a0", "a1"}, {"ghost"})
        again = process(first, "batch-2", now)
        assert again == (set(), {"ghost"})
    finally:
        process.close()
    assert count_rows(services, "events") == 2
    assert count_rows(services, "pending_profile_updates") == 1


def test_it_finishes_its_batches_through_ctrl_c(sqlite_services: Services) -> None:
    """Ctrl-C reaches the whole process group; the importer stops after the batches it sent,
    so the store process must store them rather than die."""
    services = sqlite_services
    now = datetime.now(UTC)
    process = SQLiteStoreProcess(services.settings.sqlalchemy_url, stub_unknown=True)
    try:
        os.kill(process.pid, signal.SIGINT)
        stored, _ = process(rows("b", ["i1", "i2", "i3"], now), "batch-1", now)
    finally:
        process.close()
    assert stored == {"b0", "b1", "b2"}
    assert count_rows(services, "events") == 3


@pytest.mark.parametrize(
    ("url", "shared"),
    [
        ("sqlite:////srv/recsys/recsys.db", True),
        ("sqlite:///var/recsys.db", True),
        ("sqlite://", False),
        ("sqlite:///:memory:", False),
        ("sqlite:///file:shop?mode=memory&uri=true", False),
    ],
)
def test_only_a_database_file_is_stored_from_another_process(url: str, shared: bool) -> None:
    """An in-memory database lives on the importer's own connection: a second process would
    store the rows in a database of its own, so such imports store in-process."""
    assert _sqlite_file(create_engine(url, poolclass=NullPool)) is shared


def test_a_store_process_that_died_fails_the_batch_instead_of_hanging(
    sqlite_services: Services,
) -> None:
    """Killed (out of memory, say), the process leaves its pipe at end of file: the batch in
    hand fails with a message that says so, and closing does not wait for it."""
    services = sqlite_services
    now = datetime.now(UTC)
    process = SQLiteStoreProcess(services.settings.sqlalchemy_url, stub_unknown=True)
    try:
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(StoreProcessError, match="exit code -9"):
            process(rows("c", ["i1"], now), "batch-1", now)
    finally:
        process.close()
    assert count_rows(services, "events") == 0


def test_a_failed_transaction_comes_back_as_its_error(sqlite_services: Services) -> None:
    """An error inside the transaction is raised in the importer, and the process goes on
    with the next batch."""
    services = sqlite_services
    now = datetime.now(UTC)
    process = SQLiteStoreProcess(services.settings.sqlalchemy_url, stub_unknown=True)
    try:
        bad = [EventRow("d0", "u0", "i1", "view", None, now, now, None, {"not": {1, 2}})]
        with pytest.raises(TypeError):
            process(bad, "batch-1", now)
        stored, _ = process(rows("d", ["i1"], now), "batch-2", now)
    finally:
        process.close()
    assert stored == {"d0"}
    assert count_rows(services, "events") == 1

"""SQL imports: rows of a query on SQLite and on PostgreSQL (when ``RECSYS_TEST_POSTGRES_URL``
names one), read incrementally by a watermark column: a re-run takes only new rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from app.cleansing import EVENT_FIELDS, ColumnMapping, EventCleanser
from app.config import DEFAULT_EVENT_TYPE_ALIASES, normalise_database_url
from app.services import Services
from tests.conftest import POSTGRES_URL, count_rows
from tests.training.test_cli import cli_env, run  # noqa: F401 (fixture)
from training.importer import Importer, ImportReport
from training.sources.quarantine import QuarantineFile
from training.sources.sql import SqlSource, WatermarkStore

MAPPING = ["user_id=visitor", "item_id=product", "type=action", "timestamp=happened_at"]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES_URL, reason="RECSYS_TEST_POSTGRES_URL names no PostgreSQL"
            ),
        ),
    ]
)
def source_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A source database with a table of shop actions: (URL, table name)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        url = normalise_database_url(POSTGRES_URL)
    table = f"shop_actions_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    stamp = "TIMESTAMP WITH TIME ZONE" if request.param == "postgresql" else "TEXT"
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, visitor TEXT, product TEXT, "
                f"action TEXT, happened_at {stamp}, stars FLOAT)"
            )
        )
    try:
        yield url, table
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))
        engine.dispose()


def add_rows(url: str, table: str, rows: list[tuple[Any, ...]]) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for row in rows:
            stamp = row[4]
            if url.startswith("sqlite"):
                stamp = stamp.isoformat()
            connection.execute(
                text(
                    f"INSERT INTO {table} (id, visitor, product, action, happened_at, stars) "  # noqa: S608
                    "VALUES (:id, :visitor, :product, :action, :happened_at, :stars)"
                ),
                dict(
                    zip(
                        ("id", "visitor", "product", "action", "happened_at", "stars"),
                        (*row[:4], stamp, row[5]),
                        strict=True,
                    )
                ),
            )
    engine.dispose()


def actions(first: int, count: int) -> list[tuple[Any, ...]]:
    return [
        (n, f"v{n % 3}", f"p{n % 4}", "buy" if n % 2 else "view", T0 + timedelta(minutes=n), None)
        for n in range(first, first + count)
    ]


def import_sql(
    services: Services,
    url: str,
    query: str,
    column: str | None = "id",
    full: bool = False,
    batch_size: int = 2,
    quarantine: Path | None = None,
) -> tuple[ImportReport, SqlSource]:
    source = SqlSource(
        url,
        query,
        watermark_column=column,
        watermarks=WatermarkStore(services.sessions),
        full=full,
    )
    importer = Importer(
        services,
        "events",
        EventCleanser(DEFAULT_EVENT_TYPE_ALIASES, ColumnMapping.parse(MAPPING, EVENT_FIELDS)),
        QuarantineFile(quarantine, "jsonl") if quarantine else None,
        batch_size=batch_size,
    )
    return importer.run(source.records(), checkpoint=source.checkpoint), source


def test_a_rerun_reads_only_rows_added_since(
    services: Services, source_db: tuple[str, str]
) -> None:
    url, table = source_db
    query = f"SELECT id, visitor, product, action, happened_at FROM {table}"  # noqa: S608
    add_rows(url, table, actions(1, 5))
    first, source = import_sql(services, url, query)
    assert (first.read, first.imported, first.quarantined) == (5, 5, 0)
    assert source.last_saved == 5

    add_rows(url, table, actions(6, 3))
    second, source = import_sql(services, url, query)
    assert (second.read, second.imported, second.duplicates) == (3, 3, 0)
    assert source.start_value == 5
    assert source.last_saved == 8

    nothing, _ = import_sql(services, url, query)
    assert nothing.read == 0
    everything, _ = import_sql(services, url, query, full=True)
    assert (everything.read, everything.imported, everything.duplicates) == (8, 0, 8)
    assert count_rows(services, "events") == 8


def test_a_time_column_works_as_watermark(services: Services, source_db: tuple[str, str]) -> None:
    url, table = source_db
    query = f"SELECT * FROM {table}"  # noqa: S608
    add_rows(url, table, actions(1, 4))
    first, source = import_sql(services, url, query, column="happened_at")
    assert first.imported == 4
    add_rows(url, table, actions(5, 2))
    second, source = import_sql(services, url, query, column="happened_at")
    assert (second.read, second.imported) == (2, 2)
    saved = source.last_saved
    expected = T0 + timedelta(minutes=6)
    assert (saved if isinstance(saved, datetime) else datetime.fromisoformat(saved)) == expected


def test_bad_rows_are_quarantined_and_not_read_again(
    services: Services, source_db: tuple[str, str], tmp_path: Path
) -> None:
    url, table = source_db
    rows = actions(1, 4)
    rows[1] = (2, "v2", "p2", "teleport", T0, None)
    add_rows(url, table, rows)
    query = f"SELECT id, visitor, product, action, happened_at FROM {table}"  # noqa: S608
    report, _ = import_sql(services, url, query, quarantine=tmp_path / "bad.jsonl")
    assert (report.read, report.imported, report.quarantined) == (4, 3, 1)
    assert "unknown event type 'teleport'" in (tmp_path / "bad.jsonl").read_text()
    again, _ = import_sql(services, url, query)
    assert again.read == 0


def test_the_watermark_stops_before_a_group_of_equal_values_not_yet_committed(
    services: Services, tmp_path: Path
) -> None:
    """Rows with the value 2 straddle the committed part: the watermark stays at 1, so an
    import that dies there reads every 2 again (as duplicates) rather than skipping some."""
    url = f"sqlite:///{tmp_path / 'ties.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (v INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1), (1), (2), (2), (2), (3)"))
    engine.dispose()
    store = WatermarkStore(services.sessions)
    source = SqlSource(url, "SELECT v FROM t", watermark_column="v", watermarks=store)
    rows = source.records()
    for _ in range(4):
        next(rows)
    source.checkpoint(3)
    assert source.last_saved == 1
    source.checkpoint(4)
    assert source.last_saved == 1
    list(rows)
    source.checkpoint(5)
    assert source.last_saved == 2
    source.checkpoint(6)
    assert source.last_saved == 3
    assert source.name is not None
    stored = store.get(source.name)
    assert stored is not None
    assert (stored.column_name, stored.value, stored.value_type) == ("v", "3", "int")


def test_a_failing_query_stops_the_import_with_the_database_message(
    services: Services, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    report, _ = import_sql(services, url, "SELECT * FROM missing_table")
    assert report.failed
    assert report.stopped is not None
    assert "no such table: missing_table" in report.stopped
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (a INTEGER)"))
    engine.dispose()
    report, _ = import_sql(services, url, "SELECT a FROM t")
    assert report.stopped is not None
    assert "no such column: id" in report.stopped


def test_cli_imports_from_sql_and_remembers_the_watermark(
    cli_env: Path,  # noqa: F811
    services: Services,
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE a (id INTEGER, visitor TEXT, product TEXT, action TEXT, "
                "happened_at TEXT, stars FLOAT)"
            )
        )
    engine.dispose()
    add_rows(url, "a", actions(1, 3))
    args = ["import", "events", "--from-sql", url, "--query", "SELECT * FROM a"]
    args += ["--watermark-column", "id", *(f"--map={m}" for m in MAPPING)]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "id > 3" in first.output
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert count_rows(services, "events") == 3
    assert "│    0 │" in again.output

"""Statements shared by the API, the reconciler and the command line; one round trip each."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, Select, any_, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.models import Event, Item, PendingProfileUpdate

# Keeps every IN (...) and multi-row VALUES under SQLite's and PostgreSQL's parameter limits.
CHUNK = 5000


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def dialect_insert(session: Session) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the session's database."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"unsupported database {name!r}: use SQLite or PostgreSQL")


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class EventRow(NamedTuple):
    """One event as stored (a tuple: cheap to build and to keep by the thousand)."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    value: float | None
    occurred_at: datetime
    received_at: datetime
    recommendation_id: str | None
    context: dict[str, Any] | None


def item_categories(session: Session, item_ids: Sequence[str]) -> dict[str, list[str]]:
    """item_id -> categories, for the given ids that exist."""
    found: dict[str, list[str]] = {}
    postgresql_ = session.get_bind().dialect.name == "postgresql"
    for chunk in chunks(list(item_ids)):
        if postgresql_:
            # One array parameter: psycopg need not parse a statement of thousands of
            # placeholders, and the plan is the same for every chunk.
            ids = bindparam("ids", list(chunk), type_=postgresql.ARRAY(Item.item_id.type))
            condition = Item.item_id == any_(ids)
        else:
            condition = Item.item_id.in_(chunk)
        rows = session.execute(select(Item.item_id, Item.categories).where(condition))
        for item_id, categories in rows:
            found[item_id] = list(categories or [])
    return found


# The whole write of a batch in one statement (so in one transaction when run in autocommit):
# find the batch's known items, add stubs for unknown ones (or leave their events out), insert
# the events whose event_id is new, mark their users' profiles as pending, and answer with the
# new event ids and the unknown items left out. The events arrive as one JSON array
# parameter: one value to send and to parse, whatever the batch size.
STORE_EVENTS_POSTGRESQL = """
WITH input AS (
    SELECT e->>0 AS event_id, e->>1 AS user_id, e->>2 AS item_id, e->>3 AS type,
        (e->>4)::float8 AS value, (e->>5)::timestamptz AS occurred_at,
        e->>6 AS recommendation_id, (e->>7)::json AS context
    FROM jsonb_array_elements(%(events)s::jsonb) AS e
){lookup}, new AS (
    INSERT INTO events (
        event_id, user_id, item_id, type, value, occurred_at, received_at, recommendation_id,
        context
    )
    SELECT event_id, user_id, item_id, type, value, occurred_at, %(now)s, recommendation_id,
        context
    FROM input
    {only_known}
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, user_id
), marked AS (
    INSERT INTO pending_profile_updates (batch_id, user_ids, created_at)
    SELECT %(batch_id)s, json_agg(DISTINCT user_id ORDER BY user_id), %(now)s FROM new
    HAVING count(*) > 0
)
SELECT (SELECT array_agg(event_id) FROM new), {unknown}
"""
# The catalogue lookup: the batch's items that exist, and stubs for the others (or none).
_ITEM_LOOKUP = """, known AS (
    SELECT item_id FROM items
    WHERE item_id = ANY(ARRAY(SELECT DISTINCT item_id FROM input))
), stubs AS (
    INSERT INTO items (
        item_id, categories, tags, attributes, available, hidden, is_stub, created_at, updated_at
    )
    SELECT stub.item_id, '[]', '[]', '{{}}', true, false, true, %(now)s, %(now)s
    FROM (SELECT DISTINCT item_id FROM input) AS stub
    WHERE {stub_unknown} AND stub.item_id NOT IN (SELECT item_id FROM known)
    ORDER BY stub.item_id
    ON CONFLICT (item_id) DO NOTHING
)"""
STORE_WITH_STUBS = STORE_EVENTS_POSTGRESQL.format(
    lookup=_ITEM_LOOKUP.format(stub_unknown="true"), only_known="", unknown="NULL::text[]"
)
STORE_KNOWN_ONLY = STORE_EVENTS_POSTGRESQL.format(
    lookup=_ITEM_LOOKUP.format(stub_unknown="false"),
    only_known="WHERE item_id IN (SELECT item_id FROM known)",
    unknown="(SELECT array_agg(DISTINCT item_id) FROM input "
    "WHERE item_id NOT IN (SELECT item_id FROM known))",
)
# When every item of the batch is known to exist (``EventIngestor`` remembers the items it has
# seen stored; the service never deletes an item row): no catalogue lookup, no stubs.
STORE_ITEMS_KNOWN = STORE_EVENTS_POSTGRESQL.format(lookup="", only_known="", unknown="NULL::text[]")


def store_events_postgresql(
    connection: Connection,
    rows: Sequence[EventRow],
    batch_id: str,
    now: datetime,
    stub_unknown: bool,
    items_known: bool = False,
) -> tuple[set[str], set[str]]:
    """Store a batch of event rows with one PostgreSQL statement, whatever its size.

    Run it in autocommit mode and it is its own transaction. Returns the event ids actually
    inserted and the batch's items that do not exist (always none with ``stub_unknown``), whose
    events were left out. ``items_known`` says every item of the batch exists already, which
    spares the statement its catalogue lookup.
    """
    events = orjson.dumps(
        [
            (
                row.event_id,
                row.user_id,
                row.item_id,
                row.type,
                row.value,
                row.occurred_at,
                row.recommendation_id,
                # The text SQLAlchemy's JSON type stores on the other paths.
                None if row.context is None else json.dumps(row.context),
            )
            for row in rows
        ]
    ).decode()
    if items_known:
        statement = STORE_ITEMS_KNOWN
    else:
        statement = STORE_WITH_STUBS if stub_unknown else STORE_KNOWN_ONLY
    params = {"events": events, "batch_id": batch_id, "now": now}
    inserted, unknown = connection.exec_driver_sql(statement, params).one()
    return set(inserted or ()), set(unknown or ())


INSERT_EVENTS_SQLITE = (
    "INSERT INTO events (event_id, user_id, item_id, type, value, occurred_at, received_at, "
    "recommendation_id, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_STUBS_SQLITE = (
    "INSERT INTO items (item_id, categories, tags, attributes, available, hidden, is_stub, "
    "created_at, updated_at) VALUES (?, '[]', '[]', '{}', 1, 0, 1, ?, ?) "
    "ON CONFLICT (item_id) DO NOTHING"
)
INSERT_PENDING_SQLITE = (
    "INSERT INTO pending_profile_updates (batch_id, user_ids, created_at) VALUES (?, ?, ?)"
)


def store_events_sqlite(
    connection: Connection,
    rows: Sequence[EventRow],
    batch_id: str,
    now: datetime,
    stub_unknown: bool,
    items_known: bool = False,
) -> tuple[set[str], set[str]]:
    """Store a batch of event rows in one SQLite write transaction; what
    ``store_events_postgresql`` does, with the same answer.

    ``BEGIN IMMEDIATE`` takes the database's write lock first, so the events found missing are
    exactly the ones inserted: nobody else can write in between. The statements run on the
    driver's connection and the rows go to ``executemany`` as tuples of the values SQLAlchemy
    would store (SQLite answers a multi-row ``INSERT ... RETURNING`` much more slowly).
    ``connection`` must not be in a transaction.
    """
    as_json = _bind(Event.__table__.c.context, connection.dialect)
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        item_ids = [] if items_known else list(dict.fromkeys(row.item_id for row in rows))
        known: set[str] = set()
        for chunk in chunks(item_ids):
            marks = ", ".join("?" * len(chunk))
            found = cursor.execute(
                f"SELECT item_id FROM items WHERE item_id IN ({marks})",  # noqa: S608
                chunk,
            ).fetchall()
            known.update(item_id for (item_id,) in found)
        unknown = {item_id for item_id in item_ids if item_id not in known}
        if unknown and stub_unknown:
            created = sqlite_datetime(now)
            cursor.executemany(
                INSERT_STUBS_SQLITE, [(item_id, created, created) for item_id in sorted(unknown)]
            )
            unknown = set()
        existing: set[str] = set()
        event_ids = [row.event_id for row in rows]
        for chunk in chunks(event_ids):
            marks = ", ".join("?" * len(chunk))
            found = cursor.execute(
                f"SELECT event_id FROM events WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            ).fetchall()
            existing.update(event_id for (event_id,) in found)
        received = sqlite_datetime(now)
        new = [row for row in rows if row.event_id not in existing and row.item_id not in unknown]
        if new:
            cursor.executemany(
                INSERT_EVENTS_SQLITE,
                [
                    (
                        row.event_id,
                        row.user_id,
                        row.item_id,
                        row.type,
                        row.value,
                        sqlite_datetime(row.occurred_at),
                        received,
                        row.recommendation_id,
                        None if row.context is None else as_json(row.context),
                    )
                    for row in new
                ],
            )
            users = sorted({row.user_id for row in new})
            as_json_list = _bind(PendingProfileUpdate.__table__.c.user_ids, connection.dialect)
            cursor.execute(INSERT_PENDING_SQLITE, (batch_id, as_json_list(users), received))
        driver.commit()
    except BaseException:
        driver.rollback()
        raise
    finally:
        cursor.close()
    return {row.event_id for row in new}, unknown


def sqlite_datetime(value: datetime) -> str:
    """A UTC time as SQLAlchemy's SQLite ``DATETIME`` stores it (``2024-05-01 12:00:00.000000``),
    by the C ``isoformat``."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _bind(column: Any, dialect: Any) -> Any:
    """The function that turns a Python value into what ``column`` stores on ``dialect``."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else (lambda value: value)


def clear_pending_batches(session: Session, batch_ids: Sequence[str]) -> None:
    for chunk in chunks(list(batch_ids)):
        session.execute(
            delete(PendingProfileUpdate).where(PendingProfileUpdate.batch_id.in_(chunk))
        )


def profile_events_query() -> Select[str, str, str, str, float | None, datetime]:
    """The columns live profiles are built from (see ``ProfileEvent``)."""
    return select(
        Event.event_id, Event.user_id, Event.item_id, Event.type, Event.value, Event.occurred_at
    )


def user_events_query(
    user_ids: Sequence[str],
) -> Select[str, str, str, str, float | None, datetime]:
    return (
        profile_events_query()
        .where(Event.user_id.in_(user_ids))
        .order_by(Event.user_id, Event.occurred_at, Event.id)
    )

"""Statements shared by the API, the reconciler and the command line; one round trip each."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, delete, insert, select
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


def item_categories(session: Session, item_ids: Sequence[str]) -> dict[str, list[str]]:
    """item_id -> categories, for the given ids that exist."""
    found: dict[str, list[str]] = {}
    for chunk in chunks(list(item_ids)):
        rows = session.execute(select(Item.item_id, Item.categories).where(Item.item_id.in_(chunk)))
        for item_id, categories in rows:
            found[item_id] = list(categories or [])
    return found


def insert_stub_items(session: Session, item_ids: Iterable[str], now: datetime) -> None:
    rows = [
        {
            "item_id": item_id,
            "categories": [],
            "tags": [],
            "attributes": {},
            "available": True,
            "hidden": False,
            "is_stub": True,
            "created_at": now,
            "updated_at": now,
        }
        for item_id in item_ids
    ]
    if rows:
        stmt = dialect_insert(session)(Item).on_conflict_do_nothing(index_elements=["item_id"])
        session.execute(stmt, rows)


def insert_new_events(session: Session, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert events whose ``event_id`` is new; return the ids actually inserted."""
    inserted: set[str] = set()
    if not rows:
        return inserted
    stmt = (
        dialect_insert(session)(Event.__table__)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(Event.__table__.c.event_id)
    )
    for chunk in chunks(rows, 1000):
        inserted.update(session.execute(stmt, list(chunk)).scalars())
    return inserted


EVENT_ARRAYS = """
    SELECT * FROM unnest(
        %(event_id)s::varchar[], %(user_id)s::varchar[], %(item_id)s::varchar[],
        %(type)s::varchar[], %(value)s::float8[], %(occurred_at)s::timestamptz[],
        %(recommendation_id)s::varchar[], %(context)s::json[]
    ) AS e(event_id, user_id, item_id, type, value, occurred_at, recommendation_id, context)
"""

# The whole write of a batch in one statement (so in one transaction when run in autocommit):
# read the categories of the known items, add stubs for unknown ones (or leave their events
# out), insert the events whose event_id is new, mark their users' profiles as pending, and
# answer with the new event ids and the categories.
STORE_EVENTS_POSTGRESQL = """
WITH known AS (
    SELECT item_id, categories FROM items WHERE item_id = ANY(%(item_ids)s::varchar[])
), stubs AS (
    INSERT INTO items (
        item_id, categories, tags, attributes, available, hidden, is_stub, created_at, updated_at
    )
    SELECT stub, '[]', '[]', '{{}}', true, false, true, %(now)s, %(now)s
    FROM unnest(%(item_ids)s::varchar[]) AS stub
    WHERE {stub_unknown} AND stub NOT IN (SELECT item_id FROM known)
    ORDER BY stub
    ON CONFLICT (item_id) DO NOTHING
), new AS (
    INSERT INTO events (
        event_id, user_id, item_id, type, value, occurred_at, received_at, recommendation_id,
        context
    )
    SELECT e.event_id, e.user_id, e.item_id, e.type, e.value, e.occurred_at, %(now)s,
        e.recommendation_id, e.context
    FROM ({events}) AS e
    {only_known}
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, user_id
), marked AS (
    INSERT INTO pending_profile_updates (batch_id, user_id, created_at)
    SELECT %(batch_id)s, user_id, %(now)s FROM new GROUP BY user_id ORDER BY user_id
)
SELECT
    (SELECT array_agg(event_id) FROM new),
    (SELECT json_object_agg(item_id, categories) FROM known)
"""
STORE_WITH_STUBS = STORE_EVENTS_POSTGRESQL.format(
    stub_unknown="true", events=EVENT_ARRAYS, only_known=""
)
STORE_KNOWN_ONLY = STORE_EVENTS_POSTGRESQL.format(
    stub_unknown="false",
    events=EVENT_ARRAYS,
    only_known="WHERE e.item_id IN (SELECT item_id FROM known)",
)


def store_events_postgresql(
    connection: Connection,
    rows: Sequence[dict[str, Any]],
    item_ids: Sequence[str],
    batch_id: str,
    now: datetime,
    stub_unknown: bool,
) -> tuple[set[str], dict[str, list[str]], set[str]]:
    """Store a batch with one PostgreSQL statement, whatever its size.

    Run it in autocommit mode and it is its own transaction. Returns the event ids actually
    inserted, item_id -> categories for every item of the batch that exists afterwards, and the
    items that do not (always empty with ``stub_unknown``).
    """
    params = {
        "event_id": [row["event_id"] for row in rows],
        "user_id": [row["user_id"] for row in rows],
        "item_id": [row["item_id"] for row in rows],
        "type": [row["type"] for row in rows],
        "value": [row["value"] for row in rows],
        "occurred_at": [row["occurred_at"] for row in rows],
        "recommendation_id": [row["recommendation_id"] for row in rows],
        # Serialised as SQLAlchemy's JSON type does for the other paths.
        "context": [None if row["context"] is None else json.dumps(row["context"]) for row in rows],
        "item_ids": list(item_ids),
        "batch_id": batch_id,
        "now": now,
    }
    statement = STORE_WITH_STUBS if stub_unknown else STORE_KNOWN_ONLY
    inserted, found = connection.exec_driver_sql(statement, params).one()
    categories = {item_id: list(cats or []) for item_id, cats in (found or {}).items()}
    unknown = {item_id for item_id in item_ids if item_id not in categories}
    if stub_unknown:
        for item_id in unknown:
            categories[item_id] = []
        unknown = set()
    return set(inserted or ()), categories, unknown


def mark_pending(session: Session, batch_id: str, user_ids: Iterable[str], now: datetime) -> None:
    rows = [{"batch_id": batch_id, "user_id": u, "created_at": now} for u in user_ids]
    if rows:
        session.execute(insert(PendingProfileUpdate), rows)


def clear_pending_batches(session: Session, batch_ids: Sequence[str]) -> None:
    for chunk in chunks(list(batch_ids)):
        session.execute(
            delete(PendingProfileUpdate).where(PendingProfileUpdate.batch_id.in_(chunk))
        )


def user_events_query(
    user_ids: Sequence[str],
) -> Select[str, str, str, str, float | None, datetime]:
    return (
        select(
            Event.event_id,
            Event.user_id,
            Event.item_id,
            Event.type,
            Event.value,
            Event.occurred_at,
        )
        .where(Event.user_id.in_(user_ids))
        .order_by(Event.user_id, Event.occurred_at, Event.id)
    )

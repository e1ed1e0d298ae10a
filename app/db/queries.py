"""Statements shared by the API, the reconciler and the command line; one round trip each."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, insert, select
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

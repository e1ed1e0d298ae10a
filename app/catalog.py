"""The item catalogue: upserts, reads and hiding."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import session_scope
from app.db.models import Item
from app.db.queries import as_utc, chunks, dialect_insert, item_categories
from app.errors import ItemNotFound, rejection
from app.monitoring import ITEMS_WRITTEN
from app.schemas import ItemBatchAck, ItemBatchResult, ItemIn, ItemOut

_UPDATED_FIELDS = (
    "title",
    "categories",
    "tags",
    "attributes",
    "available",
    "available_from",
    "available_until",
    "hidden",
    "is_stub",
    "updated_at",
)


class Catalog:
    """Writes and reads items. A PUT replaces the item's data and makes it visible again."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def upsert(self, items: Sequence[ItemIn], now: datetime | None = None) -> None:
        """Insert or replace items, one statement per chunk."""
        now = now or datetime.now(UTC)
        # The last occurrence of an id in one call wins, as if sent one after another.
        unique = {item.item_id: item for item in items}
        rows = [
            {
                **item.model_dump(),
                "hidden": False,
                "is_stub": False,
                "created_at": now,
                "updated_at": now,
            }
            for item in unique.values()
        ]
        with session_scope(self.sessions) as session:
            insert = dialect_insert(session)
            for chunk in chunks(rows, 1000):
                stmt = insert(Item)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["item_id"],
                    set_={name: getattr(stmt.excluded, name) for name in _UPDATED_FIELDS},
                )
                session.execute(stmt, list(chunk))
        ITEMS_WRITTEN.labels(outcome="stored").inc(len(items))

    def upsert_raw(self, raw_items: Sequence[Any]) -> ItemBatchAck:
        """Validate each raw item on its own, store the valid ones, report every one."""
        valid: list[ItemIn] = []
        results: list[ItemBatchResult] = []
        for index, raw in enumerate(raw_items):
            try:
                item = ItemIn.model_validate(raw)
            except ValidationError as exc:
                item_id, message = rejection(raw, "item_id", exc)
                results.append(
                    ItemBatchResult(index=index, item_id=item_id, status="rejected", error=message)
                )
                continue
            valid.append(item)
            results.append(ItemBatchResult(index=index, item_id=item.item_id, status="stored"))
        self.upsert(valid)
        rejected = len(results) - len(valid)
        ITEMS_WRITTEN.labels(outcome="rejected").inc(rejected)
        return ItemBatchAck(stored=len(valid), rejected=rejected, results=results)

    def get(self, item_id: str) -> ItemOut:
        with self.sessions() as session:
            item = session.scalar(select(Item).where(Item.item_id == item_id))
            if item is None:
                raise ItemNotFound(f"item {item_id!r} does not exist")
            return to_item_out(item)

    def categories(self, item_ids: Sequence[str]) -> dict[str, list[str]]:
        """item_id -> categories, for the given ids that exist."""
        with self.sessions() as session:
            return item_categories(session, item_ids)

    def hide(self, item_id: str, now: datetime | None = None) -> ItemOut:
        now = now or datetime.now(UTC)
        with session_scope(self.sessions) as session:
            result = session.execute(
                update(Item).where(Item.item_id == item_id).values(hidden=True, updated_at=now)
            )
            if getattr(result, "rowcount", 0) == 0:
                raise ItemNotFound(f"item {item_id!r} does not exist")
        return self.get(item_id)


def to_item_out(item: Item) -> ItemOut:
    return ItemOut(
        item_id=item.item_id,
        title=item.title,
        categories=list(item.categories or []),
        tags=list(item.tags or []),
        attributes=dict(item.attributes or {}),
        available=item.available,
        available_from=as_utc(item.available_from) if item.available_from else None,
        available_until=as_utc(item.available_until) if item.available_until else None,
        hidden=item.hidden,
        is_stub=item.is_stub,
        created_at=as_utc(item.created_at),
        updated_at=as_utc(item.updated_at),
    )

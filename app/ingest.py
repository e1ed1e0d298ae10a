"""The one code path every event takes, whatever its source (HTTP, files, stream).

Order of work, and why:
1. validate each event on its own, so one bad event never sinks a batch;
2. one transaction: look up the items, add stubs for unknown ones (or reject them), insert the
   events with ``ON CONFLICT (event_id) DO NOTHING ... RETURNING`` so only new events come back,
   and mark their users' profiles as pending; commit. Only now is anything acknowledged;
3. apply exactly the newly inserted events to the live profiles in Redis (retries and
   duplicates never count twice). If Redis fails, the pending marks stay in the database and the
   reconciler rebuilds those profiles from the events once Redis answers.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import redis
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.engine import session_scope
from app.db.queries import (
    EventRow,
    clear_pending_batches,
    store_events_postgresql,
    store_events_sqlite,
)
from app.errors import rejection
from app.monitoring import EVENTS, PROFILE_UPDATES
from app.profiles import ProfileEvent, ProfileStore
from app.schemas import EventIn, EventResult, EventStatus, ProfileStatus

log = logging.getLogger(__name__)
# ``ingest`` makes profile events of stored rows by their first fields.
assert EventRow._fields[: len(ProfileEvent._fields)] == ProfileEvent._fields
# A batch of events validated by one call (EventIngestor.parse): each event as an EventIn, or
# as it was sent when it is not a valid one.
EVENT_LIST = TypeAdapter(list[Annotated[EventIn | Any, Field(union_mode="left_to_right")]])
# Tries of a PostgreSQL batch statement that PostgreSQL aborted to break a deadlock.
DEADLOCK_ATTEMPTS = 3
# SQLSTATE of "deadlock detected".
_DEADLOCK = "40P01"


def _deadlock(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == _DEADLOCK


# What became of one event: (index in the batch, event_id, status, error).
EventStatusRow = tuple[int, str | None, EventStatus, str | None]
# What a batch's transaction answers: the event ids it inserted and the unknown items whose
# events it rejected.
StoredBatch = tuple[set[str], set[str]]
# Stores a batch's rows under a batch id at a time, in one transaction; answers a StoredBatch.
StoreRows = Callable[[list[EventRow], str, datetime], StoredBatch]


@dataclass
class IngestOutcome:
    """What became of each event, in input order, and of the live profiles.

    ``statuses`` are plain tuples (a bulk import goes through millions); ``results`` are the
    same as the API reports them.
    """

    statuses: list[EventStatusRow]
    profile: ProfileStatus
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    # The newly stored events as applied to the live profiles (empty without the update).
    stored: list[ProfileEvent] = field(default_factory=list)
    batch_id: str = ""

    @property
    def results(self) -> list[EventResult]:
        return [
            EventResult(index=index, event_id=event_id, status=status, error=error)
            for index, event_id, status, error in self.statuses
        ]


class ConfirmedBatches:
    """Pending marks whose profile update succeeded, deleted in bulk off the request path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch_ids: list[str] = []

    def add(self, batch_id: str) -> None:
        with self._lock:
            self._batch_ids.append(batch_id)

    def take(self) -> list[str]:
        with self._lock:
            taken, self._batch_ids = self._batch_ids, []
        return taken

    def give_back(self, batch_ids: list[str]) -> None:
        with self._lock:
            self._batch_ids.extend(batch_ids)


class KnownItems:
    """Item ids known to be in the catalogue, so that a batch of only such items can skip the
    catalogue lookup: the service never deletes an item's row (``DELETE`` hides it).

    The ids seen stored, at most ``limit`` (when full it starts afresh, which only costs
    lookups), and the ids ``listed`` answers: the catalogue index's, in the API.
    """

    def __init__(
        self, limit: int = 200_000, listed: Callable[[], Container[str] | None] | None = None
    ) -> None:
        self._limit = limit
        self._listed = listed
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def cover(self, item_ids: set[str]) -> bool:
        """Whether every id in ``item_ids`` is known to exist."""
        with self._lock:
            missing = item_ids - self._ids
        if not missing:
            return True
        listed = self._listed() if self._listed is not None else None
        return listed is not None and all(item_id in listed for item_id in missing)

    def add(self, item_ids: set[str]) -> None:
        with self._lock:
            if len(self._ids) + len(item_ids) > self._limit:
                self._ids.clear()
            self._ids.update(item_ids)


class EventIngestor:
    """Validates, stores and applies events."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        profiles: ProfileStore,
        settings: Settings,
        confirmed: ConfirmedBatches | None = None,
        known_items: KnownItems | None = None,
    ) -> None:
        self.sessions = sessions
        self.profiles = profiles
        self.settings = settings
        self.confirmed = confirmed or ConfirmedBatches()
        self.known_items = known_items or KnownItems()
        bind = sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("the sessionmaker must be bound to an Engine")
        self._engine = bind

    # -- validation ----------------------------------------------------------------------

    def parse(
        self, raw_events: Sequence[Any]
    ) -> tuple[list[tuple[int, EventIn]], list[EventResult]]:
        """Validate each raw event on its own; return the valid ones and results for the rest.

        The whole batch goes through one call, which costs about two thirds of one call per
        event (docs/ingestion.md, *Measured design decisions*); an invalid event comes out of
        it as it was sent and is validated again on its own, which tells its errors.
        """
        valid: list[tuple[int, EventIn]] = []
        rejected: list[EventResult] = []
        for index, event in enumerate(EVENT_LIST.validate_python(raw_events)):
            if not isinstance(event, EventIn):
                try:
                    event = EventIn.model_validate(event)
                except ValidationError as exc:
                    event_id, message = rejection(event, "event_id", exc)
                    rejected.append(
                        EventResult(
                            index=index, event_id=event_id, status="rejected", error=message
                        )
                    )
                    EVENTS.labels(type=_type_label(event), outcome="rejected").inc()
                    continue
            valid.append((index, event))
        return valid, rejected

    # -- ingestion -----------------------------------------------------------------------

    def ingest_raw(
        self, raw_events: Sequence[Any], now: datetime | None = None, update_profiles: bool = True
    ) -> IngestOutcome:
        """Validate and ingest a batch of raw JSON events."""
        valid, rejected = self.parse(raw_events)
        outcome = self.ingest(valid, now=now, update_profiles=update_profiles)
        if rejected:
            outcome.statuses = sorted(
                outcome.statuses + [(r.index, r.event_id, r.status, r.error) for r in rejected]
            )
            outcome.rejected += len(rejected)
        return outcome

    def ingest(
        self,
        events: Sequence[tuple[int, EventIn]],
        now: datetime | None = None,
        update_profiles: bool = True,
        store: StoreRows | None = None,
    ) -> IngestOutcome:
        """Store valid events exactly once and update the live profiles of the new ones.

        With ``update_profiles=False`` (bulk imports) the new events' users keep their pending
        marks instead: their profiles are rebuilt from the database afterwards, by
        ``ProfileRebuilder.rebuild_batches`` or by the reconciler.

        ``store`` replaces the transaction that stores the rows (``store_rows``) with one that
        does the same elsewhere: a bulk import into SQLite runs it in a process of its own.
        """
        now = now or datetime.now(UTC)
        latest_allowed = now + timedelta(seconds=self.settings.max_future_seconds)
        statuses: list[EventStatusRow] = []
        counted: Counter[tuple[str, str]] = Counter()
        rows: list[EventRow] = []
        row_index: dict[str, int] = {}
        for index, event in events:
            event_id = event.event_id or str(uuid.uuid4())
            occurred_at = event.timestamp or now
            if occurred_at > latest_allowed:
                error = (
                    f"timestamp: {occurred_at.isoformat()} is more than "
                    f"{self.settings.max_future_seconds:g} s in the future"
                )
                statuses.append((index, event_id, "rejected", error))
                counted[(event.type, "rejected")] += 1
                continue
            if event_id in row_index:
                statuses.append((index, event_id, "duplicate", None))
                counted[(event.type, "duplicate")] += 1
                continue
            row_index[event_id] = index
            rows.append(
                EventRow(
                    event_id,
                    event.user_id,
                    event.item_id,
                    event.type,
                    event.value,
                    occurred_at,
                    now,
                    event.recommendation_id,
                    event.context,
                )
            )

        batch_id = str(uuid.uuid4())
        if rows:
            stored, unknown = (store or self.store_rows)(rows, batch_id, now)
        else:
            stored, unknown = set(), set()
        new_events: list[ProfileEvent] = []
        accepted_types: list[str] = []
        for row, index in zip(rows, row_index.values(), strict=True):
            if row.item_id in unknown:
                error = (
                    f"item_id: unknown item {row.item_id!r}; add it to the catalogue "
                    "first (PUT /v1/items/{item_id})"
                )
                statuses.append((index, row.event_id, "rejected", error))
                counted[(row.type, "rejected")] += 1
            elif row.event_id in stored:
                statuses.append((index, row.event_id, "accepted", None))
                accepted_types.append(row.type)
                if update_profiles:
                    # A row's first six fields are a profile event's, in the same order.
                    new_events.append(ProfileEvent._make(row[:6]))
            else:
                statuses.append((index, row.event_id, "duplicate", None))
                counted[(row.type, "duplicate")] += 1
        for event_type, number in Counter(accepted_types).items():
            counted[(event_type, "accepted")] += number

        if update_profiles:
            profile = self._apply(new_events, batch_id, now)
        else:
            profile = "pending" if stored else "unchanged"

        statuses.sort()
        for (event_type, status), number in counted.items():
            EVENTS.labels(type=event_type, outcome=status).inc(number)
        return IngestOutcome(
            statuses=statuses,
            profile=profile,
            accepted=counted_status(counted, "accepted"),
            duplicates=counted_status(counted, "duplicate"),
            rejected=counted_status(counted, "rejected"),
            stored=new_events,
            batch_id=batch_id,
        )

    def store_rows(self, rows: list[EventRow], batch_id: str, now: datetime) -> StoredBatch:
        """Store the rows not stored before, with their users' pending marks under
        ``batch_id``, in one transaction that has committed when this returns."""
        stub_unknown = self.settings.unknown_items == "stub"
        items = {row.item_id for row in rows}
        items_known = self.known_items.cover(items)
        if self._engine.dialect.name == "postgresql":
            # One statement in its own transaction: no BEGIN/COMMIT round trips, and the answer
            # comes back only once the commit is durable.
            for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
                try:
                    with self._engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    ) as conn:
                        stored, unknown = store_events_postgresql(
                            conn, rows, batch_id, now, stub_unknown, items_known
                        )
                    self.known_items.add(items - unknown)
                    return stored, unknown
                except DBAPIError as exc:
                    # Two batches holding the same new event ids in opposite orders wait for
                    # each other; PostgreSQL then aborts one of the statements, which stored
                    # nothing, so it runs again (the other batch has committed by then).
                    if not _deadlock(exc) or attempt == DEADLOCK_ATTEMPTS:
                        raise
                    log.info("batch %s met a deadlock, storing it again", batch_id)
        with self._engine.connect() as conn:
            stored, unknown = store_events_sqlite(
                conn, rows, batch_id, now, stub_unknown, items_known
            )
        self.known_items.add(items - unknown)
        return stored, unknown

    def _apply(self, events: list[ProfileEvent], batch_id: str, now: datetime) -> ProfileStatus:
        if not events:
            return "unchanged"
        try:
            self.profiles.apply(events, now=now)
        except redis.RedisError as exc:
            # The events are committed; the pending marks make the reconciler rebuild these
            # profiles from the database once Redis answers again.
            log.warning("profile update deferred for %d events: %s", len(events), exc)
            PROFILE_UPDATES.labels(outcome="pending").inc()
            return "pending"
        self.confirmed.add(batch_id)
        PROFILE_UPDATES.labels(outcome="updated").inc()
        return "updated"

    def flush_confirmed(self) -> int:
        """Delete the pending marks of batches whose profile update succeeded."""
        batch_ids = self.confirmed.take()
        if not batch_ids:
            return 0
        try:
            with session_scope(self.sessions) as session:
                clear_pending_batches(session, batch_ids)
        except Exception:
            self.confirmed.give_back(batch_ids)
            raise
        return len(batch_ids)


def counted_status(counted: Counter[tuple[str, str]], status: str) -> int:
    return sum(number for (_, outcome), number in counted.items() if outcome == status)


def _type_label(raw: Any) -> str:
    from app.config import EVENT_TYPES

    event_type = raw.get("type") if isinstance(raw, dict) else None
    return event_type if isinstance(event_type, str) and event_type in EVENT_TYPES else "invalid"

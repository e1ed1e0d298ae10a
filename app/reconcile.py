"""Rebuilding live profiles from the database, which is the truth.

Used after Redis was unreachable or a process died between its database commit and its Redis
update (both leave pending marks behind), and by ``python -m app rebuild-profiles``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import session_scope
from app.db.models import Event, PendingProfileUpdate
from app.db.queries import (
    as_utc,
    chunks,
    profile_events_query,
    user_events_query,
)
from app.ingest import EventIngestor
from app.monitoring import PENDING_PROFILE_USERS, PROFILE_REBUILDS, PROFILE_UPDATE_LAG
from app.profiles import ProfileEvent, ProfileStore

log = logging.getLogger(__name__)

POPULATED_KEY = "recsys:populated"
# What one reconciliation takes on: at most this many pending batches, and no more batches
# once their users reach the second number.
PENDING_BATCHES_PER_PASS = 500
PENDING_USERS_PER_PASS = 50_000
REBUILD_LOCK_KEY = "recsys:rebuild-lock"


class ProfileRebuilder:
    """Computes profiles and activity counters from stored events and writes them to Redis."""

    def __init__(self, sessions: sessionmaker[Session], profiles: ProfileStore) -> None:
        self.sessions = sessions
        self.profiles = profiles

    def rebuild_users(self, user_ids: Sequence[str]) -> int:
        """Replace the profiles of ``user_ids`` with ones built from all their events.

        Safe while the same users' events keep arriving: the live updates made between the
        database read and the write to Redis are logged and applied again on top, and a late
        live update of an event the read already saw is not applied twice
        (``ProfileStore.open_rebuild``, ``apply_events.lua``).
        """
        rebuilt = 0
        for chunk in chunks(sorted(set(user_ids)), 500):
            self.profiles.open_rebuild(chunk)
            with self.sessions() as session:
                by_user: dict[str, list[ProfileEvent]] = {user_id: [] for user_id in chunk}
                for row in session.execute(user_events_query(chunk)):
                    by_user[row.user_id].append(
                        ProfileEvent(
                            event_id=row.event_id,
                            user_id=row.user_id,
                            item_id=row.item_id,
                            type=row.type,
                            value=row.value,
                            occurred_at=as_utc(row.occurred_at),
                        )
                    )
            self.profiles.replace_users(by_user)
            rebuilt += len(chunk)
            PROFILE_REBUILDS.inc(len(chunk))
        return rebuilt

    def rebuild_counters(self, now: datetime | None = None) -> None:
        """Recompute the trending and activity buckets of the retention window."""
        now = now or datetime.now(UTC)
        store = self.profiles
        start = (int(now.timestamp()) // store.bucket_seconds - store.retention_buckets + 1) * (
            store.bucket_seconds
        )
        cutoff = datetime.fromtimestamp(start, UTC)

        def window() -> Iterator[ProfileEvent]:
            with self.sessions() as session:
                rows = session.execute(
                    profile_events_query()
                    .where(Event.occurred_at >= cutoff)
                    .execution_options(yield_per=10_000)
                )
                for row in rows:
                    yield ProfileEvent(
                        row.event_id,
                        row.user_id,
                        row.item_id,
                        row.type,
                        row.value,
                        as_utc(row.occurred_at),
                    )

        store.replace_counters(window(), now=now)

    def rebuild_batches(
        self, batch_ids: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> int:
        """Rebuild the profiles of the users that these ingestion batches marked pending (a bulk
        import's), clear those marks and recompute the trending counters.

        Each user is rebuilt once, from all their events, however many batches named them.
        ``progress`` is called with the number of profiles rebuilt so far. Returns that number.
        """
        rebuilt = 0
        for id_chunk in chunks(list(dict.fromkeys(batch_ids)), 1000):
            with self.sessions() as session:
                users: set[str] = set()
                for user_ids in session.scalars(
                    select(PendingProfileUpdate.user_ids).where(
                        PendingProfileUpdate.batch_id.in_(id_chunk)
                    )
                ):
                    users.update(user_ids)
            for chunk in chunks(sorted(users), 500):
                rebuilt += self.rebuild_users(chunk)
                if progress is not None:
                    progress(rebuilt)
            with session_scope(self.sessions) as session:
                session.execute(
                    delete(PendingProfileUpdate).where(PendingProfileUpdate.batch_id.in_(id_chunk))
                )
        self.rebuild_counters()
        return rebuilt

    def all_user_ids(self, batch: int = 10_000) -> Iterator[list[str]]:
        """Every user with events, in sorted batches."""
        last = ""
        while True:
            with self.sessions() as session:
                ids = list(
                    session.scalars(
                        select(Event.user_id)
                        .where(Event.user_id > last)
                        .group_by(Event.user_id)
                        .order_by(Event.user_id)
                        .limit(batch)
                    )
                )
            if not ids:
                return
            yield ids
            last = ids[-1]

    def rebuild_all(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild every profile and the counters, then mark Redis as populated.

        ``progress`` is called with the number of profiles rebuilt so far.
        """
        rebuilt = 0
        for batch in self.all_user_ids():
            rebuilt += self.rebuild_users(batch)
            if progress is not None:
                progress(rebuilt)
        self.rebuild_counters()
        self.profiles.client.set(POPULATED_KEY, datetime.now(UTC).isoformat())
        return rebuilt

    def ensure_populated(self) -> int:
        """Rebuild everything when Redis lost its data (a restart without persistence, a flush).

        The populated mark lives in Redis itself: when it is gone, so may be every profile. One
        process takes a lock and rebuilds; the others carry on.
        """
        client = self.profiles.client
        if client.exists(POPULATED_KEY):
            return 0
        if not client.set(REBUILD_LOCK_KEY, "1", nx=True, ex=3600):
            return 0
        try:
            rebuilt = self.rebuild_all()
        finally:
            client.delete(REBUILD_LOCK_KEY)
        if rebuilt:
            log.warning(
                "Redis held no complete set of live profiles (first start on this Redis, or its "
                "data was lost): rebuilt %d profiles from the database",
                rebuilt,
            )
        return rebuilt

    def count_users(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count(func.distinct(Event.user_id)))) or 0)

    def reconcile(self, now: datetime | None = None, grace: timedelta = timedelta(0)) -> int:
        """Rebuild the profiles of users whose pending marks are older than ``grace``.

        Returns the number of users rebuilt; 0 when nothing waits or Redis is still down.
        """
        now = now or datetime.now(UTC)
        with self.sessions() as session:
            oldest = session.scalar(select(func.min(PendingProfileUpdate.created_at)))
            PROFILE_UPDATE_LAG.set(0 if oldest is None else (now - as_utc(oldest)).total_seconds())
            rows = session.execute(
                select(PendingProfileUpdate.id, PendingProfileUpdate.user_ids)
                .where(PendingProfileUpdate.created_at <= now - grace)
                .order_by(PendingProfileUpdate.id)
                .limit(PENDING_BATCHES_PER_PASS)
            ).all()
        # Whole batches, until about PENDING_USERS_PER_PASS users: the rest waits for the next.
        named: set[str] = set()
        for taken, (_, user_ids) in enumerate(rows, start=1):
            named.update(user_ids)
            if len(named) >= PENDING_USERS_PER_PASS:
                rows = rows[:taken]
                break
        users = sorted(named)
        PENDING_PROFILE_USERS.set(len(users))
        if not rows or not self.profiles.ping():
            return 0
        try:
            self.rebuild_users(users)
            self.rebuild_counters(now)
        except redis.RedisError as exc:
            log.warning("profile rebuild interrupted, will retry: %s", exc)
            return 0
        with session_scope(self.sessions) as session:
            for chunk in chunks([row_id for row_id, _ in rows]):
                session.execute(
                    delete(PendingProfileUpdate).where(PendingProfileUpdate.id.in_(chunk))
                )
        log.info("rebuilt %d live profiles from the database", len(users))
        PENDING_PROFILE_USERS.set(0)
        return len(users)


class Reconciler:
    """Background thread: clears confirmed pending marks and rebuilds stale ones."""

    def __init__(
        self,
        ingestor: EventIngestor,
        rebuilder: ProfileRebuilder,
        interval: float,
        grace: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ingestor = ingestor
        self.rebuilder = rebuilder
        self.interval = interval
        self.grace = timedelta(seconds=grace)
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profile-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._flush()

    def _flush(self) -> None:
        try:
            self.ingestor.flush_confirmed()
        except Exception:
            log.exception("could not clear confirmed profile marks; will retry")

    def _run(self) -> None:
        last_reconcile = 0.0
        while not self._stop.wait(1.0):
            self._flush()
            now = self.clock()
            if now.timestamp() - last_reconcile >= self.interval:
                last_reconcile = now.timestamp()
                try:
                    self.rebuilder.ensure_populated()
                    self.rebuilder.reconcile(now, self.grace)
                except redis.RedisError as exc:
                    log.warning("Redis unreachable, profile reconciliation waits: %s", exc)
                except Exception:
                    log.exception("profile reconciliation failed; will retry")

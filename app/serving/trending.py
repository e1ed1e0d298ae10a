"""Trending items from the Redis time buckets, and popular items from the database when no
model is loaded."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

import redis
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.models import Event
from app.profiles import trending_key

log = logging.getLogger(__name__)

Ranked = list[tuple[str, float]]
POPULAR_CACHE_SECONDS = 60.0
# The most active items of each bucket that trending reads: an item outside them in every
# bucket is not trending, and the work stays bounded however large the catalogue.
PER_BUCKET = 2_000


def decayed_trending(
    buckets: dict[int, dict[str, float]], current: int, bucket_seconds: float, half_life: float
) -> Ranked:
    """Sum over buckets of ``weight * 2 ** (-age / half_life)``, best first.

    Parameters
    ----------
    buckets : bucket number -> item -> summed positive event weight in that bucket
    current : the bucket of "now"; a bucket's age is ``(current - bucket) * bucket_seconds``
    """
    totals: dict[str, float] = defaultdict(float)
    for bucket, counts in buckets.items():
        decay = 2.0 ** (-max(current - bucket, 0) * bucket_seconds / half_life)
        for item_id, weight in counts.items():
            totals[item_id] += weight * decay
    return sorted(
        ((i, s) for i, s in totals.items() if s > 0 and math.isfinite(s)),
        key=lambda pair: (-pair[1], pair[0]),
    )


class Trending:
    """Time-decayed activity per item over the retention window, recomputed at most every
    ``trending_cache_seconds``."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.bucket_seconds = settings.trending_bucket_seconds
        self.retention = settings.trending_retention_buckets
        self.half_life = settings.trending_half_life_seconds
        self.cache_seconds = settings.trending_cache_seconds
        self._cached: tuple[float, Ranked] | None = None
        self._lock = threading.Lock()

    def ranked(self, now: datetime | None = None) -> Ranked:
        """Every trending item with its decayed score, best first; raises ``redis.RedisError``.

        One request recomputes a stale result while the others keep answering with it, so
        a busy process never computes it twice at once.
        """
        if now is not None or self.cache_seconds == 0:
            return self._compute((now or datetime.now(UTC)).timestamp())
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        if cached is not None and not self._lock.acquire(blocking=False):
            return cached[1]  # being recomputed
        if cached is None:
            self._lock.acquire()
        try:
            current = self._cached
            if current is not None and time.monotonic() - current[0] < self.cache_seconds:
                return current[1]
            clock = time.monotonic()
            ranked = self._compute(datetime.now(UTC).timestamp())
            self._cached = (clock, ranked)
            return ranked
        finally:
            self._lock.release()

    def _compute(self, now: float) -> Ranked:
        current = int(now // self.bucket_seconds)
        numbers = list(range(current - self.retention + 1, current + 1))
        pipe = self.client.pipeline(transaction=False)
        for bucket in numbers:
            pipe.zrange(trending_key(bucket), 0, PER_BUCKET - 1, desc=True, withscores=True)
        answers = pipe.execute()
        buckets = {
            bucket: {_text(member): float(score) for member, score in answer}
            for bucket, answer in zip(numbers, answers, strict=True)
            if answer
        }
        return decayed_trending(buckets, current, self.bucket_seconds, self.half_life)


class EventCounts:
    """Events per item from the database: popularity when no model is loaded."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._cached: tuple[float, Ranked] | None = None
        self._lock = threading.Lock()

    def ranked(self) -> Ranked:
        cached = self._cached
        clock = time.monotonic()
        if cached is not None and clock - cached[0] < POPULAR_CACHE_SECONDS:
            return cached[1]
        with self._lock:
            try:
                with self.sessions() as session:
                    rows = session.execute(
                        select(Event.item_id, func.count()).group_by(Event.item_id)
                    ).all()
            except SQLAlchemyError as exc:
                if cached is None:
                    raise
                # The database is away: the counts read before serve on, and are read again
                # on the next request.
                log.warning("counting events failed, popular items as counted before: %s", exc)
                return cached[1]
            ranked = sorted(((i, float(n)) for i, n in rows), key=lambda p: (-p[1], p[0]))
            self._cached = (clock, ranked)
        return ranked

    def invalidate(self) -> None:
        self._cached = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Exposure logging off the request path: a bounded queue and one writer thread that inserts
batches.

A request only puts a small dict on the queue (no I/O, no waiting). When the database cannot
keep up and the queue is full, the exposure is dropped and counted
(``recsys_exposures_dropped_total{reason="queue_full"}``) rather than slowing recommendations
or growing memory without bound. A batch the database refuses is retried a few times, then
dropped and counted (``reason="write_failed"``). A clean stop writes everything queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, Table, insert

from app.db.models import ExperimentExposure, ServedList
from app.monitoring import (
    EXPOSURE_QUEUE_DEPTH,
    EXPOSURES_DROPPED,
    EXPOSURES_WRITTEN,
    SERVED_LISTS_DROPPED,
    SERVED_LISTS_WRITTEN,
)

log = logging.getLogger(__name__)

Exposure = dict[str, Any]
# Rows per INSERT statement. The Python half of an insert (parameter processing) holds the
# interpreter lock; small statements with a yield between them keep each hold around a
# millisecond, so a request thread never waits long for it.
WRITE_CHUNK = 25


@dataclass(frozen=True)
class Sink:
    """Where a writer's rows go and the collectors that count them."""

    name: str
    table: Table
    written: Counter
    dropped: Counter
    depth: Gauge | None = None


EXPOSURES = Sink(
    "exposures",
    ExperimentExposure.__table__,  # type: ignore[arg-type]
    EXPOSURES_WRITTEN,
    EXPOSURES_DROPPED,
    EXPOSURE_QUEUE_DEPTH,
)
# Every answer as shown, for online quality (``app.monitoring.quality``).
SERVED_LISTS = Sink(
    "served lists",
    ServedList.__table__,  # type: ignore[arg-type]
    SERVED_LISTS_WRITTEN,
    SERVED_LISTS_DROPPED,
)


def exposure(
    experiment_id: int,
    recommendation_id: str,
    variant: str,
    user_id: str,
    model_version: str | None,
    items: Sequence[str],
    shown_at: datetime,
    attributable_until: datetime,
) -> Exposure:
    """One row of ``experiment_exposures``."""
    return {
        "experiment_id": experiment_id,
        "recommendation_id": recommendation_id,
        "variant": variant,
        "user_id": user_id,
        "model_version": model_version,
        "items": list(items),
        "shown_at": shown_at,
        "attributable_until": attributable_until,
    }


class ExposureWriter:
    """Queues exposures and writes them in batches on a daemon thread.

    The thread sleeps between rounds and is woken only when a full batch is waiting, or after
    ``flush_seconds``: a request never hands the interpreter over to it (waking a thread on
    every put would cost each request a switch), and at low traffic an exposure waits at most
    ``flush_seconds``. The queue is a ``deque`` (appends and pops are atomic, no lock taken per
    request); its bound is checked before each append, so concurrent requests may overshoot it
    by at most one exposure each.
    """

    def __init__(
        self,
        engine: Engine,
        capacity: int,
        batch_size: int,
        flush_seconds: float,
        attempts: int = 3,
        retry_seconds: float = 0.5,
        sink: Sink = EXPOSURES,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.attempts = attempts
        self.retry_seconds = retry_seconds
        self.capacity = capacity
        self._queue: deque[Exposure] = deque()
        self._stop = threading.Event()
        self._wake = threading.Event()
        # Held by whoever is writing a batch taken from the queue: flush() waits on it.
        self._writing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._count_lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.batches = 0

    def record(self, row: Exposure) -> bool:
        """Queue one exposure without waiting; False (and counted) when the queue is full."""
        waiting = len(self._queue)
        if waiting >= self.capacity:
            self.sink.dropped.labels(reason="queue_full").inc()
            with self._count_lock:
                self.dropped += 1
            self._wake.set()
            return False
        self._queue.append(row)
        if waiting + 1 >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._thread is None:
            name = f"{self.sink.name.replace(' ', '-')}-writer"
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        # Whatever the thread left (never started, or stopped by the timeout) is written here.
        if self._thread is None or not self._thread.is_alive():
            self._drain()

    def flush(self, timeout: float = 10.0) -> None:
        """Write everything queued so far before returning, including a batch the thread is
        writing (so results read right after count every exposure recorded before)."""
        self._drain()
        if self._writing.acquire(timeout=timeout):
            self._writing.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        """Write batches until the queue is empty."""
        while True:
            with self._writing:
                batch = self._take()
                if not batch:
                    return
                self._write(batch)

    def _take(self) -> list[Exposure]:
        batch: list[Exposure] = []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.popleft())
            except IndexError:
                break
        return batch

    def _write(self, batch: list[Exposure]) -> None:
        if self.sink.depth is not None:
            self.sink.depth.set(len(self._queue))
        statement = insert(self.sink.table)
        for attempt in range(1, self.attempts + 1):
            try:
                with self.engine.begin() as connection:
                    for start in range(0, len(batch), WRITE_CHUNK):
                        connection.execute(statement, batch[start : start + WRITE_CHUNK])
                        time.sleep(0)  # let request threads run between statements
            except Exception as exc:
                if attempt < self.attempts:
                    log.warning(
                        "writing %d %s failed (attempt %d of %d), retrying: %s",
                        len(batch),
                        self.sink.name,
                        attempt,
                        self.attempts,
                        exc,
                    )
                    time.sleep(self.retry_seconds * attempt)
                    continue
                self.sink.dropped.labels(reason="write_failed").inc(len(batch))
                with self._count_lock:
                    self.dropped += len(batch)
                log.error("dropped %d %s the database refused: %s", len(batch), self.sink.name, exc)
                return
            self.sink.written.inc(len(batch))
            with self._count_lock:
                self.written += len(batch)
                self.batches += 1
            return

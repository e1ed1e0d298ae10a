"""Storing an event import's batches into SQLite from a process of its own.

SQLite's inserts run in C and let go of the interpreter lock around every row, so a thread
storing beside the one that reads, cleanses and validates loses the lock at each row and waits
to get it back: measured on 1,000,000 rows, the storing took 24 s in that thread against 15 s
alone, and the two threads together no less than the sum of their parts. In a process of its
own the storing runs beside the reading on the other core.

The transaction is the ingestor's own (``store_events_sqlite``, as ``EventIngestor.store_rows``
runs it); only where it runs changes.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event

from app.db.engine import create_db_engine
from app.db.queries import EventRow, store_events_sqlite
from app.ingest import StoredBatch

_engine: Engine | None = None


# Set on the store process's own connection only. A 64 MB page cache holds more of the event
# indexes that every batch inserts into; checkpoints of the write-ahead log every 20,000 pages
# (80 MB) instead of 1,000 copy a page that many batches changed once instead of once per
# batch. Neither touches durability: each commit still syncs the log before it returns.
IMPORT_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=20000")


def _start(url: str) -> None:
    global _engine
    # Ctrl-C reaches the whole process group. The importer answers it by storing the batches
    # it has sent and then stopping; this process only finishes what it was given.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As in the importer: the rows are freed by reference counting, and automatic collections
    # would only walk them again and again.
    gc.freeze()
    gc.disable()
    _engine = create_db_engine(url)
    event.listen(_engine, "connect", _tune)


def _tune(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in IMPORT_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _ready() -> int:
    """Submitted once, to start the process before the first batch needs it."""
    return os.getpid()


def _store(
    rows: list[tuple[Any, ...]], batch_id: str, now: datetime, stub_unknown: bool
) -> tuple[set[str], set[str]]:
    if _engine is None:
        raise RuntimeError("the store process was not started")
    with _engine.connect() as connection:
        stored, _categories, unknown = store_events_sqlite(
            connection, [EventRow._make(row) for row in rows], batch_id, now, stub_unknown
        )
    gc.collect(0)
    return stored, unknown


class SQLiteStoreProcess:
    """A ``store`` for ``EventIngestor.ingest`` that runs the batch's transaction in a child
    process, on its own connection to the same SQLite file; one batch at a time.

    The items' categories stay in the child: only a live profile update needs them, and an
    import that updates live profiles stores its batches in-process.
    """

    def __init__(self, database_url: str, stub_unknown: bool) -> None:
        # Spawned, not forked: the importer has threads and open connections of its own.
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(database_url,),
        )
        self._stub_unknown = stub_unknown
        self._started = self._pool.submit(_ready)

    @property
    def pid(self) -> int:
        """The process's id, once it has started and is ready for batches."""
        return self._started.result()

    def __call__(self, rows: list[EventRow], batch_id: str, now: datetime) -> StoredBatch:
        # Plain tuples: a named tuple pickles as a call of its class, several times slower.
        plain = [tuple(row) for row in rows]
        future = self._pool.submit(_store, plain, batch_id, now, self._stub_unknown)
        stored, unknown = future.result()
        return stored, {}, unknown

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

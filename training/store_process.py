"""Storing an event import's batches into SQLite from a process of its own.

SQLite's inserts run in C and let go of the interpreter lock around every row, so a thread
storing beside the one that reads, cleanses and validates loses the lock at each row and waits
to get it back: measured on 1,000,000 rows, the storing took 24 s in that thread against 15 s
alone, and the two threads together took no less than the sum of their parts. In a process of
its own the storing runs beside the reading on the other core.

The transaction is the ingestor's own (``store_events_sqlite``, as ``EventIngestor.store_rows``
runs it); only where it runs changes. The two processes talk over a pipe of their own, not a
``ProcessPoolExecutor``: when the child dies (killed, out of memory) mid-answer, the pipe's end
of file tells the importer at once, where the pool's shared queue waits for the rest of the
answer for ever.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import pickle
import signal
import threading
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event

from app.db.engine import create_db_engine
from app.db.queries import EventRow, store_events_sqlite

if TYPE_CHECKING:
    from app.ingest import StoredBatch

# Set on the store process's own connection only. A 64 MB page cache holds more of the event
# indexes that every batch inserts into; checkpoints of the write-ahead log every 20,000 pages
# (80 MB) instead of 1,000 copy a page that many batches changed once instead of once per
# batch. Neither touches durability: each commit still syncs the log before it returns.
IMPORT_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=20000")
# How long ``close`` waits for the process to finish before it is terminated.
CLOSE_SECONDS = 30.0


class StoreProcessError(RuntimeError):
    """The store process ended or stopped answering; the batch in hand may not be stored."""


def _tune(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in IMPORT_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _serve(connection: Connection, url: str) -> None:
    """The store process: one batch at a time, answered in order, until told to stop."""
    # Ctrl-C reaches the whole process group. The importer answers it by storing the batches
    # it has sent and then stopping; this process only finishes what it was given.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As in the importer: the rows are freed by reference counting, and automatic collections
    # would only walk them again and again.
    gc.freeze()
    gc.disable()
    engine: Engine = create_db_engine(url)
    event.listen(engine, "connect", _tune)
    connection.send(("ready", None))
    while (request := connection.recv()) is not None:
        rows, batch_id, now, stub_unknown = request
        try:
            with engine.connect() as db:
                stored, unknown = store_events_sqlite(
                    db, [EventRow._make(row) for row in rows], batch_id, now, stub_unknown
                )
        except Exception as exc:  # sent back, raised in the importer
            connection.send(("error", _picklable(exc)))
        else:
            # The ids not stored (duplicates, unknown items): usually none, so the answer fits
            # the pipe's buffer and the next batch is read at once.
            skipped = {row[0] for row in rows} - stored
            connection.send(("stored", (skipped, unknown)))
        del rows, request
        gc.collect(0)
    engine.dispose()


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - the bytes made on the line
    except Exception:  # any failure to make the round trip
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class SQLiteStoreProcess:
    """A ``store`` for ``EventIngestor.ingest`` that runs the batch's transaction in a child
    process, on its own connection to the same SQLite file; one batch at a time, in the order
    they are handed over, from any thread.
    """

    def __init__(self, database_url: str, stub_unknown: bool) -> None:
        # Spawned, not forked: the importer has threads and open connections of its own.
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child_end, database_url), name="import-store", daemon=True
        )
        self._process.start()
        # Only the child holds its end now: its exit is an end of file here.
        child_end.close()
        self._stub_unknown = stub_unknown
        # Batches are sent in turn, and the answers come back in the same order: a caller
        # takes a ticket when it sends and reads the answer whose turn matches its ticket, so
        # the next batch waits in the pipe while the process stores the one before.
        self._send_lock = threading.Lock()
        self._turn = threading.Condition()
        self._sent = 0
        self._answered = 0
        self._ready = False

    @property
    def pid(self) -> int:
        """The process's id, once it has started and is ready for batches."""
        with self._turn:
            self._wait_ready()
        return int(self._process.pid or 0)

    def __call__(self, rows: list[EventRow], batch_id: str, now: datetime) -> StoredBatch:
        # Plain tuples: a named tuple pickles as a call of its class, several times slower.
        request = pickle.dumps(
            ([tuple(row) for row in rows], batch_id, now, self._stub_unknown),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        with self._send_lock:
            try:
                self._connection.send_bytes(request)
            except OSError as exc:
                raise self._ended("could not take the batch") from exc
            ticket = self._sent
            self._sent += 1
        with self._turn:
            while self._answered != ticket:
                self._turn.wait()
            try:
                self._wait_ready()
                kind, answer = self._receive()
            finally:
                self._answered += 1
                self._turn.notify_all()
        if kind == "error":
            raise answer
        skipped, unknown = answer
        return {row.event_id for row in rows} - skipped, unknown

    def close(self) -> None:
        """Let the process finish the batch in hand and exit; terminate it if it does not."""
        with contextlib.suppress(OSError):  # already gone
            self._connection.send(None)
        self._process.join(CLOSE_SECONDS)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._connection.close()

    def _wait_ready(self) -> None:
        if not self._ready:
            kind, _ = self._receive()
            if kind != "ready":
                raise StoreProcessError(f"the store process answered {kind!r} on start")
            self._ready = True

    def _receive(self) -> tuple[str, Any]:
        try:
            message: tuple[str, Any] = self._connection.recv()
        except (EOFError, OSError) as exc:
            raise self._ended("did not answer") from exc
        return message

    def _ended(self, what: str) -> StoreProcessError:
        self._process.join(1.0)
        code = self._process.exitcode
        status = "is still running" if code is None else f"ended with exit code {code}"
        return StoreProcessError(f"the store process {what}: it {status}")

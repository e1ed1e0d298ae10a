"""Imports: records from any source, cleansed, validated and stored through the service's one
ingestion path (``EventIngestor`` for events, ``Catalog`` for items), every row accounted for.

A row is *imported* (stored now), a *duplicate* (stored before, or an exact duplicate of an
earlier row) or *quarantined* (written to the quarantine file with the reason); the three always
add up to the rows read. Rows are stored in batches, one transaction each; while one batch is
being stored the next one is read and cleansed, so the database and the parsing overlap. Event
batches into SQLite are stored from a second process (``training.store_process``).

Events of an import do not update live profiles one batch at a time: their users keep the
pending marks that every ingestion writes with the events, and once the import ends their
profiles are rebuilt from the database in one pass. An import that dies leaves the marks
behind, and the service's reconciler rebuilds those profiles instead.
"""

from __future__ import annotations

import gc
import logging
import resource
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.cleansing import RecentDuplicates, Rejected, row_reason
from app.ingest import IngestOutcome
from app.schemas import ItemBatchAck
from app.services import Services
from training.sources import SourceError, Unreadable
from training.sources.quarantine import QuarantineFile
from training.store_process import SQLiteStoreProcess

log = logging.getLogger(__name__)

Kind = Literal["events", "items"]
# Distinct reasons kept in the report; rarer ones are summed under one line.
MAX_REASONS = 1000
# Event batches in flight at the same time (see Importer._stores_in_flight).
STORES_IN_FLIGHT = 2
OTHER_REASONS = "(other reasons)"


@dataclass
class ImportReport:
    """What became of every row read."""

    kind: str
    source: str
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    stopped: str | None = None
    failed: bool = False
    ignored_columns: list[str] = field(default_factory=list)
    quarantine_path: Path | None = None
    profiles: str = ""
    # Reading and storing the rows; rebuilding live profiles afterwards.
    seconds: float = 0.0
    profile_seconds: float = 0.0
    # The process's peak resident memory when the rows were stored, and its store process's
    # (an event import into SQLite stores its batches from a second process).
    peak_memory_mb: float = 0.0
    store_process_peak_memory_mb: float | None = None

    @property
    def balanced(self) -> bool:
        """imported + duplicates + quarantined = read."""
        return self.imported + self.duplicates + self.quarantined == self.read

    @property
    def error_rate(self) -> float:
        return self.quarantined / self.read if self.read else 0.0

    def add_reason(self, reason: str) -> None:
        if reason in self.reasons or len(self.reasons) < MAX_REASONS:
            self.reasons[reason] += 1
        else:
            self.reasons[OTHER_REASONS] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "read": self.read,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "balanced": self.balanced,
            "reasons": dict(self.reasons.most_common()),
            "stopped": self.stopped,
            "failed": self.failed,
            "ignored_columns": self.ignored_columns,
            "quarantine_file": str(self.quarantine_path) if self.quarantine_path else None,
            "profiles": self.profiles,
            "seconds": round(self.seconds, 3),
            "profile_seconds": round(self.profile_seconds, 3),
            "peak_memory_mb": round(self.peak_memory_mb, 1),
            "store_process_peak_memory_mb": (
                None
                if self.store_process_peak_memory_mb is None
                else round(self.store_process_peak_memory_mb, 1)
            ),
            "rows_per_second": round(self.read / self.seconds) if self.seconds else None,
        }


def _sqlite_file(engine: Any) -> bool:
    """Whether a SQLite engine's database is a file another process can open (an in-memory
    database exists only on this process's connection)."""
    database = engine.url.database or ""
    return database not in ("", ":memory:") and "mode=memory" not in str(engine.url)


@dataclass
class _Batch:
    """Rows read and cleansed, waiting to be stored."""

    first_row: int
    size: int = 0
    # Parallel lists: what goes to the ingestion path, the row it came from, the original.
    payload: list[Any] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    originals: list[Any] = field(default_factory=list)
    rejected: list[tuple[int, Any, str]] = field(default_factory=list)
    duplicates: int = 0


@contextmanager
def _quiet_garbage_collector() -> Iterator[None]:
    """No automatic collections while an import runs: each batch makes a few hundred thousand
    objects that live until the batch is stored, and every full collection would walk them and
    all of the service's modules again. Reference counting frees them; the batches themselves
    collect what cycles remain every ten batches."""
    enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


class Importer:
    """Runs one import.

    Parameters
    ----------
    services : the service's database and Redis
    kind : ``events`` or ``items``
    cleanser : raw record -> cleansed record, raising ``Rejected``
    quarantine : where bad rows go (``None``: nowhere, they are only counted)
    batch_size : rows per transaction
    max_error_rate : stop once the share of quarantined rows read so far exceeds it
    live_profiles : update live profiles batch by batch, as the API does, instead of
        rebuilding them once at the end
    on_batch : called with the report after each stored batch
    """

    def __init__(
        self,
        services: Services,
        kind: Kind,
        cleanser: Callable[[Any], dict[str, Any]],
        quarantine: QuarantineFile | None,
        batch_size: int,
        max_error_rate: float | None = None,
        live_profiles: bool = False,
        on_batch: Callable[[ImportReport], None] | None = None,
        source: str = "",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_error_rate is not None and not 0 <= max_error_rate <= 1:
            raise ValueError("max_error_rate must be between 0 and 1")
        self.services = services
        self.kind = kind
        self.cleanser = cleanser
        self.quarantine = quarantine
        self.batch_size = batch_size
        self.max_error_rate = max_error_rate
        self.live_profiles = live_profiles
        self.on_batch = on_batch
        self.report = ImportReport(kind=kind, source=source)
        self.batch_ids: list[str] = []
        self._recent = RecentDuplicates()
        self.rebuild_progress: Callable[[int], None] | None = None
        self._store_process: SQLiteStoreProcess | None = None

    def run(
        self, records: Iterable[Any], checkpoint: Callable[[int], None] | None = None
    ) -> ImportReport:
        """Import every record; ``checkpoint(rows)`` is called once the first ``rows`` records
        are committed (the SQL source stores its watermark there)."""
        report = self.report
        started = time.perf_counter()
        pending: deque[tuple[_Batch, Future[Any]]] = deque()
        in_flight = self._stores_in_flight()
        with (
            _quiet_garbage_collector(),
            ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="import-store") as store,
        ):
            try:
                for batch in self._batches(records):
                    # Batches are accounted for in the order they were read, whichever commits
                    # first: the report, the quarantine file and ``checkpoint`` follow the rows.
                    while len(pending) >= in_flight and not report.stopped:
                        self._finish_oldest(pending, checkpoint)
                    if report.stopped:
                        break
                    pending.append((batch, store.submit(self._store, batch, self._store_process)))
                    if batch.size == self.batch_size:
                        # More rows may follow: start the store process, if this import uses
                        # one, while this first batch is stored here.
                        self._start_store_process()
                while pending:
                    self._finish_oldest(pending, checkpoint)
            except SourceError as exc:
                self._finish_quietly(pending, checkpoint)
                report.stopped = f"the source failed after row {report.read:,}: {exc}"
                report.failed = True
            except KeyboardInterrupt:
                self._finish_quietly(pending, checkpoint)
                report.stopped = f"interrupted after row {report.read:,}"
                report.failed = True
            except Exception as exc:
                log.exception("import failed")
                self._finish_quietly(pending, checkpoint)
                report.stopped = f"failed after row {report.read:,}: {type(exc).__name__}: {exc}"
                report.failed = True
            finally:
                if self._store_process is not None:
                    self._store_process.close()
                    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                    report.store_process_peak_memory_mb = children
        if self.quarantine is not None:
            self.quarantine.close()
            report.quarantine_path = self.quarantine.path if self.quarantine.count else None
        report.ignored_columns = sorted(getattr(self.cleanser, "ignored_columns", ()))
        report.seconds = time.perf_counter() - started
        report.peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if self.kind == "events":
            started = time.perf_counter()
            report.profiles = self._profiles()
            report.profile_seconds = time.perf_counter() - started
        return report

    # -- reading and cleansing (this thread) -------------------------------------------------

    def _batches(self, records: Iterable[Any]) -> Iterator[_Batch]:
        batches = 0
        row = self.report.read
        batch = _Batch(first_row=row + 1)
        cleanse = self.cleanser
        dedupe = self.kind == "items"
        iterator = iter(records)
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                break
            except SourceError:
                # The rows read before the fault are stored and counted all the same.
                if batch.size:
                    yield self._validated(batch)
                raise
            row += 1
            batch.size += 1
            if isinstance(record, Unreadable):
                batch.rejected.append((row, record, record.reason))
            else:
                try:
                    cleansed = cleanse(record)
                except Rejected as exc:
                    batch.rejected.append((row, record, exc.reason))
                else:
                    if dedupe and self._recent.seen(cleansed):
                        batch.duplicates += 1
                    else:
                        batch.payload.append(cleansed)
                        batch.rows.append(row)
                        batch.originals.append(record)
            if batch.size == self.batch_size:
                yield self._validated(batch)
                batch = _Batch(first_row=row + 1)
                batches += 1
                if batches % 10 == 0:
                    gc.collect()
        if batch.size:
            yield self._validated(batch)

    def _validated(self, batch: _Batch) -> _Batch:
        """Events are validated here, beside the reading, and only valid ones are sent on."""
        if self.kind != "events":
            return batch
        valid, rejected = self.services.ingestor.parse(batch.payload)
        for result in rejected:
            batch.rejected.append(
                (
                    batch.rows[result.index],
                    batch.originals[result.index],
                    row_reason(result.error or ""),
                )
            )
        batch.payload = valid
        return batch

    # -- storing (the store threads) -------------------------------------------------------

    def _store(
        self, batch: _Batch, store_process: SQLiteStoreProcess | None
    ) -> IngestOutcome | ItemBatchAck:
        if self.kind == "events":
            ingestor = self.services.ingestor
            outcome = ingestor.ingest(
                batch.payload, update_profiles=self.live_profiles, store=store_process
            )
            if self.live_profiles:
                ingestor.flush_confirmed()
            return outcome
        return self.services.catalog.upsert_raw(batch.payload)

    # -- accounting (this thread) ----------------------------------------------------------

    def _finish(
        self,
        batch: _Batch,
        future: Future[Any],
        checkpoint: Callable[[int], None] | None,
    ) -> None:
        outcome = future.result()
        report = self.report
        rejected: list[tuple[int, Any, str | None]] = list(batch.rejected)
        if isinstance(outcome, IngestOutcome):
            report.imported += outcome.accepted
            report.duplicates += outcome.duplicates
            if outcome.rejected:
                for index, _event_id, status, error in outcome.statuses:
                    if status == "rejected":
                        rejected.append((batch.rows[index], batch.originals[index], error))
            if outcome.accepted:
                self.batch_ids.append(outcome.batch_id)
        else:
            for item in outcome.results:
                if item.status == "stored":
                    report.imported += 1
                else:
                    rejected.append(
                        (batch.rows[item.index], batch.originals[item.index], item.error)
                    )
        report.duplicates += batch.duplicates
        rejected.sort(key=lambda entry: entry[0])
        for _row, original, reason in rejected:
            report.quarantined += 1
            report.add_reason(reason or "rejected")
            if self.quarantine is not None:
                self.quarantine.write(original, reason or "rejected")
        report.read += batch.size
        if checkpoint is not None:
            checkpoint(report.read)
        if self.on_batch is not None:
            self.on_batch(report)
        limit = self.max_error_rate
        if limit is not None and report.error_rate > limit:
            report.stopped = (
                f"stopped after row {report.read:,}: {report.error_rate:.1%} of the rows so far "
                f"were quarantined, more than --max-error-rate {limit:g}"
            )
            report.failed = True

    def _finish_oldest(
        self, pending: deque[tuple[_Batch, Future[Any]]], checkpoint: Callable[[int], None] | None
    ) -> None:
        """Account for the oldest batch in flight. If it failed, the later ones are left out
        of the report's rows and of ``checkpoint`` even if they were stored: ``checkpoint``
        says the first rows are all committed, so a resumed import reads them again (and
        counts them as duplicates)."""
        try:
            self._finish(*pending.popleft(), checkpoint)
        except BaseException:
            for _batch, future in pending:
                future.cancel()
            pending.clear()
            raise

    def _finish_quietly(
        self,
        pending: deque[tuple[_Batch, Future[Any]]],
        checkpoint: Callable[[int], None] | None,
    ) -> None:
        """Account for the batches in flight when the import stops; they may have failed too."""
        while pending:
            try:
                self._finish_oldest(pending, checkpoint)
            except Exception:
                log.exception("a batch in flight when the import stopped was not stored")

    def _stores_in_flight(self) -> int:
        """Batches stored at the same time: two for events on PostgreSQL (one statement each,
        on its own connection: the database works on one while this process prepares the
        other) and for events into SQLite from the store process (which takes the next batch
        as soon as it has committed one), else one. Items stay one at a time, in order, since
        a later row of an item must win over an earlier one; SQLite has one writer, so storing
        in-process gains nothing from a second batch; and with a maximum error rate the import
        must stop right after the batch that crossed it, not one later."""
        if self.kind != "events" or self.max_error_rate is not None:
            return 1
        engine = self.services.engine
        if engine.dialect.name == "postgresql" or self._uses_store_process():
            return STORES_IN_FLIGHT
        return 1

    def _uses_store_process(self) -> bool:
        """Event imports into a SQLite file store their batches from a second process (see
        ``training.store_process``); not with live profiles, whose update needs what the
        transaction found, nor for items."""
        engine = self.services.engine
        return (
            self.kind == "events"
            and not self.live_profiles
            and engine.dialect.name == "sqlite"
            and _sqlite_file(engine)
        )

    def _start_store_process(self) -> None:
        """Start the store process, once, if this import uses one."""
        if self._store_process is not None or not self._uses_store_process():
            return
        engine = self.services.engine
        self._store_process = SQLiteStoreProcess(
            engine.url.render_as_string(hide_password=False),
            stub_unknown=self.services.settings.unknown_items == "stub",
        )

    # -- live profiles ---------------------------------------------------------------------

    def _profiles(self) -> str:
        if self.live_profiles:
            return "updated batch by batch"
        if not self.batch_ids:
            return "unchanged"
        rebuilder = self.services.rebuilder
        try:
            users = rebuilder.rebuild_batches(self.batch_ids, progress=self.rebuild_progress)
        except Exception as exc:
            log.warning("live profiles not rebuilt after the import: %s", exc)
            return (
                f"pending: not rebuilt ({type(exc).__name__}); the service's reconciler "
                "rebuilds them once Redis answers"
            )
        return f"rebuilt for {users:,} users"

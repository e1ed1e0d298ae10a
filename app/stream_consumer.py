"""The Redis Stream consumer: events any producer adds with ``XADD``, through the one ingestion
path (``python -m app consume-stream``).

A message is an event: its fields are the event's fields (``XADD recsys:events * user_id u1
item_id sku-1 type click``), or one field ``event`` holding the event as a JSON object. Messages
are cleansed like imported rows (type aliases, epoch milliseconds, ...), then validated and stored
exactly as ``POST /v1/events/batch`` stores them, live profiles included.

Delivery guarantees, and how:

- a message is acknowledged (``XACK``) only after its event is committed to the database, so a
  consumer that dies before leaves it pending in the group;
- pending messages of a consumer that stopped acknowledging (crashed, killed, stuck) are claimed
  by another one after ``stream_claim_idle_seconds`` (``XAUTOCLAIM``), and a restarted consumer
  first re-reads its own;
- a message delivered again after its event was committed is a duplicate: its ``event_id`` (when
  it has none: the stream's name and the message id) is already stored, so it is stored once;
- a message that can never be stored (not an event, invalid, or one that keeps failing) goes to
  the dead-letter stream with the reason, in the same transaction as its acknowledgement; one
  that was delivered ``stream_max_deliveries`` times without being acknowledged goes there too;
- SIGTERM or SIGINT finish the batch at hand, acknowledge it and stop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from sqlalchemy.exc import DBAPIError, OperationalError

from app.cleansing import EventCleanser, Rejected, row_reason
from app.config import Settings
from app.ingest import EventIngestor
from app.monitoring import (
    STREAM_CLAIMED,
    STREAM_LAG,
    STREAM_LAG_SECONDS,
    STREAM_MESSAGES,
    STREAM_PENDING,
)
from app.schemas import EventIn

log = logging.getLogger(__name__)

# A message whose only field is one of these holds the event as a JSON object.
JSON_FIELDS = ("event", "json", "data", "payload")
# Consumers that hold no message and were idle this long are removed from the group.
FORGET_IDLE_MS = 24 * 3600 * 1000

Message = tuple[str, dict[bytes, bytes]]


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def is_transient(exc: BaseException) -> bool:
    """Failures that pass (the database or Redis unreachable): retry the same messages later."""
    if isinstance(exc, OperationalError | redis.ConnectionError | redis.TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass
class BatchResult:
    """What one batch of messages became."""

    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    acknowledged: list[str] = field(default_factory=list)


class StreamConsumer:
    """Reads a stream through a consumer group and ingests its events.

    Parameters
    ----------
    client : Redis client of the stream (blocking reads need a socket timeout above
        ``block_ms``)
    ingestor : the ingestion path
    settings : stream names, batch size, claim and delivery limits, event-type aliases
    consumer : this consumer's name in the group (unique per running process)
    """

    def __init__(
        self,
        client: redis.Redis,
        ingestor: EventIngestor,
        settings: Settings,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.ingestor = ingestor
        self.stream = settings.stream_key
        self.group = settings.stream_group
        self.dead_letter = settings.stream_dead_letter_key
        self.dead_letter_max = settings.stream_dead_letter_max_length
        self.batch_size = settings.stream_batch_size
        self.block_ms = settings.stream_block_ms
        self.claim_idle_ms = int(settings.stream_claim_idle_seconds * 1000)
        self.max_deliveries = settings.stream_max_deliveries
        self.consumer = consumer or default_consumer_name()
        self.cleanser = EventCleanser(settings.event_type_aliases)
        self.clock = clock
        self._own_pending = True
        self._next_claim = 0.0
        self._next_metrics = 0.0

    # -- set-up ----------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and the group when missing; a new group starts at the stream's
        first entry, so nothing added before the first consumer started is skipped."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; the batch at hand is finished and acknowledged."""
        self.ensure_group()
        log.info(
            "consuming %s as %s in group %s (dead letters to %s)",
            self.stream,
            self.consumer,
            self.group,
            self.dead_letter,
        )
        failures = 0
        while not stop.is_set():
            try:
                self.step()
                failures = 0
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                wait = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("storage unavailable, retrying in %.1f s: %s", wait, exc)
                # Whatever was read stays pending for this consumer and is read again.
                self._own_pending = True
                stop.wait(wait)
        log.info("stopped consuming %s", self.stream)

    def step(self) -> int:
        """One round: own pending messages first, then claims when due, then new messages.

        Returns how many messages were handled.
        """
        handled = 0
        now = self.clock()
        if self._own_pending:
            messages = self._read("0", block=False)
            if messages:
                handled += self.process(messages, check_deliveries=True)
            else:
                self._own_pending = False
        if now >= self._next_claim:
            handled += self.claim()
            self._next_claim = now + max(1.0, self.claim_idle_ms / 4000)
        if not self._own_pending:
            messages = self._read(">", block=handled == 0)
            if messages:
                handled += self.process(messages)
        if now >= self._next_metrics:
            self.update_metrics()
            self._next_metrics = now + 1.0
        return handled

    def _read(self, start: str, block: bool) -> list[Message]:
        answer: Any = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: start},
            count=self.batch_size,
            block=self.block_ms if block else None,
        )
        if not answer:
            return []
        _stream, entries = answer[0]
        # Entries of the own pending list that were trimmed from the stream come back empty.
        gone = [_text(entry_id) for entry_id, fields in entries if fields is None]
        if gone:
            self.client.xack(self.stream, self.group, *gone)
        return [(_text(entry_id), fields) for entry_id, fields in entries if fields is not None]

    def claim(self) -> int:
        """Take over messages that other consumers left pending for ``claim_idle``; those
        delivered too often go to the dead-letter stream."""
        handled = 0
        cursor = "0-0"
        while True:
            answer: Any = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=cursor,
                count=self.batch_size,
            )
            cursor = _text(answer[0])
            messages = [(_text(entry_id), fields) for entry_id, fields in answer[1] if fields]
            if messages:
                STREAM_CLAIMED.labels(stream=self.stream).inc(len(messages))
                log.info("claimed %d messages left pending by other consumers", len(messages))
                handled += self.process(messages, check_deliveries=True)
            if cursor == "0-0" or not messages:
                break
        self._forget_idle_consumers()
        return handled

    # -- a batch ---------------------------------------------------------------------------

    def process(self, messages: Sequence[Message], check_deliveries: bool = False) -> int:
        """Store the events of ``messages``, dead-letter the ones that cannot be stored, and
        acknowledge them all; the acknowledgement follows the database commit."""
        dead: list[tuple[str, dict[bytes, bytes], str]] = []
        kept = self._drop_overdelivered(messages, dead) if check_deliveries else messages
        raw: list[dict[str, Any]] = []
        ids: list[str] = []
        fields_of: dict[str, dict[bytes, bytes]] = {}
        for message_id, fields in kept:
            fields_of[message_id] = fields
            try:
                raw.append(self.event_of(message_id, fields))
                ids.append(message_id)
            except Rejected as exc:
                dead.append((message_id, fields, exc.reason))
        valid, rejected = self.ingestor.parse(raw)
        for result in rejected:
            reason = row_reason(result.error or "")
            dead.append((ids[result.index], fields_of[ids[result.index]], reason))
        counts = BatchResult()
        for index, status, error in self._store(valid):
            if status == "accepted":
                counts.accepted += 1
            elif status == "duplicate":
                counts.duplicates += 1
            else:
                dead.append((ids[index], fields_of[ids[index]], error))
        # Dead letters keep the stream's order.
        order = {message_id: position for position, (message_id, _) in enumerate(messages)}
        dead.sort(key=lambda letter: order.get(letter[0], -1))
        self._acknowledge([message_id for message_id, _ in messages], dead)
        STREAM_MESSAGES.labels(stream=self.stream, outcome="accepted").inc(counts.accepted)
        STREAM_MESSAGES.labels(stream=self.stream, outcome="duplicate").inc(counts.duplicates)
        STREAM_MESSAGES.labels(stream=self.stream, outcome="dead_lettered").inc(len(dead))
        return len(messages)

    def event_of(self, message_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
        """The cleansed event of one message; raises ``Rejected``."""
        try:
            record: dict[str, Any] = {key.decode(): value.decode() for key, value in fields.items()}
        except UnicodeDecodeError:
            raise Rejected("message: fields must be UTF-8 text") from None
        if len(record) == 1 and next(iter(record)) in JSON_FIELDS:
            try:
                parsed = orjson.loads(next(iter(record.values())))
            except orjson.JSONDecodeError:
                raise Rejected("message: the event field is not valid JSON") from None
            if not isinstance(parsed, dict):
                raise Rejected("message: the event field must hold a JSON object")
            record = parsed
        if not record.get("event_id"):
            # Redelivered messages keep their id, so they are stored once.
            record["event_id"] = stream_event_id(self.stream, message_id)
        if record.get("timestamp") in (None, ""):
            # When the producer added it: the same time whenever it is delivered.
            record["timestamp"] = int(message_id.split("-", 1)[0])
        return self.cleanser(record)

    def _store(self, valid: list[tuple[int, EventIn]]) -> list[tuple[int, str, str]]:
        """(index, status, error) per event. A batch that fails for a reason other than
        unavailable storage is split until the event that fails is alone; it is rejected."""
        if not valid:
            return []
        try:
            outcome = self.ingestor.ingest(valid)
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(valid) == 1:
                reason = f"could not be stored: {type(exc).__name__}: {exc}".splitlines()[0]
                log.warning("message %d could not be stored: %s", valid[0][0], exc)
                return [(valid[0][0], "rejected", reason[:500])]
            middle = len(valid) // 2
            return self._store(valid[:middle]) + self._store(valid[middle:])
        return [(index, status, error or "") for index, _, status, error in outcome.statuses]

    def _drop_overdelivered(
        self, messages: Sequence[Message], dead: list[tuple[str, dict[bytes, bytes], str]]
    ) -> list[Message]:
        """Messages delivered ``max_deliveries`` times were taken by consumers that died or
        failed on them each time: they go to the dead-letter stream."""
        counts: dict[str, int] = {}
        first, last = messages[0][0], messages[-1][0]
        pending: Any = self.client.xpending_range(
            self.stream,
            self.group,
            min=first,
            max=last,
            count=len(messages) + self.batch_size,
            consumername=self.consumer,
        )
        for entry in pending:
            counts[_text(entry["message_id"])] = int(entry["times_delivered"])
        kept: list[Message] = []
        for message_id, fields in messages:
            delivered = counts.get(message_id, 1)
            if delivered > self.max_deliveries:
                dead.append(
                    (
                        message_id,
                        fields,
                        f"delivered {delivered} times without being acknowledged",
                    )
                )
            else:
                kept.append((message_id, fields))
        return kept

    def _acknowledge(
        self, message_ids: list[str], dead: list[tuple[str, dict[bytes, bytes], str]]
    ) -> None:
        """Dead letters and acknowledgements in one transaction: a message is never both lost
        and acknowledged."""
        if not message_ids:
            return
        pipe = self.client.pipeline(transaction=True)
        failed_at = datetime.now(UTC).isoformat()
        for message_id, fields, reason in dead:
            entry: dict[Any, Any] = dict(fields)
            entry.update(
                {
                    "dead_letter_reason": reason,
                    "dead_letter_message_id": message_id,
                    "dead_letter_stream": self.stream,
                    "dead_letter_consumer": self.consumer,
                    "dead_letter_at": failed_at,
                }
            )
            pipe.xadd(self.dead_letter, entry, maxlen=self.dead_letter_max, approximate=True)
        pipe.xack(self.stream, self.group, *message_ids)
        pipe.execute()
        if dead:
            log.warning("%d messages went to %s", len(dead), self.dead_letter)

    # -- housekeeping and metrics ----------------------------------------------------------

    def _forget_idle_consumers(self) -> None:
        """Consumers that hold nothing and were idle a day are gone (restarts leave them)."""
        consumers: Any = self.client.xinfo_consumers(self.stream, self.group)
        for info in consumers:
            name = _text(info["name"])
            if name != self.consumer and info["pending"] == 0 and info["idle"] > FORGET_IDLE_MS:
                self.client.xgroup_delconsumer(self.stream, self.group, name)

    def group_info(self) -> dict[str, Any]:
        groups: Any = self.client.xinfo_groups(self.stream)
        for info in groups:
            if _text(info["name"]) == self.group:
                return dict(info)
        return {}

    def update_metrics(self) -> None:
        """Lag (undelivered entries and the age of the oldest), and pending entries."""
        info = self.group_info()
        if not info:
            return
        labels = {"stream": self.stream, "group": self.group}
        STREAM_PENDING.labels(**labels).set(int(info.get("pending", 0)))
        lag = info.get("lag")
        if lag is not None:
            STREAM_LAG.labels(**labels).set(int(lag))
        last = _text(info.get("last-delivered-id", "0-0"))
        oldest: Any = self.client.xrange(self.stream, min=f"({last}", max="+", count=1)
        if oldest:
            added_ms = int(_text(oldest[0][0]).split("-", 1)[0])
            STREAM_LAG_SECONDS.labels(**labels).set(max(0.0, self.clock() - added_ms / 1000))
        else:
            STREAM_LAG_SECONDS.labels(**labels).set(0.0)


def stream_event_id(stream: str, message_id: str) -> str:
    """The event id of a message without one: its stream and message id."""
    event_id = f"{stream}:{message_id}"
    if len(event_id) > 128:
        digest = hashlib.blake2b(stream.encode(), digest_size=8).hexdigest()
        event_id = f"stream-{digest}:{message_id}"
    return event_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

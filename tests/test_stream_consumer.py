"""The stream consumer: messages any producer XADDs are stored exactly once through the one
ingestion path, acknowledged only after the commit, re-claimed from dead consumers, poison ones
dead-lettered with the reason; it stops cleanly on SIGTERM and reports its lag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from app.config import Settings
from app.db.models import Event
from app.ingest import EventIngestor, IngestOutcome
from app.services import Services
from app.stream_consumer import StreamConsumer, stream_event_id
from tests.conftest import count_rows, make_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stream_settings(settings: Settings) -> Settings:
    return make_settings(
        settings,
        stream_key="test:events",
        stream_group="test-group",
        stream_dead_letter_key="test:events:dead",
        stream_batch_size=50,
        stream_block_ms=50,
        stream_claim_idle_seconds=0.2,
    )


@pytest.fixture
def consumer(services: Services, stream_settings: Settings) -> StreamConsumer:
    built = StreamConsumer(services.redis, services.ingestor, stream_settings, consumer="c1")
    built.ensure_group()
    return built


def add(client: redis.Redis, stream: str, fields: dict[str, Any]) -> str:
    return client.xadd(stream, fields).decode()  # type: ignore[union-attr]


def drain(consumer: StreamConsumer, rounds: int = 50) -> None:
    """Run the consumer until a round finds nothing to do."""
    for _ in range(rounds):
        if consumer.step() == 0:
            return
    raise AssertionError("the consumer kept finding messages")


def dead_letters(client: redis.Redis, key: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange(key)  # type: ignore[union-attr]
    ]


def pending(client: redis.Redis, stream: str, group: str) -> int:
    return int(client.xpending(stream, group)["pending"])  # type: ignore[index]


def test_messages_are_stored_acknowledged_and_update_live_profiles(
    services: Services, consumer: StreamConsumer
) -> None:
    client = services.redis
    add(client, "test:events", {"event_id": "s1", "user_id": "u1", "item_id": "i1", "type": "buy"})
    as_json = orjson.dumps({"user_id": "u1", "item_id": "i2", "type": "click", "value": 1})
    json_id = add(client, "test:events", {"event": as_json})
    # Sent twice by its producer: stored once.
    add(client, "test:events", {"event_id": "s1", "user_id": "u1", "item_id": "i1", "type": "buy"})
    drain(consumer)

    with services.sessions() as session:
        stored = {tuple(row) for row in session.execute(select(Event.event_id, Event.type))}
    assert stored == {("s1", "purchase"), (stream_event_id("test:events", json_id), "click")}
    assert pending(client, "test:events", "test-group") == 0
    assert services.profiles.read("u1").counts == {"purchase": 1, "click": 1}


def test_a_message_without_event_id_is_named_by_its_stream_and_id(
    services: Services, consumer: StreamConsumer
) -> None:
    message_id = add(
        services.redis, "test:events", {"user_id": "u", "item_id": "i", "type": "view"}
    )
    drain(consumer)
    with services.sessions() as session:
        event = session.scalars(select(Event)).one()
    assert event.event_id == f"test:events:{message_id}"
    # Its time is when the producer added it: the same on every delivery.
    assert int(event.occurred_at.timestamp() * 1000) == int(message_id.split("-")[0])


def test_poison_messages_go_to_the_dead_letter_stream_with_the_reason(
    services: Services, consumer: StreamConsumer
) -> None:
    client = services.redis
    add(client, "test:events", {"user_id": "u", "item_id": "i", "type": "teleport"})
    add(client, "test:events", {"event": "{not json"})
    add(client, "test:events", {"user_id": "u", "type": "view"})
    good = add(client, "test:events", {"user_id": "u", "item_id": "i", "type": "view"})
    drain(consumer)

    letters = dead_letters(client, "test:events:dead")
    assert [letter["dead_letter_reason"] for letter in letters] == [
        "type: unknown event type 'teleport'; allowed: view, click, add_to_cart, purchase, "
        "rating, like, dislike",
        "message: the event field is not valid JSON",
        "item_id: is required",
    ]
    assert letters[0]["type"] == "teleport"
    assert letters[1]["event"] == "{not json"
    assert letters[0]["dead_letter_consumer"] == "c1"
    assert count_rows(services, "events") == 1
    assert pending(client, "test:events", "test-group") == 0
    with services.sessions() as session:
        assert session.scalar(select(Event.event_id)) == f"test:events:{good}"


def test_an_event_the_database_refuses_is_isolated_and_dead_lettered(
    services: Services, stream_settings: Settings
) -> None:
    """A batch that fails for a reason other than unavailable storage is split until the
    failing event is alone; the others are stored."""

    class RefusesOne(EventIngestor):
        def ingest(self, events: Any, *args: Any, **kwargs: Any) -> IngestOutcome:
            if any(event.user_id == "poison" for _, event in events):
                raise ValueError("cannot store this one")
            return super().ingest(events, *args, **kwargs)

    ingestor = RefusesOne(services.sessions, services.profiles, stream_settings)
    consumer = StreamConsumer(services.redis, ingestor, stream_settings, consumer="c1")
    consumer.ensure_group()
    for n in range(9):
        user = "poison" if n == 4 else f"u{n}"
        add(services.redis, "test:events", {"user_id": user, "item_id": "i", "type": "view"})
    drain(consumer)
    assert count_rows(services, "events") == 8
    letters = dead_letters(services.redis, "test:events:dead")
    assert [letter["user_id"] for letter in letters] == ["poison"]
    assert (
        letters[0]["dead_letter_reason"] == "could not be stored: ValueError: cannot store this one"
    )


def test_messages_left_by_a_consumer_that_died_after_its_commit_are_stored_once(
    services: Services, stream_settings: Settings, consumer: StreamConsumer
) -> None:
    """Consumer A reads and commits, then dies before acknowledging: B claims the messages once
    they have been idle long enough, finds them stored, and acknowledges them."""
    client = services.redis
    for n in range(30):
        add(client, "test:events", {"event_id": f"e{n}", "user_id": f"u{n % 4}", "item_id": "i",
                                    "type": "view"})  # fmt: skip
    dead = StreamConsumer(client, services.ingestor, stream_settings, consumer="dead")
    messages = dead._read(">", block=False)
    raw = [dead.event_of(message_id, fields) for message_id, fields in messages[:20]]
    services.ingestor.ingest_raw(raw)  # committed, never acknowledged
    assert pending(client, "test:events", "test-group") == 30
    assert count_rows(services, "events") == 20

    time.sleep(0.3)
    drain(consumer)
    assert count_rows(services, "events") == 30
    assert pending(client, "test:events", "test-group") == 0
    claimed = REGISTRY.get_sample_value("recsys_stream_claimed_total", {"stream": "test:events"})
    assert claimed is not None
    assert claimed >= 30
    # Redelivered events are duplicates: no profile counts one twice.
    assert services.profiles.read("u1").events == 8


def test_a_message_delivered_too_often_is_dead_lettered(
    services: Services, stream_settings: Settings
) -> None:
    client = services.redis
    settings = make_settings(stream_settings, stream_max_deliveries=2)
    consumer = StreamConsumer(client, services.ingestor, settings, consumer="c1")
    consumer.ensure_group()
    message_id = add(client, "test:events", {"user_id": "u", "item_id": "i", "type": "view"})
    # Two consumers took it and died with it: delivered twice already.
    client.xreadgroup("test-group", "a", {"test:events": ">"})
    client.xclaim("test:events", "test-group", "b", 0, [message_id])
    time.sleep(0.3)
    drain(consumer)
    letters = dead_letters(client, "test:events:dead")
    assert len(letters) == 1
    assert letters[0]["dead_letter_reason"] == "delivered 3 times without being acknowledged"
    assert count_rows(services, "events") == 0


def test_lag_and_pending_are_exported(services: Services, consumer: StreamConsumer) -> None:
    client = services.redis
    labels = {"stream": "test:events", "group": "test-group"}
    add(client, "test:events", {"user_id": "u", "item_id": "i", "type": "view"})
    time.sleep(0.05)
    consumer.update_metrics()
    lag_seconds = REGISTRY.get_sample_value("recsys_stream_consumer_lag_seconds", labels)
    assert lag_seconds is not None
    assert lag_seconds > 0.04
    drain(consumer)
    consumer.update_metrics()
    assert REGISTRY.get_sample_value("recsys_stream_consumer_lag_seconds", labels) == 0
    assert REGISTRY.get_sample_value("recsys_stream_pending_messages", labels) == 0


def consumer_process(
    settings: Settings, services: Services, tmp_path: Path, name: str, *extra: str
) -> subprocess.Popen[bytes]:
    redis_url = settings.redis_url or f"unix://{services.embedded_redis.socket_file}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_DATABASE_URL=settings.sqlalchemy_url,
        RECSYS_REDIS_URL=redis_url,
        RECSYS_REDIS_TIMEOUT_SECONDS="60",
        RECSYS_VAR_DIR=str(tmp_path),
        RECSYS_STREAM_KEY="test:events",
        RECSYS_STREAM_GROUP="test-group",
        RECSYS_STREAM_DEAD_LETTER_KEY="test:events:dead",
        RECSYS_STREAM_CLAIM_IDLE_SECONDS="0.5",
        RECSYS_STREAM_BLOCK_MS="100",
        RECSYS_STREAM_METRICS_PORT="0",
        RECSYS_RECONCILE_INTERVAL_SECONDS="3600",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "app", "consume-stream", "--consumer", name, *extra],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition: Any, seconds: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            raise AssertionError(process.communicate()[0].decode())
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_consumer_killed_mid_batch_and_restarted_stores_every_message_once(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    """The consumer is SIGKILLed after committing a batch and before acknowledging it (Redis
    holds its writes); the next consumer claims that batch, finds it stored, and finishes the
    stream: every message stored once, nothing pending, profiles consistent after the
    reconciler's rebuild."""
    client = services.redis
    total = 3000
    pipe = client.pipeline(transaction=False)
    for n in range(total):
        pipe.xadd("test:events", {"user_id": f"u{n % 37}", "item_id": f"i{n % 11}",
                                  "type": "view" if n % 3 else "click"})  # fmt: skip
    pipe.execute()

    first = consumer_process(settings, services, tmp_path, "first", "--batch-size", "1000")
    try:
        wait_for(lambda: count_rows(services, "events") > 0, 60, first)
        client.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        try:
            # Committed, not acknowledged: its profile update (a write) waits on the pause.
            committed = count_rows(services, "events")
            unacknowledged = pending(client, "test:events", "test-group")
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
    finally:
        if first.poll() is None:
            first.kill()
    assert committed == 1000
    assert unacknowledged == 1000

    second = consumer_process(settings, services, tmp_path, "second", "--batch-size", "500")
    try:
        wait_for(
            lambda: (
                count_rows(services, "events") == total
                and pending(client, "test:events", "test-group") == 0
            ),
            60,
            second,
        )
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, output.decode()
    assert "SIGTERM: finishing the batch at hand" in output.decode()

    with services.sessions() as session:
        ids = session.scalars(select(Event.event_id)).all()
    assert len(ids) == len(set(ids)) == total
    assert dead_letters(client, "test:events:dead") == []
    # The killed consumer's batch never reached the live profiles: the reconciler rebuilds them.
    assert services.rebuilder.reconcile() > 0
    with services.sessions() as session:
        per_user = dict(
            session.execute(select(Event.user_id, func.count()).group_by(Event.user_id)).all()
        )
    for user_id, events in per_user.items():
        assert services.profiles.read(user_id).events == events, user_id

"""Kept lists copied into process memory through Redis client-side caching
(app.serving.tracking), against the real Redis server of the backend."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from app.config import Settings
from app.services import Services, connect_tracked_hashes
from app.serving.answers import AnswerCache
from app.serving.tracking import Address, TrackedHashes
from tests.conftest import make_settings
from tests.serving.conftest import hget_calls

Check = Callable[[TrackedHashes], Awaitable[None]]


@pytest.fixture
def run_tracked(settings: Settings, services: Services) -> Callable[..., None]:
    """Runs a check with a fresh reader of the backend's Redis on an event loop of its own."""

    def run(check: Check, **overrides: Any) -> None:
        tracked = connect_tracked_hashes(
            make_settings(settings, **overrides), services.embedded_redis
        )
        assert tracked is not None

        async def main() -> None:
            try:
                await check(tracked)
            finally:
                tracked.close()

        asyncio.run(main())

    return run


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.001)


def test_a_value_read_once_is_answered_from_memory(
    services: Services, run_tracked: Callable[[Check], None]
) -> None:
    client = services.redis
    client.hset("t:user", mapping={"a": b"list-a", "b": b"list-b"})

    async def check(tracked: TrackedHashes) -> None:
        assert tracked.get(b"t:user", b"a") is None  # not read yet
        assert await tracked.fetch(b"t:user", b"a") == b"list-a"
        before = hget_calls(client)
        for _ in range(50):
            assert tracked.get(b"t:user", b"a") == b"list-a"
        assert hget_calls(client) == before
        # Another field of the same key is read once, then known too; absence is never kept.
        assert tracked.get(b"t:user", b"b") is None
        assert await tracked.fetch(b"t:user", b"b") == b"list-b"
        assert tracked.get(b"t:user", b"b") == b"list-b"
        assert await tracked.fetch(b"t:user", b"none") is None
        assert tracked.get(b"t:user", b"none") is None

    run_tracked(check)


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda c: c.hset("t:user", "a", b"newer"), id="hset"),
        pytest.param(lambda c: c.hset("t:user", "other", b"x"), id="hset-other-field"),
        pytest.param(lambda c: c.delete("t:user"), id="del"),
        pytest.param(lambda c: c.expire("t:user", 100), id="expire"),
        pytest.param(lambda c: c.flushdb(), id="flushdb"),
    ],
)
def test_any_write_by_another_client_ends_the_copy(
    services: Services,
    run_tracked: Callable[[Check], None],
    write: Callable[[redis.Redis], object],
) -> None:
    """Without the event loop's help: the read itself takes the invalidation off the socket.
    Redis may send it a moment after it answered the writer, hence the deadline."""
    client = services.redis

    async def check(tracked: TrackedHashes) -> None:
        for _ in range(100):
            client.hset("t:user", "a", b"older")
            assert await tracked.fetch(b"t:user", b"a") == b"older"
            assert tracked.get(b"t:user", b"a") == b"older"
            write(client)
            deadline = time.monotonic() + 2.0
            while tracked.get(b"t:user", b"a") is not None and time.monotonic() < deadline:
                time.sleep(0.0001)  # the loop never runs: only get() reads the socket
            assert tracked.get(b"t:user", b"a") is None
        assert tracked.size == 0

    run_tracked(check)


def test_a_write_right_after_the_read_is_not_kept(
    services: Services, run_tracked: Callable[[Check], None]
) -> None:
    """The reply and the write's invalidation arrive together: the copy made from the reply is
    dropped again before anyone can use it, though the read itself answers the older value."""
    client = services.redis
    client.hset("t:user", "a", b"older")

    async def check(tracked: TrackedHashes) -> None:
        await tracked.fetch(b"t:user", b"warm-up")  # connected
        reading = asyncio.ensure_future(tracked.fetch(b"t:user", b"a"))
        await asyncio.sleep(0)  # the HGET is sent; the loop does not read its reply yet
        time.sleep(0.05)  # Redis answers it
        client.hset("t:user", "a", b"newer")  # and then invalidates it
        assert await reading == b"older"
        assert tracked.get(b"t:user", b"a") is None
        assert await tracked.fetch(b"t:user", b"a") == b"newer"

    run_tracked(check)


def test_a_lost_connection_forgets_every_copy_and_reconnects(
    services: Services, run_tracked: Callable[[Check], None]
) -> None:
    client = services.redis
    client.hset("t:user", "a", b"list-a")

    async def check(tracked: TrackedHashes) -> None:
        tracked.retry_seconds = 0.2
        assert await tracked.fetch(b"t:user", b"a") == b"list-a"
        names = [c for c in client.client_list() if c.get("name") == tracked.name]
        assert len(names) == 1
        client.client_kill_filter(_id=names[0]["id"])
        await asyncio.sleep(0.05)  # the loop sees the connection close
        assert tracked.get(b"t:user", b"a") is None
        assert not tracked.connected
        # Writes while it was gone cannot be missed: nothing is kept, and it reads anew.
        client.hset("t:user", "a", b"newer")
        with pytest.raises(redis.ConnectionError):
            await tracked.fetch(b"t:user", b"a")  # right after the failure: not retried yet
        await asyncio.sleep(0.25)
        assert await tracked.fetch(b"t:user", b"a") == b"newer"
        assert tracked.get(b"t:user", b"a") == b"newer"

    run_tracked(check)


def test_an_unreachable_server_fails_reads_quickly() -> None:
    tracked = TrackedHashes(Address(port=1), timeout=1.0, max_bytes=10_000)

    async def check() -> None:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            await tracked.fetch(b"k", b"f")
        with pytest.raises(redis.ConnectionError):
            await tracked.fetch(b"k", b"f")  # not retried within retry_seconds
        assert time.monotonic() - started < 1.0
        assert tracked.get(b"k", b"f") is None

    asyncio.run(check())


def test_a_refused_handshake_turns_copies_off(settings: Settings, services: Services) -> None:
    """A server that refuses RESP3 or tracking (before Redis 6), here a login it refuses: the
    reader says so once, and kept lists are then read without it."""
    tracked = connect_tracked_hashes(settings, services.embedded_redis)
    assert tracked is not None
    tracked.address = dataclasses.replace(tracked.address, username="nobody", password="wrong")

    async def check() -> None:
        with pytest.raises(redis.ResponseError):
            await tracked.fetch(b"k", b"f")
        assert tracked.unsupported
        assert not tracked.connected
        assert tracked.get(b"k", b"f") is None

    asyncio.run(check())


def test_copies_stay_within_their_memory(
    services: Services, run_tracked: Callable[..., None]
) -> None:
    client = services.redis
    value = b"x" * 3_000
    for n in range(5):
        client.hset(f"t:user-{n}", mapping={"a": value, "b": value})

    async def check(tracked: TrackedHashes) -> None:
        for n in range(5):
            await tracked.fetch(f"t:user-{n}".encode(), b"a")
            await tracked.fetch(f"t:user-{n}".encode(), b"b")
            await tracked.fetch(b"t:user-0", b"a")  # read again: the most recent
        assert 12_000 < tracked.memory <= 20_000
        assert tracked.size == 3
        assert tracked.get(b"t:user-0", b"a") == value
        assert tracked.get(b"t:user-1", b"a") is None  # the least recently read went first
        assert tracked.get(b"t:user-4", b"b") == value
        client.delete("t:user-4")
        await until(lambda: tracked.get(b"t:user-4", b"b") is None)
        assert tracked.size == 2
        client.flushdb()
        await until(lambda: tracked.get(b"t:user-0", b"a") is None)
        assert (tracked.size, tracked.memory) == (0, 0)

    run_tracked(check, recommendation_memory_mb=0.02)


def test_addresses_from_urls(settings: Settings) -> None:
    assert Address.from_url("redis://:secret@cache.internal:6380/3") == Address(
        host="cache.internal", port=6380, db=3, password="secret"
    )
    assert Address.from_url("redis://reader:pw@127.0.0.1/0") == Address(
        username="reader", password="pw"
    )
    assert Address.from_url("unix:///run/redis.sock?db=2") == Address(path="/run/redis.sock", db=2)
    assert Address.from_url("rediss://cache.internal:6380/0") is None  # TLS: read each time
    assert connect_tracked_hashes(make_settings(settings, recommendation_memory_mb=0)) is None


def test_failed_reads_rank_anew_with_one_warning_per_interval(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    answers = AnswerCache(services.redis, seconds=300)
    answers.attach(tracked=TrackedHashes(Address(port=1), timeout=1.0, max_bytes=10_000))

    async def check() -> None:
        for _ in range(20):
            assert await answers.lookup("u1", b"field", "v1", 1, time.time()) is None

    with caplog.at_level("WARNING", logger="app.serving.answers"):
        asyncio.run(check())
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.serving.answers"]
    assert len(warnings) == 1
    assert "failed 1 time(s)" in warnings[0]

"""Hash fields read through Redis client-side caching, so that reading one again costs no
round trip while Redis says it has not changed.

One RESP3 connection per process reads with ``CLIENT TRACKING ON``: Redis then remembers
which keys the connection read and, when one of them is written, deleted, expired or
flushed, sends an ``invalidate`` message on the same connection. Values read are kept in
process memory until that message arrives. What keeps the copy exact:

- Replies and invalidations come on one connection, in the order Redis produced them, and are
  applied in that order as they are parsed: a value is copied when its reply is parsed, so an
  invalidation sent after the read always removes it.
- Every :meth:`TrackedHashes.get` first takes whatever the socket holds, without waiting, so
  an invalidation that arrived before the request is applied even if the event loop has not
  handled the socket yet.
- Losing the connection (or a reply slower than the timeout) forgets every copy; reads fall
  back to "not known" until a new connection tracks again. The copies of that moment stay
  readable as *last known* values (:meth:`TrackedHashes.last_known`), for answers marked as
  degraded while Redis is away, until a new connection tracks again.

Redis writes the invalidation in the same pass over its clients in which it answers the write,
sometimes just after the answer: for those microseconds a copy can outlive the write. A user's
event reaches the profile through the ingestion endpoint, whose answer travels back to the
client and a new request comes in before a copy is used again; that takes far longer.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import hiredis
import redis
from redis.connection import parse_url

from app.monitoring import TRACKED_INVALIDATIONS

log = logging.getLogger(__name__)


# After a failed connection, how long reads go without one before the next attempt.
RECONNECT_SECONDS = 1.0
# Bytes a copied key and a copied field take beyond their contents (dict entries, objects).
KEY_OVERHEAD = 400
FIELD_OVERHEAD = 100


@dataclass(slots=True)
class _Copies:
    """The fields of one key copied, and the bytes they take, about."""

    fields: dict[bytes, bytes]
    size: int


@dataclass(frozen=True, slots=True)
class Address:
    """Where the Redis server listens and how to log in."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Address | None:
        """The address of ``redis://`` and ``unix://`` URLs; None for others (TLS)."""
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        if options.get("connection_class") not in (None, redis.UnixDomainSocketConnection):
            return None
        return cls(
            host=options.get("host") or "127.0.0.1",
            port=int(options.get("port") or 6379),
            path=options.get("path"),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
        )


class TrackedHashes:
    """Hash fields of Redis, copied into process memory while Redis tracks them.

    Runs on one event loop; not thread-safe. Copies take at most about ``max_bytes``, the least
    recently read forgotten first.
    """

    def __init__(
        self, address: Address, *, timeout: float, max_bytes: int, name: str = "recsys"
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.name = name
        self.retry_seconds = RECONNECT_SECONDS
        # Set when the server refuses the handshake: then nothing is ever copied.
        self.unsupported = False
        self._copies: OrderedDict[bytes, _Copies] = OrderedDict()
        self._bytes = 0  # what every copy takes, about
        # The copies when the connection was lost: no longer known to be current.
        self._last_known: dict[bytes, _Copies] = {}
        self._sock: socket.socket | None = None
        self._poll = select.poll()
        # Received bytes land here: a fresh buffer per read would be allocated (and, as large,
        # mapped and unmapped) on every read.
        self._buffer = bytearray(65_536)
        self._reader = hiredis.Reader()
        # Futures waiting for replies, in the order the commands were sent; with the key and
        # field a reply is a copy of (None for other commands).
        self._waiting: deque[tuple[asyncio.Future[Any], bytes | None, bytes | None]] = deque()
        self._connecting: asyncio.Task[None] | None = None
        self._ready = False  # connected, and tracking is on
        self._failed_at = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connected(self) -> bool:
        return self._ready

    @property
    def size(self) -> int:
        """Keys copied now."""
        return len(self._copies)

    @property
    def memory(self) -> int:
        """Bytes the copies take, about."""
        return self._bytes

    def get(self, key: bytes, field: bytes) -> bytes | None:
        """The field's value as Redis holds it now, if a copy is kept; None when it has to
        be read (:meth:`fetch`). Only values found are copied, never their absence."""
        if not self._ready:
            return None
        if self._poll.poll(0):  # a readiness check is a quarter of a failed recv's cost
            self._receive()
        copies = self._copies.get(key)
        if copies is None:
            return None
        value = copies.fields.get(field)
        if value is not None:
            self._copies.move_to_end(key)
        return value

    def last_known(self, key: bytes) -> dict[bytes, bytes]:
        """While there is no connection, the fields of ``key`` copied before it was lost
        (possibly changed since); empty otherwise."""
        if self._ready:
            return {}
        copies = self._last_known.get(key)
        return {} if copies is None else copies.fields

    async def fetch(self, key: bytes, field: bytes) -> bytes | None:
        """``HGET key field`` through the tracking connection, keeping a copy of a value found.

        Raises ``redis.ConnectionError`` when there is no connection (one is attempted at most
        every ``retry_seconds``) or the reply does not come in time."""
        await self._ensure_connected()
        value: bytes | None = await self._call((b"HGET", key, field), key, field)
        return value

    def close(self) -> None:
        """Close the connection and forget every copy."""
        self._lost(None)
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None

    async def _ensure_connected(self) -> None:
        if self._ready:
            return
        if self._connecting is None:
            if time.monotonic() - self._failed_at < self.retry_seconds:
                raise redis.ConnectionError("no tracking connection (retried shortly)")
            self._connecting = asyncio.ensure_future(self._connect())
        task = self._connecting
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        address = self.address
        sock: socket.socket | None = None
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: Any = address.path
            else:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM),
                    self.timeout,
                )
                family, kind, proto, _, target = infos[0]
                sock = socket.socket(family, kind, proto)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, target), self.timeout)
        except (OSError, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            self._failed_at = time.monotonic()
            raise redis.ConnectionError(f"cannot connect to Redis for tracking: {exc}") from exc
        self._sock = sock
        self._reader = hiredis.Reader()
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        loop.add_reader(sock.fileno(), self._receive)
        hello: list[bytes | str] = [b"HELLO", b"3"]
        if address.password is not None:
            hello += [b"AUTH", address.username or "default", address.password]
        hello += [b"SETNAME", self.name]
        try:
            await self._call(hello)
            if address.db:
                await self._call((b"SELECT", str(address.db)))
            await self._call((b"CLIENT", b"TRACKING", b"ON"))
        except redis.ResponseError as exc:
            # Refused, not failed: a server before Redis 6 (no RESP3, no tracking), or a login
            # it does not accept. Asking again would be refused again.
            self._lost(exc)
            self.unsupported = True
            log.warning(
                "Redis refused client-side caching (%s); kept lists are read from Redis on "
                "every request",
                exc,
            )
            raise
        except redis.RedisError as exc:
            self._lost(exc)
            self._failed_at = time.monotonic()
            raise
        self._ready = True
        self._last_known = {}

    async def _call(
        self, command: Any, key: bytes | None = None, field: bytes | None = None
    ) -> Any:
        sock = self._sock
        if sock is None:
            raise redis.ConnectionError("the tracking connection is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((future, key, field))
        try:
            # Commands are a few dozen bytes: the socket's buffer takes them whole unless
            # Redis stopped reading, which the timeout below then reports.
            sock.send(hiredis.pack_command(tuple(command)))
        except OSError as exc:
            self._lost(exc)
            raise redis.ConnectionError(f"the tracking connection failed: {exc}") from exc
        try:
            reply = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            self._lost(TimeoutError("no reply in time"))
            raise redis.TimeoutError(
                f"Redis did not answer the tracking connection in {self.timeout} s"
            ) from None
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
        return reply

    def _receive(self) -> None:
        """Parse what the socket holds, without waiting: replies and invalidations in order."""
        sock = self._sock
        if sock is None:
            return
        buffer = self._buffer
        while True:
            try:
                size = sock.recv_into(buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                self._lost(exc)
                return
            if not size:
                self._lost(ConnectionResetError("Redis closed the tracking connection"))
                return
            self._reader.feed(buffer, 0, size)  # type: ignore[arg-type]  # any buffer
            if size < len(buffer):
                break
        try:
            while (message := self._reader.gets()) is not False:
                if isinstance(message, hiredis.PushNotification):
                    self._pushed(message)
                elif self._waiting:
                    self._replied(message)
        except hiredis.ProtocolError as exc:
            self._lost(exc)

    def _replied(self, message: Any) -> None:
        future, key, field = self._waiting.popleft()
        if key is not None and field is not None and isinstance(message, bytes):
            copies = self._copies.get(key)
            if copies is None:
                copies = self._copies[key] = _Copies({}, 0)
                added = len(key) + KEY_OVERHEAD
            else:
                self._copies.move_to_end(key)
                added = 0
            previous = copies.fields.get(field)
            if previous is not None:
                added -= len(field) + len(previous) + FIELD_OVERHEAD
            copies.fields[field] = message
            added += len(field) + len(message) + FIELD_OVERHEAD
            copies.size += added
            self._bytes += added
            while self._bytes > self.max_bytes and self._copies:
                self._forget(next(iter(self._copies)))
        if not future.done():
            future.set_result(message)

    def _pushed(self, message: list[Any]) -> None:
        if not message or message[0] != b"invalidate":
            return
        keys = message[1] if len(message) > 1 else None
        if keys is None:  # FLUSHDB, FLUSHALL, or tracking memory reclaimed
            TRACKED_INVALIDATIONS.inc(len(self._copies))
            self._forget_all()
            return
        TRACKED_INVALIDATIONS.inc(sum(self._forget(key) for key in keys))

    def _forget(self, key: bytes) -> bool:
        copies = self._copies.pop(key, None)
        if copies is None:
            return False
        self._bytes -= copies.size
        return True

    def _forget_all(self) -> None:
        self._copies.clear()
        self._bytes = 0

    def _lost(self, exc: BaseException | None) -> None:
        sock, self._sock = self._sock, None
        self._ready = False
        if exc is not None and self._copies:
            self._last_known = dict(self._copies)
        elif exc is None:
            self._last_known = {}
        self._forget_all()
        waiting, self._waiting = self._waiting, deque()
        if sock is None:
            return
        if exc is not None:
            log.warning("the Redis tracking connection failed; kept lists are read anew: %s", exc)
            self._failed_at = time.monotonic()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
        for future, _, _ in waiting:
            if not future.done():
                future.set_exception(redis.ConnectionError("the tracking connection was lost"))

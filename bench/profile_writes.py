"""Where Redis spends its time on the live-profile write of event ingestion.

Applies the ingestion benchmark's events (same users, items and mix) to live profiles through
``ProfileStore.apply``, the call the ingestion path makes after each database commit, batch by
batch, and reports per 1,000 events:

- the Redis server's CPU (``INFO cpu``), median and range over chunks of batches;
- the CPU of the calling thread, the service's share of the write (building the script calls,
  sending them, reading the answers), likewise;
- per command, from ``INFO commandstats``: calls and the time Redis counts for it (wall time
  inside the server, including what the scripts' own commands take);
- the same again for the two parts of the write alone: the per-user profile scripts and the
  global trending/activity counters.

Run from the project root::

    .venv/bin/python bench/profile_writes.py --redis-url redis://127.0.0.1:6379/13

The Redis database named is flushed, and its server's command statistics are reset: give it a
database of its own on a server nothing else uses while it runs.

CPU time on a shared machine moves by a third from one run to the next, more than most changes
to the scripts. ``--callgrind`` counts instructions instead, which repeat exactly for the same
server, scripts and events whatever else the machine does: it starts a private ``redis-server``
under ``valgrind --tool=callgrind`` (both must be installed; it runs about 50 times slower, so
give it fewer batches) and reports the instructions the server executes per 1,000 events, for
the same three parts::

    .venv/bin/python bench/profile_writes.py --callgrind --batches 40 --warmup 10

Results go to ``bench/results/profile_writes.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from harness import EventFactory, free_port, row, write_results

from app.config import Settings
from app.profiles import ProfileEvent, ProfileStore

Batch = list[ProfileEvent]


class ProfileScriptsOnly(ProfileStore):
    """The write without the global trending and activity counters."""

    def _add_counters(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def make_batches(count: int, size: int, users: int, items: int, seed: int) -> list[Batch]:
    factory = EventFactory(users, items, seed)
    now = datetime.now(UTC)
    batches = []
    for _ in range(count):
        batch = []
        for _ in range(size):
            e = factory.event(now)
            batch.append(
                ProfileEvent(
                    e["event_id"],
                    e["user_id"],
                    e["item_id"],
                    e["type"],
                    e.get("value"),
                    datetime.fromisoformat(e["timestamp"]),
                )
            )
        batches.append(batch)
    return batches


def server_cpu(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_stats(client: redis.Redis) -> dict[str, tuple[int, float]]:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
        for name, v in stats.items()
    }


def measure(
    client: redis.Redis,
    write: Callable[[Batch], None],
    batches: Sequence[Batch],
    warmup: int,
    chunk: int,
) -> dict[str, Any]:
    """Flush, warm the profiles up with ``warmup`` batches, then measure the rest."""
    client.flushdb()
    for batch in batches[:warmup]:
        write(batch)
    client.config_resetstat()
    events = 0
    per_chunk: list[float] = []
    caller_per_chunk: list[float] = []
    rest = batches[warmup:]
    for start in range(0, len(rest), chunk):
        part = rest[start : start + chunk]
        before = server_cpu(client)
        caller_before = time.thread_time()
        for batch in part:
            write(batch)
        caller = time.thread_time() - caller_before
        n = sum(len(b) for b in part)
        events += n
        per_chunk.append((server_cpu(client) - before) / n * 1e6)
        caller_per_chunk.append(caller / n * 1e6)
    stats = command_stats(client)
    for ours in ("info", "config|resetstat"):
        stats.pop(ours, None)
    return {
        "cpu_ms": per_chunk,
        "caller_cpu_ms": caller_per_chunk,
        "commands": {
            name: (calls / events * 1000, usec / events)
            for name, (calls, usec) in sorted(stats.items(), key=lambda kv: -kv[1][1])
        },
    }


class CallgrindServer:
    """A private ``redis-server`` run under callgrind, whose instruction counts can be read."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        port = free_port()
        self.process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={workdir / 'callgrind.out'}",
                "redis-server",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=port)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start under valgrind") from None
                time.sleep(0.2)

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def zero(self) -> None:
        self._control("--zero")

    def instructions(self) -> int:
        """Instructions executed since the last ``zero``, read from a dump made now."""
        before = set(self.workdir.glob("callgrind.out*"))
        self._control("--dump")
        (dump,) = set(self.workdir.glob("callgrind.out*")) - before
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise SystemExit(f"no instruction count in {dump}")

    def stop(self) -> None:
        with contextlib.suppress(redis.ConnectionError):
            self.client.shutdown(nosave=True)
        self.process.wait(timeout=120)


@contextlib.contextmanager
def callgrind_server() -> Iterator[CallgrindServer]:
    for tool in ("valgrind", "callgrind_control", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"--callgrind needs {tool} on the PATH")
    with tempfile.TemporaryDirectory(prefix="profile-writes-") as workdir:
        server = CallgrindServer(Path(workdir))
        try:
            yield server
        finally:
            server.stop()


def count_instructions(
    server: CallgrindServer, write: Callable[[Batch], None], batches: Sequence[Batch], warmup: int
) -> float:
    """Flush, warm up with ``warmup`` batches, then count the server's instructions for the
    rest; answers millions of instructions per 1,000 events."""
    server.client.flushdb()
    for batch in batches[:warmup]:
        write(batch)
    server.zero()
    for batch in batches[warmup:]:
        write(batch)
    counted = server.instructions()
    return counted / sum(len(b) for b in batches[warmup:]) * 1000 / 1e6


def report(title: str, result: dict[str, Any]) -> None:
    print(f"\n== {title} ==")
    for label, key in (("Redis CPU", "cpu_ms"), ("caller's CPU", "caller_cpu_ms")):
        cpu = result[key]
        print(
            f"{label} per 1,000 events: median {statistics.median(cpu):.2f} ms "
            f"({min(cpu):.2f}-{max(cpu):.2f} over {len(cpu)} chunks)"
        )
    print(f"{'command':<20} {'calls/1000 ev':>14} {'ms/1000 ev':>11}")
    for name, (calls, ms) in result["commands"].items():
        if calls >= 0.5:
            print(f"{name:<20} {calls:>14.0f} {ms:>11.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--redis-url", help="a database of its own: flushed")
    target.add_argument(
        "--callgrind", action="store_true", help="count a private server's instructions"
    )
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=50, help="batches before measuring")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=10, help="batches per CPU reading")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args(argv)
    if args.batches <= args.warmup:
        parser.error("--batches must exceed --warmup")

    batches = make_batches(args.batches, args.batch_size, args.users, args.items, args.seed)
    if args.callgrind:
        with callgrind_server() as server:
            return count_parts(server, batches, args)
    return time_parts(redis.Redis.from_url(args.redis_url), batches, args)


def writes(client: redis.Redis) -> list[tuple[str, Callable[[Batch], None]]]:
    """The three writes measured: the whole write and each of its two parts."""
    store = ProfileStore(client, Settings())
    profiles_only = ProfileScriptsOnly(client, Settings())
    now = datetime.now(UTC)

    def counters_only(batch: Batch) -> None:
        pipe = client.pipeline(transaction=False)
        store._add_counters(
            pipe, [(e.occurred_at.timestamp(), store.weights[e.type], e) for e in batch], now
        )
        store._execute(pipe)

    return [
        ("the whole write (ProfileStore.apply)", lambda b: store.apply(b, now)),
        ("profile scripts alone", lambda b: profiles_only.apply(b, now)),
        ("trending and activity counters alone", counters_only),
    ]


def heading(client: redis.Redis, args: argparse.Namespace) -> None:
    print(
        f"{args.batches - args.warmup} batches of {args.batch_size} measured after "
        f"{args.warmup}; {args.users:,} users, {args.items:,} items; "
        f"Redis {client.info('server')['redis_version']}"
    )


def time_parts(client: redis.Redis, batches: Sequence[Batch], args: argparse.Namespace) -> int:
    heading(client, args)
    started = time.monotonic()
    parts, rows = {}, []
    for title, write in writes(client):
        parts[title] = measure(client, write, batches, args.warmup, args.chunk)
        report(title, parts[title])
        for label, key in (("Redis CPU", "cpu_ms"), ("caller's CPU", "caller_cpu_ms")):
            median = statistics.median(parts[title][key])
            rows.append(row(f"{title}: {label} ms per 1,000 events", median, "{:.2f}"))
    client.flushdb()
    print(f"\n{time.monotonic() - started:.0f} s")
    details = {"config": vars(args), "redis": client.info("server")["redis_version"]}
    write_results("profile_writes", details | {"parts": parts}, rows)
    return 0


def count_parts(server: CallgrindServer, batches: Sequence[Batch], args: argparse.Namespace) -> int:
    heading(server.client, args)
    started = time.monotonic()
    print("instructions Redis executes per 1,000 events (callgrind):")
    parts = {}
    for title, write in writes(server.client):
        parts[title] = count_instructions(server, write, batches, args.warmup)
        print(f"  {title:<40} {parts[title]:8.1f} million")
    print(f"\n{time.monotonic() - started:.0f} s")
    rows = [
        row(f"{t}: million instructions per 1,000 events", m, "{:.1f}") for t, m in parts.items()
    ]
    write_results("profile_writes", {"config": vars(args), "instructions_millions": parts}, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

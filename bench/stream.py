"""Stream consumer benchmark: how fast ``python -m app consume-stream`` drains a Redis Stream.

A producer adds N events to the stream first (pipelined ``XADD``, not timed); then one or more
consumer processes are started and timed from their start until the consumer group has
acknowledged every message. Every event goes the whole way: cleansing, validation, the database
commit, the live profile update in Redis, the acknowledgement. The run checks at the end that the
database holds each event exactly once and that nothing is pending.

Run from the project root::

    .venv/bin/python bench/stream.py                      # SQLite file + embedded Redis
    .venv/bin/python bench/stream.py --events 200000 --consumers 2 \\
        --database-url postgresql://postgres@127.0.0.1:5432/recsys_bench_stream

A PostgreSQL database named in the URL is emptied (every table dropped) and migrated, and the
Redis database named is flushed: give the benchmark databases of its own. Results go to
``bench/results/stream.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from harness import drop_all_tables, row, service_env, write_results

STREAM = "bench:events"
GROUP = "bench-ingest"
TYPES = ["view"] * 60 + ["click"] * 20 + ["add_to_cart"] * 7 + ["like"] * 4 + ["purchase"] * 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--database-url", default="", help="default: a SQLite file")
    parser.add_argument("--redis-url", default="", help="default: an embedded Redis server")
    args = parser.parse_args()

    from sqlalchemy import func, select

    from app.config import Settings
    from app.db.models import Event, PendingProfileUpdate
    from app.services import Services

    scratch = Path(tempfile.mkdtemp(prefix="recsys-bench-stream-"))
    if args.database_url:
        drop_all_tables(args.database_url)
    settings = Settings(
        _env_file=None,
        var_dir=scratch,
        database_url=args.database_url,
        redis_url=args.redis_url,
        stream_key=STREAM,
        stream_group=GROUP,
    )
    services = Services.create(settings, migrate=True)
    client = services.redis
    # The database was emptied: so is Redis, or the profiles of an earlier run would count the
    # same event ids again.
    client.flushdb()
    # As a service that has run before: Redis holds the (empty) profiles, so no consumer's
    # reconciler starts a rebuild of all profiles while the others apply live updates.
    services.rebuilder.ensure_populated()
    redis_url = args.redis_url or f"unix://{services.embedded_redis.socket_file}"

    rng = random.Random(42)
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for n in range(args.events):
        user = int(args.users * rng.random() ** 1.6)
        item = int(args.items * rng.random() ** 2)
        pipe.xadd(
            STREAM,
            {
                "event_id": f"b-{n}",
                "user_id": f"user-{user}",
                "item_id": f"sku-{item}",
                "type": TYPES[rng.randrange(len(TYPES))],
            },
        )
        if n % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    produced = time.perf_counter() - started
    print(f"produced {args.events:,} messages in {produced:.1f} s", flush=True)

    env = service_env(
        scratch,
        database_url=settings.sqlalchemy_url,
        redis_url=redis_url,
        RECSYS_STREAM_KEY=STREAM,
        RECSYS_STREAM_GROUP=GROUP,
        RECSYS_STREAM_DEAD_LETTER_KEY=f"{STREAM}:dead-letter",
        RECSYS_STREAM_METRICS_PORT="0",
        RECSYS_AUTO_MIGRATE="false",
    )
    # Start-up (imports, connections) is not the consumer's throughput: wait until every
    # consumer has joined the group, then time the draining.
    consumers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "consume-stream",
                "--consumer",
                f"bench-{k}",
                "--batch-size",
                str(args.batch_size),
            ],
            env=env,
            cwd=scratch,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k in range(args.consumers)
    ]
    try:
        cpu_before: dict[int, float] = {}
        deadline = time.monotonic() + 120
        while True:
            groups = client.xinfo_groups(STREAM) if client.exists(STREAM) else []
            joined = sum(int(g["consumers"]) for g in groups)  # type: ignore[union-attr]
            if joined >= args.consumers:
                break
            if time.monotonic() > deadline:
                raise SystemExit("consumers did not start")
            time.sleep(0.01)
        start = time.perf_counter()
        for process in consumers:
            cpu = psutil.Process(process.pid).cpu_times()
            cpu_before[process.pid] = cpu.user + cpu.system
        while True:
            info = next(
                g
                for g in client.xinfo_groups(STREAM)
                if g["name"] in (GROUP, GROUP.encode())  # type: ignore[union-attr]
            )
            delivered_all = info["last-delivered-id"] in (
                client.xinfo_stream(STREAM)["last-generated-id"],  # type: ignore[index]
            )
            if delivered_all and int(info["pending"]) == 0:
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        consumer_cpu = 0.0
        for process in consumers:
            cpu = psutil.Process(process.pid).cpu_times()
            consumer_cpu += cpu.user + cpu.system - cpu_before[process.pid]
    finally:
        for process in consumers:
            process.terminate()
        for process in consumers:
            process.wait(timeout=60)

    with services.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(Event)).scalar_one()
        distinct = connection.execute(
            select(func.count(func.distinct(Event.event_id)))
        ).scalar_one()
    # A profile update that timed out left pending marks: the reconciler's rebuild is part of
    # the guarantee, so it runs before the profiles are compared.
    with services.engine.connect() as connection:
        deferred = connection.execute(
            select(func.count()).select_from(PendingProfileUpdate)
        ).scalar_one()
    if deferred:
        services.rebuilder.reconcile()
    busiest = f"user-{0}"
    profile_events = services.profiles.read(busiest).events
    with services.engine.connect() as connection:
        busiest_events = connection.execute(
            select(func.count()).select_from(Event).where(Event.user_id == busiest)
        ).scalar_one()
    result: dict[str, Any] = {
        "load_average": os.getloadavg(),
        "database": "postgresql" if args.database_url else "sqlite",
        "redis": "server" if args.redis_url else "embedded",
        "events": args.events,
        "consumers": args.consumers,
        "batch_size": args.batch_size,
        "seconds": round(elapsed, 2),
        "events_per_second": round(args.events / elapsed),
        "consumer_cpu_ms_per_1000": round(consumer_cpu / args.events * 1e6, 1),
        "stored": stored,
        "exactly_once": stored == distinct == args.events,
        "profile_updates_deferred_to_the_reconciler": deferred,
        "busiest_user_profile_matches": profile_events == busiest_events,
    }
    print(json.dumps(result, indent=2))
    consumers_shown = f"{args.consumers} consumer{'s' * (args.consumers > 1)}"
    rows = [
        row(f"events/s, {consumers_shown}", result["events_per_second"], at_least=10_000),
        row("consumer CPU ms per 1,000 events", result["consumer_cpu_ms_per_1000"], "{:.1f}"),
        row("every event stored exactly once", "yes" if result["exactly_once"] else "no"),
        row(
            "busiest user's profile matches",
            "yes" if result["busiest_user_profile_matches"] else "no",
        ),
    ]
    write_results("stream", result, rows)
    services.close()


if __name__ == "__main__":
    main()

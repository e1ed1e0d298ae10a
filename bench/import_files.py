"""File import benchmark: ``python -m training import events FILE`` on generated CSV files.

For each file size (1,000,000 rows and a quarter of that by default) the benchmark starts from
an empty database, runs the import command as a subprocess exactly as a user would, and reports:

- rows/s of the import itself (reading, cleansing, validation, storing with durable commits),
  as the command's own report measures it;
- the seconds the command then spends rebuilding the live profiles of the imported users;
- the wall time of the whole command, and its peak resident memory (``ru_maxrss`` of that
  process, and of the process an import into SQLite stores its batches from), which should not
  grow with the file.

Synthetic data: power-law users (100,000) and items (20,000), the event mix of a shop (60 % view,
20 % click, 7 % add_to_cart, 4 % like, 4 % rating with a value, 3 % purchase, 2 % dislike), epoch
seconds, an event_id per row. Files go to ``bench/results/data/`` (generated once, kept).

Run from the project root::

    .venv/bin/python bench/import_files.py
    .venv/bin/python bench/import_files.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/recsys_bench_import

The PostgreSQL database named is emptied (every table dropped) before each run: give the
benchmark a database of its own. Results go to ``bench/results/import_files.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import RESULTS, drop_all_tables, row, service_env, write_results

TYPES = ["view"] * 60 + ["click"] * 20 + ["add_to_cart"] * 7 + ["like"] * 4 + ["rating"] * 4
TYPES += ["purchase"] * 3 + ["dislike"] * 2


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A CSV of ``rows`` events (written once; the same seed gives the same file)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    base = 1_700_000_000
    partial = path.with_suffix(".part")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "user_id", "item_id", "type", "value", "timestamp"])
        for n in range(rows):
            kind = TYPES[rng.randrange(len(TYPES))]
            writer.writerow(
                [
                    f"ev-{n}",
                    f"user-{int(100_000 * rng.random() ** 1.6)}",
                    f"sku-{int(20_000 * rng.random() ** 2)}",
                    kind,
                    rng.randint(1, 5) if kind == "rating" else "",
                    base + n,
                ]
            )
    partial.rename(path)


def run_import(path: Path, database_url: str, batch_size: int | None) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="recsys-bench-import-"))
    if database_url:
        drop_all_tables(database_url)
    env = service_env(scratch, database_url=database_url)
    report_path = scratch / "report.json"
    command = [sys.executable, "-m", "training", "import", "events", str(path)]
    command += ["--report", str(report_path), "--quarantine", str(scratch / "bad.csv")]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the import failed (status {status}); run it by hand: {command}")
    report = json.loads(report_path.read_text())
    return {
        "rows": report["read"],
        "imported": report["imported"],
        "balanced": report["balanced"],
        "import_seconds": report["seconds"],
        "rows_per_second": report["rows_per_second"],
        "profile_rebuild_seconds": report["profile_seconds"],
        "profiles": report["profiles"],
        "command_seconds": round(wall, 2),
        "peak_rss_mb_import": report["peak_memory_mb"],
        "peak_rss_mb_store_process": report["store_process_peak_memory_mb"],
        "peak_rss_mb_command": round(usage.ru_maxrss / 1024, 1),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=250_000, help="the second, smaller file")
    parser.add_argument("--database-url", default="", help="default: a SQLite file")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()

    results: dict[str, Any] = {
        "database": "postgresql" if args.database_url else "sqlite",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "runs": [],
    }
    rows = []
    for size in (args.small, args.rows):
        path = RESULTS / "data" / f"events-{size}.csv"
        generate(path, size)
        run = run_import(path, args.database_url, args.batch_size)
        run["file_mb"] = round(path.stat().st_size / 2**20, 1)
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
        into = f"{size:,} rows into {'PostgreSQL' if args.database_url else 'SQLite'}"
        rows.append(row(f"rows/s, {into}", run["rows_per_second"], at_least=50_000))
        rows.append(
            row(f"profile rebuild seconds, {into}", run["profile_rebuild_seconds"], "{:.1f}")
        )
        rows.append(
            row(f"peak RSS MB of the command, {into}", run["peak_rss_mb_command"], "{:.0f}")
        )
    write_results("import_files", results, rows)


if __name__ == "__main__":
    main()

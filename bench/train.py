"""Training speed: ``python -m training train`` end to end from the database, against a bare
``implicit`` fit with the same parameters plus the matrix build, measured side by side.

    .venv/bin/python bench/train.py --database-url postgresql://postgres@127.0.0.1:5432/recsys_bench_train
    .venv/bin/python bench/train.py            # a SQLite file under bench/results/

Synthetic data (default 1,000,000 events, 100,000 users, 20,000 items: users with category
tastes, power-law item popularity) is written straight into a dedicated database once (COPY on
PostgreSQL, executemany on SQLite); that set-up is not measured. Each repeat runs, in fresh
processes, (a) the bare baseline: CSR build from in-memory arrays + ``implicit`` ALS fit, and
(b) ``python -m training train`` with the same ALS parameters. Reported: wall-time medians, their
ratio, and each process's peak resident memory. Results go to ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from harness import RESULTS, ROOT, migrate, peak_rss_mb, row, service_env, write_results

from app.config import normalise_database_url
from training.evaluation import ModelChoice

BASELINE = """
import sys, time, numpy as np, scipy.sparse as sp
from threadpoolctl import threadpool_limits
from implicit.als import AlternatingLeastSquares
data = np.load(sys.argv[1])
factors, iterations = int(sys.argv[2]), int(sys.argv[5])
reg, alpha = float(sys.argv[3]), float(sys.argv[4])
began = time.perf_counter()
matrix = sp.csr_matrix(
    (np.ones(len(data["users"]), dtype=np.float32), (data["users"], data["items"])),
    shape=(int(data["n_users"]), int(data["n_items"])),
)
matrix.sum_duplicates()
matrix.data[:] = 1.0
built = time.perf_counter()
with threadpool_limits(limits=1, user_api="blas"):
    model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                    iterations=iterations, random_state=42, num_threads=2)
    model.fit(matrix, show_progress=False)
done = time.perf_counter()
print(f"{built - began:.3f} {done - built:.3f}")
"""


def generate(users: int, items: int, events: int, seed: int) -> dict[str, np.ndarray]:
    """Events with structure: each user mostly picks from one favourite category."""
    rng = np.random.default_rng(seed)
    categories = 50
    item_category = rng.integers(0, categories, size=items)
    by_category = [np.flatnonzero(item_category == c) for c in range(categories)]
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    rng.shuffle(popularity)
    favourite = rng.integers(0, categories, size=users)
    activity = rng.lognormal(0.0, 1.0, size=users)
    user = rng.choice(users, size=events, p=activity / activity.sum())
    own = rng.random(events) < 0.7
    category = np.where(own, favourite[user], rng.integers(0, categories, size=events))
    item = np.empty(events, dtype=np.int64)
    for c in range(categories):
        rows = np.flatnonzero(category == c)
        weights = popularity[by_category[c]]
        item[rows] = rng.choice(by_category[c], size=len(rows), p=weights / weights.sum())
    kinds = rng.choice(4, size=events, p=[0.7, 0.2, 0.06, 0.04])
    age = rng.uniform(0, 90 * 86_400, size=events)
    return {
        "users": user.astype(np.int64),
        "items": item,
        "kinds": kinds,
        "age": age,
        "item_category": item_category,
        "n_users": np.int64(users),
        "n_items": np.int64(items),
    }


def load_database(env: dict[str, str], data: dict[str, np.ndarray]) -> None:
    """Fresh schema (migrations) and the synthetic rows, written directly."""
    migrate(env)
    url = env["RECSYS_DATABASE_URL"]
    types = np.array(["view", "click", "add_to_cart", "purchase"])
    now = time.time()
    n_items = int(data["n_items"])
    item_rows = [
        (f"i{i}", f"Item {i}", json.dumps([f"c{data['item_category'][i]}"])) for i in range(n_items)
    ]
    stamps = [datetime.fromtimestamp(now - a, UTC).isoformat(sep=" ") for a in data["age"].tolist()]
    received = datetime.fromtimestamp(now, UTC).isoformat(sep=" ")
    event_rows = [
        (f"b{k}", f"u{u}", f"i{i}", str(t), stamps[k], received)
        for k, (u, i, t) in enumerate(
            zip(
                data["users"].tolist(),
                data["items"].tolist(),
                types[data["kinds"]].tolist(),
                strict=True,
            )
        )
    ]
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            conn.execute("TRUNCATE items, events, model_versions, pending_profile_updates CASCADE")
            with conn.cursor().copy(
                "COPY items (item_id, title, categories, tags, attributes, available, hidden, "
                "is_stub) FROM STDIN"
            ) as copy:
                for item_id, title, cats in item_rows:
                    copy.write_row((item_id, title, cats, "[]", "{}", True, False, False))
            with conn.cursor().copy(
                "COPY events (event_id, user_id, item_id, type, occurred_at, received_at) "
                "FROM STDIN"
            ) as copy:
                for row in event_rows:
                    copy.write_row(row)
        return
    import sqlite3

    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events")
        conn.execute("DELETE FROM items")
        conn.execute("DELETE FROM model_versions")
        conn.executemany(
            "INSERT INTO items (item_id, title, categories, tags, attributes, available, hidden, "
            "is_stub, created_at, updated_at) VALUES (?, ?, ?, '[]', '{}', 1, 0, 0, ?, ?)",
            [(i, t, c, received, received) for i, t, c in item_rows],
        )
        conn.executemany(
            "INSERT INTO events (event_id, user_id, item_id, type, occurred_at, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            event_rows,
        )


def baseline_command(arrays: Path, choice: ModelChoice) -> list[str]:
    p = choice.als
    return [
        sys.executable,
        "-c",
        BASELINE,
        str(arrays),
        str(p.factors),
        str(p.regularization),
        str(p.alpha),
        str(p.iterations),
    ]


def run_baseline(arrays: Path, choice: ModelChoice) -> tuple[float, float, float]:
    began = time.perf_counter()
    out = subprocess.run(
        baseline_command(arrays, choice),
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - began
    build, fit = (float(x) for x in out.stdout.split())
    return wall, build, fit


def run_train(env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    command = [sys.executable, "-m", "training", "train", "--force"]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - began, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-load", action="store_true", help="reuse the loaded database")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    url = normalise_database_url(args.database_url or f"sqlite:///{RESULTS / 'train-bench.db'}")
    choice = ModelChoice()
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    arrays = work / "events.npz"

    def env(models: str) -> dict[str, str]:
        extra = {"RECSYS_MODEL_DIR": str(work / models), "COLUMNS": "120"}
        return service_env(work, scopes="admin", database_url=url, **extra)

    began = time.perf_counter()
    data = generate(args.users, args.items, args.events, args.seed)
    np.savez(arrays, **data)
    if not args.skip_load:
        load_database(env("models"), data)
    print(
        f"data ready in {time.perf_counter() - began:.0f} s: {args.events:,} events, "
        f"{args.users:,} users, {args.items:,} items; {url.split('@')[-1]}"
    )
    baseline, ours = [], []
    for repeat in range(args.repeats):
        wall, build, fit = run_baseline(arrays, choice)
        baseline.append(wall)
        seconds, output = run_train(env(f"models-{repeat}"))
        ours.append(seconds)
        stages = next((line for line in output.splitlines() if "seconds:" in line), "")
        print(
            f"repeat {repeat + 1}: baseline {wall:.1f} s (build {build:.1f}, fit {fit:.1f}); "
            f"train {seconds:.1f} s [{stages.strip()}]"
        )
    peak_baseline = peak_rss_mb(baseline_command(arrays, choice), env("peak"))
    train_command = [sys.executable, "-m", "training", "train", "--force"]
    peak_train = peak_rss_mb(train_command, env("peak"))
    p = choice.als
    ratio = statistics.median(ours) / statistics.median(baseline)
    result = {
        "database": url.split("@")[-1].split("://")[0],
        "events": args.events,
        "users": args.users,
        "items": args.items,
        "als": {k: getattr(p, k) for k in ("factors", "regularization", "alpha", "iterations")},
        "baseline_seconds": baseline,
        "train_seconds": ours,
        "baseline_median": statistics.median(baseline),
        "train_median": statistics.median(ours),
        "ratio": ratio,
        "peak_rss_mb": {"baseline": peak_baseline, "train": peak_train},
    }
    print(json.dumps(result, indent=2))
    rows = [
        row("`python -m training train` seconds (median)", result["train_median"], "{:.1f}"),
        row(
            "bare implicit fit + matrix build seconds (median)", result["baseline_median"], "{:.1f}"
        ),
        row("train / bare fit", ratio, "{:.2f}", at_most=1.5),
        row("peak RSS MB, train", peak_train, "{:.0f}"),
        row("peak RSS MB, bare fit", peak_baseline, "{:.0f}"),
    ]
    write_results("train", result, rows)


if __name__ == "__main__":
    main()

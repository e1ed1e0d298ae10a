"""Training speed: ``python -m training train`` end to end from the database, against a bare
``implicit`` fit with the same parameters plus the matrix build, measured side by side.

    .venv/bin/python bench/train.py --database-url postgresql://postgres@127.0.0.1:5432/recsys_bench_train
    .venv/bin/python bench/train.py            # a SQLite file under bench/results/

Synthetic data (default 1,000,000 events, 100,000 users, 20,000 items: users with category
tastes, power-law item popularity) is written straight into a dedicated database once (COPY on
PostgreSQL, executemany on SQLite); that set-up is not measured. Each repeat runs, in fresh
processes, (a) the bare baseline: CSR build from in-memory arrays + ``implicit`` ALS fit, and
(b) ``python -m training train`` with the same ALS parameters. Reported: wall-time medians, their
ratio, and each process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
sys.path.insert(0, str(REPO_ROOT))

from app.config import normalise_database_url  # noqa: E402
from training.evaluation import ModelChoice  # noqa: E402

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


def load_database(url: str, data: dict[str, np.ndarray]) -> None:
    """Fresh schema (migrations) and the synthetic rows, written directly."""
    env = {**os.environ, "RECSYS_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "app", "migrate"], env=env, check=True, cwd=REPO_ROOT)
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
            conn.execute("TRUNCATE items, events, model_versions, pending_profile_updates")
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
        cwd=REPO_ROOT,
    )
    wall = time.perf_counter() - began
    build, fit = (float(x) for x in out.stdout.split())
    return wall, build, fit


def run_train(url: str, model_dir: Path) -> tuple[float, str]:
    env = {
        **os.environ,
        "RECSYS_DATABASE_URL": url,
        "RECSYS_MODEL_DIR": str(model_dir),
        "RECSYS_VAR_DIR": str(model_dir.parent),
        "COLUMNS": "120",
    }
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "training", "train", "--force"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    return time.perf_counter() - began, out.stdout


def peak_of(command: list[str], env: dict[str, str]) -> float:
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
        cwd=REPO_ROOT,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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

    began = time.perf_counter()
    data = generate(args.users, args.items, args.events, args.seed)
    np.savez(arrays, **data)
    if not args.skip_load:
        load_database(url, data)
    print(
        f"data ready in {time.perf_counter() - began:.0f} s: {args.events:,} events, "
        f"{args.users:,} users, {args.items:,} items; {url.split('@')[-1]}"
    )

    baseline, ours = [], []
    for repeat in range(args.repeats):
        wall, build, fit = run_baseline(arrays, choice)
        baseline.append(wall)
        model_dir = work / f"models-{repeat}"
        seconds, output = run_train(url, model_dir)
        ours.append(seconds)
        stages = next((line for line in output.splitlines() if "seconds:" in line), "")
        print(
            f"repeat {repeat + 1}: baseline {wall:.1f} s (build {build:.1f}, fit {fit:.1f}); "
            f"train {seconds:.1f} s [{stages.strip()}]"
        )

    env = {
        **os.environ,
        "RECSYS_DATABASE_URL": url,
        "RECSYS_MODEL_DIR": str(work / "peak"),
        "RECSYS_VAR_DIR": str(work),
    }
    p = choice.als
    peak_baseline = peak_of(
        baseline_command(arrays, choice),
        env,
    )
    peak_train = peak_of([sys.executable, "-m", "training", "train", "--force"], env)
    result = {
        "command": " ".join(sys.argv),
        "database": url.split("@")[-1].split("://")[0],
        "events": args.events,
        "users": args.users,
        "items": args.items,
        "als": {
            "factors": p.factors,
            "regularization": p.regularization,
            "alpha": p.alpha,
            "iterations": p.iterations,
        },
        "baseline_seconds": baseline,
        "train_seconds": ours,
        "baseline_median": statistics.median(baseline),
        "train_median": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(baseline),
        "peak_rss_mb": {"baseline": peak_baseline, "train": peak_train},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))
    name = "postgresql" if url.startswith("postgresql") else "sqlite"
    (RESULTS / f"train-{name}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

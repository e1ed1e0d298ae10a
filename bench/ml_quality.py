"""Reference-protocol quality on MovieLens latest-small, straight from its CSV files.

The same code as ``python -m training evaluate`` (``training.evaluation``), without a
database in between: per-item random 75/25 split (seed 42), k = 10, training items excluded,
binary relevance; hyper-parameters chosen on a validation split carved from the training part,
the test part scored once.

    .venv/bin/python bench/ml_quality.py [--data PATH] [--trials N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.config import DEFAULT_EVENT_WEIGHTS  # noqa: E402
from training.data import Interactions, ItemTable  # noqa: E402
from training.evaluation import (  # noqa: E402
    Dataset,
    ModelChoice,
    compare_models,
    make_split,
    tune,
)
from training.loading import MovieLensFolder  # noqa: E402


def load(folder: Path, seed: int) -> Dataset:
    """MovieLens as the service would store it: movies as items, ratings as rating events."""
    source = MovieLensFolder(folder)
    movies = list(source.items())
    items = ItemTable(
        ids=[m["item_id"] for m in movies],
        titles=[m["title"] for m in movies],
        categories=[m["categories"] for m in movies],
        tags=[m.get("tags", []) for m in movies],
        attributes=[m.get("attributes", {}) for m in movies],
        hidden=np.zeros(len(movies), dtype=bool),
    )
    item_index = items.index
    user_index: dict[str, int] = {}
    users, item_rows, values, stamps = [], [], [], []
    for event in source.events():
        users.append(user_index.setdefault(event["user_id"], len(user_index)))
        item_rows.append(item_index[event["item_id"]])
        values.append(event["value"] * DEFAULT_EVENT_WEIGHTS["rating"])
        stamps.append(float(np.datetime64(event["timestamp"][:19], "s").astype(np.int64)))
    interactions = Interactions(
        user_ids=list(user_index),
        item_ids=items.ids,
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(item_rows, dtype=np.int64),
        weights=np.asarray(values, dtype=np.float64),
        timestamps=np.asarray(stamps, dtype=np.float64),
        types=np.zeros(len(users), dtype=np.int8),
        type_names=["rating"],
    )
    return Dataset(interactions, items, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "../shared/data/ml-latest-small")
    parser.add_argument("--trials", type=int, default=40, help="ALS search trials")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds for ALS search")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quiet", action="store_true", help="do not print every trial")
    args = parser.parse_args()
    began = time.monotonic()
    threadpool_limits(limits=2)
    dataset = load(args.data.resolve(), args.seed)
    split = make_split(dataset, "protocol")
    log = None if args.quiet else (lambda line: print("  " + line, flush=True))
    choice, valid_ndcg = tune(
        dataset,
        split.train,
        trials=args.trials,
        time_budget=args.time_budget,
        start=ModelChoice(),
        log=log,
    )
    print(f"validation nDCG@10 of the chosen hybrid: {valid_ndcg:.4f}")
    results = compare_models(dataset, split, choice)
    print(f"\n{'model':<12}{'P@10':>7}{'R@10':>7}{'nDCG@10':>9}{'MAP':>7}{'cov':>7}{'nov':>7}")
    for name, r in results.items():
        print(
            f"{name:<12}{r.precision:7.3f}{r.recall:7.3f}{r.ndcg:9.3f}{r.map:7.3f}"
            f"{r.coverage:7.3f}{r.novelty:7.2f}"
        )
    print(
        f"\nusers evaluated: {results['hybrid'].users}; wall time {time.monotonic() - began:.0f} s"
    )


if __name__ == "__main__":
    main()

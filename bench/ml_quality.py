"""Reference-protocol quality on MovieLens latest-small, straight from its CSV files.

The same code as ``python -m training evaluate`` (``training.evaluation``), without a
database in between: per-item random 75/25 split (seed 42), k = 10, training items excluded,
binary relevance; hyper-parameters chosen on a validation split carved from the training part,
the test part scored once.

    .venv/bin/python bench/ml_quality.py [--data PATH] [--trials N] [--seed S]

Results go to ``bench/results/ml_quality.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import ROOT, row, write_results
from threadpoolctl import threadpool_limits

from app.config import DEFAULT_EVENT_WEIGHTS
from training.data import Interactions, ItemTable
from training.evaluation import Dataset, ModelChoice, compare_models, make_split, tune
from training.loading import MovieLensFolder


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
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/data/ml-latest-small")
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
    wall = time.monotonic() - began
    print(f"\nusers evaluated: {results['hybrid'].users}; wall time {wall:.0f} s")
    details = {
        "data": str(args.data),
        "config": {k: v for k, v in vars(args).items() if k != "data"},
        "validation_ndcg": valid_ndcg,
        "models": {name: r.as_dict() for name, r in results.items()},
        "wall_seconds": round(wall, 1),
    }
    rows = [row(f"{name}: nDCG@10", r.ndcg, "{:.4f}") for name, r in results.items()]
    rows += [row("hybrid: precision@10", results["hybrid"].precision, "{:.4f}")]
    write_results("ml_quality", details, rows)


if __name__ == "__main__":
    main()

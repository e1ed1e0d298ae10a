"""Reference-protocol quality of the offline models on MovieLens latest-small.

Runs shared/EVALUATION.md: per-item random 75/25 split (seed 42), k = 10, training items
excluded, binary relevance. Hyper-parameters are chosen on a validation split carved
from the training part by the same per-item split; the test part is scored once, at
the end, with the chosen configuration refitted on the whole training part.

    .venv/bin/python bench/ml_quality.py [--data PATH] [--trials N] [--seed S]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from training.features import build_item_embedding  # noqa: E402
from training.metrics import (  # noqa: E402
    RankingMetrics,
    catalog_coverage,
    novelty,
    ranking_metrics,
)
from training.recommenders import (  # noqa: E402
    ALSParams,
    ContentScorer,
    HybridScorer,
    PopularityScorer,
    Scorer,
    fit_als,
    item_popularity,
    recommend,
)
from training.splits import interactions_to_csr, stratified_split  # noqa: E402
from training.tuning import SearchSpace, carve_validation, tune_als, tune_blend  # noqa: E402

YEAR = re.compile(r"\((\d{4})\)\s*$")
SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True)
class Ratings:
    """ratings.csv as index arrays over a catalogue taken from movies.csv."""

    user: npt.NDArray[np.int64]
    item: npt.NDArray[np.int64]
    timestamp: npt.NDArray[np.float64]
    n_users: int
    n_items: int


@dataclass(frozen=True)
class Catalogue:
    movie_ids: list[str]
    titles: list[str]
    genres: list[list[str]]
    tags: list[list[str]]
    years: list[float | None]


def load(data: Path) -> tuple[Ratings, Catalogue]:
    with (data / "movies.csv").open(newline="", encoding="utf-8") as f:
        movies = list(csv.DictReader(f))
    tags: dict[str, list[str]] = defaultdict(list)
    with (data / "tags.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            tags[row["movieId"]].append(row["tag"])
    ids = [m["movieId"] for m in movies]
    catalogue = Catalogue(
        movie_ids=ids,
        titles=[YEAR.sub("", m["title"]).strip() for m in movies],
        genres=[
            [] if m["genres"] == "(no genres listed)" else m["genres"].split("|") for m in movies
        ],
        tags=[tags[i] for i in ids],
        years=[
            float(y.group(1)) if (y := YEAR.search(m["title"].strip())) else None for m in movies
        ],
    )
    raw = np.loadtxt(data / "ratings.csv", delimiter=",", skiprows=1)
    position = {int(movie_id): row for row, movie_id in enumerate(ids)}
    _, user = np.unique(raw[:, 0].astype(np.int64), return_inverse=True)
    item = np.array([position[int(m)] for m in raw[:, 1]], dtype=np.int64)
    ratings = Ratings(
        user=user.astype(np.int64),
        item=item,
        timestamp=raw[:, 3],
        n_users=int(user.max()) + 1,
        n_items=len(ids),
    )
    return ratings, catalogue


@dataclass(frozen=True)
class Result:
    metrics: RankingMetrics
    coverage: float
    novelty: float


def evaluate(scorer: Scorer, train: sp.csr_matrix, test: sp.csr_matrix) -> Result:
    recs = recommend(scorer, train, k=10)
    # Users without test rows do not count; dropping their lists keeps coverage comparable.
    recs[np.diff(test.indptr) == 0] = -1
    counts = np.asarray(train.sum(axis=0)).ravel()
    return Result(
        ranking_metrics(recs, test, 10),
        catalog_coverage(recs, train.shape[1]),
        novelty(recs, counts, train.shape[0]),
    )


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

    ratings, catalogue = load(args.data.resolve())
    shape = (ratings.n_users, ratings.n_items)
    split = stratified_split(ratings.item, ratio=0.75, seed=args.seed)
    inner = carve_validation(ratings.item[split.train], ratio=0.75, seed=args.seed)
    fit_rows, valid_rows = split.train[inner.train], split.train[inner.test]

    def matrix(rows: npt.NDArray[np.int64]) -> sp.csr_matrix:
        return interactions_to_csr(ratings.user[rows], ratings.item[rows], None, shape)

    train, test = matrix(split.train), matrix(split.test)
    fit, valid = matrix(fit_rows), matrix(valid_rows)
    print(
        f"{ratings.n_users} users, {ratings.n_items} items; train {train.nnz}, test {test.nnz}; "
        f"validation: fit {fit.nnz}, valid {valid.nnz}"
    )

    embedding = build_item_embedding(
        catalogue.movie_ids,
        catalogue.titles,
        catalogue.genres,
        catalogue.tags,
        [{"year": y} for y in catalogue.years],
        n_components=64,
        seed=args.seed,
    )
    content = ContentScorer(embedding.vectors)

    # --- model selection, validation split only -------------------------------------
    defaults = ALSParams(random_state=args.seed)
    log = None if args.quiet else (lambda line: print("  " + line, flush=True))
    print(f"ALS search: {args.trials} trials on the validation split")
    search = tune_als(
        fit,
        valid,
        SearchSpace(),
        n_trials=args.trials,
        time_budget=args.time_budget,
        seed=args.seed,
        start_points=[defaults],
        log=log,
    )
    tuned = search.best.params
    print(f"chosen ALS: {tuned}")

    def popularity_variants(rows: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.float32]]:
        items, times = ratings.item[rows], ratings.timestamp[rows]
        out = {"counts": item_popularity(items, ratings.n_items)}
        for years in (1, 5):
            out[f"half-life {years}y"] = item_popularity(
                items, ratings.n_items, times, half_life=years * SECONDS_PER_YEAR
            )
        return out

    fit_als_model = fit_als(fit, tuned)
    blend = tune_blend(
        fit_als_model, fit, valid, content=content, popularity=popularity_variants(fit_rows)
    )
    choice = blend.best
    print(f"chosen blend: {choice} (validation nDCG@10 {blend.scores[choice]:.4f})")

    def models(rows: npt.NDArray[np.int64], user_items: sp.csr_matrix) -> dict[str, Scorer]:
        counts = item_popularity(ratings.item[rows], ratings.n_items)
        als_tuned = fit_als(user_items, tuned)
        return {
            "popularity": PopularityScorer(counts),
            "ALS, library defaults": fit_als(user_items, defaults),
            "ALS, tuned": als_tuned,
            "content": content,
            "hybrid": HybridScorer(
                als_tuned,
                content,
                PopularityScorer(popularity_variants(rows)[choice.popularity]),
                choice.weights,
            ),
        }

    validation = {name: evaluate(m, fit, valid) for name, m in models(fit_rows, fit).items()}
    # --- the one look at the test part ----------------------------------------------
    final = {name: evaluate(m, train, test) for name, m in models(split.train, train).items()}

    header = f"{'model':<24}{'P@10':>7}{'R@10':>7}{'nDCG@10':>9}{'MAP':>7}{'cov':>7}{'nov':>7}"
    for title, table in (("validation (carved from train)", validation), ("test", final)):
        print(f"\n{title}\n{header}")
        for name, r in table.items():
            m = r.metrics
            print(
                f"{name:<24}{m.precision:7.3f}{m.recall:7.3f}{m.ndcg:9.3f}{m.map:7.3f}"
                f"{r.coverage:7.3f}{r.novelty:7.2f}"
            )
    print(f"\nusers evaluated on test: {final['hybrid'].metrics.n_users}")
    print(f"wall time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()

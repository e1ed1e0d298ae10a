"""Honest offline evaluation: the reference protocol of ``EVALUATION.md``, a temporal split and
K-fold cross-validation over users, always beside the popularity baseline.

Hyper-parameters are chosen on a validation split carved out of the training part only; the
test part is scored once, with the chosen configuration refitted on the whole training part.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from training.data import Interactions, ItemTable
from training.features import build_item_embedding
from training.metrics import catalog_coverage, novelty, ranking_metrics
from training.recommenders import (
    ALSParams,
    ALSScorer,
    ContentScorer,
    HybridScorer,
    PopularityScorer,
    Scorer,
    fit_als,
    item_popularity,
    recommend,
)
from training.splits import (
    Split,
    interactions_to_csr,
    stratified_split,
    temporal_split,
    user_kfold,
)
from training.tuning import SearchSpace, carve_validation, tune_als, tune_blend

IntArray = npt.NDArray[np.int64]
ValueScheme = Literal["binary", "weighted"]
Log = Callable[[str], None]

DAY = 86_400.0
#: Popularity variants the blend search chooses from: label -> half-life in days (None: counts).
POPULARITY_HALF_LIVES: dict[str, float | None] = {
    "counts": None,
    "half-life 30d": 30.0,
    "half-life 1y": 365.25,
    "half-life 5y": 5 * 365.25,
}
K = 10


@dataclass(frozen=True)
class ModelChoice:
    """Everything that defines a hybrid apart from the data it is fitted on."""

    # Heavily regularised, wide factors: what tuning chose on both MovieLens and the demo
    # shop, and a safer start than the library's defaults (tuned to explicit-rating scale).
    als: ALSParams = field(
        default_factory=lambda: ALSParams(factors=128, regularization=50.0, alpha=10.0)
    )
    weights: Mapping[str, float] = field(
        default_factory=lambda: {"als": 1.0, "content": 0.1, "popularity": 0.1}
    )
    popularity_half_life_days: float | None = 30.0
    values: ValueScheme = "binary"

    def as_dict(self) -> dict[str, Any]:
        return {
            "als": asdict(self.als),
            "weights": dict(self.weights),
            "popularity_half_life_days": self.popularity_half_life_days,
            "values": self.values,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelChoice:
        return cls(
            als=ALSParams(**data["als"]),
            weights=dict(data["weights"]),
            popularity_half_life_days=data.get("popularity_half_life_days"),
            values=data.get("values", "binary"),
        )


@dataclass(frozen=True)
class ModelResult:
    """One model's figures on one split."""

    precision: float
    recall: float
    ndcg: float
    map: float
    hit_rate: float
    coverage: float
    novelty: float
    users: int

    def as_dict(self) -> dict[str, float]:
        return {
            "precision@10": self.precision,
            "recall@10": self.recall,
            "ndcg@10": self.ndcg,
            "map": self.map,
            "hit_rate@10": self.hit_rate,
            "coverage": self.coverage,
            "novelty": self.novelty,
            "users": self.users,
        }


@dataclass
class Dataset:
    """Interactions plus the catalogue, with one item index for both."""

    interactions: Interactions
    items: ItemTable
    seed: int = 42
    _embedding: ContentScorer | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.interactions.n_users, self.interactions.n_items

    def matrix(self, rows: IntArray, scheme: ValueScheme = "binary") -> sp.csr_matrix:
        """Users x items of the given event rows.

        ``weighted``: the sum of the events' signed weights. ``binary``: 1 per pair, or -1 when
        the pair's weights sum below zero (a dislike outweighing the rest), as serving does.
        """
        inter = self.interactions
        matrix = interactions_to_csr(
            inter.users[rows], inter.items[rows], inter.weights[rows], self.shape
        )
        if scheme == "binary":
            matrix.data = np.where(matrix.data < 0, -1.0, 1.0)
        return matrix

    def relevant(self, rows: IntArray) -> sp.csr_matrix:
        """Held-out pairs a user liked on balance (binary relevance; dislikes are not hits)."""
        matrix = self.matrix(rows, "binary")
        matrix.data = np.where(matrix.data > 0, 1.0, 0.0)
        matrix.eliminate_zeros()
        return matrix

    def content(self) -> ContentScorer:
        """Content scorer over the catalogue (built once)."""
        if self._embedding is None:
            table = self.items
            n_items = self.shape[1]
            # Items seen only in events (not in the catalogue) have no features.
            pad = n_items - len(table)
            embedding = build_item_embedding(
                self.interactions.item_ids,
                table.titles + [""] * pad,
                table.categories + [[]] * pad,
                table.tags + [[]] * pad,
                table.attributes + [{}] * pad,
                n_components=min(64, max(2, n_items - 1)),
                seed=self.seed,
            )
            self._embedding = ContentScorer(embedding.vectors)
        return self._embedding

    def popularity(self, rows: IntArray, half_life_days: float | None) -> npt.NDArray[np.float32]:
        inter = self.interactions
        if half_life_days is None:
            return item_popularity(inter.items[rows], self.shape[1])
        return item_popularity(
            inter.items[rows],
            self.shape[1],
            inter.timestamps[rows],
            half_life=half_life_days * DAY,
        )


def build_hybrid(
    dataset: Dataset, rows: IntArray, choice: ModelChoice, als: ALSScorer | None = None
) -> HybridScorer:
    """The hybrid of ``choice`` fitted on ``rows``."""
    train = dataset.matrix(rows, choice.values)
    return HybridScorer(
        als if als is not None else fit_als(train, choice.als),
        dataset.content(),
        PopularityScorer(dataset.popularity(rows, choice.popularity_half_life_days)),
        choice.weights,
    )


def score_model(
    scorer: Scorer,
    history: sp.csr_matrix,
    relevant: sp.csr_matrix,
    users: IntArray | None = None,
    popularity_counts: npt.NDArray[np.float64] | None = None,
) -> ModelResult:
    """Protocol figures of ``scorer``: k=10, seen items removed, binary relevance.

    Parameters
    ----------
    history : csr_matrix of shape (n_users, n_items)
        What the model may know of each user (fed to the scorer, excluded from the results).
    relevant : csr_matrix of shape (n_users, n_items)
        Held-out interactions; every stored entry is relevant.
    users : optional subset of users to evaluate (default: every user with held-out rows)
    """
    has_test = np.flatnonzero(np.diff(relevant.indptr) > 0)
    targets = has_test if users is None else np.intersect1d(users, has_test)
    if isinstance(scorer, PopularityScorer):
        recs = popular_top_k(scorer.popularity, history, targets, K)
    else:
        recs = recommend(scorer, history, k=K, users=targets)
    subset = relevant[targets]
    metrics = ranking_metrics(recs, subset, K)
    counts = (
        np.asarray(history.sum(axis=0)).ravel() if popularity_counts is None else popularity_counts
    )
    return ModelResult(
        precision=metrics.precision,
        recall=metrics.recall,
        ndcg=metrics.ndcg,
        map=metrics.map,
        hit_rate=metrics.hit_rate,
        coverage=catalog_coverage(recs, history.shape[1]),
        novelty=novelty(recs, np.abs(counts), history.shape[0]),
        users=metrics.n_users,
    )


def popular_top_k(
    popularity: npt.NDArray[np.floating[Any]], history: sp.csr_matrix, users: IntArray, k: int
) -> IntArray:
    """What ``recommend(PopularityScorer(popularity), ...)`` returns, without scoring every item
    for every user: one global order, minus each user's seen items.

    Ties go to the lower item index, as in :func:`training.recommenders.top_k_items`.
    """
    order = np.argsort(-np.asarray(popularity, dtype=np.float64), kind="stable")
    matrix = sp.csr_matrix(history)
    out = np.full((len(users), k), -1, dtype=np.int64)
    for row, user in enumerate(users):
        start, end = matrix.indptr[user], matrix.indptr[user + 1]
        seen = matrix.indices[start:end][matrix.data[start:end] != 0]
        head = order[: k + len(seen)]
        picked = head[~np.isin(head, seen)][:k]
        out[row, : len(picked)] = picked
    return out


def tune(
    dataset: Dataset,
    train_rows: IntArray,
    *,
    trials: int = 40,
    time_budget: float | None = None,
    start: ModelChoice | None = None,
    log: Log | None = None,
) -> tuple[ModelChoice, float]:
    """Choose ALS parameters, the value scheme and the blend on a validation split carved out
    of ``train_rows`` only. Returns the choice and its validation nDCG@10."""
    inter = dataset.interactions
    inner = carve_validation(inter.items[train_rows], ratio=0.75, seed=dataset.seed)
    fit_rows, valid_rows = train_rows[inner.train], train_rows[inner.test]
    valid = dataset.relevant(valid_rows)
    starts = [ALSParams(random_state=dataset.seed)]
    if start is not None:
        starts.insert(0, start.als)
    began = time.monotonic()
    search = tune_als(
        dataset.matrix(fit_rows, "binary"),
        valid,
        SearchSpace(),
        n_trials=trials,
        time_budget=time_budget,
        seed=dataset.seed,
        start_points=starts,
        log=log,
    )
    best = search.best
    scheme: ValueScheme = "binary"
    als = fit_als(dataset.matrix(fit_rows, "binary"), best.params)
    # Event weights (purchases over views, ratings by value) may carry signal: keep them only
    # when they beat plain presence on the validation split.
    weighted_fit = dataset.matrix(fit_rows, "weighted")
    if not np.allclose(weighted_fit.data, 1.0):
        weighted = fit_als(weighted_fit, best.params)
        binary_score = score_model(als, dataset.matrix(fit_rows), valid).ndcg
        weighted_score = score_model(weighted, weighted_fit, valid).ndcg
        if log is not None:
            log(f"values: binary {binary_score:.4f}, weighted {weighted_score:.4f}")
        if weighted_score > binary_score:
            scheme, als = "weighted", weighted
    fit = dataset.matrix(fit_rows, scheme)
    popularity = {
        label: dataset.popularity(fit_rows, half_life)
        for label, half_life in POPULARITY_HALF_LIVES.items()
    }
    blend = tune_blend(als, fit, valid, content=dataset.content(), popularity=popularity)
    choice = blend.best
    if log is not None:
        log(
            f"chosen: {best.params}; values {scheme}; blend {choice} "
            f"(validation nDCG@10 {blend.scores[choice]:.4f}; {time.monotonic() - began:.0f} s)"
        )
    return (
        ModelChoice(
            als=best.params,
            weights=choice.weights,
            popularity_half_life_days=POPULARITY_HALF_LIVES[choice.popularity],
            values=scheme,
        ),
        float(blend.scores[choice]),
    )


def compare_models(
    dataset: Dataset, split: Split, choice: ModelChoice, users: IntArray | None = None
) -> dict[str, ModelResult]:
    """Popularity, ALS alone, content alone and the hybrid, fitted on ``split.train`` and
    scored on ``split.test``."""
    als = fit_als(dataset.matrix(split.train, choice.values), choice.als)
    return compare_with(dataset, split, choice, als, users)


SplitKind = Literal["protocol", "temporal"]


def make_split(dataset: Dataset, kind: SplitKind, last_n: int = 1) -> Split:
    inter = dataset.interactions
    rows = np.arange(len(inter))
    if kind == "protocol":
        # One row per (user, item): every interaction is one row, whatever its events.
        first = _first_rows_per_pair(inter)
        split = stratified_split(inter.items[first], ratio=0.75, seed=dataset.seed)
        return _expand_pairs(inter, first, split)
    split = temporal_split(inter.users, inter.timestamps, last_n=last_n)
    return Split(rows[split.train], rows[split.test])


def _first_rows_per_pair(inter: Interactions) -> IntArray:
    keys = inter.users * max(inter.n_items, 1) + inter.items
    _, first = np.unique(keys, return_index=True)
    return np.sort(first).astype(np.int64)


def _expand_pairs(inter: Interactions, first: IntArray, split: Split) -> Split:
    """Send every event of a (user, item) pair to the side its representative row went to."""
    n_items = max(inter.n_items, 1)
    keys = inter.users * n_items + inter.items
    test_keys = keys[first[split.test]]
    is_test = np.isin(keys, test_keys)
    rows = np.arange(len(inter))
    return Split(rows[~is_test], rows[is_test])


def kfold_users(
    dataset: Dataset, choice: ModelChoice, folds: int = 5
) -> Iterator[dict[str, ModelResult]]:
    """K-fold over users: fit on the other folds' users, fold in 75% of each held-out user's
    history at scoring time and predict the other 25%."""
    inter = dataset.interactions
    rng = np.random.default_rng(dataset.seed)
    for split, held_out in user_kfold(inter.users, n_folds=folds, seed=dataset.seed):
        test_rows = split.test
        mask = rng.random(len(test_rows)) < 0.75
        history_rows = np.concatenate([split.train, test_rows[mask]])
        fold = Split(history_rows, test_rows[~mask])
        # ALS never sees the held-out users: drop their learnt factors so they are folded in.
        history = dataset.matrix(split.train, choice.values)
        als = fit_als(history, choice.als)
        als = ALSScorer(als.item_factors, None, als.params)
        yield compare_with(dataset, fold, choice, als, held_out)


def compare_with(
    dataset: Dataset,
    split: Split,
    choice: ModelChoice,
    als: ALSScorer,
    users: IntArray | None = None,
) -> dict[str, ModelResult]:
    """Like :func:`compare_models`, with an ALS model already fitted."""
    history = dataset.matrix(split.train, choice.values)
    relevant = dataset.relevant(split.test)
    counts = np.asarray(dataset.matrix(split.train).sum(axis=0), dtype=np.float64).ravel()
    models: dict[str, Scorer] = {
        "popularity": PopularityScorer(dataset.popularity(split.train, None)),
        "ALS": als,
        "content": dataset.content(),
        "hybrid": build_hybrid(dataset, split.train, choice, als=als),
    }
    return {
        name: score_model(model, history, relevant, users, counts) for name, model in models.items()
    }


def summarise_folds(folds: list[dict[str, ModelResult]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and metric: mean and standard deviation over folds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in folds[0]:
        rows = [fold[name].as_dict() for fold in folds]
        out[name] = {
            metric: {
                "mean": float(np.mean([r[metric] for r in rows])),
                "std": float(np.std([r[metric] for r in rows])),
            }
            for metric in rows[0]
        }
    return out

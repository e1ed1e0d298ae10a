"""Seeded hyper-parameter search on a validation split carved from the training part.

The test part of the protocol is never seen here: :func:`carve_validation` applies the
protocol's own per-item stratified split to the *training* rows, the search fits on the
inner training part and scores nDCG@k on the inner validation part. The same seed and
inputs give the same sequence of trials; a time budget only cuts that sequence short.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from training.metrics import RankingMetrics, ranking_metrics
from training.recommenders import (
    ALSParams,
    ALSScorer,
    ConfidenceScheme,
    ContentScorer,
    HybridScorer,
    PopularityScorer,
    blend_scores,
    fit_als,
    top_k_items,
)
from training.splits import Split, stratified_split


def carve_validation(train_item_idx: npt.ArrayLike, ratio: float = 0.75, seed: int = 42) -> Split:
    """Split the training rows again, per item, exactly as the protocol splits all rows.

    Parameters
    ----------
    train_item_idx : array_like of int, shape (n_train_rows,)
        Item of every *training* row.

    Returns
    -------
    Split
        Indices into the training rows: ``train`` fits models, ``test`` validates them.
    """
    return stratified_split(train_item_idx, ratio=ratio, seed=seed)


@dataclass(frozen=True)
class SearchSpace:
    """Where the ALS search looks; ``(low, high)`` ranges are sampled log-uniformly."""

    factors: tuple[int, ...] = (16, 32, 64, 96, 128, 192)
    regularization: tuple[float, float] = (0.01, 100.0)
    alpha: tuple[float, float] = (0.5, 30.0)
    iterations: tuple[int, ...] = (15, 30)
    confidence: tuple[ConfidenceScheme, ...] = ("linear",)

    def sample(self, rng: np.random.Generator, seed: int) -> ALSParams:
        """Draw one point of the space."""
        return ALSParams(
            factors=int(rng.choice(self.factors)),
            regularization=_log_uniform(rng, *self.regularization),
            alpha=_log_uniform(rng, *self.alpha),
            iterations=int(rng.choice(self.iterations)),
            confidence=self.confidence[int(rng.integers(len(self.confidence)))],
            random_state=seed,
        )

    def perturb(self, params: ALSParams, rng: np.random.Generator) -> ALSParams:
        """A neighbour of ``params``: a multiplicative step in reg/alpha, a nearby size."""
        sizes = sorted(self.factors)
        pos = sizes.index(params.factors) if params.factors in sizes else len(sizes) // 2
        pos = int(np.clip(pos + rng.integers(-1, 2), 0, len(sizes) - 1))
        reg = float(
            np.clip(params.regularization * math.exp(rng.normal(0, 0.5)), *self.regularization)
        )
        alpha = float(np.clip(params.alpha * math.exp(rng.normal(0, 0.5)), *self.alpha))
        return replace(
            params,
            factors=sizes[pos],
            regularization=round(reg, 4),
            alpha=round(alpha, 4),
            iterations=int(rng.choice(self.iterations)),
        )


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return round(float(math.exp(rng.uniform(math.log(low), math.log(high)))), 4)


@dataclass(frozen=True)
class Trial:
    """One evaluated configuration."""

    params: ALSParams
    metrics: RankingMetrics
    seconds: float


@dataclass(frozen=True)
class ALSTuningResult:
    """Trials in the order they ran and the best one by validation nDCG@k."""

    trials: list[Trial]

    @property
    def best(self) -> Trial:
        # Earliest trial wins ties, which keeps the choice independent of float noise order.
        return max(self.trials, key=lambda t: t.metrics.ndcg)


def evaluate_scorer(
    score: Callable[[npt.NDArray[np.int64], sp.csr_matrix], npt.NDArray[np.float32]],
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    k: int = 10,
    batch_size: int = 256,
) -> RankingMetrics:
    """Protocol metrics of a scoring function, training items excluded.

    Parameters
    ----------
    score : callable (users, their train rows) -> array of shape (n_batch, n_items)
    train, valid : csr_matrix of shape (n_users, n_items)
    """
    recs = np.full((train.shape[0], k), -1, dtype=np.int64)
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    for start in range(0, users.shape[0], batch_size):
        batch = users[start : start + batch_size]
        rows = train[batch]
        recs[batch] = top_k_items(score(batch, rows), k, rows)
    return ranking_metrics(recs, valid, k)


def tune_als(
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    space: SearchSpace | None = None,
    *,
    n_trials: int = 40,
    time_budget: float | None = None,
    seed: int = 42,
    k: int = 10,
    start_points: Sequence[ALSParams] = (),
    explore_share: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> ALSTuningResult:
    """Random search followed by local refinement around the best point so far.

    Parameters
    ----------
    train : csr_matrix of shape (n_users, n_items)
        Inner training part (carved from the protocol's training part).
    valid : csr_matrix of shape (n_users, n_items)
        Inner validation part.
    space : SearchSpace, optional
        Where to look.
    n_trials : int
        Number of fits, ``start_points`` included.
    time_budget : float, optional
        Seconds after which no new trial starts (the first one always runs).
    seed : int
        Seeds the sampler and every ALS fit.
    k : int
        Cut-off of the nDCG that is maximised.
    start_points : sequence of ALSParams
        Configurations tried first (e.g. the library defaults).
    explore_share : float
        Share of the remaining trials drawn at random before refining.
    log : callable, optional
        Receives one line per trial.

    Returns
    -------
    ALSTuningResult
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    search = space or SearchSpace()
    rng = np.random.default_rng(seed)
    began = time.monotonic()
    trials: list[Trial] = []
    n_explore = len(start_points) + round(explore_share * max(n_trials - len(start_points), 0))
    for index in range(n_trials):
        # The first trial always runs, so there is a best configuration to return.
        if trials and time_budget is not None and time.monotonic() - began > time_budget:
            break
        if index < len(start_points):
            params = replace(start_points[index], random_state=seed)
        elif index < n_explore or not trials:
            params = search.sample(rng, seed)
        else:
            params = search.perturb(max(trials, key=lambda t: t.metrics.ndcg).params, rng)
        tick = time.monotonic()
        model = fit_als(train, params)
        metrics = evaluate_scorer(model.score, train, valid, k)
        trials.append(Trial(params, metrics, time.monotonic() - tick))
        if log is not None:
            log(f"trial {index:3d} {_describe(params)} nDCG@{k}={metrics.ndcg:.4f}")
    return ALSTuningResult(trials)


def _describe(params: ALSParams) -> str:
    return (
        f"factors={params.factors} reg={params.regularization:g} alpha={params.alpha:g} "
        f"iterations={params.iterations} confidence={params.confidence}"
    )


@dataclass(frozen=True)
class BlendChoice:
    """One hybrid configuration: which popularity vector and the blend weights (ALS = 1)."""

    popularity: str
    content_weight: float
    popularity_weight: float

    @property
    def weights(self) -> dict[str, float]:
        """Weights as :class:`~training.recommenders.HybridScorer` takes them."""
        return {"als": 1.0, "content": self.content_weight, "popularity": self.popularity_weight}


@dataclass(frozen=True)
class BlendTuningResult:
    """Validation nDCG@k of every blend configuration, in grid order."""

    scores: dict[BlendChoice, float]

    @property
    def best(self) -> BlendChoice:
        # max() keeps the first maximum, so ties go to the earlier (smaller-weight) choice.
        return max(self.scores, key=lambda c: self.scores[c])


def tune_blend(
    als: ALSScorer,
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    *,
    content: ContentScorer | None = None,
    popularity: Mapping[str, npt.NDArray[np.float32]] | None = None,
    content_weights: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
    popularity_weights: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
    k: int = 10,
    batch_size: int = 256,
) -> BlendTuningResult:
    """Grid search of the hybrid's blend (ALS weight fixed at 1) on the validation part.

    Every configuration is ranked batch by batch from the same component scores, so only
    ``batch_size x n_items`` scores per component are held at once.

    Parameters
    ----------
    als : ALSScorer
        Model fitted on ``train``.
    train, valid : csr_matrix of shape (n_users, n_items)
    content : ContentScorer, optional
        Content component; without it only popularity weights are searched.
    popularity : mapping of label to array of shape (n_items,), optional
        Candidate popularity vectors (e.g. plain counts and time-decayed variants).
        Defaults to ``{"counts": column sums of train}``.
    content_weights, popularity_weights : sequence of float
        Grid of blend weights.

    Returns
    -------
    BlendTuningResult
    """
    variants = dict(popularity or {"counts": np.asarray(train.sum(axis=0)).ravel()})
    grid = [
        BlendChoice(label, c_weight, p_weight)
        for label in variants
        for c_weight in (content_weights if content is not None else (0.0,))
        for p_weight in popularity_weights
    ]
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    recs = {choice: np.full((train.shape[0], k), -1, dtype=np.int64) for choice in grid}
    for start in range(0, users.shape[0], batch_size):
        batch = users[start : start + batch_size]
        rows = train[batch]
        for label, counts in variants.items():
            pop = PopularityScorer(np.asarray(counts, dtype=np.float32))
            parts = HybridScorer(als, content, pop, {"als": 1.0}).components(batch, rows)
            for choice in grid:
                if choice.popularity == label:
                    blended = blend_scores(
                        parts,
                        choice.weights
                        if content
                        else {"als": 1.0, "popularity": choice.popularity_weight},
                    )
                    recs[choice][batch] = top_k_items(blended, k, rows)
    return BlendTuningResult({c: ranking_metrics(recs[c], valid, k).ndcg for c in grid})

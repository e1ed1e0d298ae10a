"""Recommenders of the offline pipeline, held as plain numpy arrays.

Everything the service needs to score a user is an array: item popularity, ALS item
factors (plus the regularization and alpha needed to fold a live profile in), and the
dense item embedding of :mod:`training.features`. :func:`save_hybrid` writes them to one
``.npz`` that :func:`load_hybrid` reads back with ``allow_pickle=False``.

Scores are computed for a batch of users at a time, shape (n_batch, n_items); nothing
here materialises a dense users x items matrix.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from training.metrics import PAD

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
ConfidenceScheme = Literal["linear", "log", "bm25"]

MAX_THREADS = 2
"""implicit and BLAS threads: the training machine has two cores shared with others."""


class Scorer(Protocol):
    """Anything that scores every item for a batch of users."""

    @property
    def n_items(self) -> int: ...

    def score(self, users: IntArray, user_items: sp.csr_matrix) -> FloatArray:
        """Score all items for ``users``; ``user_items`` holds their rows, (n_batch, n_items)."""
        ...


# ---------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------


def top_k_items(scores: npt.ArrayLike, k: int, exclude: sp.spmatrix | None = None) -> IntArray:
    """Indices of the ``k`` best-scored items per row, best first.

    Parameters
    ----------
    scores : array_like of float, shape (n_rows, n_items)
        Item scores; ``-inf`` and NaN never get recommended.
    k : int
        Number of items per row.
    exclude : sparse matrix of shape (n_rows, n_items), optional
        Items that must not be recommended (the user's history).

    Returns
    -------
    ndarray of int64, shape (n_rows, k)
        Item indices, padded with ``-1`` when a row has fewer than ``k`` candidates.
        Ties are broken by the lower item index, so results are deterministic.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    work = np.array(scores, dtype=np.float64)
    if work.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_rows, n_items), got shape {work.shape}")
    n_rows, n_items = work.shape
    work[np.isnan(work)] = -np.inf
    if exclude is not None:
        if exclude.shape != work.shape:
            raise ValueError(f"exclude has shape {exclude.shape}, scores {work.shape}")
        rows, cols = sp.csr_matrix(exclude).nonzero()
        work[rows, cols] = -np.inf
    take = min(k, n_items)
    if take < n_items:
        candidates = np.argpartition(-work, take - 1, axis=1)[:, :take]
    else:
        candidates = np.broadcast_to(np.arange(n_items), (n_rows, n_items)).copy()
    cand_scores = np.take_along_axis(work, candidates, axis=1)
    order = np.lexsort((candidates, -cand_scores), axis=1)
    ranked = np.take_along_axis(candidates, order, axis=1)
    ranked_scores = np.take_along_axis(cand_scores, order, axis=1)
    ranked[~np.isfinite(ranked_scores)] = PAD
    out = np.full((n_rows, k), PAD, dtype=np.int64)
    out[:, :take] = ranked
    return out


def recommend(
    scorer: Scorer,
    user_items: sp.csr_matrix,
    k: int = 10,
    users: npt.ArrayLike | None = None,
    batch_size: int = 256,
    exclude_seen: bool = True,
) -> IntArray:
    """Top-k items for many users, scored ``batch_size`` users at a time.

    Parameters
    ----------
    scorer : Scorer
        The model.
    user_items : csr_matrix of shape (n_users, n_items)
        Interaction history; its rows feed the scorer and are excluded from the results.
    k : int
        Number of items per user.
    users : array_like of int, optional
        Users to recommend for; all rows of ``user_items`` when omitted.
    batch_size : int
        Users per scoring batch, bounding memory at ``batch_size * n_items`` floats.
    exclude_seen : bool
        Drop items already in the user's history.

    Returns
    -------
    ndarray of int64, shape (n_users, k)
        Recommended item indices per requested user, ``-1`` padded.
    """
    matrix = sp.csr_matrix(user_items)
    user_arr = (
        np.arange(matrix.shape[0], dtype=np.int64)
        if users is None
        else np.asarray(users, dtype=np.int64)
    )
    out = np.full((user_arr.shape[0], k), PAD, dtype=np.int64)
    for start in range(0, user_arr.shape[0], batch_size):
        batch = user_arr[start : start + batch_size]
        rows = matrix[batch]
        scores = scorer.score(batch, rows)
        out[start : start + batch.shape[0]] = top_k_items(scores, k, rows if exclude_seen else None)
    return out


# ---------------------------------------------------------------------------
# Popularity
# ---------------------------------------------------------------------------


def item_popularity(
    item_idx: npt.ArrayLike,
    n_items: int,
    timestamps: npt.ArrayLike | None = None,
    half_life: float | None = None,
    reference_time: float | None = None,
) -> FloatArray:
    """Interaction count per item, optionally decayed with age.

    With ``half_life`` (in the units of ``timestamps``), an interaction of age ``a`` counts
    ``0.5 ** (a / half_life)``, where the age is measured from ``reference_time`` (default:
    the latest timestamp).

    Parameters
    ----------
    item_idx : array_like of int, shape (n_rows,)
        Item of every interaction.
    n_items : int
        Catalogue size; items without interactions get 0.
    timestamps : array_like of float, shape (n_rows,), optional
        Time of every interaction; required with ``half_life``.
    half_life : float, optional
        Age at which an interaction counts half.
    reference_time : float, optional
        "Now" for the decay.

    Returns
    -------
    ndarray of float32, shape (n_items,)
    """
    items = np.asarray(item_idx, dtype=np.int64)
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item_idx must be in [0, {n_items})")
    if half_life is None:
        weights = np.ones(items.shape[0], dtype=np.float64)
    else:
        if timestamps is None:
            raise ValueError("half_life needs timestamps")
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        times = np.asarray(timestamps, dtype=np.float64)
        now = float(times.max(initial=0.0)) if reference_time is None else reference_time
        weights = np.exp2(-np.maximum(now - times, 0.0) / half_life)
    return np.bincount(items, weights=weights, minlength=n_items).astype(np.float32)


@dataclass(frozen=True)
class PopularityScorer:
    """Scores every item by its (possibly decayed) popularity, the same for every user."""

    popularity: FloatArray

    @property
    def n_items(self) -> int:
        return int(self.popularity.shape[0])

    def score(self, users: IntArray, user_items: sp.csr_matrix) -> FloatArray:
        # log1p keeps the head from dwarfing everything once blended with other scores.
        row = np.log1p(self.popularity).astype(np.float32)
        return np.broadcast_to(row, (len(users), row.shape[0])).copy()


# ---------------------------------------------------------------------------
# ALS
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ALSParams:
    """Hyper-parameters of implicit ALS plus the confidence scheme fed to it.

    ``confidence`` transforms the raw interaction values before implicit multiplies them
    by ``alpha``: ``linear`` keeps them, ``log`` uses ``log1p(value / epsilon)`` and
    ``bm25`` applies implicit's BM25 weighting (``bm25_k1``, ``bm25_b``).
    """

    factors: int = 100
    regularization: float = 0.01
    alpha: float = 1.0
    iterations: int = 15
    confidence: ConfidenceScheme = "linear"
    log_epsilon: float = 1.0
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    random_state: int = 42

    def __post_init__(self) -> None:
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


def confidence_matrix(
    user_items: sp.spmatrix,
    scheme: ConfidenceScheme = "linear",
    *,
    log_epsilon: float = 1.0,
    bm25_k1: float = 100.0,
    bm25_b: float = 0.8,
) -> sp.csr_matrix:
    """Apply a confidence scheme to the interaction values (before ALS's ``alpha``).

    Parameters
    ----------
    user_items : sparse matrix of shape (n_users, n_items)
        Non-negative interaction values.
    scheme : {"linear", "log", "bm25"}
        Transformation, see :class:`ALSParams`.

    Returns
    -------
    csr_matrix of shape (n_users, n_items), float32
    """
    matrix = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    if scheme == "linear":
        return matrix
    if scheme == "log":
        matrix.data = np.log1p(matrix.data / log_epsilon).astype(np.float32)
        return matrix
    if scheme == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        return sp.csr_matrix(bm25_weight(matrix, K1=bm25_k1, B=bm25_b), dtype=np.float32)
    raise ValueError(f"unknown confidence scheme {scheme!r}; use linear, log or bm25")


def fold_in_user(
    item_factors: npt.ArrayLike,
    item_ids: npt.ArrayLike,
    confidences: npt.ArrayLike,
    regularization: float,
    *,
    alpha: float = 1.0,
    gram: npt.ArrayLike | None = None,
) -> FloatArray:
    """Solve for one user's ALS factors given fixed item factors.

    Exactly the least-squares step of implicit's ``recalculate_user``: with
    ``c_i = alpha * confidences[i]`` it solves
    ``(Y^T Y + regularization * I + sum_i (|c_i| - 1) y_i y_i^T) x = sum_{c_i > 0} c_i y_i``;
    a negative confidence means "preference 0 with confidence ``|c_i|``", as in implicit.

    Parameters
    ----------
    item_factors : array_like of float, shape (n_items, n_factors)
        The trained item factors ``Y``.
    item_ids : array_like of int, shape (n_interactions,)
        Items the user interacted with (indices into ``item_factors``).
    confidences : array_like of float, shape (n_interactions,)
        Raw interaction values, as stored in the user-items matrix.
    regularization : float
        ALS regularization of the model.
    alpha : float
        ALS confidence multiplier of the model.
    gram : array_like of float, shape (n_factors, n_factors), optional
        Precomputed ``Y^T Y``; pass it when folding in many users.

    Returns
    -------
    ndarray of float32, shape (n_factors,)
        The user's factors; zeros for a user without interactions (as implicit does).
    """
    factors = np.asarray(item_factors)
    ids = np.asarray(item_ids, dtype=np.int64)
    conf = alpha * np.asarray(confidences, dtype=np.float64)
    if factors.ndim != 2:
        raise ValueError(f"item_factors must be 2-D, got shape {factors.shape}")
    if ids.shape != conf.shape or ids.ndim != 1:
        raise ValueError("item_ids and confidences must be 1-D and of equal length")
    n_factors = factors.shape[1]
    if ids.shape[0] == 0:
        return np.zeros(n_factors, dtype=np.float32)
    if ids.min() < 0 or ids.max() >= factors.shape[0]:
        raise ValueError(f"item_ids must be in [0, {factors.shape[0]})")
    if gram is None:
        y64 = factors.astype(np.float64, copy=False)
        yty = y64.T @ y64
    else:
        yty = np.asarray(gram, dtype=np.float64)
    # Only the user's rows are needed in double precision: casting the whole item matrix
    # per user would cost more than the solve.
    rows = factors[ids].astype(np.float64)
    weight = np.abs(conf) - 1.0
    lhs = yty + regularization * np.eye(n_factors) + (rows * weight[:, None]).T @ rows
    rhs = np.where(conf > 0, conf, 0.0) @ rows
    return np.linalg.solve(lhs, rhs).astype(np.float32)


@dataclass(frozen=True)
class ALSScorer:
    """Dot-product scorer over ALS factors.

    Attributes
    ----------
    item_factors : ndarray of shape (n_items, n_factors)
    user_factors : ndarray of shape (n_users, n_factors) or None
        Factors learnt in training, used when every scored user index falls inside it;
        otherwise (and always when None, as in a served model) users are folded in from
        their rows of ``user_items`` at scoring time.
    params : ALSParams
        How the model was trained: regularization, alpha and the confidence scheme are
        what a fold-in needs to match training.
    """

    item_factors: FloatArray
    user_factors: FloatArray | None
    params: ALSParams
    gram: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        y = self.item_factors.astype(np.float64)
        object.__setattr__(self, "gram", (y.T @ y).astype(np.float32))

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    def fold_in(self, user_items: sp.csr_matrix) -> FloatArray:
        """Users' factors from their interaction rows, shape (n_rows, n_factors).

        The rows go through the model's confidence scheme first, as in training. For the
        ``bm25`` scheme the item weights depend on the whole matrix, so a single folded-in
        row is only an approximation of what training would give.
        """
        weighted = self._confidence(user_items)
        out = np.empty((weighted.shape[0], self.item_factors.shape[1]), dtype=np.float32)
        # Many tiny solves: BLAS threads only add hand-off cost (about 10x slower measured).
        with threadpool_limits(limits=1, user_api="blas"):
            self._fold_rows(weighted, out)
        return out

    def _fold_rows(self, weighted: sp.csr_matrix, out: FloatArray) -> None:
        for row in range(weighted.shape[0]):
            start, end = weighted.indptr[row], weighted.indptr[row + 1]
            out[row] = fold_in_user(
                self.item_factors,
                weighted.indices[start:end],
                weighted.data[start:end],
                self.params.regularization,
                alpha=self.params.alpha,
                gram=self.gram,
            )

    def _confidence(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        p = self.params
        return confidence_matrix(
            user_items, p.confidence, log_epsilon=p.log_epsilon, bm25_k1=p.bm25_k1, bm25_b=p.bm25_b
        )

    def user_vectors(self, users: IntArray, user_items: sp.csr_matrix) -> FloatArray:
        """The users' factors: learnt ones when the model has them, else folded in."""
        if self.user_factors is not None and users.size and users.max() < len(self.user_factors):
            return self.user_factors[users]
        return self.fold_in(user_items)

    def score(self, users: IntArray, user_items: sp.csr_matrix) -> FloatArray:
        vectors = self.user_vectors(users, user_items)
        return np.asarray(vectors @ self.item_factors.T, dtype=np.float32)


def fit_als(
    user_items: sp.spmatrix,
    params: ALSParams | None = None,
    on_iteration: Callable[[int], None] | None = None,
) -> ALSScorer:
    """Train implicit ALS on a users x items matrix (GPU only if implicit has CUDA).

    Parameters
    ----------
    user_items : sparse matrix of shape (n_users, n_items)
        Raw interaction values; ``params.confidence`` is applied before training.
    params : ALSParams, optional
        Hyper-parameters; implicit's defaults when omitted.
    on_iteration : callable, optional
        Called with the iteration number after each ALS iteration (for progress bars).

    Returns
    -------
    ALSScorer
        Holding the trained user and item factors as float32 numpy arrays.
    """
    import implicit.gpu
    from implicit.als import AlternatingLeastSquares

    p = params or ALSParams()
    weighted = confidence_matrix(
        user_items, p.confidence, log_epsilon=p.log_epsilon, bm25_k1=p.bm25_k1, bm25_b=p.bm25_b
    )
    # implicit parallelises over users itself; a multi-threaded BLAS underneath it would
    # oversubscribe the cores (implicit warns about exactly that when it is built).
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=p.factors,
            regularization=p.regularization,
            alpha=p.alpha,
            iterations=p.iterations,
            random_state=p.random_state,
            use_gpu=bool(implicit.gpu.HAS_CUDA),
            num_threads=MAX_THREADS,
        )
        callback = None if on_iteration is None else (lambda it, *_: on_iteration(it + 1))
        model.fit(weighted, show_progress=False, callback=callback)
    if implicit.gpu.HAS_CUDA:
        model = model.to_cpu()
    return ALSScorer(
        item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
        user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
        params=p,
    )


# ---------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------


def _unit_rows(matrix: npt.NDArray[np.floating]) -> FloatArray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True)
class ContentScorer:
    """Cosine similarity between items and the user's profile in embedding space.

    A user's profile is the interaction-weighted mean of the unit-normalised embeddings
    of the items in their history, so every item, including one nobody has interacted
    with yet, gets a score.

    Attributes
    ----------
    item_embeddings : ndarray of shape (n_items, n_dims)
    """

    item_embeddings: FloatArray
    unit_embeddings: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit_embeddings", _unit_rows(self.item_embeddings))

    @property
    def n_items(self) -> int:
        return int(self.item_embeddings.shape[0])

    def profiles(self, user_items: sp.csr_matrix) -> FloatArray:
        """Unit-norm user profiles, shape (n_rows, n_dims); zero for an empty history."""
        summed = sp.csr_matrix(user_items, dtype=np.float32) @ self.unit_embeddings
        return _unit_rows(np.asarray(summed))

    def score(self, users: IntArray, user_items: sp.csr_matrix) -> FloatArray:
        return np.asarray(self.profiles(user_items) @ self.unit_embeddings.T, dtype=np.float32)


# ---------------------------------------------------------------------------
# Hybrid
# ---------------------------------------------------------------------------


def standardize_rows(scores: npt.ArrayLike) -> FloatArray:
    """Z-score every row, so components on different scales can be added.

    A constant row (e.g. an all-zero content profile) becomes all zeros, which leaves
    the other components to decide.
    """
    work = np.asarray(scores, dtype=np.float64)
    centred = work - work.mean(axis=1, keepdims=True)
    spread = work.std(axis=1, keepdims=True)
    return np.asarray(centred / np.where(spread > 0, spread, 1.0), dtype=np.float32)


def blend_scores(
    components: Mapping[str, npt.ArrayLike], weights: Mapping[str, float]
) -> FloatArray:
    """Weighted sum of row-standardised score matrices.

    Parameters
    ----------
    components : mapping of name to array of shape (n_rows, n_items)
        Raw scores of every component.
    weights : mapping of name to float
        Blend weight of every component; components without a weight are ignored.

    Returns
    -------
    ndarray of float32, shape (n_rows, n_items)
    """
    missing = set(weights) - set(components)
    if missing:
        raise ValueError(f"weights given for unknown components: {sorted(missing)}")
    total: FloatArray | None = None
    for name, weight in weights.items():
        if weight == 0:
            continue
        part = weight * standardize_rows(components[name])
        total = part if total is None else total + part
    if total is None:
        first = np.asarray(next(iter(components.values())))
        return np.zeros(first.shape, dtype=np.float32)
    return total


@dataclass(frozen=True)
class HybridScorer:
    """Blend of ALS, content and popularity scores with fixed weights.

    ALS gives nothing to an item without interactions (its factors are zero), so such an
    item's ALS score is replaced by the user's mean ALS score before standardising: the
    item then ranks on content and popularity alone instead of being pushed down or up
    by an arbitrary zero.
    """

    als: ALSScorer
    content: ContentScorer | None
    popularity: PopularityScorer
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        n_items = {self.als.n_items, self.popularity.n_items}
        if self.content is not None:
            n_items.add(self.content.n_items)
        if len(n_items) != 1:
            raise ValueError(f"components disagree on the number of items: {sorted(n_items)}")
        unknown = set(self.weights) - {"als", "content", "popularity"}
        if unknown:
            raise ValueError(f"unknown blend components: {sorted(unknown)}")
        if self.content is None and self.weights.get("content", 0.0):
            raise ValueError("a content weight needs item embeddings")

    @property
    def n_items(self) -> int:
        return self.als.n_items

    def components(self, users: IntArray, user_items: sp.csr_matrix) -> dict[str, FloatArray]:
        """Raw scores of every component, each of shape (n_rows, n_items)."""
        als = self.als.score(users, user_items)
        cold = self.popularity.popularity <= 0
        if cold.any() and not cold.all():
            als[:, cold] = als[:, ~cold].mean(axis=1, keepdims=True)
        out = {"als": als, "popularity": self.popularity.score(users, user_items)}
        if self.content is not None:
            out["content"] = self.content.score(users, user_items)
        return out

    def score(self, users: IntArray, user_items: sp.csr_matrix) -> FloatArray:
        """``blend_scores(self.components(...), self.weights)``, computed as one product.

        Every component is linear in a per-user vector (ALS ``Y x`` with cold items' rows
        replaced by the mean warm row, which scores them exactly the mean warm ALS score that
        ``components`` gives them; content ``E p``), and a row's mean and variance over all
        items are ``mu . x`` and ``x^T C x`` for the item rows' mean ``mu`` and covariance
        ``C``. So the blend is ``[X / s_als, P / s_content, 1] @ [Y_eff | E | z]^T`` (weights
        folded in) less a constant per row: no score matrix is standardised.
        """
        blend = self._blend
        parts = [self.als.user_vectors(users, user_items).astype(np.float64)]
        if blend.content_mean is not None and self.content is not None:
            parts.append(self.content.profiles(user_items).astype(np.float64))
        queries = np.zeros((len(users), blend.items.shape[1]), dtype=np.float64)
        offsets = np.zeros(len(users), dtype=np.float64)
        column = 0
        for (weight, mean, cov), vectors in zip(blend.blocks, parts, strict=False):
            width = vectors.shape[1]
            spread = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", vectors, cov, vectors), 0.0))
            scale = np.divide(weight, spread, out=np.zeros_like(spread), where=spread > 0)
            queries[:, column : column + width] = vectors * scale[:, None]
            offsets -= (vectors @ mean) * scale
            column += width
        queries[:, -1] = self.weights.get("popularity", 0.0)
        scores = queries.astype(np.float32) @ blend.items.T
        scores += offsets.astype(np.float32)[:, None]
        return scores

    @functools.cached_property
    def _blend(self) -> _LinearBlend:
        cold = self.popularity.popularity <= 0
        effective = self.als.item_factors.astype(np.float64)
        if cold.any() and not cold.all():
            effective[cold] = effective[~cold].mean(axis=0)
        blocks = [(self.weights.get("als", 0.0), *_mean_cov(effective))]
        columns = [effective]
        content_mean = None
        if self.content is not None and self.weights.get("content", 0.0):
            embeddings = self.content.unit_embeddings.astype(np.float64)
            content_mean, content_cov = _mean_cov(embeddings)
            blocks.append((self.weights["content"], content_mean, content_cov))
            columns.append(embeddings)
        popularity = self.popularity.score(np.zeros(1, dtype=np.int64), sp.csr_matrix((1, 1)))
        columns.append(standardize_rows(popularity).astype(np.float64).T)
        return _LinearBlend(
            items=np.ascontiguousarray(np.hstack(columns), dtype=np.float32),
            blocks=blocks,
            content_mean=content_mean,
        )


@dataclass(frozen=True)
class _LinearBlend:
    items: FloatArray  # (n_items, n_factors [+ n_dims] + 1)
    blocks: list[tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64]]]
    content_mean: npt.NDArray[np.float64] | None


def _mean_cov(
    rows: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean row and population covariance (``ddof=0``, as ``standardize_rows``)."""
    mean = rows.mean(axis=0)
    centred = rows - mean
    return mean, centred.T @ centred / rows.shape[0]


# ---------------------------------------------------------------------------
# Artifact
# ---------------------------------------------------------------------------

_PARAM_FIELDS = ("factors", "iterations", "random_state")
_FLOAT_FIELDS = ("regularization", "alpha", "log_epsilon", "bm25_k1", "bm25_b")
_WEIGHTS = ("als", "content", "popularity")


def hybrid_to_arrays(
    model: HybridScorer, *, include_user_factors: bool = False
) -> dict[str, npt.NDArray[Any]]:
    """Everything needed to serve ``model``, as named numpy arrays (no objects).

    Keys: ``item_factors`` (n_items, n_factors), ``popularity`` (n_items,),
    ``item_embeddings`` (n_items, n_dims; absent without content), ``blend_weights``
    (3,) in the order als, content, popularity, ``als_int_params`` and
    ``als_float_params`` (see ``_PARAM_FIELDS``/``_FLOAT_FIELDS``), ``confidence``
    (a 0-d string array) and, optionally, ``user_factors`` (n_users, n_factors).
    """
    p = model.als.params
    arrays: dict[str, npt.NDArray[Any]] = {
        "item_factors": model.als.item_factors,
        "popularity": model.popularity.popularity,
        "blend_weights": np.array([model.weights.get(w, 0.0) for w in _WEIGHTS], np.float64),
        "als_int_params": np.array([getattr(p, f) for f in _PARAM_FIELDS], dtype=np.int64),
        "als_float_params": np.array([getattr(p, f) for f in _FLOAT_FIELDS], dtype=np.float64),
        "confidence": np.array(p.confidence),
    }
    if model.content is not None:
        arrays["item_embeddings"] = model.content.item_embeddings
    if include_user_factors and model.als.user_factors is not None:
        arrays["user_factors"] = model.als.user_factors
    return arrays


def hybrid_from_arrays(arrays: Mapping[str, npt.NDArray[Any]]) -> HybridScorer:
    """Inverse of :func:`hybrid_to_arrays`."""
    ints = arrays["als_int_params"].tolist()
    floats = arrays["als_float_params"].tolist()
    confidence = str(arrays["confidence"])
    if confidence not in ("linear", "log", "bm25"):
        raise ValueError(f"unknown confidence scheme {confidence!r} in the artifact")
    params = ALSParams(
        factors=int(ints[0]),
        iterations=int(ints[1]),
        random_state=int(ints[2]),
        regularization=float(floats[0]),
        alpha=float(floats[1]),
        log_epsilon=float(floats[2]),
        bm25_k1=float(floats[3]),
        bm25_b=float(floats[4]),
        confidence=cast(ConfidenceScheme, confidence),
    )
    user_factors = arrays.get("user_factors")
    embeddings = arrays.get("item_embeddings")
    return HybridScorer(
        als=ALSScorer(
            item_factors=np.asarray(arrays["item_factors"], dtype=np.float32),
            user_factors=None if user_factors is None else np.asarray(user_factors, np.float32),
            params=params,
        ),
        content=None if embeddings is None else ContentScorer(np.asarray(embeddings, np.float32)),
        popularity=PopularityScorer(np.asarray(arrays["popularity"], dtype=np.float32)),
        weights=dict(zip(_WEIGHTS, arrays["blend_weights"].tolist(), strict=True)),
    )


def save_hybrid(path: str | os.PathLike[str], model: HybridScorer, **kwargs: bool) -> None:
    """Write :func:`hybrid_to_arrays` to a compressed ``.npz``."""
    arrays = hybrid_to_arrays(model, **kwargs)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_hybrid(path: str | os.PathLike[str]) -> HybridScorer:
    """Read a model written by :func:`save_hybrid`, refusing pickled objects."""
    with np.load(path, allow_pickle=False) as data:
        return hybrid_from_arrays({key: data[key] for key in data.files})


__all__ = [
    "MAX_THREADS",
    "ALSParams",
    "ALSScorer",
    "ContentScorer",
    "HybridScorer",
    "PopularityScorer",
    "Scorer",
    "blend_scores",
    "confidence_matrix",
    "fit_als",
    "fold_in_user",
    "hybrid_from_arrays",
    "hybrid_to_arrays",
    "item_popularity",
    "load_hybrid",
    "recommend",
    "save_hybrid",
    "standardize_rows",
    "top_k_items",
]

"""Top-k ranking metrics of the reference protocol (shared/EVALUATION.md).

Recommendations are an integer array of shape (n_users, k) whose row ``u`` lists the
items recommended to user ``u`` best first, padded with ``-1`` when fewer than ``k``
items were recommended. Relevance is binary: every stored entry of the users x items
test matrix is relevant. Averages run over the users that have at least one test row
*and* at least one recommendation, as the protocol says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

PAD = -1
"""Item index that fills a row of recommendations shorter than k."""


@dataclass(frozen=True)
class RankingMetrics:
    """Protocol metrics at one cut-off, averaged over the evaluated users."""

    k: int
    precision: float
    recall: float
    ndcg: float
    map: float
    hit_rate: float
    n_users: int

    def as_row(self) -> str:
        """Format as ``P@k R@k nDCG@k MAP`` for a results table."""
        return f"{self.precision:.3f}  {self.recall:.3f}  {self.ndcg:.3f}  {self.map:.3f}"


def _check(recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int) -> npt.NDArray[np.int64]:
    recs = np.asarray(recommended, dtype=np.int64)
    if recs.ndim != 2:
        raise ValueError(f"recommended must be 2-D (n_users, k), got shape {recs.shape}")
    if recs.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"recommended has {recs.shape[0]} rows but relevant has {relevant.shape[0]} users"
        )
    if k < 1 or k > recs.shape[1]:
        raise ValueError(f"k must be in [1, {recs.shape[1]}], got {k}")
    if recs.size and recs.max() >= relevant.shape[1]:
        raise ValueError("recommended contains an item index outside the relevant matrix")
    return recs[:, :k]


def hit_matrix(
    recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int = 10
) -> npt.NDArray[np.bool_]:
    """Mark which recommended items are relevant.

    Parameters
    ----------
    recommended : array_like of int, shape (n_users, >= k)
        Ranked item indices per user, ``-1`` for padding.
    relevant : sparse matrix of shape (n_users, n_items)
        Test interactions; any stored entry counts as relevant.
    k : int
        Cut-off.

    Returns
    -------
    ndarray of bool, shape (n_users, k)
    """
    recs = _check(recommended, relevant, k)
    truth = sp.csr_matrix(relevant)
    truth.sum_duplicates()
    truth.sort_indices()
    n_items = truth.shape[1]
    row_of_entry = np.repeat(np.arange(truth.shape[0], dtype=np.int64), np.diff(truth.indptr))
    # One sorted int64 key per relevant (user, item) pair turns membership into a searchsorted.
    truth_keys = row_of_entry * n_items + truth.indices.astype(np.int64)
    if not truth_keys.shape[0]:
        return np.zeros(recs.shape, dtype=bool)
    rec_keys = np.arange(recs.shape[0], dtype=np.int64)[:, None] * n_items + recs
    pos = np.searchsorted(truth_keys, rec_keys)
    found = truth_keys[np.minimum(pos, truth_keys.shape[0] - 1)] == rec_keys
    return np.asarray(found & (recs != PAD))


def evaluated_users(recommended: npt.ArrayLike, relevant: sp.spmatrix) -> npt.NDArray[np.bool_]:
    """Users that count in the averages: at least one test row and one recommendation.

    Returns
    -------
    ndarray of bool, shape (n_users,)
    """
    recs = np.asarray(recommended, dtype=np.int64)
    if recs.ndim != 2 or recs.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"recommended must have one row per user of relevant ({relevant.shape[0]} rows), "
            f"got shape {recs.shape}"
        )
    has_recs = (recs != PAD).any(axis=1)
    has_truth = np.diff(sp.csr_matrix(relevant).indptr) > 0
    return np.asarray(has_recs & has_truth)


def _per_user(
    recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    mask = evaluated_users(recommended, relevant)
    hits = hit_matrix(recommended, relevant, k)[mask]
    n_relevant = np.diff(sp.csr_matrix(relevant).indptr)[mask].astype(np.float64)
    return hits, n_relevant


def precision_at_k(recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int = 10) -> float:
    """Mean of ``hits / k`` (k, not the number of items returned, is the denominator)."""
    hits, _ = _per_user(recommended, relevant, k)
    return float(hits.sum(axis=1).mean() / k) if hits.shape[0] else 0.0


def recall_at_k(recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int = 10) -> float:
    """Mean of ``hits / |test items of the user|``."""
    hits, n_relevant = _per_user(recommended, relevant, k)
    return float((hits.sum(axis=1) / n_relevant).mean()) if hits.shape[0] else 0.0


def ndcg_at_k(recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int = 10) -> float:
    """Mean nDCG: binary gains, ``1 / log2(rank + 1)`` discount, IDCG over ``min(k, |test|)``."""
    hits, n_relevant = _per_user(recommended, relevant, k)
    if not hits.shape[0]:
        return 0.0
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = hits @ discount
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k).astype(np.int64) - 1]
    return float((dcg / ideal).mean())


def map_at_k(recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int = 10) -> float:
    """Mean average precision: sum of precision@i at every hit position i, over ``|test|``.

    The denominator is the user's full number of test items, not ``min(k, |test|)``, as
    in the reference protocol (so a user with 20 test items tops out at 0.5 for k = 10).
    """
    hits, n_relevant = _per_user(recommended, relevant, k)
    if not hits.shape[0]:
        return 0.0
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return float(((precision_at_i * hits).sum(axis=1) / n_relevant).mean())


def hit_rate_at_k(recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int = 10) -> float:
    """Share of evaluated users with at least one relevant item in their top k."""
    hits, _ = _per_user(recommended, relevant, k)
    return float(hits.any(axis=1).mean()) if hits.shape[0] else 0.0


def ranking_metrics(
    recommended: npt.ArrayLike, relevant: sp.spmatrix, k: int = 10
) -> RankingMetrics:
    """All protocol metrics at cut-off ``k`` in one pass.

    Parameters
    ----------
    recommended : array_like of int, shape (n_users, >= k)
        Ranked item indices per user, ``-1`` for padding.
    relevant : sparse matrix of shape (n_users, n_items)
        Test interactions.
    k : int
        Cut-off.
    """
    hits, n_relevant = _per_user(recommended, relevant, k)
    n_users = hits.shape[0]
    if not n_users:
        return RankingMetrics(k, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    n_hits = hits.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k).astype(np.int64) - 1]
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return RankingMetrics(
        k=k,
        precision=float(n_hits.mean() / k),
        recall=float((n_hits / n_relevant).mean()),
        ndcg=float(((hits @ discount) / ideal).mean()),
        map=float(((precision_at_i * hits).sum(axis=1) / n_relevant).mean()),
        hit_rate=float((n_hits > 0).mean()),
        n_users=int(n_users),
    )


def catalog_coverage(recommended: npt.ArrayLike, n_items: int) -> float:
    """Share of the catalogue's ``n_items`` items recommended to at least one user."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    recs = np.asarray(recommended, dtype=np.int64)
    return float(np.unique(recs[recs != PAD]).shape[0] / n_items)


def novelty(
    recommended: npt.ArrayLike, item_popularity: npt.ArrayLike, n_users: int | None = None
) -> float:
    """Mean self-information ``-log2(share)`` of the recommended items, in bits.

    ``share`` is an item's training interaction count over ``n_users`` (the share of users
    who interacted with it, as in Microsoft Recommenders) or, when ``n_users`` is omitted,
    over the total interaction count. Items never seen in training would have infinite
    self-information, so they count as seen once.

    Parameters
    ----------
    recommended : array_like of int, shape (n_users, k)
        Ranked item indices per user, ``-1`` for padding (ignored).
    item_popularity : array_like of float, shape (n_items,)
        Training interaction count of every item.
    n_users : int, optional
        Number of users the counts come from.
    """
    recs = np.asarray(recommended, dtype=np.int64)
    counts = np.maximum(np.asarray(item_popularity, dtype=np.float64), 1.0)
    total = float(n_users) if n_users is not None else float(counts.sum())
    shown = recs[recs != PAD]
    if not shown.shape[0]:
        return 0.0
    return float(np.mean(-np.log2(counts[shown] / total)))

"""Train/test splits over interaction arrays.

Every function works on parallel arrays describing one interaction per row
(``user_idx``, ``item_idx``, optionally ``timestamps``) and returns *row indices*
into those arrays, so the caller can slice values, timestamps or a COO matrix with
them. :func:`interactions_to_csr` turns sliced arrays into the matrix that the
models consume.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    """Row indices of a two-way split.

    Attributes
    ----------
    train : ndarray of shape (n_train,)
        Sorted row indices that go to the training part.
    test : ndarray of shape (n_test,)
        Sorted row indices that go to the held-out part.
    """

    train: IntArray
    test: IntArray


def stratified_split(groups: npt.ArrayLike, ratio: float = 0.75, seed: int = 42) -> Split:
    """Split rows at random within each group, keeping ``ratio`` of every group for training.

    This is the reference protocol's split when ``groups`` is the item of every row: each
    item with ``n`` rows keeps ``round(ratio * n)`` of them, drawn at random, for training
    (rounding half to even, as Python's ``round`` and Microsoft Recommenders'
    ``python_stratified_split`` do), so an item with one or two rows is kept whole in train.
    Unlike that implementation, every group gets its own draw; reusing one seeded
    permutation per group size would correlate the splits of items of equal popularity.

    Parameters
    ----------
    groups : array_like of int, shape (n_rows,)
        Group of every row (the item index for the per-item protocol split).
    ratio : float
        Share of each group's rows for training, in (0, 1).
    seed : int
        Seed of the random draws; the same seed and input give the same split.

    Returns
    -------
    Split
        Row indices of the train and test parts.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    group_arr = np.asarray(groups, dtype=np.int64)
    if group_arr.ndim != 1:
        raise ValueError(f"groups must be one-dimensional, got shape {group_arr.shape}")
    n_rows = group_arr.shape[0]
    draws = np.random.default_rng(seed).random((n_rows,))
    order = np.lexsort((draws, group_arr))
    sorted_groups = group_arr[order]
    # Position of every sorted row inside its group, computed without a Python loop.
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, n_rows])
    rank = np.arange(n_rows) - np.repeat(starts, sizes)
    n_train = np.rint(ratio * sizes).astype(np.int64)
    is_train = rank < np.repeat(n_train, sizes)
    return Split(train=np.sort(order[is_train]), test=np.sort(order[~is_train]))


def temporal_split(
    user_idx: npt.ArrayLike,
    timestamps: npt.ArrayLike,
    *,
    last_n: int | None = None,
    cutoff: float | None = None,
) -> Split:
    """Hold out the most recent interactions, per user or globally.

    Give exactly one of ``last_n`` (each user's ``last_n`` latest rows are held out; users
    with ``last_n`` rows or fewer keep one row for training) or ``cutoff`` (rows with
    ``timestamp >= cutoff`` are held out).

    Parameters
    ----------
    user_idx : array_like of int, shape (n_rows,)
        User of every row.
    timestamps : array_like of float, shape (n_rows,)
        Time of every row; ties are broken by row order.
    last_n : int, optional
        Number of latest rows per user to hold out.
    cutoff : float, optional
        Global time from which rows are held out.

    Returns
    -------
    Split
        Row indices of the train and test parts.
    """
    if (last_n is None) == (cutoff is None):
        raise ValueError("give exactly one of last_n or cutoff")
    users = np.asarray(user_idx, dtype=np.int64)
    times = np.asarray(timestamps, dtype=np.float64)
    if users.shape != times.shape or users.ndim != 1:
        raise ValueError("user_idx and timestamps must be one-dimensional and of equal length")
    rows = np.arange(users.shape[0], dtype=np.int64)
    if cutoff is not None:
        held_out = times >= cutoff
        return Split(train=rows[~held_out], test=rows[held_out])
    assert last_n is not None
    if last_n < 1:
        raise ValueError(f"last_n must be >= 1, got {last_n}")
    order = np.lexsort((rows, times, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[starts, users.shape[0]])
    rank_from_end = np.repeat(starts + sizes, sizes) - 1 - np.arange(users.shape[0])
    # A user with no training row cannot be scored at all, so keep at least one.
    n_held = np.minimum(last_n, sizes - 1)
    held_out = rank_from_end < np.repeat(n_held, sizes)
    return Split(train=np.sort(order[~held_out]), test=np.sort(order[held_out]))


def user_kfold(
    user_idx: npt.ArrayLike, n_folds: int = 5, seed: int = 42
) -> Iterator[tuple[Split, IntArray]]:
    """K-fold over users: each fold holds out all rows of a disjoint set of users.

    Parameters
    ----------
    user_idx : array_like of int, shape (n_rows,)
        User of every row.
    n_folds : int
        Number of folds, at least 2 and at most the number of distinct users.
    seed : int
        Seed of the user shuffle.

    Yields
    ------
    split : Split
        Row indices of the users kept for training and of the held-out users.
    held_out_users : ndarray of shape (n_fold_users,)
        Sorted user indices held out in this fold.
    """
    users = np.asarray(user_idx, dtype=np.int64)
    distinct = np.unique(users)
    if not 2 <= n_folds <= distinct.shape[0]:
        raise ValueError(f"n_folds must be in [2, {distinct.shape[0]}], got {n_folds}")
    shuffled = np.random.default_rng(seed).permutation(distinct)
    rows = np.arange(users.shape[0], dtype=np.int64)
    for fold_users in np.array_split(shuffled, n_folds):
        held_out = np.isin(users, fold_users)
        yield Split(train=rows[~held_out], test=rows[held_out]), np.sort(fold_users)


def interactions_to_csr(
    user_idx: npt.ArrayLike,
    item_idx: npt.ArrayLike,
    values: npt.ArrayLike | None = None,
    shape: tuple[int, int] | None = None,
) -> sp.csr_matrix:
    """Build a users x items CSR matrix; duplicate (user, item) rows are summed.

    Parameters
    ----------
    user_idx, item_idx : array_like of int, shape (n_rows,)
        Coordinates of every interaction.
    values : array_like of float, shape (n_rows,), optional
        Value of every interaction; 1 when omitted.
    shape : (int, int), optional
        Matrix shape; inferred from the largest indices when omitted.

    Returns
    -------
    csr_matrix of shape (n_users, n_items), float32
    """
    rows = np.asarray(user_idx, dtype=np.int64)
    cols = np.asarray(item_idx, dtype=np.int64)
    data = (
        np.ones(rows.shape[0], dtype=np.float32)
        if values is None
        else np.asarray(values, dtype=np.float32)
    )
    if shape is None:
        shape = (int(rows.max(initial=-1)) + 1, int(cols.max(initial=-1)) + 1)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    return matrix

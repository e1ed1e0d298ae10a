"""Splits: the protocol's per-item split, temporal splits, user folds."""

from __future__ import annotations

import numpy as np
import pytest

from training.splits import (
    interactions_to_csr,
    stratified_split,
    temporal_split,
    user_kfold,
)


def rows_per_group(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def test_stratified_split_keeps_rounded_three_quarters_of_every_item() -> None:
    sizes = [1, 2, 3, 4, 6, 10, 100]
    groups = rows_per_group(sizes)
    split = stratified_split(groups, 0.75, seed=42)
    train_counts = np.bincount(groups[split.train], minlength=len(sizes))
    # round half to even: 1.5 -> 2, 4.5 -> 4, 7.5 -> 8
    assert train_counts.tolist() == [1, 2, 2, 3, 4, 8, 75]


def test_stratified_split_is_a_seeded_partition() -> None:
    groups = rows_per_group([5, 7, 9, 40])
    first = stratified_split(groups, seed=7)
    again = stratified_split(groups, seed=7)
    other = stratified_split(groups, seed=8)
    assert np.array_equal(first.train, again.train)
    assert not np.array_equal(first.train, other.train)
    union = np.concatenate([first.train, first.test])
    assert np.array_equal(np.sort(union), np.arange(groups.shape[0]))
    assert np.intersect1d(first.train, first.test).size == 0


def test_stratified_split_draws_rows_uniformly_within_a_group() -> None:
    groups = np.concatenate([np.zeros(4, dtype=np.int64), np.ones(8, dtype=np.int64)])
    kept = np.zeros(groups.shape[0])
    for seed in range(400):
        kept[stratified_split(groups, seed=seed).train] += 1
    # Every row of the 4-row group is in train 3 times out of 4 on average; a split that
    # always took the first rows would show 1.0, 1.0, 1.0, 0.0.
    assert np.allclose(kept / 400, 0.75, atol=0.07)


def test_stratified_split_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError, match="ratio"):
        stratified_split([0, 1], ratio=1.0)


def test_temporal_split_holds_out_each_users_latest_rows() -> None:
    users = np.array([0, 0, 0, 0, 1, 1, 2])
    times = np.array([10, 40, 20, 30, 5, 1, 3])
    split = temporal_split(users, times, last_n=2)
    # user 0 loses its two latest (t=40, t=30); user 1 keeps one of two; user 2 keeps its only row
    assert split.test.tolist() == [1, 3, 4]
    assert split.train.tolist() == [0, 2, 5, 6]


def test_temporal_split_global_cutoff() -> None:
    split = temporal_split([0, 1, 1], [5.0, 10.0, 15.0], cutoff=10.0)
    assert split.train.tolist() == [0]
    assert split.test.tolist() == [1, 2]
    with pytest.raises(ValueError, match="exactly one"):
        temporal_split([0], [1.0])


def test_user_kfold_holds_out_disjoint_user_sets_covering_everyone() -> None:
    users = np.repeat(np.arange(10), 3)
    seen: list[int] = []
    for split, held in user_kfold(users, n_folds=3, seed=1):
        assert set(users[split.test]) == set(held.tolist())
        assert not set(users[split.train]) & set(held.tolist())
        seen.extend(held.tolist())
    assert sorted(seen) == list(range(10))


def test_interactions_to_csr_sums_duplicates_and_keeps_shape() -> None:
    matrix = interactions_to_csr([0, 0, 1], [2, 2, 0], [1.0, 2.0, 5.0], shape=(3, 4))
    assert matrix.shape == (3, 4)
    assert matrix.toarray().tolist() == [[0, 0, 3, 0], [5, 0, 0, 0], [0, 0, 0, 0]]

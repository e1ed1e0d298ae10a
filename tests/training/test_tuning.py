"""Hyper-parameter search: validation carved from train only, reproducible trials."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.recommenders import ALSParams, fit_als
from training.splits import interactions_to_csr, stratified_split
from training.tuning import SearchSpace, carve_validation, tune_als, tune_blend


def planted_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(40):
        block = user % 2
        liked = rng.choice(15, size=8, replace=False) + 15 * block
        users.extend([user] * 8)
        items.extend(liked.tolist())
    return np.array(users), np.array(items)


def test_validation_is_carved_from_training_rows_only() -> None:
    _, items = planted_data()
    outer = stratified_split(items, seed=42)
    inner = carve_validation(items[outer.train], seed=42)
    fit_rows, valid_rows = outer.train[inner.train], outer.train[inner.test]
    assert not np.intersect1d(np.concatenate([fit_rows, valid_rows]), outer.test).size
    assert np.array_equal(np.sort(np.concatenate([fit_rows, valid_rows])), outer.train)


def matrices() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    users, items = planted_data()
    split = stratified_split(items, seed=1)
    shape = (40, 30)
    return (
        interactions_to_csr(users[split.train], items[split.train], shape=shape),
        interactions_to_csr(users[split.test], items[split.test], shape=shape),
    )


def test_tune_als_is_reproducible_and_returns_the_best_trial() -> None:
    train, valid = matrices()
    space = SearchSpace(factors=(2, 4), iterations=(5,))
    first = tune_als(train, valid, space, n_trials=4, seed=3, start_points=[ALSParams(2)])
    again = tune_als(train, valid, space, n_trials=4, seed=3, start_points=[ALSParams(2)])
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.metrics.ndcg for t in first.trials] == [t.metrics.ndcg for t in again.trials]
    assert first.trials[0].params.factors == 2
    assert first.best.metrics.ndcg == max(t.metrics.ndcg for t in first.trials)


def test_tune_als_respects_a_time_budget() -> None:
    train, valid = matrices()
    result = tune_als(train, valid, SearchSpace(factors=(2,)), n_trials=50, time_budget=0.0)
    assert len(result.trials) == 1


def test_tune_blend_scores_every_grid_point() -> None:
    train, valid = matrices()
    als = fit_als(train, ALSParams(factors=2, iterations=5))
    result = tune_blend(als, train, valid, popularity_weights=(0.0, 1.0))
    assert len(result.scores) == 2
    assert result.scores[result.best] == max(result.scores.values())
    assert result.best.weights["als"] == 1.0

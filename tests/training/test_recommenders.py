"""Known-answer tests for the recommenders and the model artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares

from training.recommenders import (
    ALSParams,
    ALSScorer,
    ContentScorer,
    HybridScorer,
    PopularityScorer,
    blend_scores,
    fit_als,
    fold_in_user,
    item_popularity,
    load_hybrid,
    recommend,
    save_hybrid,
    standardize_rows,
    top_k_items,
)

N_BLOCK = 10


def checkerboard() -> tuple[sp.csr_matrix, np.ndarray]:
    """Two user groups, each liking its own half of the items; every user misses one."""
    n = 2 * N_BLOCK
    dense = np.zeros((n, n), dtype=np.float32)
    dense[:N_BLOCK, :N_BLOCK] = 1
    dense[N_BLOCK:, N_BLOCK:] = 1
    withheld = np.array([u % N_BLOCK + (N_BLOCK if u >= N_BLOCK else 0) for u in range(n)])
    dense[np.arange(n), withheld] = 0
    return sp.csr_matrix(dense), withheld


def test_als_ranks_the_withheld_item_of_the_checkerboard_first() -> None:
    user_items, withheld = checkerboard()
    model = fit_als(user_items, ALSParams(factors=4, regularization=0.1, iterations=20))
    recs = recommend(model, user_items, k=3)
    assert recs[:, 0].tolist() == withheld.tolist()


def test_als_fold_in_recovers_the_planted_preference_for_a_new_user() -> None:
    user_items, _ = checkerboard()
    model = fit_als(user_items, ALSParams(factors=4, regularization=0.1, iterations=20))
    new_user = sp.csr_matrix(
        ([1.0, 1.0, 1.0], ([0, 0, 0], [N_BLOCK, N_BLOCK + 1, N_BLOCK + 2])), shape=(1, 2 * N_BLOCK)
    )
    no_stored = HybridScorer(
        ALSScorer(model.item_factors, None, model.params),
        None,
        PopularityScorer(np.ones(2 * N_BLOCK, dtype=np.float32)),
        {"als": 1.0},
    )
    top = recommend(no_stored, new_user, k=5)[0]
    assert set(top.tolist()) <= set(range(N_BLOCK + 3, 2 * N_BLOCK))


def test_fold_in_user_matches_implicit_recalculate_user() -> None:
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 40)) < 0.2) * rng.integers(1, 5, size=(30, 40))
    user_items = sp.csr_matrix(dense.astype(np.float32))
    model = AlternatingLeastSquares(
        factors=6, regularization=0.5, alpha=2.0, iterations=5, random_state=0, num_threads=1
    )
    model.fit(user_items, show_progress=False)
    for user in (0, 7, 29):
        row = user_items[user]
        expected = model.recalculate_user(user, row)
        ours = fold_in_user(model.item_factors, row.indices, row.data, 0.5, alpha=2.0)
        np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-4)
    # A negative value means "not liked, with that confidence" in implicit.
    row = sp.csr_matrix(([3.0, -2.0], ([0, 0], [1, 4])), shape=(1, 40))
    expected = model.recalculate_user(0, row)
    ours = fold_in_user(model.item_factors, row.indices, row.data, 0.5, alpha=2.0)
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-4)


def test_fold_in_user_of_empty_history_is_zero() -> None:
    assert not fold_in_user(np.ones((3, 2)), [], [], 1.0).any()


def test_fit_als_is_reproducible_with_a_seed() -> None:
    user_items, _ = checkerboard()
    a = fit_als(user_items, ALSParams(factors=3, random_state=5))
    b = fit_als(user_items, ALSParams(factors=3, random_state=5))
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


def test_popularity_counts_and_halves_at_the_half_life() -> None:
    counts = item_popularity([0, 0, 2], 4)
    assert counts.tolist() == [2, 0, 1, 0]
    decayed = item_popularity([0, 1, 1], 2, timestamps=[100, 100, 90], half_life=10)
    assert decayed.tolist() == pytest.approx([1.0, 1.5])


def test_popularity_scorer_recommends_most_popular_unseen_items() -> None:
    scorer = PopularityScorer(np.array([5, 1, 9, 3], dtype=np.float32))
    seen = sp.csr_matrix(([1.0], ([0], [2])), shape=(1, 4))
    assert recommend(scorer, seen, k=2)[0].tolist() == [0, 3]


def two_cluster_embeddings() -> np.ndarray:
    rng = np.random.default_rng(3)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return (np.repeat(centres, 5, axis=0) + 0.05 * rng.normal(size=(10, 3))).astype(np.float32)


def test_content_scorer_ranks_an_item_of_the_users_cluster_first() -> None:
    scorer = ContentScorer(two_cluster_embeddings())
    history = sp.csr_matrix(([1.0, 1.0], ([0, 0], [5, 6])), shape=(1, 10))
    top = recommend(scorer, history, k=3)[0]
    assert set(top.tolist()) <= {7, 8, 9}


def test_hybrid_scores_an_item_nobody_interacted_with_through_content() -> None:
    embeddings = two_cluster_embeddings()
    user_items = sp.csr_matrix(np.kron(np.eye(2), np.ones((4, 4))), dtype=np.float32)
    user_items = sp.csr_matrix(
        sp.hstack(
            [user_items[:, :4], sp.csr_matrix((8, 1)), user_items[:, 4:], sp.csr_matrix((8, 1))]
        )
    )  # items 4 and 9 have no interactions at all
    als = fit_als(user_items, ALSParams(factors=2, regularization=0.1, iterations=10))
    popularity = item_popularity(user_items.indices, 10)
    hybrid = HybridScorer(
        als, ContentScorer(embeddings), PopularityScorer(popularity), {"als": 1.0, "content": 2.0}
    )
    recs = recommend(hybrid, user_items, k=1)
    assert recs[:4, 0].tolist() == [4] * 4  # the cold item of cluster 1 comes first
    assert recs[4:, 0].tolist() == [9] * 4


def test_blend_scores_adds_weighted_row_zscores() -> None:
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[10.0, 10.0, 10.0]])  # constant: contributes nothing
    blended = blend_scores({"a": a, "b": b}, {"a": 2.0, "b": 5.0})
    z = (a - 2.0) / np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(blended, 2 * z, rtol=1e-6)
    np.testing.assert_array_equal(standardize_rows(b), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="unknown"):
        blend_scores({"a": a}, {"c": 1.0})


def test_top_k_excludes_history_breaks_ties_by_index_and_pads() -> None:
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0]])
    seen = sp.csr_matrix(([1.0], ([0], [4])), shape=(1, 5))
    assert top_k_items(scores, 4, seen)[0].tolist() == [1, 2, 0, -1]


def test_hybrid_survives_an_npz_round_trip_without_pickle(tmp_path: Path) -> None:
    user_items, _ = checkerboard()
    als = fit_als(user_items, ALSParams(factors=4, regularization=0.1, alpha=3.0))
    content = ContentScorer(np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32))
    popularity = PopularityScorer(item_popularity(user_items.indices, 20))
    weights = {"als": 1.0, "content": 0.3, "popularity": 0.1}
    model = HybridScorer(als, content, popularity, weights)
    path = tmp_path / "model.npz"
    save_hybrid(path, model)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) >= {"item_factors", "item_embeddings", "popularity"}
        assert "user_factors" not in data.files
    loaded = load_hybrid(path)
    assert loaded.als.params == als.params
    assert dict(loaded.weights) == weights
    users = np.arange(20)
    # Without stored user factors the loaded model folds users in: same ranking as a
    # fold-in on the original model.
    original = HybridScorer(
        ALSScorer(als.item_factors, None, als.params), content, popularity, weights
    )
    np.testing.assert_allclose(
        loaded.score(users, user_items), original.score(users, user_items), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "weights",
    [
        {"als": 1.0, "content": 0.1, "popularity": 0.1},
        {"als": 0.0, "content": 1.0, "popularity": 0.0},
        {"als": 1.0, "content": 0.0, "popularity": 0.5},
        {"als": 0.0, "content": 0.0, "popularity": 0.0},
    ],
)
@pytest.mark.parametrize("learnt", [True, False])
def test_hybrid_score_equals_the_blend_of_its_standardised_components(
    weights: dict[str, float], learnt: bool
) -> None:
    """The one-product score is the definition: blend_scores of the raw components, cold items
    at the user's mean ALS score, for learnt and folded-in users, an empty history included."""
    rng = np.random.default_rng(5)
    n_users, n_items = 30, 40
    dense = (rng.random((n_users, n_items)) < 0.15).astype(np.float32)
    dense[:, [3, 17]] = 0  # cold items
    dense[7] = 0  # a user without history
    user_items = sp.csr_matrix(dense)
    als = fit_als(user_items, ALSParams(factors=6, regularization=0.5, iterations=5))
    if not learnt:
        als = ALSScorer(als.item_factors, None, als.params)
    popularity = item_popularity(user_items.indices, n_items)
    hybrid = HybridScorer(
        als,
        ContentScorer(rng.standard_normal((n_items, 5)).astype(np.float32)),
        PopularityScorer(popularity),
        weights,
    )
    users = np.arange(n_users)
    expected = blend_scores(hybrid.components(users, user_items), weights)
    np.testing.assert_allclose(hybrid.score(users, user_items), expected, rtol=1e-4, atol=1e-4)

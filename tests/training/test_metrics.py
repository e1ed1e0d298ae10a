"""Protocol metrics against examples worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from training.metrics import (
    catalog_coverage,
    evaluated_users,
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

N_ITEMS = 8
# user 0: hit at rank 2 of 3, 2 relevant items
# user 1: hits at ranks 1 and 2, one slot unfilled, 4 relevant items
# user 2: no test rows -> not evaluated
# user 3: no recommendations -> not evaluated
# user 4: no hit, 1 relevant item
RECS = np.array(
    [
        [1, 2, 3],
        [4, 0, -1],
        [1, 2, 3],
        [-1, -1, -1],
        [0, 1, 2],
    ]
)
RELEVANT_ITEMS = {0: [2, 5], 1: [4, 0, 1, 3], 2: [], 3: [1], 4: [3]}


def relevant_matrix() -> sp.csr_matrix:
    rows = [u for u, items in RELEVANT_ITEMS.items() for _ in items]
    cols = [i for items in RELEVANT_ITEMS.values() for i in items]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(5, N_ITEMS))


D2, D3 = 1 / math.log2(3), 1 / math.log2(4)  # discounts at ranks 2 and 3


def test_hit_matrix_marks_relevant_positions_and_ignores_padding() -> None:
    hits = hit_matrix(RECS, relevant_matrix(), k=3)
    expected = [[0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert hits.tolist() == np.array(expected, dtype=bool).tolist()


def test_only_users_with_test_rows_and_recommendations_are_evaluated() -> None:
    assert evaluated_users(RECS, relevant_matrix()).tolist() == [True, True, False, False, True]


def test_precision_divides_hits_by_k() -> None:
    assert precision_at_k(RECS, relevant_matrix(), 3) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_recall_divides_hits_by_number_of_test_items() -> None:
    assert recall_at_k(RECS, relevant_matrix(), 3) == pytest.approx((1 / 2 + 2 / 4 + 0) / 3)


def test_ndcg_uses_log2_discount_and_ideal_over_min_k_relevant() -> None:
    user0 = D2 / (1 + D2)  # 2 relevant -> ideal fills ranks 1-2
    user1 = (1 + D2) / (1 + D2 + D3)  # 4 relevant, k = 3 -> ideal fills ranks 1-3
    assert ndcg_at_k(RECS, relevant_matrix(), 3) == pytest.approx((user0 + user1 + 0) / 3)


def test_map_sums_precision_at_hits_over_all_test_items() -> None:
    user0 = (1 / 2) / 2
    user1 = (1 / 1 + 2 / 2) / 4
    assert map_at_k(RECS, relevant_matrix(), 3) == pytest.approx((user0 + user1 + 0) / 3)


def test_map_denominator_is_test_size_even_beyond_k() -> None:
    recs = np.arange(10)[None, :]
    relevant = sp.csr_matrix(np.ones((1, 20)))
    assert map_at_k(recs, relevant, 10) == pytest.approx(10 / 20)
    assert ndcg_at_k(recs, relevant, 10) == pytest.approx(1.0)


def test_hit_rate_counts_users_with_any_hit() -> None:
    assert hit_rate_at_k(RECS, relevant_matrix(), 3) == pytest.approx(2 / 3)


def test_ranking_metrics_agrees_with_single_metrics_and_respects_cutoff() -> None:
    relevant = relevant_matrix()
    combined = ranking_metrics(RECS, relevant, 2)
    assert combined.n_users == 3
    assert combined.precision == pytest.approx(precision_at_k(RECS, relevant, 2))
    assert combined.recall == pytest.approx(recall_at_k(RECS, relevant, 2))
    assert combined.ndcg == pytest.approx(ndcg_at_k(RECS, relevant, 2))
    assert combined.map == pytest.approx(map_at_k(RECS, relevant, 2))
    assert combined.hit_rate == pytest.approx(2 / 3)
    # At k = 2, user 0's hit at rank 2 still counts, user 1 has two hits out of 2 slots.
    assert combined.precision == pytest.approx((1 / 2 + 2 / 2 + 0) / 3)


def test_catalog_coverage_counts_distinct_recommended_items() -> None:
    assert catalog_coverage(RECS, N_ITEMS) == pytest.approx(5 / 8)  # items 0-4


def test_novelty_is_mean_self_information_of_recommended_items() -> None:
    counts = np.array([8, 4, 2, 1, 0])
    recs = np.array([[0, 1], [2, 3], [4, -1]])
    # shares 1, 1/2, 1/4, 1/8 and (unseen, counted once) 1/8 -> 0, 1, 2, 3, 3 bits
    assert novelty(recs, counts, n_users=8) == pytest.approx((0 + 1 + 2 + 3 + 3) / 5)
    # Without n_users the share is over all 15 interactions (the unseen item counts once).
    expected = np.mean(-np.log2(np.array([8, 4, 2, 1, 1]) / 16))
    assert novelty(recs, counts) == pytest.approx(expected)


def test_misuse_is_reported() -> None:
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(RECS, relevant_matrix(), 4)
    with pytest.raises(ValueError, match="rows"):
        precision_at_k(RECS[:2], relevant_matrix(), 3)
    with pytest.raises(ValueError, match="outside"):
        precision_at_k(np.array([[9]]), sp.csr_matrix((1, 8)), 1)

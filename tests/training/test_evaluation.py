"""The evaluation shortcuts give exactly what the general path gives."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.evaluation import popular_top_k
from training.recommenders import PopularityScorer, recommend


def test_popular_top_k_equals_scoring_every_item() -> None:
    rng = np.random.default_rng(5)
    history = sp.random(300, 80, density=0.2, format="csr", random_state=6)
    history.data[:] = 1.0
    popularity = rng.random(80).astype(np.float32)
    popularity[::7] = 0.0  # some items have no interactions at all
    users = np.arange(0, 300, 3, dtype=np.int64)
    expected = recommend(PopularityScorer(popularity), history, k=10, users=users)
    assert np.array_equal(popular_top_k(popularity, history, users, 10), expected)


def test_popular_top_k_pads_when_a_user_has_seen_almost_everything() -> None:
    history = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    popularity = np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)
    out = popular_top_k(popularity, history, np.array([0, 1]), 3)
    assert out.tolist() == [[3, -1, -1], [0, 1, 2]]

"""Content features: one-hot categories, TF-IDF text, scaled attributes, SVD embedding."""

from __future__ import annotations

import numpy as np
import pytest

from training.features import (
    FeatureWeights,
    attribute_matrix,
    build_item_embedding,
    category_matrix,
    text_matrix,
)

IDS = ["a", "b", "c", "d", "e", "f"]
TITLES = ["Space Wars", "Space Wars II", "Love in Paris", "Paris Love Story", "Space Odyssey", "X"]
CATEGORIES = [
    ["SciFi", "Action"],
    ["SciFi", "Action"],
    ["Romance"],
    ["Romance", "Drama"],
    ["SciFi"],
    [],
]
TAGS = [["robots", "lasers"], ["robots"], ["kiss"], ["kiss", "paris"], ["lasers"], []]
ATTRS: list[dict[str, float | int | None]] = [
    {"year": 1977},
    {"year": 1980},
    {"year": 1995},
    {"year": 1999},
    {"year": 1968},
    {},
]


def test_category_matrix_is_one_hot_per_item() -> None:
    matrix, names = category_matrix(CATEGORIES)
    assert names == ["Action", "Drama", "Romance", "SciFi"]
    assert matrix.toarray()[3].tolist() == [0, 1, 1, 0]
    assert matrix.toarray()[5].tolist() == [0, 0, 0, 0]


def test_text_matrix_weights_terms_shared_by_titles_and_tags() -> None:
    matrix = text_matrix(TITLES, TAGS, min_df=2)
    assert matrix.shape[0] == 6
    # "Space Wars" and "Space Wars II" share title words and a tag: similar rows.
    dense = matrix.toarray()
    assert dense[0] @ dense[1] > dense[0] @ dense[2]


def test_attribute_matrix_standardises_and_fills_missing_with_mean() -> None:
    matrix, names = attribute_matrix([{"year": 1990}, {"year": 2000}, {"year": None}, {}])
    assert names == ["year"]
    assert matrix[:, 0].tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0])


def test_embedding_has_unit_rows_and_puts_similar_items_together() -> None:
    emb = build_item_embedding(IDS, TITLES, CATEGORIES, TAGS, ATTRS, n_components=4)
    assert emb.item_ids == IDS
    assert emb.vectors.dtype == np.float32
    assert emb.vectors.shape[0] == 6
    assert emb.vectors.shape[1] <= 4
    norms = np.linalg.norm(emb.vectors[:5], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    sims = emb.vectors @ emb.vectors.T
    assert sims[0, 1] > sims[0, 2]  # two SciFi/Action space films vs a romance
    assert sims[2, 3] > sims[2, 4]


def test_embedding_is_reproducible_and_checks_lengths() -> None:
    first = build_item_embedding(IDS, TITLES, CATEGORIES, TAGS, n_components=3, seed=1)
    again = build_item_embedding(IDS, TITLES, CATEGORIES, TAGS, n_components=3, seed=1)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    with pytest.raises(ValueError, match="equally long"):
        build_item_embedding(IDS, TITLES[:2], CATEGORIES)


def test_block_weights_change_what_counts() -> None:
    genres_only = build_item_embedding(
        IDS, TITLES, CATEGORIES, TAGS, n_components=5, weights=FeatureWeights(1.0, 0.0, 0.0)
    )
    sims = genres_only.vectors @ genres_only.vectors.T
    # Items 0 and 1 have identical genres, so with text switched off they coincide.
    assert sims[0, 1] == pytest.approx(1.0, abs=1e-5)

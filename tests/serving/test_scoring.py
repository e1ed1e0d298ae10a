"""Serving's own fold-in, content profile and blend give exactly training's hybrid scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp

from app.profiles import ProfileSnapshot
from app.serving.model import ServingModel, UserRow
from app.serving.recommender import user_row
from training.artifact import ArtifactError, ModelArtifact
from training.recommenders import (
    ALSParams,
    ContentScorer,
    HybridScorer,
    PopularityScorer,
    fit_als,
    fold_in_user,
    hybrid_from_arrays,
    hybrid_to_arrays,
)

N_USERS, N_ITEMS = 60, 40


def user_items(weighted: bool, seed: int = 0) -> sp.csr_matrix:
    """A users x items matrix like Dataset.matrix builds: ones, or summed signed weights."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.15).astype(np.float32)
    dense[:, -4:] = 0  # four items nobody touched: cold in ALS, zero popularity
    if weighted:
        weights = rng.choice([1.0, 2.0, 4.0, 8.0, -4.0], size=dense.shape).astype(np.float32)
        dense *= weights
    return sp.csr_matrix(dense)


def hybrid(matrix: sp.csr_matrix, confidence: str = "linear") -> HybridScorer:
    rng = np.random.default_rng(1)
    params = ALSParams(
        factors=6,
        iterations=3,
        regularization=2.0,
        alpha=5.0,
        random_state=3,
        confidence=confidence,
    )
    positive = matrix.copy()
    positive.data = np.abs(positive.data)
    als = fit_als(positive if confidence == "log" else matrix, params)
    popularity = np.asarray((matrix != 0).sum(axis=0), dtype=np.float32).ravel()
    return HybridScorer(
        als,
        ContentScorer(rng.normal(size=(N_ITEMS, 5)).astype(np.float32)),
        PopularityScorer(popularity),
        {"als": 1.0, "content": 0.3, "popularity": 0.2},
    )


def artifact(model: HybridScorer, values: str) -> ModelArtifact:
    arrays = hybrid_to_arrays(model)
    arrays["item_ids"] = np.asarray([f"sku-{i}" for i in range(N_ITEMS)])
    return ModelArtifact(
        version="v-test",
        arrays=arrays,
        params={
            "choice": {"values": values, "weights": dict(model.weights)},
            "event_weights": {"view": 1.0, "purchase": 8.0, "dislike": -4.0, "rating": 1.0},
        },
    )


def row_of(matrix: sp.csr_matrix, user: int) -> UserRow:
    start, end = matrix.indptr[user], matrix.indptr[user + 1]
    return UserRow(
        items=matrix.indices[start:end].astype(np.int64), values=matrix.data[start:end].copy()
    )


@pytest.mark.parametrize(
    ("weighted", "confidence"),
    [(False, "linear"), (True, "linear"), (False, "log")],
    ids=["binary", "weighted-with-dislikes", "log-confidence"],
)
def test_serving_scores_equal_training_hybrid_scores(weighted: bool, confidence: str) -> None:
    """For every user row, ServingModel.score equals training's HybridScorer.score on the same
    row (fold-in from scratch, content profile, cold items given the mean ALS score, z-scored
    blend), so serving applies the model exactly as it was evaluated."""
    matrix = user_items(weighted)
    if confidence == "log":
        matrix.data = np.abs(matrix.data)
    trained = hybrid(matrix, confidence)
    served_as = HybridScorer(
        type(trained.als)(trained.als.item_factors, None, trained.als.params),
        trained.content,
        trained.popularity,
        trained.weights,
    )
    model = ServingModel.from_artifact(artifact(trained, "weighted" if weighted else "binary"))
    assert model.cold.sum() == 4
    expected = served_as.score(np.arange(N_USERS), matrix)
    for user in range(N_USERS):
        got = model.score(row_of(matrix, user))
        np.testing.assert_allclose(got, expected[user], rtol=1e-4, atol=1e-4)


def test_fold_in_equals_training_fold_in_user() -> None:
    """The user factors solved by serving equal training's fold_in_user, negative values (a
    confident "no") included."""
    matrix = user_items(weighted=True)
    trained = hybrid(matrix)
    model = ServingModel.from_artifact(artifact(trained, "weighted"))
    p = trained.als.params
    for user in range(10):
        row = row_of(matrix, user)
        expected = fold_in_user(
            trained.als.item_factors,
            row.items,
            row.values,
            p.regularization,
            alpha=p.alpha,
            gram=trained.als.gram,
        )
        np.testing.assert_allclose(model.fold_in(row), expected, rtol=1e-5, atol=1e-6)


def test_an_artifact_serving_cannot_apply_is_refused() -> None:
    """bm25 confidences depend on the whole training matrix, and a content weight needs
    embeddings: such artifacts are refused with a message naming the problem."""
    trained = hybrid(user_items(weighted=False))
    bm25 = artifact(trained, "binary")
    bm25.arrays["confidence"] = np.array("bm25")
    with pytest.raises(ArtifactError, match="bm25"):
        ServingModel.from_artifact(bm25)
    no_embeddings = artifact(trained, "binary")
    del no_embeddings.arrays["item_embeddings"]
    with pytest.raises(ArtifactError, match="embeddings"):
        ServingModel.from_artifact(no_embeddings)
    scheme = artifact(trained, "binary")
    scheme.params["choice"]["values"] = "tf-idf"
    with pytest.raises(ArtifactError, match="value scheme"):
        ServingModel.from_artifact(scheme)


def profile(recent: list[dict[str, Any]], scores: dict[str, float], events: int) -> ProfileSnapshot:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    return ProfileSnapshot(
        user_id="u",
        recent=recent,
        item_scores=scores,
        counts={},
        events=events,
        last_event_at=now - timedelta(days=30),
        as_of=now,
    )


def test_user_row_follows_the_value_scheme() -> None:
    """binary: 1 per item interacted with, -1 for a net-disliked one, items unknown to the model
    left out; weighted: undecayed sums of the model's event weights while the recent list holds
    the whole history, else the decayed scores rescaled to the last event."""
    model = ServingModel.from_artifact(artifact(hybrid(user_items(False)), "binary"))
    recent = [
        {"item_id": "sku-3", "type": "purchase", "value": None, "ts": 0.0},
        {"item_id": "sku-3", "type": "view", "value": None, "ts": 0.0},
        {"item_id": "sku-1", "type": "dislike", "value": None, "ts": 0.0},
        {"item_id": "new-item", "type": "view", "value": None, "ts": 0.0},
    ]
    scores = {"sku-3": 3.0, "sku-1": -1.5, "new-item": 0.5}
    row = user_row(model, profile(recent, scores, events=4), half_life=30 * 86_400.0)
    assert row.items.tolist() == [1, 3]
    assert row.values.tolist() == [-1.0, 1.0]

    weighted = ServingModel.from_artifact(artifact(hybrid(user_items(True)), "weighted"))
    row = user_row(weighted, profile(recent, scores, events=4), half_life=30 * 86_400.0)
    assert row.values.tolist() == [-4.0, 9.0]  # undecayed, the model's weights
    # More events than the recent list holds: decayed scores, rescaled to the last event
    # (30 days ago with a 30-day half-life: times 2).
    row = user_row(weighted, profile(recent, scores, events=500), half_life=30 * 86_400.0)
    assert row.values.tolist() == [-3.0, 6.0]


def test_request_weights_override_the_artifact_blend() -> None:
    """A request context (an experiment variant) can change the blend: with the content
    weight alone the score is the z-scored content cosine; with every weight zero, all zeros."""
    matrix = user_items(weighted=False)
    model = ServingModel.from_artifact(artifact(hybrid(matrix), "binary"))
    row = row_of(matrix, 0)
    content_only = model.score(row, {"als": 0.0, "content": 1.0, "popularity": 0.0})
    raw = model.components(row)["content"]
    np.testing.assert_allclose(content_only, (raw - raw.mean()) / raw.std(), atol=1e-5)
    assert not model.score(row, {"als": 0.0, "content": 0.0, "popularity": 0.0}).any()
    assert not np.allclose(model.score(row), content_only)


@pytest.mark.parametrize("size", [1, 5, 20, 39, 60])
@pytest.mark.parametrize(
    "weights",
    [None, {"content": 3.0}, {"als": 0.0}, {"content": 0.0}, {"popularity": -0.5}],
    ids=["artifact", "content-heavy", "no-als", "no-content", "against-popularity"],
)
@pytest.mark.parametrize("head_size", [0, 12, 30], ids=["no-head", "head-12", "head-30"])
def test_top_is_the_best_allowed_items_of_the_full_ranking(
    size: int, weights: dict[str, float] | None, head_size: int
) -> None:
    """The two-pass top (content part only for items within its bound), from the head of the
    norm order when its bound allows, returns exactly the first ``size`` allowed items of the
    full score ranking, with the same scores."""
    matrix = user_items(weighted=False)
    model = ServingModel.from_artifact(skewed(hybrid(matrix)), head_size=head_size)
    assert (model.head is None) == (head_size == 0)
    rng = np.random.default_rng(9)
    for user in range(0, N_USERS, 7):
        row = row_of(matrix, user)
        allowed = rng.random(N_ITEMS) < 0.8
        full = model.score(row, weights)
        candidates = np.flatnonzero(allowed)
        ranked = candidates[np.lexsort((candidates, -full[candidates]))][:size]
        chosen, scores = model.top(row, allowed, size, weights)
        assert chosen.tolist() == ranked.tolist()
        np.testing.assert_allclose(scores, full[ranked], rtol=1e-5, atol=1e-5)


def skewed(model: HybridScorer) -> ModelArtifact:
    """The model's artifact with factor rows of very different lengths, as trained ALS
    factors have (popular items long, the tail short), so that the head decides most lists."""
    served = artifact(model, "binary")
    factors = served.arrays["item_factors"]
    scale = np.random.default_rng(5).permutation(np.geomspace(20.0, 0.05, N_ITEMS))
    served.arrays["item_factors"] = (factors * scale[:, None]).astype(np.float32)
    return served


def test_the_head_answers_alone_when_its_bound_allows() -> None:
    """A head of the longest factor rows answers short lists on its own for many users here,
    each exactly the full ranking's, and no list it answers could have held an item outside
    it."""
    matrix = user_items(weighted=False)
    model = ServingModel.from_artifact(skewed(hybrid(matrix)), head_size=20)
    head = model.head
    assert head is not None
    assert head.items.size == 20
    norms = np.linalg.norm(model.warm_factors, axis=1)
    outside = np.setdiff1d(np.arange(N_ITEMS), head.items)
    assert norms[head.items].min() >= norms[outside].max()
    allowed = np.ones(N_ITEMS, dtype=bool)
    answered = 0
    for user in range(N_USERS):
        row = row_of(matrix, user)
        query = model.query(row)
        found = model._top_in_head(query, allowed, 3)
        if found is None:
            continue
        answered += 1
        assert set(found[0].tolist()) <= set(head.items.tolist())
        primary = model.blend.primary @ query.main
        assert primary[outside].max() <= head.rest_bound(query.main) + 1e-5
        full = model.score(row)
        ranked = np.lexsort((np.arange(N_ITEMS), -full))[:3]
        assert found[0].tolist() == ranked.tolist()
        np.testing.assert_allclose(found[1], full[ranked], rtol=1e-5, atol=1e-5)
    assert answered >= N_USERS // 3


def with_cold_factors(model: HybridScorer, own: int) -> tuple[ModelArtifact, npt.NDArray[np.int64]]:
    """The model's artifact, ``own`` of its four cold items given factors of their own.

    implicit leaves an item without interactions at zero, but the artifact is what serving
    must apply, whatever it holds (a remapped or hand-made model may hold anything there).
    """
    served = artifact(model, "weighted")
    cold = np.flatnonzero(served.arrays["popularity"] <= 0)
    assert not served.arrays["item_factors"][cold].any()
    factors = served.arrays["item_factors"].copy()
    factors[cold[:own]] = np.random.default_rng(4).normal(size=(own, factors.shape[1]))
    served.arrays["item_factors"] = factors
    return served, cold


def similar_reference(arrays: dict[str, npt.NDArray[Any]], item: int) -> npt.NDArray[np.float64]:
    """Item-item similarity as serving defines it, from the artifact's arrays alone: z-scored
    ALS cosine (cold items at the mean warm cosine; none for a cold item) and content cosine."""
    factors = arrays["item_factors"].astype(np.float64)
    embeddings = arrays["item_embeddings"].astype(np.float64)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    cold = arrays["popularity"] <= 0
    w_als, w_content, _ = arrays["blend_weights"].tolist()
    norms = np.linalg.norm(factors, axis=1)
    cosine = factors @ factors[item] / np.maximum(norms * norms[item], 1e-12)
    cosine[cold] = cosine[~cold].mean()
    content = embeddings @ embeddings[item]
    total = w_content * (content - content.mean()) / content.std()
    if not cold[item]:
        total += w_als * (cosine - cosine.mean()) / cosine.std()
    return total


@pytest.mark.parametrize("own", [0, 2], ids=["zero-as-trained", "two-with-own-factors"])
def test_items_cold_in_training_keep_the_artifact_factors(own: int) -> None:
    """Serving keeps cold items' factors apart from the blend matrix (which holds the mean warm
    row for them): live events on items that were cold in training fold in with the artifact's
    factors, and fold-ins, scores, similar items and nearest anchors equal what the artifact's
    arrays give."""
    matrix = user_items(weighted=True)
    served, cold = with_cold_factors(hybrid(matrix), own)
    model = ServingModel.from_artifact(served)
    reference = hybrid_from_arrays(served.arrays)
    np.testing.assert_array_equal(
        model.factors_of(np.arange(N_ITEMS)), served.arrays["item_factors"]
    )

    live = matrix.toarray()
    live[::2, cold[0]] = 1.0  # every other user now viewed a cold item,
    live[1::3, cold[1]] = -4.0  # some disliked another one,
    live[::5, cold[2]] = 8.0  # and some bought one whose factors are zero
    live = sp.csr_matrix(live)
    expected_factors = reference.als.fold_in(live)
    expected_scores = reference.score(np.arange(N_USERS), live)
    for user in range(N_USERS):
        row = row_of(live, user)
        np.testing.assert_allclose(model.fold_in(row), expected_factors[user], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.score(row), expected_scores[user], rtol=1e-4, atol=1e-4)

    for item in range(N_ITEMS):
        np.testing.assert_allclose(
            model.similar_scores(item), similar_reference(served.arrays, item), rtol=1e-5, atol=1e-5
        )

    # Without embeddings, "because you ..." anchors are matched by factor cosine.
    served.arrays.pop("item_embeddings")
    served.arrays["blend_weights"] = np.array([1.0, 0.0, 0.2])
    plain = ServingModel.from_artifact(served)
    factors = served.arrays["item_factors"].astype(np.float64)
    unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    candidates, anchors = np.arange(N_ITEMS), np.array([cold[0], 3, cold[1], 7, 11])
    expected = (unit[candidates] @ unit[anchors].T).argmax(axis=1)
    np.testing.assert_array_equal(plain.nearest_of(candidates, anchors), expected)

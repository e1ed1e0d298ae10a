"""Events are stored exactly once per event_id, acknowledged after commit, reported per event."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from app.db.models import Event, Item
from app.ingest import EventIngestor, KnownItems
from app.schemas import EventBatchAck, EventIn, ItemIn
from app.services import Services
from tests.conftest import count_rows, make_settings


def _event(n: int, user: str = "u1", item: str = "i1", kind: str = "click") -> dict[str, object]:
    return {"event_id": f"e{n}", "user_id": user, "item_id": item, "type": kind}


def test_single_event_is_stored_and_acknowledged(client: TestClient, services: Services) -> None:
    response = client.post("/v1/events", json=_event(1))
    assert response.status_code == 201
    assert response.json() == {"event_id": "e1", "status": "accepted", "profile": "updated"}
    with services.sessions() as session:
        stored = session.scalars(select(Event)).one()
    assert (stored.event_id, stored.user_id, stored.item_id, stored.type) == (
        "e1",
        "u1",
        "i1",
        "click",
    )


def test_same_event_id_twice_is_stored_once_and_reported_duplicate(
    client: TestClient, services: Services
) -> None:
    first = client.post("/v1/events", json=_event(1))
    again = client.post("/v1/events", json=_event(1))
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert again.json()["profile"] == "unchanged"
    assert count_rows(services, "events") == 1
    profile = client.get("/v1/users/u1/profile").json()
    assert profile["counts"] == {"click": 1}
    assert profile["events"] == 1


def test_batch_retry_counts_nothing_twice(client: TestClient, services: Services) -> None:
    batch = {"events": [_event(n, item=f"i{n % 3}") for n in range(10)]}
    first = client.post("/v1/events/batch", json=batch).json()
    retry = client.post("/v1/events/batch", json=batch).json()
    assert (first["accepted"], first["duplicates"]) == (10, 0)
    assert (retry["accepted"], retry["duplicates"]) == (0, 10)
    assert {r["status"] for r in retry["results"]} == {"duplicate"}
    assert count_rows(services, "events") == 10
    profile = client.get("/v1/users/u1/profile").json()
    assert profile["counts"] == {"click": 10}
    assert len(profile["recent"]) == 10


def test_duplicate_within_one_batch_is_reported(client: TestClient, services: Services) -> None:
    body = client.post("/v1/events/batch", json={"events": [_event(1), _event(1)]}).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate"]
    assert count_rows(services, "events") == 1


def test_mixed_batch_stores_valid_events_and_reports_each(
    client: TestClient, services: Services
) -> None:
    events = [
        _event(1),
        {"event_id": "e2", "user_id": "u1", "item_id": "i1", "type": "teleport"},
        _event(3, kind="purchase"),
        {"event_id": "e4", "user_id": "u1", "type": "view"},
    ]
    response = client.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    # The answer is exactly what its documented model writes.
    assert EventBatchAck.model_validate(body).model_dump(mode="json") == body
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 2)
    statuses = [(r["index"], r["event_id"], r["status"]) for r in body["results"]]
    assert statuses == [
        (0, "e1", "accepted"),
        (1, "e2", "rejected"),
        (2, "e3", "accepted"),
        (3, "e4", "rejected"),
    ]
    assert "allowed: view, click" in body["results"][1]["error"]
    assert body["results"][3]["error"] == "item_id: is required"
    assert count_rows(services, "events") == 2


def test_a_batch_validated_in_one_call_gives_what_one_event_at_a_time_gives(
    services: Services,
) -> None:
    """``parse`` validates a whole batch with one call: each valid event comes out as validating
    it on its own makes it (the same normalisation), and each invalid one is reported with its
    own errors, in its place."""
    batch: list[Any] = [
        {**_event(1, kind=" CLICK "), "timestamp": 1_700_000_000},
        {**_event(2, kind="rating"), "value": 4, "timestamp": "2023-11-14T23:13:20+01:00"},
        {**_event(3), "type": "teleport"},
        {"user_id": "u2", "item_id": "i2", "type": "view", "context": {"page": "home"}},
        "not an event",
        {**_event(6, kind="purchase"), "recommendation_id": "rec-1", "timestamp": 1.5e9},
    ]
    valid, rejected = services.ingestor.parse(batch)
    assert valid == [(i, EventIn.model_validate(batch[i])) for i in (0, 1, 3, 5)]
    assert [event.type for _, event in valid] == ["click", "rating", "view", "purchase"]
    assert valid[1][1].timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert [(r.index, r.event_id, r.status) for r in rejected] == [
        (2, "e3", "rejected"),
        (4, None, "rejected"),
    ]
    assert "unknown event type 'teleport'" in (rejected[0].error or "")


def test_missing_event_id_is_generated(client: TestClient, services: Services) -> None:
    body = client.post("/v1/events", json={"user_id": "u", "item_id": "i", "type": "view"}).json()
    assert len(body["event_id"]) == 36
    with services.sessions() as session:
        assert session.scalar(select(Event.event_id)) == body["event_id"]


def test_timestamps_accept_iso_and_epoch_seconds(client: TestClient, services: Services) -> None:
    epoch = 1_700_000_000
    events = [
        {**_event(1), "timestamp": epoch},
        {**_event(2), "timestamp": "2023-11-14T22:13:20Z"},
        {**_event(3), "timestamp": "2023-11-14T23:13:20+01:00"},
        {**_event(4), "timestamp": "2023-11-14T22:13:20"},
    ]
    body = client.post("/v1/events/batch", json={"events": events}).json()
    assert body["accepted"] == 4
    with services.sessions() as session:
        stamps = session.scalars(select(Event.occurred_at)).all()
    assert {s.replace(tzinfo=UTC) if s.tzinfo is None else s for s in stamps} == {
        datetime.fromtimestamp(epoch, UTC)
    }


def test_event_for_unknown_item_creates_a_stub(client: TestClient, services: Services) -> None:
    client.post("/v1/events", json=_event(1, item="new-sku"))
    with services.sessions() as session:
        item = session.get(Item, "new-sku")
    assert item is not None
    assert item.is_stub
    assert not item.hidden


@pytest.mark.parametrize("unknown_items", ["stub", "reject"])
def test_items_seen_stored_spare_the_lookup_and_new_ones_still_get_theirs(
    services: Services, unknown_items: str
) -> None:
    """Once a batch has stored events for an item, later batches naming only such items skip
    the catalogue lookup; a batch with one new item among them takes it again."""
    settings = make_settings(services.settings, unknown_items=unknown_items)
    ingestor = EventIngestor(services.sessions, services.profiles, settings)
    services.catalog.upsert([ItemIn(item_id="known")])
    first = ingestor.ingest_raw([{"user_id": "u", "item_id": "known", "type": "view"}])
    assert first.accepted == 1
    assert ingestor.known_items.cover({"known"})

    again = ingestor.ingest_raw(
        [
            {"user_id": "u", "item_id": "known", "type": "click"},
            {"user_id": "u", "item_id": "new", "type": "click"},
        ]
    )
    with services.sessions() as session:
        stub = session.get(Item, "new")
    if unknown_items == "stub":
        assert (again.accepted, again.rejected) == (2, 0)
        assert stub is not None
        assert stub.is_stub
        assert ingestor.known_items.cover({"known", "new"})
    else:
        assert (again.accepted, again.rejected) == (1, 1)
        assert stub is None
        assert not ingestor.known_items.cover({"new"})
    # Only known items again: stored, nothing rejected.
    third = ingestor.ingest_raw([{"user_id": "v", "item_id": "known", "type": "purchase"}])
    assert third.accepted == 1
    assert count_rows(services, "events") == (4 if unknown_items == "stub" else 3)


def test_known_items_start_afresh_when_full() -> None:
    known = KnownItems(limit=3)
    known.add({"a", "b"})
    assert known.cover({"a", "b"})
    known.add({"c", "d"})  # over the limit: only the newest are kept
    assert known.cover({"c", "d"})
    assert not known.cover({"a"})


def test_known_items_include_the_catalogue_index(services: Services) -> None:
    """In the API the catalogue index's items count as known; before it loads, none do."""
    known = KnownItems(listed=services.catalog_index.listed)
    services.catalog.upsert([ItemIn(item_id="listed")])
    assert not known.cover({"listed"})
    services.catalog_index.refresh(full=True)
    assert known.cover({"listed"})
    assert not known.cover({"listed", "elsewhere"})
    known.add({"elsewhere"})
    assert known.cover({"listed", "elsewhere"})


def test_events_for_hidden_items_are_still_recorded(client: TestClient, services: Services) -> None:
    client.put("/v1/items/gone", json={"title": "Gone"})
    client.delete("/v1/items/gone")
    response = client.post("/v1/events", json=_event(1, item="gone"))
    assert response.status_code == 201
    assert count_rows(services, "events") == 1


def test_future_timestamp_within_a_day_is_accepted(client: TestClient) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = client.post("/v1/events", json={**_event(1), "timestamp": soon})
    assert response.status_code == 201


def test_event_is_committed_before_acknowledgement(client: TestClient, services: Services) -> None:
    """The acknowledgement means a new connection already sees the row."""
    client.post("/v1/events", json=_event(1))
    with services.engine.connect() as fresh:
        assert fresh.execute(select(Event.event_id)).scalar_one() == "e1"


def test_ten_thousand_event_batch_is_accepted(client: TestClient, services: Services) -> None:
    events = [_event(n, user=f"u{n % 500}", item=f"i{n % 700}") for n in range(10_000)]
    body = client.post("/v1/events/batch", json={"events": events}).json()
    assert body["accepted"] == 10_000
    assert count_rows(services, "events") == 10_000
    assert client.get("/v1/users/u7/profile").json()["events"] == 20


def test_sqlite_batches_store_times_as_sqlalchemy_does() -> None:
    """The SQLite batch path formats times itself; they must read back like any other row."""
    from sqlalchemy import create_engine

    from app.db.queries import sqlite_datetime

    dialect = create_engine("sqlite://").dialect
    column = Event.__table__.c.occurred_at
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    for value in (
        datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ):
        assert sqlite_datetime(value) == process(value)


def test_a_batch_aborted_by_a_deadlock_is_stored_again(services: Services) -> None:
    """PostgreSQL: a batch whose new event ids another transaction inserts in the opposite
    order deadlocks with it; PostgreSQL aborts the batch's statement (which stored nothing) and
    the batch runs again, finding the other transaction's events: both duplicates, no error."""
    if services.engine.dialect.name != "postgresql":
        pytest.skip("a deadlock between writers needs PostgreSQL")
    now = datetime.now(UTC)
    insert = text(
        "INSERT INTO events (event_id, user_id, item_id, type, occurred_at, received_at) "
        "VALUES (:event_id, 'other', 'i1', 'view', :now, :now)"
    )
    outcome: list[Any] = []
    with services.engine.connect() as other:
        # The other writer waits longer before it checks for a deadlock: the batch's statement
        # is the one PostgreSQL aborts.
        other.execute(text("SET deadlock_timeout = '10s'"))
        other.execute(insert, {"event_id": "dl-a", "now": now})
        batch = threading.Thread(
            target=lambda: outcome.append(
                services.ingestor.ingest_raw([_event_with_id("dl-b"), _event_with_id("dl-a")])
            )
        )
        batch.start()
        time.sleep(0.3)  # the batch has inserted dl-b and waits for dl-a
        other.execute(insert, {"event_id": "dl-b", "now": now})  # waits: the deadlock
        other.commit()
        batch.join(30)
    assert not batch.is_alive()
    [result] = outcome
    assert [(r.event_id, r.status) for r in result.results] == [
        ("dl-b", "duplicate"),
        ("dl-a", "duplicate"),
    ]
    with services.sessions() as session:
        users = session.scalars(select(Event.user_id).where(Event.event_id.like("dl-%"))).all()
    assert sorted(users) == ["other", "other"]


def _event_with_id(event_id: str) -> dict[str, object]:
    return {"event_id": event_id, "user_id": "u-dl", "item_id": "i1", "type": "view"}

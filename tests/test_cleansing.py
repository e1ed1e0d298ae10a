"""Cleansing turns what other systems export into what the API accepts, and says why when it
cannot; the rules of validity stay with the schemas."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from app.cleansing import (
    EVENT_FIELDS,
    ITEM_FIELDS,
    ColumnMapping,
    EventCleanser,
    ItemCleanser,
    RecentDuplicates,
    Rejected,
    clean_timestamp,
    text_scalar,
)
from app.config import DEFAULT_EVENT_TYPE_ALIASES, Settings
from app.schemas import EventIn

T = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def cleanse(record: dict[str, object], **mapping: str) -> dict[str, object]:
    cleanser = EventCleanser(DEFAULT_EVENT_TYPE_ALIASES, ColumnMapping(mapping, EVENT_FIELDS))
    return cleanser(record)


@pytest.mark.parametrize(
    "raw",
    [
        1_700_000_000,
        "1700000000",
        1_700_000_000.0,
        1_700_000_000_000,
        "1700000000000",
        1_700_000_000_000_000,
        1_700_000_000_000_000_000,
        Decimal("1700000000"),
        "2023-11-14T22:13:20Z",
        "2023-11-14T23:13:20+01:00",
        "2023-11-14 22:13:20",
        " 2023-11-14T22:13:20.000000 ",
        datetime(2023, 11, 14, 22, 13, 20),
        datetime(2023, 11, 14, 23, 13, 20, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_timestamps_from_iso_and_every_epoch_unit_mean_the_same_instant(raw: object) -> None:
    assert clean_timestamp(raw) == T


def test_a_date_is_midnight_utc_and_empty_text_is_no_timestamp() -> None:
    assert clean_timestamp(date(2024, 2, 29)) == datetime(2024, 2, 29, tzinfo=UTC)
    assert clean_timestamp("  ") is None
    assert clean_timestamp(None) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("yesterday", "timestamp: is neither ISO 8601 nor epoch seconds/milliseconds"),
        (True, "timestamp: must be ISO 8601 or epoch seconds/milliseconds, got a boolean"),
        (float("nan"), "timestamp: must be a finite number"),
        ("1e400", "timestamp: must be a finite number"),
        (10**30, "timestamp: epoch value 1000000000000000000000000000000 is out of range"),
        ([2023], "timestamp: must be ISO 8601 or epoch seconds/milliseconds"),
    ],
)
def test_timestamps_that_mean_nothing_are_rejected_with_the_reason(
    raw: object, reason: str
) -> None:
    with pytest.raises(Rejected) as caught:
        clean_timestamp(raw)
    assert caught.value.reason == reason


def test_an_exported_row_becomes_a_valid_event() -> None:
    event = cleanse(
        {
            "userId": " 42 ",
            "sku": 1001.0,
            "type": " Add-To-Cart ",
            "value": " 2.5 ",
            "ts": "1700000000000",
            "context": '{"page": "home"}',
        },
        user_id="userId",
        item_id="sku",
        timestamp="ts",
    )
    assert event["user_id"] == "42"
    assert event["item_id"] == "1001"
    assert event["type"] == "add_to_cart"
    assert event["value"] == 2.5
    assert event["timestamp"] == T
    assert event["context"] == {"page": "home"}
    assert EventIn.model_validate(event).type == "add_to_cart"


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("buy", "purchase"), ("BUY", "purchase"), ("page view", "view"), ("thumbs-up", "like")],
)
def test_event_type_aliases_map_to_known_types(alias: str, expected: str) -> None:
    assert cleanse({"user_id": "u", "item_id": "i", "type": alias})["type"] == expected


def test_aliases_from_settings_add_to_the_built_in_ones() -> None:
    settings = Settings(_env_file=None, event_type_aliases={"Wishlist": "like"})
    assert settings.event_type_aliases["wishlist"] == "like"
    assert settings.event_type_aliases["buy"] == "purchase"
    with pytest.raises(ValueError, match="unknown event type 'teleport'"):
        Settings(_env_file=None, event_type_aliases={"beam": "teleport"})


def test_unknown_types_pass_through_for_validation_to_reject() -> None:
    event = cleanse({"user_id": "u", "item_id": "i", "type": "teleport"})
    assert event["type"] == "teleport"
    with pytest.raises(ValueError, match="unknown event type 'teleport'"):
        EventIn.model_validate(event)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"user_id": True, "item_id": "i", "type": "view"}, "user_id: must be text or a whole"),
        ({"user_id": 4.5, "item_id": "i", "type": "view"}, "user_id: must be text or a whole"),
        ({"user_id": "u", "item_id": "i", "type": "view", "value": "abc"}, "value: is not a"),
        ({"user_id": "u", "item_id": "i", "type": "view", "context": "[1]"}, "context: must be"),
        (["u", "i", "view"], "record: must be an object, got list"),
    ],
)
def test_values_of_the_wrong_kind_are_rejected(record: object, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        EventCleanser(DEFAULT_EVENT_TYPE_ALIASES)(record)
    assert caught.value.reason.startswith(reason)


def test_rows_without_event_id_get_one_from_their_content() -> None:
    """The same row (however it is spelled) gets the same id: re-imports and exact duplicates
    are stored once; a different row gets another id."""
    first = cleanse({"user_id": "u1", "item_id": "i1", "type": "Click", "timestamp": 1_700_000_000})
    again = cleanse(
        {"user_id": " u1", "item_id": "i1", "type": "click", "timestamp": "2023-11-14T22:13:20Z"}
    )
    other = cleanse({"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 1_700_000_000})
    assert first["event_id"] == again["event_id"]
    assert first["event_id"] != other["event_id"]
    assert str(first["event_id"]).startswith("h-")
    given = cleanse({"event_id": 7, "user_id": "u1", "item_id": "i1", "type": "click"})
    assert given["event_id"] == "7"


def test_mapped_columns_win_and_unknown_columns_are_reported() -> None:
    cleanser = EventCleanser(
        DEFAULT_EVENT_TYPE_ALIASES,
        ColumnMapping.parse(["user_id=visitor", "context.page=page_name"], EVENT_FIELDS),
    )
    event = cleanser(
        {
            "visitor": "v1",
            "user_id": "ignored",
            "item_id": "i",
            "type": "view",
            "page_name": "home",
            "session": "s1",
            "quarantine_reason": "from an earlier run",
        }
    )
    assert event["user_id"] == "v1"
    assert event["context"] == {"page": "home"}
    assert cleanser.ignored_columns == {"session"}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["userId"], "expected FIELD=COLUMN"),
        (["who=userId"], "'who' is not a field"),
        (["user_id=a", "user_id=b"], "names the field 'user_id' twice"),
        (["user_id=a", "item_id=a"], "reads column 'a' into more than one field"),
    ],
)
def test_bad_column_mappings_are_refused(specs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColumnMapping.parse(specs, EVENT_FIELDS)


def test_item_rows_from_text_get_lists_typed_attributes_and_booleans() -> None:
    cleanser = ItemCleanser(ColumnMapping.parse(["item_id=sku"], ITEM_FIELDS), text_source=True)
    item = cleanser(
        {
            "sku": " 123 ",
            "title": " Trail shoe ",
            "categories": "shoes| running |",
            "tags": '["waterproof", "light"]',
            "available": "no",
            "price": "89.9",
            "stock": "12",
            "zip": "01234",
            "on_sale": "true",
            "colour": "",
        }
    )
    assert item == {
        "item_id": "123",
        "title": "Trail shoe",
        "categories": ["shoes", "running"],
        "tags": ["waterproof", "light"],
        "attributes": {"price": 89.9, "stock": 12, "zip": "01234", "on_sale": True},
        "available": False,
    }


def test_text_scalars_convert_only_canonical_forms() -> None:
    assert [text_scalar(v) for v in ("1", "-2", "0.5", "007", "1e3", "TRUE", "x")] == [
        1,
        -2,
        0.5,
        "007",
        "1e3",
        True,
        "x",
    ]


def test_recent_duplicates_forget_beyond_their_capacity() -> None:
    recent = RecentDuplicates(capacity=2)
    assert not recent.seen({"a": 1})
    assert recent.seen({"a": 1})
    assert not recent.seen({"a": 2})
    assert not recent.seen({"a": 3})
    assert not recent.seen({"a": 1})  # pushed out by the two after it

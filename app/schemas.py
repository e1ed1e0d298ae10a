"""Wire schemas: what clients send and receive. Their limits and examples are the OpenAPI docs."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from app.config import EVENT_TYPES

ID_MAX = 128
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _check_id(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= ID_MAX:
        raise ValueError(f"must be 1-{ID_MAX} characters after trimming whitespace")
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _id_from_number(value: object) -> object:
    # Numeric ids (MovieLens-style 42) are common in exports; they are ids, not numbers.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Identifier = Annotated[str, BeforeValidator(_id_from_number), AfterValidator(_check_id)]
ItemIdPath = Annotated[
    str,
    Path(max_length=1000, description="Your id of the item.", examples=["sku-123"]),
    AfterValidator(_check_id),
]
UserIdPath = Annotated[
    str,
    Path(max_length=1000, description="Your id of the user.", examples=["user-42"]),
    AfterValidator(_check_id),
]


def _check_label(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= ID_MAX:
        raise ValueError(f"each entry must be 1-{ID_MAX} characters")
    return value


Label = Annotated[str, AfterValidator(_check_label)]
AttributeValue = str | bool | int | float


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall between the years 1 and 9999 once converted to UTC") from None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    error: str = Field(examples=["ItemNotFound"])
    detail: str = Field(examples=["item 'sku-123' does not exist"])
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For validation errors: one entry per problem, with its location."
    )


# ---------------------------------------------------------------------------------------------
# Items


class ItemFields(BaseModel):
    """An item's catalogue data."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Trail running shoe",
                    "categories": ["shoes", "running"],
                    "tags": ["waterproof", "lightweight"],
                    "attributes": {"brand": "Acme", "price": 89.9, "on_sale": False},
                    "available": True,
                }
            ]
        },
    )

    title: str | None = Field(default=None, max_length=1000)
    categories: list[Label] = Field(default_factory=list, max_length=100)
    tags: list[Label] = Field(default_factory=list, max_length=200)
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict,
        max_length=100,
        description="A flat object of string, number or boolean values.",
    )
    available: bool = True
    available_from: datetime | None = None
    available_until: datetime | None = None

    @field_validator("attributes", mode="before")
    @classmethod
    def _flat_attributes(cls, value: object) -> object:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, str | int | float | bool):
                    raise ValueError(
                        f"attribute {key!r} must be a string, number or boolean "
                        f"(attributes are flat), got {type(item).__name__}"
                    )
        return value

    @field_validator("attributes")
    @classmethod
    def _check_attributes(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        for key, item in value.items():
            if not 1 <= len(key) <= ID_MAX:
                raise ValueError(f"attribute names must be 1-{ID_MAX} characters, got {key!r}")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"attribute {key!r} must be a finite number")
            if isinstance(item, str) and len(item) > 1000:
                raise ValueError(f"attribute {key!r} must be at most 1000 characters")
        return value

    @field_validator("available_from", "available_until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _to_utc(value)

    @model_validator(mode="after")
    def _check_window(self) -> ItemFields:
        if (
            self.available_from is not None
            and self.available_until is not None
            and self.available_from >= self.available_until
        ):
            raise ValueError("available_from must be earlier than available_until")
        # Categories and tags are sets; keep their first-seen order.
        self.categories = list(dict.fromkeys(self.categories))
        self.tags = list(dict.fromkeys(self.tags))
        return self


class ItemIn(ItemFields):
    """An item with its id, as sent in a batch."""

    item_id: Identifier


class ItemOut(ItemIn):
    """An item as stored."""

    model_config = ConfigDict(extra="ignore")

    hidden: bool = Field(description="Deleted items are hidden: never recommended, history kept.")
    is_stub: bool = Field(
        description="Created by an event before the catalogue described it; fill it in with PUT."
    )
    created_at: datetime
    updated_at: datetime


class ItemBatchIn(BaseModel):
    """Up to ``RECSYS_MAX_BATCH_SIZE`` items (10,000 by default)."""

    items: list[ItemIn]


# ---------------------------------------------------------------------------------------------
# Events


class EventIn(BaseModel):
    """One thing a user did to an item."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "3f1c9a2e-7d4b-4c1e-9a57-0c2b6f1d8e90",
                    "user_id": "user-42",
                    "item_id": "sku-123",
                    "type": "click",
                    "timestamp": "2026-11-26T10:15:00Z",
                    "recommendation_id": "rec-8c1d",
                    "context": {"page": "home", "position": 3},
                },
                {"user_id": "user-42", "item_id": "sku-123", "type": "rating", "value": 4.5},
            ]
        },
    )

    event_id: Identifier | None = Field(
        default=None,
        description="Your id for this event; sending it again is safe (stored once). "
        "Generated when absent, in which case a retry is a new event.",
    )
    user_id: Identifier
    item_id: Identifier
    type: str = Field(description=f"One of: {', '.join(EVENT_TYPES)}.", examples=["click"])
    value: float | None = Field(
        default=None, description="A number such as a rating; required for `rating` events."
    )
    timestamp: datetime | None = Field(
        default=None,
        description="When it happened: ISO 8601 (UTC when no offset is given) or epoch seconds. "
        "Defaults to the time of receipt; at most a day in the future.",
    )
    recommendation_id: Identifier | None = Field(
        default=None, description="The recommendation answer this event followed, if any."
    )
    context: dict[str, Any] | None = Field(
        default=None, description="A small object (at most 2 KB as JSON) stored with the event."
    )

    @field_validator("type", mode="before")
    @classmethod
    def _check_type(cls, value: object) -> object:
        if isinstance(value, str):
            normalised = value.strip().lower()
            if normalised not in EVENT_TYPES:
                raise ValueError(f"unknown event type {value!r}; allowed: {', '.join(EVENT_TYPES)}")
            return normalised
        return value

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number (NaN and infinity are not allowed)")
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _check_epoch(cls, value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be ISO 8601 or finite epoch seconds")
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _to_utc(value)

    @field_validator("context")
    @classmethod
    def _small_context(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            encoded = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise ValueError(f"must be JSON-serialisable: {exc}") from None
        if len(encoded) > 2048:
            raise ValueError(f"must be at most 2048 bytes as JSON, got {len(encoded)}")
        return value

    @model_validator(mode="after")
    def _rating_needs_value(self) -> EventIn:
        if self.type == "rating" and self.value is None:
            raise ValueError("rating events need a numeric `value`")
        return self


class EventBatchIn(BaseModel):
    """Up to ``RECSYS_MAX_BATCH_SIZE`` events (10,000 by default).

    Each event is checked on its own: the valid ones are stored, the others reported.
    """

    events: list[EventIn]


EventStatus = Literal["accepted", "duplicate", "rejected"]
ProfileStatus = Literal["updated", "pending", "unchanged"]


class EventResult(BaseModel):
    """What became of one event."""

    index: int = Field(description="Position of the event in the request.")
    event_id: str | None = Field(description="The stored id (generated when none was sent).")
    status: EventStatus
    error: str | None = Field(default=None, description="Why a rejected event was rejected.")


class EventAck(BaseModel):
    """Answer to a single event."""

    event_id: str
    status: Literal["accepted", "duplicate"]
    profile: ProfileStatus = Field(
        description="`updated`: the live profile reflects the event; `pending`: stored, but the "
        "profile store was unreachable, so the profile will be rebuilt from the database; "
        "`unchanged`: a duplicate changes nothing."
    )


class EventBatchAck(BaseModel):
    """Answer to a batch: counts and one result per event, in request order."""

    accepted: int
    duplicates: int
    rejected: int
    profile: ProfileStatus
    results: list[EventResult]


# ---------------------------------------------------------------------------------------------
# Profiles


class RecentInteraction(BaseModel):
    event_id: str
    item_id: str
    type: str
    value: float | None
    timestamp: datetime


class UserProfile(BaseModel):
    """A user's live profile, with scores decayed to the time of the request."""

    user_id: str
    recent: list[RecentInteraction] = Field(description="Newest first, capped.")
    item_scores: dict[str, float] = Field(
        description="Per item: event-type weights with exponential time decay; dislikes count "
        "against."
    )
    category_affinities: dict[str, float]
    counts: dict[str, int] = Field(description="Events per type.")
    events: int
    last_event_at: datetime | None
    as_of: datetime


class ItemBatchResult(BaseModel):
    index: int
    item_id: str | None
    status: Literal["stored", "rejected"]
    error: str | None = None


class ItemBatchAck(BaseModel):
    stored: int
    rejected: int
    results: list[ItemBatchResult]


# ---------------------------------------------------------------------------------------------
# Recommendations


class RecommendedItem(BaseModel):
    """One recommended item."""

    item_id: str = Field(examples=["sku-123"])
    score: float = Field(
        description="Higher ranks first. For personal results the model's blended score; for "
        "items that fill up the list, their popularity or trending score (compare scores only "
        "between items with the same kind of reason).",
        examples=[2.31],
    )
    reason: str = Field(
        description="Why, in words to show: `because you viewed <title>`, `popular in "
        "<category>`, `trending now`, `similar to <title>`.",
        examples=["because you viewed Trail running shoe"],
    )


class RecommendationsOut(BaseModel):
    """A page of a user's ranked list."""

    recommendation_id: str = Field(
        description="Names this ranked list for an hour: send it back with `offset` for the next "
        "page, and with events that follow from it (attribution).",
        examples=["rec-5f2c1a9e0b7d4c3a"],
    )
    user_id: str = Field(examples=["user-42"])
    model_version: str | None = Field(
        description="The model version that ranked the list; null when no model is loaded and "
        "trending/popular items stand in.",
        examples=["20261126T101500Z-a1b2c3"],
    )
    variant: str = Field(
        default="control", description="The experiment variant (always `control` for now)."
    )
    items: list[RecommendedItem]


class SimilarItemsOut(BaseModel):
    """Items like a given one."""

    item_id: str = Field(examples=["sku-123"])
    model_version: str | None = Field(examples=["20261126T101500Z-a1b2c3"])
    items: list[RecommendedItem]


class ItemListOut(BaseModel):
    """Trending or popular items."""

    model_version: str | None = Field(
        default=None,
        description="For popular items: the model whose popularity ranked them; null when "
        "counted from the stored events (no model loaded), and for trending items.",
    )
    items: list[RecommendedItem]


class ModelOut(BaseModel):
    """The model this API process serves."""

    version: str | None = Field(
        description="Null when no model is loaded: trending and popular items are served.",
        examples=["20261126T101500Z-a1b2c3"],
    )
    active_version: str | None = Field(
        default=None,
        description="The registry's active version at the last check; differs from `version` "
        "while a refused artifact is not served.",
    )
    created_at: str | None = None
    loaded_at: datetime | None = None
    n_items: int | None = None
    n_factors: int | None = None
    value_scheme: str | None = Field(default=None, examples=["binary"])
    weights: dict[str, float] | None = Field(
        default=None, examples=[{"als": 1.0, "content": 0.1, "popularity": 0.1}]
    )
    last_error: str | None = Field(
        default=None, description="Why the last version tried was refused, if it was."
    )


class ModelReloadOut(ModelOut):
    """What a forced check of the registry did."""

    previous_version: str | None = None
    changed: bool = Field(description="True when this check swapped in another version.")

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

from app.config import EVENT_TYPES, EventType

ID_MAX = 128
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _check_id(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= ID_MAX:
        raise ValueError(f"must be 1-{ID_MAX} characters after trimming whitespace")
    # Printable ASCII, most ids, has no control characters: two string methods settle it.
    if not (value.isascii() and value.isprintable()) and _CONTROL_CHARACTERS.search(value):
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
    category_affinities: dict[str, float] = Field(
        description="Per category of the catalogue, the sum of the item scores of its items."
    )
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
        description="Names this ranked list (kept 15 minutes by default): send it back with "
        "`offset` for the next page, and with events that follow from it (attribution). A "
        "request repeating an earlier one of the user's, with no event of theirs in between, "
        "gets the same list under the same id.",
        examples=["rec-5f2c1a9e0b7d4c3a"],
    )
    user_id: str = Field(examples=["user-42"])
    model_version: str | None = Field(
        description="The model version that ranked the list; null when no model is loaded and "
        "trending/popular items stand in.",
        examples=["20261126T101500Z-a1b2c3"],
    )
    experiment: str | None = Field(
        default=None,
        description="The running experiment the user takes part in; null when none runs.",
        examples=["ranker-v2-vs-v1"],
    )
    variant: str = Field(
        default="control",
        description="The user's variant of that experiment (`control` when none runs); the "
        "same in the `X-Variant` response header.",
        examples=["treatment"],
    )
    items: list[RecommendedItem]
    degraded: bool = Field(
        default=False,
        description="True when Redis (live profiles, stored lists) was unreachable: the list "
        "comes from the model's popularity and the catalogue, not from the user's events, "
        "and later pages (by its `recommendation_id`, which then starts `rec-d-`) are ranked "
        "the same way. The `X-Recsys-Degraded: true` header says the same.",
    )


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
    degraded: bool = Field(
        default=False,
        description="For trending items: true when Redis (which counts what trends) was "
        "unreachable and popular items stand in; the `X-Recsys-Degraded: true` header says "
        "the same.",
    )


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


# ---------------------------------------------------------------------------------------------
# Experiments

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
ExperimentStatus = Literal["draft", "running", "stopped"]
BlendComponent = Literal["als", "content", "popularity"]


def _check_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(f"must be {NAME_RULE}, got {value!r}")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
ExperimentNamePath = Annotated[
    str,
    Path(max_length=1000, description="The experiment's name.", examples=["ranker-v2-vs-v1"]),
    AfterValidator(_check_name),
]


class VariantConfig(BaseModel):
    """How a variant's recommendations are made. The default is what users get without an
    experiment: the active model's hybrid ranking."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"strategy": "hybrid", "model_version": "20261126T101500Z-a1b2c3"},
                {"strategy": "hybrid", "weights": {"als": 1.0, "content": 0.5}},
                {"strategy": "popularity"},
            ]
        },
    )

    strategy: Literal["hybrid", "popularity"] = Field(
        default="hybrid",
        description="`hybrid`: the personal ranking (ALS fold-in + content + popularity "
        "blend), filled up with popular and trending items; `popularity`: no personal "
        "ranking, popular items first, then trending ones (a baseline to beat).",
    )
    model_version: str | None = Field(
        default=None,
        max_length=64,
        description="A registered model version to serve this variant (any status); null: "
        "the active version at the time of each request.",
        examples=["20261126T101500Z-a1b2c3"],
    )
    weights: dict[BlendComponent, float] | None = Field(
        default=None,
        description="Blend weights overriding the model's (`hybrid` only); components left out "
        "keep the model's weight.",
        examples=[{"als": 1.0, "content": 0.5, "popularity": 0.0}],
    )

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one of als, content, popularity (or leave it out)")
        for name, weight in value.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"blend weight {name!r} must be a finite number >= 0")
        if len(value) == 3 and not any(value.values()):
            raise ValueError("at least one blend weight must be above 0")
        return value

    @model_validator(mode="after")
    def _weights_need_hybrid(self) -> VariantConfig:
        if self.strategy == "popularity" and self.weights is not None:
            raise ValueError(
                "weights apply to the hybrid ranking; the popularity strategy has none to "
                "override (drop `weights` or use strategy `hybrid`)"
            )
        return self


class VariantIn(BaseModel):
    """One variant: its name, its share of users and how it is served."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description=f"Unique in the experiment; {NAME_RULE}.", examples=["control"])
    share: float = Field(
        gt=0,
        le=100,
        description="Percent of users, at most two decimals; the shares of an experiment sum "
        "to 100.",
        examples=[50],
    )
    config: VariantConfig = Field(default_factory=VariantConfig)

    @field_validator("share")
    @classmethod
    def _basis_points(cls, value: float) -> float:
        if abs(value * 100 - round(value * 100)) > 1e-6:
            raise ValueError(f"must have at most two decimals (basis points), got {value}")
        return value

    @property
    def share_bp(self) -> int:
        return round(self.share * 100)


class ExperimentIn(BaseModel):
    """An experiment to create (as a draft; start it to run it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "ranker-v2-vs-v1",
                    "description": "Does the retrained model lift CTR?",
                    "variants": [
                        {"name": "control", "share": 50},
                        {
                            "name": "treatment",
                            "share": 50,
                            "config": {"model_version": "20261126T101500Z-a1b2c3"},
                        },
                    ],
                    "attribution_window_seconds": 1800,
                    "click_event_types": ["click"],
                    "conversion_event_types": ["purchase"],
                }
            ]
        },
    )

    name: Name = Field(description=f"Unique; {NAME_RULE}.", examples=["ranker-v2-vs-v1"])
    description: str | None = Field(default=None, max_length=1000)
    variants: list[VariantIn] = Field(
        min_length=2,
        max_length=10,
        description="2-10 variants; the first is the control that the others are compared to.",
    )
    salt: Name | None = Field(
        default=None,
        description="Seeds the assignment hash; a random one when absent. Reusing the salt of "
        "an earlier experiment gives every user the same bucket again.",
        examples=["3f9a1c7e"],
    )
    attribution_window_seconds: int | None = Field(
        default=None,
        ge=0,
        le=7 * 86_400,
        description="Events on a shown item this long after an answer count for its variant "
        "even without its recommendation_id; 0 counts only events that carry it. Default: "
        "`RECSYS_ATTRIBUTION_WINDOW_SECONDS` (30 min).",
        examples=[1800],
    )
    click_event_types: list[EventType] = Field(
        default_factory=lambda: list[EventType](["click"]),
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="Event types counted as clicks (CTR = clicks / exposures).",
    )
    conversion_event_types: list[EventType] = Field(
        default_factory=lambda: list[EventType](["purchase"]),
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="Event types counted as conversions (conversion rate = users with one / "
        "users).",
    )

    @model_validator(mode="after")
    def _check_variants(self) -> ExperimentIn:
        names = [v.name for v in self.variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(repeated)}")
        total = sum(v.share_bp for v in self.variants)
        if total != 10_000:
            parts = " + ".join(f"{v.name} {v.share:g}" for v in self.variants)
            raise ValueError(
                f"variant shares must sum to 100 (percent), got {total / 100:g}: {parts}"
            )
        self.click_event_types = list(dict.fromkeys(self.click_event_types))
        self.conversion_event_types = list(dict.fromkeys(self.conversion_event_types))
        return self


class VariantOut(BaseModel):
    name: str = Field(examples=["treatment"])
    share: float = Field(description="Percent of users.", examples=[50])
    config: VariantConfig


class ExperimentOut(BaseModel):
    """An experiment as stored."""

    name: str = Field(examples=["ranker-v2-vs-v1"])
    description: str | None = None
    status: ExperimentStatus = Field(
        description="`draft` until started; `running` assigns users and logs exposures (one "
        "experiment at a time); `stopped` is final.",
        examples=["running"],
    )
    salt: str = Field(examples=["3f9a1c7e"])
    control: str = Field(description="The variant the others are compared to.")
    variants: list[VariantOut]
    attribution_window_seconds: int = Field(examples=[1800])
    click_event_types: list[str] = Field(examples=[["click"]])
    conversion_event_types: list[str] = Field(examples=[["purchase"]])
    created_at: datetime
    started_at: datetime | None = None
    stopped_at: datetime | None = None


class ExperimentListOut(BaseModel):
    experiments: list[ExperimentOut]


class RateOut(BaseModel):
    """A rate with its 95% confidence interval (null when there is nothing to divide by)."""

    value: float | None = Field(examples=[0.052])
    ci_low: float | None = Field(examples=[0.047])
    ci_high: float | None = Field(examples=[0.057])


class ComparisonOut(BaseModel):
    """One metric of a variant against the control."""

    absolute_difference: float | None = Field(
        description="Variant minus control.", examples=[0.006]
    )
    relative_lift: float | None = Field(
        description="Variant / control - 1 (0.12 is +12%); null when the control's rate is 0.",
        examples=[0.12],
    )
    lift_ci_low: float | None = Field(examples=[0.03])
    lift_ci_high: float | None = Field(examples=[0.21])
    p_value: float | None = Field(
        description="Two-sided; null while there is not enough data to test.", examples=[0.004]
    )
    significant: bool | None = Field(
        description="p below alpha (Bonferroni-adjusted for several variants); null while there "
        "is not enough data.",
    )
    enough_data: bool
    note: str = Field(
        description="The comparison in words.",
        examples=["CTR +12.0% (95% CI +3.0% to +21.0%), p = 0.004: significant"],
    )


class VariantResultOut(BaseModel):
    """One variant's numbers."""

    name: str = Field(examples=["treatment"])
    share: float = Field(description="Configured percent of users.", examples=[50])
    is_control: bool
    users: int = Field(description="Users shown at least one answer.", examples=[10412])
    exposures: int = Field(description="Recommendation answers shown.", examples=[48211])
    clicks: int = Field(description="Attributed click events.", examples=[2507])
    conversions: int = Field(description="Attributed conversion events.", examples=[311])
    converting_users: int = Field(examples=[287])
    ctr: RateOut = Field(
        description="Clicks / exposures; the interval accounts for one user seeing many answers "
        "(delta method)."
    )
    conversion_rate: RateOut = Field(description="Converting users / users (Wilson interval).")
    ctr_vs_control: ComparisonOut | None = Field(
        default=None, description="Null for the control. z-test, delta-method variance."
    )
    conversion_rate_vs_control: ComparisonOut | None = Field(
        default=None, description="Null for the control. Pooled two-proportion z-test."
    )


class SampleRatioOut(BaseModel):
    """Do users split as configured? A mismatch means broken assignment or logging, and
    results that cannot be trusted."""

    p_value: float | None = Field(
        description="Chi-square goodness of fit of users per variant; null while any variant "
        "expects fewer than 5 users.",
        examples=[0.61],
    )
    mismatch: bool = Field(description="p below 0.001.")
    expected_users: dict[str, float] = Field(examples=[{"control": 10400.5, "treatment": 10400.5}])
    observed_users: dict[str, int] = Field(examples=[{"control": 10389, "treatment": 10412}])


class AttributionOut(BaseModel):
    window_seconds: int = Field(examples=[1800])
    by_recommendation_id: int = Field(
        description="Events credited because they carried the answer's recommendation_id."
    )
    by_window: int = Field(description="Events credited by the attribution window.")


class ExperimentResultsOut(BaseModel):
    """An experiment's results: per variant counts, rates with 95% intervals, and each
    treatment against the control. CTR is the primary metric: it decides the verdict."""

    experiment: str = Field(examples=["ranker-v2-vs-v1"])
    status: ExperimentStatus
    started_at: datetime | None
    stopped_at: datetime | None
    computed_at: datetime
    verdict: Literal[
        "not_started", "not_enough_data", "sample_ratio_mismatch", "significant", "not_significant"
    ] = Field(
        description="`not_enough_data` until every variant has `min_users_per_variant` users "
        "and enough clicks to test; `sample_ratio_mismatch` when the split is broken (no "
        "conclusion should be drawn); otherwise whether some variant's CTR differs "
        "significantly from the control's."
    )
    summary: str = Field(
        examples=["treatment: CTR +12.0% (95% CI +3.0% to +21.0%), p = 0.004: significant"]
    )
    alpha: float = Field(description="Significance level per comparison before adjustment.")
    min_users_per_variant: int
    sample_ratio: SampleRatioOut
    attribution: AttributionOut
    variants: list[VariantResultOut]


# -- Monitoring ---------------------------------------------------------------------------------


class FeatureDriftOut(BaseModel):
    """One feature of live events against the reference version's training data."""

    feature: str = Field(examples=["category"])
    verdict: Literal["ok", "warn", "drift", "insufficient_data"]
    psi: float | None = Field(description="Population stability index.", examples=[0.31])
    test: Literal["chi-square", "kolmogorov-smirnov"]
    statistic: float | None
    p_value: float | None
    live_events: int
    reference: dict[str, float] = Field(description="Share of each bucket in training.")
    live: dict[str, float] = Field(description="Share of each bucket in the window.")


class DriftWindowOut(BaseModel):
    window: str = Field(examples=["1h"])
    from_: datetime = Field(alias="from")
    until: datetime
    events: int
    verdict: Literal["ok", "warn", "drift", "insufficient_data"] = Field(
        description="The worst verdict of the window's features."
    )
    features: list[FeatureDriftOut]


class DriftOut(BaseModel):
    computed_at: datetime
    reference_version: str | None = Field(
        description="The active version, whose training data live events are compared with."
    )
    thresholds: dict[str, float]
    windows: list[DriftWindowOut]
    note: str | None = None


class QualityRowOut(BaseModel):
    """The lists one model version served in one variant over the window."""

    model_version: str = Field(description="`none` for lists made without a model.")
    variant: str = Field(examples=["control"])
    lists: int = Field(description="Distinct lists (recommendation ids) served.")
    answers: int = Field(
        description="Answers recorded: each list made and each page asked of it (a kept list "
        "answered again is not recorded again)."
    )
    clicked: int
    converted: int
    ctr: float | None = Field(description="Clicked lists / lists.")
    conversion_rate: float | None = Field(description="Converted lists / lists.")
    coverage: float | None = Field(description="Distinct items shown / items eligible now.")
    novelty_bits: float | None
    popularity_percentile: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None


class RegressionOut(BaseModel):
    """The active version's CTR against the version it replaced, every variant pooled."""

    active_version: str
    previous_version: str
    active_ctr: float | None
    previous_ctr: float | None
    p_value: float | None
    regressed: bool | None = Field(description="Null while either has too few lists.")
    note: str


class QualityWindowOut(BaseModel):
    window: str
    from_: datetime = Field(alias="from")
    until: datetime
    eligible_items: int
    rows: list[QualityRowOut]
    regression: RegressionOut | None


class TrainingRunsOut(BaseModel):
    last_finished_at: datetime
    runs: int


class FreshnessOut(BaseModel):
    active_version: str | None
    model_age_seconds: float | None
    model_age_limit_seconds: float
    events_since_training: int = Field(
        description="Events that happened after the active version's training data ends."
    )
    training_runs: dict[str, TrainingRunsOut] = Field(
        description="The last run of each outcome (skipped, promoted, candidate, canary, held, "
        "failed) and how many there were."
    )


class QualityOut(BaseModel):
    computed_at: datetime
    click_event_types: list[str]
    conversion_event_types: list[str]
    windows: list[QualityWindowOut]
    freshness: FreshnessOut

"""Cleansing of raw records from files, databases, HTTP APIs and the stream, before validation.

Other systems export the same facts in many shapes: ids as numbers, padded strings, times as
ISO 8601 text or epoch seconds or milliseconds, numbers as text, ``buy`` for ``purchase``. The
cleansers here turn one raw record into the shape the API accepts, and say why when they cannot;
the rules that decide what is valid stay with the wire schemas (``EventIn``, ``ItemIn``) and
the ingestion path, so every source is held to the same ones.

Records without an ``event_id`` get one derived from their cleansed content: importing the same
file twice stores nothing twice, and exact duplicate rows are stored once.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from app.config import normalise_event_type

EVENT_FIELDS = (
    "event_id",
    "user_id",
    "item_id",
    "type",
    "value",
    "timestamp",
    "recommendation_id",
    "context",
)
ITEM_FIELDS = (
    "item_id",
    "title",
    "categories",
    "tags",
    "attributes",
    "available",
    "available_from",
    "available_until",
)
# The column quarantine files add; a corrected quarantine file can be imported as it is.
QUARANTINE_COLUMN = "quarantine_reason"
# Dotted targets of a column mapping that nest a column into an object field.
NESTED_TARGETS = {"context": "context", "attributes": "attributes"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def row_reason(message: str) -> str:
    """A validation message as it reads for one row: the API says ``body:`` for rules about the
    whole event, which in a file or a stream is the row or message itself."""
    return message.removeprefix("body: ")


class Rejected(ValueError):
    """A record that cannot be cleansed; ``reason`` says why, in the API's ``field: message``
    form."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ColumnMapping:
    """Which source column feeds which field: ``user_id=userId`` reads ``userId`` as
    ``user_id``; ``context.page=page_name`` puts a column into an object field."""

    def __init__(self, targets: Mapping[str, str], fields: Sequence[str]) -> None:
        for target in targets:
            head, dot, tail = target.partition(".")
            if dot and head in NESTED_TARGETS and head in fields and tail:
                continue
            if target not in fields:
                raise ValueError(
                    f"--map {target}=...: {target!r} is not a field; fields: {', '.join(fields)}"
                    + (", or context.NAME / attributes.NAME" if "context" in fields else "")
                )
        sources = list(targets.values())
        repeated = sorted({s for s in sources if sources.count(s) > 1})
        if repeated:
            raise ValueError(f"--map reads column {repeated[0]!r} into more than one field")
        self.targets = dict(targets)
        self.fields = tuple(fields)
        self._source_of = {source: target for target, source in targets.items()}

    @classmethod
    def parse(cls, specs: Iterable[str], fields: Sequence[str]) -> ColumnMapping:
        """From ``FIELD=COLUMN`` strings, as given on the command line."""
        targets: dict[str, str] = {}
        for spec in specs:
            target, sep, source = spec.partition("=")
            target, source = target.strip(), source.strip()
            if not sep or not target or not source:
                raise ValueError(f"--map {spec!r}: expected FIELD=COLUMN, e.g. user_id=userId")
            if target in targets:
                raise ValueError(f"--map names the field {target!r} twice")
            targets[target] = source
        return cls(targets, fields)

    def apply(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record's known fields and its other columns, by the names the fields use.

        A mapped column's target wins over a column that already has the field's name.
        """
        known: dict[str, Any] = {}
        other: dict[str, Any] = {}
        fields = self.fields
        source_of = self._source_of
        for column, value in record.items():
            if column == QUARANTINE_COLUMN:
                continue
            target = source_of.get(column)
            if target is None:
                if column in self.targets:
                    continue  # this field is read from another column
                if column in fields:
                    known[column] = value
                else:
                    other[column] = value
            elif "." in target:
                head, _, tail = target.partition(".")
                known.setdefault("." + head, {})[tail] = value
            else:
                known[target] = value
        return known, other


# ---------------------------------------------------------------------------------------------
# Values


def clean_text(value: Any) -> Any:
    """Strings trimmed, and empty ones as missing; other values as they are."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def clean_id(value: Any, name: str) -> str | None:
    """An identifier as text: numbers (``42``, ``42.0``) become ``"42"``; strings are trimmed.

    Length and character rules are the schema's.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        raise Rejected(f"{name}: must be text or a whole number, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        raise Rejected(f"{name}: must be text or a whole number, got {value}")
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            raise Rejected(f"{name}: is not valid UTF-8") from None
    raise Rejected(f"{name}: must be text or a whole number, got {type(value).__name__}")


def clean_number(value: Any, name: str) -> float | None:
    """A number from a number or from text such as ``" 4.5 "``."""
    value = clean_text(value)
    if value is None:
        return None
    if isinstance(value, bool):
        raise Rejected(f"{name}: must be a number, got a boolean")
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        if _NUMBER.fullmatch(value) or value.lower() in ("nan", "inf", "-inf", "infinity"):
            return float(value)
        raise Rejected(f"{name}: is not a number")
    raise Rejected(f"{name}: must be a number, got {type(value).__name__}")


def clean_bool(value: Any, name: str) -> bool | None:
    value = clean_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise Rejected(f"{name}: must be true or false (also yes/no, 1/0)")


def clean_timestamp(value: Any, name: str = "timestamp") -> datetime | None:
    """A UTC time from ISO 8601 text (UTC when it has no offset), a date, a datetime, or epoch
    seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude."""
    value = clean_text(value)
    if value is None:
        return None
    if isinstance(value, datetime):
        return _as_utc(value, name)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    if isinstance(value, bool):
        raise Rejected(f"{name}: must be ISO 8601 or epoch seconds/milliseconds, got a boolean")
    if isinstance(value, int):
        return _from_epoch_int(value, name)
    if isinstance(value, float | Decimal):
        return _from_epoch_float(float(value), name)
    if isinstance(value, str):
        if value.isdigit() or _INTEGER.fullmatch(value):
            return _from_epoch_int(int(value), name)
        if _NUMBER.fullmatch(value):
            return _from_epoch_float(float(value), name)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Rejected(f"{name}: is neither ISO 8601 nor epoch seconds/milliseconds") from None
        return _as_utc(parsed, name)
    raise Rejected(f"{name}: must be ISO 8601 or epoch seconds/milliseconds")


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Rejected(f"{name}: must fall between the years 1 and 9999 in UTC") from None


def _epoch_unit(magnitude: float) -> int:
    """Units per second of an epoch number: seconds up to 1e11 (the year 5138), then
    milliseconds, microseconds and nanoseconds for the same span."""
    if magnitude < 1e11:
        return 1
    if magnitude < 1e14:
        return 1_000
    if magnitude < 1e17:
        return 1_000_000
    return 1_000_000_000


def _from_epoch_int(value: int, name: str) -> datetime:
    unit = _epoch_unit(abs(value))
    try:
        if unit == 1:
            return datetime.fromtimestamp(value, UTC)
        seconds, rest = divmod(value, unit)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest * 1_000_000 // unit)
    except (OverflowError, OSError, ValueError):
        raise Rejected(f"{name}: epoch value {value} is out of range") from None


def _from_epoch_float(value: float, name: str) -> datetime:
    if not math.isfinite(value):
        raise Rejected(f"{name}: must be a finite number")
    unit = _epoch_unit(abs(value))
    try:
        return _EPOCH + timedelta(microseconds=round(value * 1_000_000 / unit))
    except OverflowError:
        raise Rejected(f"{name}: epoch value {value:g} is out of range") from None


def clean_object(value: Any, name: str) -> dict[str, Any] | None:
    """A JSON object, or text holding one."""
    value = clean_text(value)
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str | bytes):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Rejected(f"{name}: must be a JSON object") from None
        if isinstance(parsed, dict):
            return parsed
    raise Rejected(f"{name}: must be a JSON object")


def clean_labels(value: Any, name: str, separator: str) -> list[str]:
    """A list of labels from a list, a JSON array in text, or text split at ``separator``."""
    value = clean_text(value)
    if value is None:
        return []
    if isinstance(value, str):
        if value.startswith("["):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise Rejected(f"{name}: starts with [ but is not a JSON array") from None
        else:
            return [part.strip() for part in value.split(separator) if part.strip()]
    if isinstance(value, list | tuple):
        labels = []
        for entry in value:
            label = clean_id(entry, name)
            if label is not None:
                labels.append(label)
        return labels
    raise Rejected(f"{name}: must be a list or text separated by {separator!r}")


def text_scalar(value: str) -> Any:
    """A value read from text (CSV): canonical numbers and true/false as such, the rest as text.

    Only canonical forms convert, so ``"007"`` and ``"1e3"`` stay text (a code, not a number).
    """
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INTEGER.fullmatch(value) and str(int(value)) == value:
        return int(value)
    if _NUMBER.fullmatch(value):
        number = float(value)
        if math.isfinite(number) and repr(number) == value:
            return number
    return value


# ---------------------------------------------------------------------------------------------
# Records


def content_event_id(event: Mapping[str, Any]) -> str:
    """A stable id for an event that came without one: a hash of its cleansed content.

    The same row imported again gets the same id (and is stored once); so do exact duplicates.
    """
    stamp = event.get("timestamp")
    key = orjson.dumps(
        [
            event.get("user_id"),
            event.get("item_id"),
            event.get("type"),
            event.get("value"),
            stamp.isoformat() if isinstance(stamp, datetime) else stamp,
            event.get("recommendation_id"),
            event.get("context"),
        ],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        default=str,
    )
    return "h-" + hashlib.blake2b(key, digest_size=16).hexdigest()


class EventCleanser:
    """Turns raw event records into what ``EventIn`` accepts.

    Parameters
    ----------
    aliases : other names of event types, keys in ``normalise_event_type`` form
    mapping : which source column feeds which field
    """

    def __init__(self, aliases: Mapping[str, str], mapping: ColumnMapping | None = None) -> None:
        self.aliases = dict(aliases)
        self.mapping = mapping or ColumnMapping({}, EVENT_FIELDS)
        self.ignored_columns: set[str] = set()

    def __call__(self, record: Any) -> dict[str, Any]:
        """The cleansed event; raises ``Rejected``."""
        if not isinstance(record, Mapping):
            raise Rejected(f"record: must be an object, got {type(record).__name__}")
        fields, other = self.mapping.apply(record)
        if other and len(self.ignored_columns) < 100:
            self.ignored_columns.update(other)
        event: dict[str, Any] = {}
        for name in ("event_id", "user_id", "item_id", "recommendation_id"):
            cleaned = clean_id(fields.get(name), name)
            if cleaned is not None:
                event[name] = cleaned
        event_type = clean_text(fields.get("type"))
        if isinstance(event_type, str):
            normalised = normalise_event_type(event_type)
            event_type = self.aliases.get(normalised, normalised)
        if event_type is not None:
            event["type"] = event_type
        value = clean_number(fields.get("value"), "value")
        if value is not None:
            event["value"] = value
        stamp = clean_timestamp(fields.get("timestamp"))
        if stamp is not None:
            event["timestamp"] = stamp
        context = clean_object(fields.get("context"), "context")
        nested = fields.get(".context")
        if nested:
            context = {
                **(context or {}),
                **{k: v for k, v in nested.items() if clean_text(v) is not None},
            }
        if context is not None:
            event["context"] = context
        if "event_id" not in event:
            event["event_id"] = content_event_id(event)
        return event


class ItemCleanser:
    """Turns raw item records into what ``ItemIn`` accepts.

    Columns that are not item fields become attributes (text values from text formats become
    numbers or booleans when they are written canonically).

    Parameters
    ----------
    mapping : which source column feeds which field
    separator : splits categories and tags given as text
    text_source : whether values come as text (CSV), so attribute values are typed from it
    """

    def __init__(
        self,
        mapping: ColumnMapping | None = None,
        separator: str = "|",
        text_source: bool = False,
    ) -> None:
        self.mapping = mapping or ColumnMapping({}, ITEM_FIELDS)
        self.separator = separator
        self.text_source = text_source
        self.ignored_columns: set[str] = set()

    def __call__(self, record: Any) -> dict[str, Any]:
        """The cleansed item; raises ``Rejected``."""
        if not isinstance(record, Mapping):
            raise Rejected(f"record: must be an object, got {type(record).__name__}")
        fields, other = self.mapping.apply(record)
        item: dict[str, Any] = {}
        item_id = clean_id(fields.get("item_id"), "item_id")
        if item_id is not None:
            item["item_id"] = item_id
        title = clean_text(fields.get("title"))
        if title is not None:
            item["title"] = clean_id(title, "title") if not isinstance(title, str) else title
        for name in ("categories", "tags"):
            labels = clean_labels(fields.get(name), name, self.separator)
            if labels:
                item[name] = labels
        attributes = clean_object(fields.get("attributes"), "attributes") or {}
        extra = {**other, **(fields.get(".attributes") or {})}
        for key, raw in extra.items():
            value = clean_text(raw)
            if value is None:
                continue
            if isinstance(value, str) and self.text_source:
                value = text_scalar(value)
            elif isinstance(value, Decimal):
                value = float(value)
            attributes[str(key).strip()] = value
        if attributes:
            item["attributes"] = attributes
        available = clean_bool(fields.get("available"), "available")
        if available is not None:
            item["available"] = available
        for name in ("available_from", "available_until"):
            stamp = clean_timestamp(fields.get(name), name)
            if stamp is not None:
                item[name] = stamp
        return item


class RecentDuplicates:
    """Remembers the digests of the last ``capacity`` records: memory stays bounded whatever
    the input's size, and exact duplicates closer than that are recognised."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def seen(self, record: Mapping[str, Any]) -> bool:
        """Whether an identical record came before; remembers this one."""
        try:
            encoded = orjson.dumps(
                record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
            )
        except TypeError:
            return False
        digest = hashlib.blake2b(encoded, digest_size=16).digest()
        if digest in self._seen:
            self._seen.move_to_end(digest)
            return True
        self._seen[digest] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return False

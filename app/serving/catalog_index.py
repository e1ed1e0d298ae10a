"""An in-memory index of the catalogue's recommendation rules: which items may be shown, when,
their titles and categories.

Requests read an immutable :class:`CatalogSnapshot` (one reference read); a refresh builds a
new snapshot and swaps the reference, so no request sees half an update.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Item
from app.db.queries import as_utc, chunks
from app.memory import release_free_memory
from app.serving.filters import AttributeFilter, canonical

log = logging.getLogger(__name__)

# Rows written in a transaction that committed after our last read may carry an older
# updated_at; reading this much further back catches them.
OVERLAP = timedelta(seconds=60)
# A full reload now and then, in case a write slipped through the overlap.
FULL_RELOAD_EVERY = 60
# Freed memory goes back to the system after a refresh that read (or changed) at least this many
# items.
TRIM_AFTER = 1_000

IntArray = npt.NDArray[np.int64]
TextTuple = TypeVar("TextTuple", bound=tuple[str, ...])


@dataclass(frozen=True, slots=True)  # one per catalogue item: no __dict__ each
class ItemRules:
    item_id: str
    title: str | None
    categories: tuple[str, ...]
    shown: bool  # not hidden and available
    available_from: float  # epoch seconds; -inf when open
    available_until: float  # epoch seconds; +inf when open
    attributes: tuple[tuple[str, str | float | bool], ...] = ()

    def digest(self) -> int:
        """64 bits of a hash of every field, the same in every process (unlike ``hash``)."""
        data = repr(self).encode()
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def fingerprint(items: Iterable[ItemRules]) -> int:
    """The catalogue's fingerprint: the sum of its items' digests modulo 2^64, so a change of
    a few items updates it without visiting the others."""
    return sum(rules.digest() for rules in items) % FINGERPRINT_MODULUS


FINGERPRINT_MODULUS = 2**64


@dataclass(frozen=True, eq=False)
class CatalogSnapshot:
    """The catalogue at one moment, as arrays over catalogue positions."""

    generation: int
    # Equal in every process that read the same catalogue: names it across processes.
    fingerprint: int
    items: list[ItemRules]
    position: dict[str, int]
    shown: npt.NDArray[np.bool_]
    available_from: npt.NDArray[np.float64]
    available_until: npt.NDArray[np.float64]
    by_category: dict[str, IntArray]
    # Positions with a window: the only ones whose eligibility depends on the clock.
    windowed: IntArray
    # Text and boolean attributes: name -> canonical value -> positions. Numeric ones:
    # name -> the number per position, NaN where the item has none.
    by_attribute: dict[str, dict[str, IntArray]]
    numbers: dict[str, npt.NDArray[np.float64]]

    @classmethod
    def build(
        cls, generation: int, items: Iterable[ItemRules], digest: int | None = None
    ) -> CatalogSnapshot:
        """``digest``: the items' :func:`fingerprint` when the caller knows it already."""
        rows = sorted(items, key=lambda r: r.item_id)
        categories: dict[str, list[int]] = defaultdict(list)
        attributes: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        numeric: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for position, rules in enumerate(rows):
            for category in rules.categories:
                categories[category].append(position)
            for name, value in rules.attributes:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    numeric[name].append((position, float(value)))
                else:
                    attributes[name][canonical(value)].append(position)
        numbers = {}
        for name, pairs in numeric.items():
            column = np.full(len(rows), np.nan)
            column[[p for p, _ in pairs]] = [v for _, v in pairs]
            numbers[name] = column
        available_from = np.array([r.available_from for r in rows], dtype=np.float64)
        available_until = np.array([r.available_until for r in rows], dtype=np.float64)
        return cls(
            generation=generation,
            fingerprint=fingerprint(rows) if digest is None else digest,
            items=rows,
            position={r.item_id: i for i, r in enumerate(rows)},
            shown=np.array([r.shown for r in rows], dtype=bool),
            available_from=available_from,
            available_until=available_until,
            by_category={
                name: np.array(positions, dtype=np.int64) for name, positions in categories.items()
            },
            windowed=np.flatnonzero(np.isfinite(available_from) | np.isfinite(available_until)),
            by_attribute={
                name: {v: np.array(p, dtype=np.int64) for v, p in values.items()}
                for name, values in attributes.items()
            },
            numbers=numbers,
        )

    def __len__(self) -> int:
        return len(self.items)

    def eligible(self, now: float) -> npt.NDArray[np.bool_]:
        """Per catalogue position: may it be recommended at ``now`` (epoch seconds)?"""
        allowed = self.shown.copy()
        if self.windowed.size:
            w = self.windowed
            allowed[w] &= (self.available_from[w] <= now) & (now < self.available_until[w])
        return allowed

    def matching(self, filters: Sequence[AttributeFilter]) -> npt.NDArray[np.bool_]:
        """Per catalogue position: does the item pass every attribute filter?"""
        mask = np.ones(len(self.items), dtype=bool)
        any_of: dict[str, npt.NDArray[np.bool_]] = {}
        for rule in filters:
            if rule.op == "=":
                hit = self._equal(rule)
                if rule.name in any_of:
                    any_of[rule.name] |= hit
                else:
                    any_of[rule.name] = hit
            elif rule.op == "!=":
                mask &= ~self._equal(rule)
            else:
                column = self.numbers.get(rule.name)
                if column is None:
                    mask[:] = False
                else:
                    mask &= _compare(column, rule.op, float(rule.number or 0.0))
        for hit in any_of.values():
            mask &= hit
        return mask

    def _equal(self, rule: AttributeFilter) -> npt.NDArray[np.bool_]:
        hit = np.zeros(len(self.items), dtype=bool)
        positions = self.by_attribute.get(rule.name, {}).get(rule.value)
        if positions is not None:
            hit[positions] = True
        column = self.numbers.get(rule.name)
        if column is not None and rule.number is not None:
            hit |= column == rule.number
        return hit

    def in_categories(self, categories: Sequence[str]) -> npt.NDArray[np.bool_]:
        mask = np.zeros(len(self.items), dtype=bool)
        for category in categories:
            positions = self.by_category.get(category)
            if positions is not None:
                mask[positions] = True
        return mask

    def next_change(self, now: datetime) -> float:
        """When the next availability window opens or closes after ``now`` (epoch seconds;
        infinity when none will): until then, :meth:`eligible` gives the same answer."""
        if not self.windowed.size:
            return float("inf")
        clock = now.timestamp()
        bounds = np.concatenate(
            (self.available_from[self.windowed], self.available_until[self.windowed])
        )
        later = bounds[bounds > clock]
        return float(later.min()) if later.size else float("inf")

    def is_eligible(self, item_id: str, now: float) -> bool:
        position = self.position.get(item_id)
        if position is None:
            return False
        return bool(
            self.shown[position]
            and self.available_from[position] <= now < self.available_until[position]
        )


def _compare(column: npt.NDArray[np.float64], op: str, number: float) -> npt.NDArray[np.bool_]:
    """``column OP number``; NaN (no such numeric attribute) never matches."""
    if op == "<":
        return column < number
    if op == "<=":
        return column <= number
    if op == ">":
        return column > number
    return column >= number


def _epoch(value: datetime | None, default: float) -> float:
    return default if value is None else as_utc(value).timestamp()


def _one_copy(value: TextTuple, seen: dict[tuple[str, ...], Any]) -> TextTuple:
    """The equal tuple ``seen`` holds already, else ``value`` (then seen)."""
    found: TextTuple = seen.setdefault(value, value)
    return found


def _rules(row: Any, seen: dict[tuple[str, ...], Any]) -> ItemRules:
    # Category names, attribute names and text values repeat across the catalogue: one copy
    # of each string for all items, and one of each categories tuple and text attribute pair
    # for all items of a read (``seen``). Only all-text tuples are shared: (name, 1) equals
    # (name, True), whose value must stay a boolean.
    attributes: list[tuple[str, str | float | bool]] = []
    for name, value in sorted((row.attributes or {}).items()):
        if isinstance(value, str):
            attributes.append(_one_copy((sys.intern(name), sys.intern(value)), seen))
        else:
            attributes.append((sys.intern(name), value))
    return ItemRules(
        item_id=row.item_id,
        title=row.title,
        categories=_one_copy(tuple(sys.intern(c) for c in row.categories or ()), seen),
        shown=bool(row.available) and not bool(row.hidden),
        available_from=_epoch(row.available_from, -np.inf),
        available_until=_epoch(row.available_until, np.inf),
        attributes=tuple(attributes),
    )


def _version(item_id: str, updated_at: datetime) -> int:
    """One version of an item's row, as 64 bits (within this process)."""
    return hash((item_id, updated_at))


def _among(keys: IntArray, listed: IntArray) -> npt.NDArray[np.bool_]:
    """Which of ``keys`` are in ``listed`` (sorted)."""
    if not len(listed):
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(listed, keys), len(listed) - 1)
    found: npt.NDArray[np.bool_] = listed[at] == keys
    return found


_NONE_LISTED: IntArray = np.empty(0, dtype=np.int64)

_COLUMNS = (
    Item.item_id,
    Item.title,
    Item.categories,
    Item.available,
    Item.available_from,
    Item.available_until,
    Item.hidden,
    Item.updated_at,
    Item.attributes,
)


class CatalogIndex:
    """Keeps a :class:`CatalogSnapshot` current: :meth:`refresh` reads what changed since the
    last read, :meth:`reload_items` re-reads given items at once (after a write here)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._snapshot: CatalogSnapshot | None = None
        self._lock = threading.Lock()
        self._watermark: datetime | None = None
        self._refreshes = 0
        # The versions of the items the next refresh will list again (updated within OVERLAP
        # before the last read began), as read then: sorted, unique.
        self._listed: IntArray = _NONE_LISTED

    @property
    def snapshot(self) -> CatalogSnapshot:
        """The current snapshot, loading the catalogue on first use."""
        snapshot = self._snapshot
        if snapshot is None:
            self.refresh(full=True)
            snapshot = self._snapshot
            assert snapshot is not None
        return snapshot

    @property
    def loaded(self) -> CatalogSnapshot | None:
        """The current snapshot, None before the first load (which this does not start)."""
        return self._snapshot

    def listed(self) -> dict[str, int] | None:
        """The ids of the items in the current snapshot (None before the first load): every one
        is in the database, as items are hidden, never deleted."""
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.position

    def refresh(self, full: bool = False) -> CatalogSnapshot:
        """Read items changed since the last refresh (every item when ``full``)."""
        with self._lock:
            self._refreshes += 1
            full = full or self._snapshot is None or self._refreshes % FULL_RELOAD_EVERY == 0
            since = None if full or self._watermark is None else self._watermark - OVERLAP
            started = datetime.now(UTC)
            current = None if full else self._snapshot
            seen: dict[tuple[str, ...], Any] = {}
            changed: list[ItemRules] = []
            with self.sessions() as session:
                if since is None:
                    listed, read = self._read_all(session, started - OVERLAP, seen, changed)
                else:
                    assert current is not None  # incremental reads follow a first load
                    listed, read = self._read_since(session, since, seen, changed, current)
            # Anchored at when this read started, not at the newest row seen: otherwise a
            # catalogue that stopped changing is re-read whole on every refresh.
            self._watermark = started
            self._listed = listed
            snapshot = self._merge(changed, replace_all=full)
            if snapshot is current and read >= TRIM_AFTER:
                release_free_memory()  # the rows read (0.25 ms)
            return snapshot

    def _read_all(
        self,
        session: Session,
        recent: datetime,
        seen: dict[tuple[str, ...], Any],
        changed: list[ItemRules],
    ) -> tuple[IntArray, int]:
        """Every item into ``changed``; returns the versions (:func:`_version`) of those updated
        since ``recent`` (the next refresh lists them again) and how many rows were read whole."""
        query = select(*_COLUMNS).execution_options(yield_per=2_000)
        listed: list[int] = []
        # In chunks: a whole catalogue of rows at once would set the process's peak.
        for row in session.execute(query):
            changed.append(_rules(row, seen))
            if as_utc(row.updated_at) >= recent:
                listed.append(_version(row.item_id, row.updated_at))
        return np.unique(np.array(listed, dtype=np.int64)), len(changed)

    def _read_since(
        self,
        session: Session,
        since: datetime,
        seen: dict[tuple[str, ...], Any],
        changed: list[ItemRules],
        current: CatalogSnapshot,
    ) -> tuple[IntArray, int]:
        """The items updated since ``since`` whose rules changed, into ``changed``.

        Every refresh lists the items updated within OVERLAP before the last one began, to
        catch rows committed late with an older ``updated_at``: after an import, the whole
        import for a minute. Listing is cheap (id and time); only versions not listed before
        are read whole, in chunks, and only rules that differ are kept. Returns the versions
        listed and how many rows were read (listed or whole)."""
        listing = select(Item.item_id, Item.updated_at).where(Item.updated_at >= since)
        versions: list[IntArray] = []
        unknown: list[str] = []
        for part in session.execute(listing.execution_options(yield_per=2_000)).partitions():
            keys = np.fromiter((_version(i, t) for i, t in part), np.int64, len(part))
            versions.append(keys)
            known = _among(keys, self._listed)
            unknown.extend(row.item_id for row, new in zip(part, ~known, strict=True) if new)
        for chunk in chunks(unknown, 2_000):
            rows = session.execute(select(*_COLUMNS).where(Item.item_id.in_(chunk)))
            for row in rows:
                rules = _rules(row, seen)
                at = current.position.get(rules.item_id)
                if at is None or current.items[at] != rules:
                    changed.append(rules)
        listed = np.unique(np.concatenate(versions)) if versions else _NONE_LISTED
        return listed, len(listed) + len(unknown)

    def reload_items(self, item_ids: Sequence[str]) -> CatalogSnapshot:
        """Re-read the given items now, so this process never serves what it just changed."""
        if self._snapshot is None:
            return self.refresh(full=True)
        changed: list[ItemRules] = []
        seen: dict[tuple[str, ...], Any] = {}
        # Read under the lock too: a refresh that read older rows cannot merge after us.
        with self._lock, self.sessions() as session:
            for chunk in chunks(list(dict.fromkeys(item_ids))):
                rows = session.execute(select(*_COLUMNS).where(Item.item_id.in_(chunk))).all()
                changed.extend(_rules(row, seen) for row in rows)
            return self._merge(changed, replace_all=False)

    def _merge(self, changed: list[ItemRules], replace_all: bool) -> CatalogSnapshot:
        current = self._snapshot
        if not replace_all and current is not None and not changed:
            return current
        digest: int | None = None
        if replace_all or current is None:
            merged = {r.item_id: r for r in changed}
        else:
            merged = {r.item_id: r for r in current.items}
            if all(merged.get(r.item_id) == r for r in changed):
                return current
            digest = current.fingerprint
            for rules in {r.item_id: r for r in changed}.values():
                old = merged.get(rules.item_id)
                digest += rules.digest() - (0 if old is None else old.digest())
                merged[rules.item_id] = rules
            digest %= FINGERPRINT_MODULUS
        generation = 0 if current is None else current.generation + 1
        snapshot = CatalogSnapshot.build(generation, merged.values(), digest)
        self._snapshot = snapshot
        if replace_all or len(changed) >= TRIM_AFTER:
            release_free_memory()  # the rows read and the previous snapshot's arrays
        return snapshot

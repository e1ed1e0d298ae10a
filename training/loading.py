"""Loading items and events into the service through its one ingestion path.

Every row goes through the same validation, deduplication and profile updates as
``POST /v1/items/batch`` and ``POST /v1/events/batch``; nothing is written around them.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.services import Services

BATCH = 5_000
RELEASE_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class LoadReport:
    """What became of every row: nothing is dropped without being counted here."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: LoadReport) -> None:
        self.read += other.read
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        for reason, count in other.reasons.items():
            self.reasons[reason] += count


def load_items(
    services: Services,
    items: Iterable[dict[str, Any]],
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Upsert raw items in batches through the catalogue's validation."""
    report = LoadReport()
    for batch in _batches(items, BATCH):
        ack = services.catalog.upsert_raw(batch)
        report.read += len(batch)
        report.accepted += ack.stored
        report.rejected += ack.rejected
        for result in ack.results:
            if result.error:
                report.reasons[result.error] += 1
        if progress is not None:
            progress(len(batch))
    return report


def load_events(
    services: Services,
    events: Iterable[dict[str, Any]],
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Ingest raw events in batches through the one ingestion path."""
    report = LoadReport()
    for batch in _batches(events, BATCH):
        outcome = services.ingestor.ingest_raw(batch)
        services.ingestor.flush_confirmed()
        report.read += len(batch)
        report.accepted += outcome.accepted
        report.duplicates += outcome.duplicates
        report.rejected += outcome.rejected
        for result in outcome.results:
            if result.error:
                report.reasons[result.error] += 1
        if progress is not None:
            progress(len(batch))
    return report


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# MovieLens


@dataclass
class MovieLensFolder:
    """A MovieLens download: ``ratings.csv`` + ``movies.csv`` (+ ``tags.csv``), or the 100k
    layout ``u.data`` + ``u.item``."""

    path: Path

    def __post_init__(self) -> None:
        modern = (self.path / "ratings.csv").is_file() and (self.path / "movies.csv").is_file()
        classic = (self.path / "u.data").is_file() and (self.path / "u.item").is_file()
        if not (modern or classic):
            raise FileNotFoundError(
                f"{self.path} is not a MovieLens folder: expected ratings.csv and movies.csv "
                "(ml-latest, ml-25m...) or u.data and u.item (ml-100k)"
            )
        self.classic = not modern

    def count_ratings(self) -> int:
        name = "u.data" if self.classic else "ratings.csv"
        with (self.path / name).open("rb") as handle:
            lines = sum(1 for _ in handle)
        return lines if self.classic else max(0, lines - 1)

    def items(self) -> Iterator[dict[str, Any]]:
        if self.classic:
            yield from self._classic_items()
            return
        tags = self._tags()
        with (self.path / "movies.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
                title = row["title"].strip()
                year = RELEASE_YEAR.search(title)
                yield {
                    "item_id": row["movieId"],
                    "title": title,
                    "categories": genres,
                    "tags": tags.get(row["movieId"], [])[:200],
                    "attributes": {"year": int(year.group(1))} if year else {},
                }

    def _tags(self) -> dict[str, list[str]]:
        """Per movie, its user-applied tags, most used first."""
        path = self.path / "tags.csv"
        if not path.is_file():
            return {}
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                tag = row["tag"].strip().lower()[:128]
                if tag:
                    counts[row["movieId"]][tag] += 1
        return {movie: sorted(tags, key=lambda t: (-tags[t], t)) for movie, tags in counts.items()}

    def _classic_items(self) -> Iterator[dict[str, Any]]:
        genre_names = [
            "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
            "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
            "Romance", "Sci-Fi", "Thriller", "War", "Western",
        ]  # fmt: skip
        with (self.path / "u.item").open(encoding="latin-1") as handle:
            for line in handle:
                fields = line.rstrip("\n").split("|")
                if len(fields) < 5:
                    continue
                flags = fields[-19:]
                genres = [g for g, flag in zip(genre_names, flags, strict=False) if flag == "1"]
                yield {
                    "item_id": fields[0],
                    "title": fields[1],
                    "categories": [g for g in genres if g != "unknown"],
                }

    def events(self) -> Iterator[dict[str, Any]]:
        """One ``rating`` event per rating, with an id that makes re-imports no-ops."""
        if self.classic:
            with (self.path / "u.data").open(encoding="latin-1") as handle:
                for line in handle:
                    user, movie, rating, stamp = line.split("\t")
                    yield _rating(user, movie, rating, stamp)
            return
        with (self.path / "ratings.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield _rating(row["userId"], row["movieId"], row["rating"], row["timestamp"])


def _rating(user: str, movie: str, rating: str, stamp: str) -> dict[str, Any]:
    return {
        "event_id": f"ml-{user}-{movie}",
        "user_id": user,
        "item_id": movie,
        "type": "rating",
        "value": float(rating),
        "timestamp": datetime.fromtimestamp(int(stamp.strip()), UTC).isoformat(),
    }

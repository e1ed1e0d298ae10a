"""Where imports read from: files (CSV, JSON, JSON Lines, Parquet), SQL databases and paged HTTP
APIs. Each source yields raw records, one at a time, and never holds the whole input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SourceError(Exception):
    """The source cannot be read on (a broken file, a refused query, an API that keeps failing);
    the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A piece of the source that is not a record (a malformed line); it is quarantined as it
    was read, with the reason."""

    original: Any
    reason: str

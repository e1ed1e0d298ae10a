"""Which variant a user sees: a deterministic hash of the experiment's salt and the user id.

The hash maps a user to one of 10,000 buckets (basis points); the variants own consecutive
ranges of buckets in their order, sized by their shares. So:

- the same user gets the same variant in every process, after every restart, on every machine
  (``blake2b`` of ``"<salt>:<user_id>"``, never Python's per-process ``hash``);
- changing shares moves only the users whose bucket changes owner: going from 50/50 to 60/40
  moves the 10% of users in buckets 5,000-5,999 and nobody else;
- a new salt reshuffles everyone, which is what a new experiment wants: users who were in the
  treatment of the last one are not all in the treatment of the next.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Experiment

log = logging.getLogger(__name__)

BASIS_POINTS = 10_000
RUNNING = "running"
Strategy = Literal["hybrid", "popularity"]


def bucket(salt: str, user_id: str) -> int:
    """The user's bucket in ``[0, 10_000)`` for an experiment salted with ``salt``."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") * BASIS_POINTS) >> 64


@dataclass(frozen=True)
class VariantPlan:
    """One variant and how to serve it."""

    name: str
    share_bp: int
    strategy: Strategy = "hybrid"
    model_version: str | None = None
    weights: Mapping[str, float] | None = None

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> VariantPlan:
        config = stored.get("config") or {}
        weights = config.get("weights")
        return cls(
            name=str(stored["name"]),
            share_bp=int(stored["share_bp"]),
            strategy="popularity" if config.get("strategy") == "popularity" else "hybrid",
            model_version=config.get("model_version"),
            weights=None if weights is None else {str(k): float(v) for k, v in weights.items()},
        )


@dataclass(frozen=True, eq=False)
class RunningExperiment:
    """A running experiment as the serving path needs it: immutable, built once per start."""

    id: int
    name: str
    salt: str
    variants: tuple[VariantPlan, ...]
    attribution_window: timedelta
    _upper_bounds: tuple[int, ...] = field(init=False, repr=False)
    header_value: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError(f"experiment {self.name!r} has no variants")
        bounds: list[int] = []
        total = 0
        for variant in self.variants:
            total += variant.share_bp
            bounds.append(total)
        if total != BASIS_POINTS:
            raise ValueError(
                f"experiment {self.name!r}: variant shares sum to {total} basis points, "
                f"not {BASIS_POINTS}"
            )
        object.__setattr__(self, "_upper_bounds", tuple(bounds))
        object.__setattr__(self, "header_value", self.name.encode())

    @classmethod
    def from_row(cls, row: Experiment) -> RunningExperiment:
        return cls(
            id=row.id,
            name=row.name,
            salt=row.salt,
            variants=tuple(VariantPlan.from_stored(v) for v in row.variants),
            attribution_window=timedelta(seconds=row.attribution_window_seconds),
        )

    @property
    def model_versions(self) -> set[str]:
        """The model versions its variants name (besides the active one)."""
        return {v.model_version for v in self.variants if v.model_version is not None}

    def assign(self, user_id: str) -> VariantPlan:
        """The variant of ``user_id``; the same answer everywhere, every time."""
        index = bisect.bisect_right(self._upper_bounds, bucket(self.salt, user_id))
        return self.variants[index]


def assign_many(salt: str, shares_bp: Sequence[int], user_ids: Iterable[str]) -> list[int]:
    """Variant indices of many users: the same mapping as :meth:`RunningExperiment.assign`."""
    bounds: list[int] = []
    total = 0
    for share in shares_bp:
        total += share
        bounds.append(total)
    return [bisect.bisect_right(bounds, bucket(salt, user_id)) for user_id in user_ids]


class ExperimentCache:
    """The running experiment of this process, re-read from the database every few seconds so
    that requests never wait for it.

    An experiment's variants cannot change while it runs, so a refresh that finds the same
    experiment keeps the object it has; ``on_change`` hears of every other change (to load the
    model versions the variants serve before requests need them).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        on_change: Callable[[RunningExperiment | None], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.on_change = on_change
        self.current: RunningExperiment | None = None

    def refresh(self) -> RunningExperiment | None:
        with self.sessions() as session:
            row = session.scalar(select(Experiment).where(Experiment.status == RUNNING))
        previous = self.current
        if row is None:
            fresh = None
        elif previous is not None and previous.id == row.id:
            return previous
        else:
            fresh = RunningExperiment.from_row(row)
        if fresh is None and previous is None:
            return None
        if self.on_change is not None:
            self.on_change(fresh)
        self.current = fresh
        log.info(
            "running experiment: %s (was %s)",
            fresh.name if fresh else "none",
            previous.name if previous else "none",
        )
        return fresh

"""Recommendations for a user, similar items, trending and popular items: the model's scores,
the catalogue's rules, backfill and explanations.

Order of sources for a user's list: the personal ranking (live profile folded into the model),
then popular, then trending items, then any other eligible item of the catalogue, so a list has
``k`` items whenever the catalogue has ``k`` eligible ones. A user without events starts from
trending items instead.
"""

from __future__ import annotations

import logging
import secrets
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson
import redis

from app.config import Settings
from app.errors import ItemNotFound, NotFound
from app.profiles import (
    PREFIX,
    ProfileSnapshot,
    ProfileStore,
    event_weight,
    execute_scripts,
    user_keys,
)
from app.serving.answers import AnswerCache, list_field
from app.serving.catalog_index import CatalogIndex, CatalogSnapshot
from app.serving.filters import AttributeFilter
from app.serving.model import ServingModel, UserRow
from app.serving.outage import Outage
from app.serving.store import ModelHolder
from app.serving.trending import EventCounts, Ranked, Trending

IntArray = npt.NDArray[np.int64]
log = logging.getLogger(__name__)
# Recent items a "because you ..." explanation may point to.
ANCHORS = 20
VERBS = {
    "view": "viewed",
    "click": "viewed",
    "add_to_cart": "added to your cart",
    "purchase": "bought",
    "like": "liked",
    "rating": "rated",
}
TRENDING_REASON = "trending now"
ALIGNMENTS_KEPT = 4
Candidates = Iterable[tuple[str, float]]
# A fixed reason, or one made per item: (snapshot, catalogue position, asked categories) -> text.
Reason = str | Callable[[CatalogSnapshot, int, Sequence[str]], str]


class RecommendationNotFound(NotFound):
    pass


class Scored(NamedTuple):
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True)
class RecommendationList:
    recommendation_id: str
    user_id: str
    model_version: str | None
    items: list[Scored]
    # Made without the live profile (Redis unreachable): see :meth:`Recommender.recommend`.
    degraded: bool = False


# The ids of lists made while Redis is unreachable: nowhere stored, such a list is ranked again
# (without the profile, as first) for each of its pages.
DEGRADED_PREFIX = "rec-d-"


@dataclass(frozen=True, eq=False)
class Alignment:
    """One model's items on one catalogue snapshot.

    The model is held weakly: an alignment must not keep a swapped-out model (tens of MB) alive.
    """

    model_ref: weakref.ReferenceType[ServingModel]
    snapshot: CatalogSnapshot
    to_catalog: IntArray  # model index -> catalogue position, -1 when not in the catalogue
    popular: list[str]  # model items with popularity > 0, most popular first


def _window(stored: Mapping[str, Any], offset: int, k: int) -> Iterator[Scored]:
    """Items ``[offset, offset + k)`` of a list as ``_store`` stores it."""
    window = slice(offset, offset + k)
    reasons = stored["reasons"]
    page = zip(stored["ids"][window], stored["scores"][window], stored["why"][window], strict=True)
    for item_id, score, why in page:
        yield Scored(item_id, score, reasons[why])


def rec_key(recommendation_id: str) -> str:
    return f"{PREFIX}:rec:{recommendation_id}"


def user_row(model: ServingModel, profile: ProfileSnapshot, half_life: float) -> UserRow:
    """The user's row of the model's users x items matrix, from the live profile.

    As training's ``Dataset.matrix`` builds rows:

    - ``binary``: 1 for every item the user interacted with, except that an item whose summed
      weight is negative (disliked) gets -1, a confident "no" to ALS, as in training;
    - ``weighted``: the summed event weights (the model's ``event_weights``). Training sums them
      undecayed. While the profile's recent list holds the user's whole history (at most
      ``RECSYS_PROFILE_RECENT_MAX`` events) the sums are recomputed exactly from it; beyond that
      the profile's decayed scores are used, rescaled to the user's last event, so older events
      weigh less than in training (half-life ``RECSYS_PROFILE_HALF_LIFE_DAYS``).

    Items unknown to the model are left out: ALS and content know nothing about them.
    """
    values: dict[str, float]
    if model.value_scheme == "binary":
        values = {
            item: (1.0 if score >= 0 else -1.0) for item, score in profile.item_scores.items()
        }
    elif profile.recent and profile.events <= len(profile.recent):
        values = {}
        for entry in profile.recent:
            if entry["type"] not in model.event_weights:
                continue  # a type the model was trained without: it never saw such events
            weight = event_weight(entry["type"], entry.get("value"), model.event_weights)
            values[entry["item_id"]] = values.get(entry["item_id"], 0.0) + weight
    else:
        factor = 1.0
        if profile.last_event_at is not None:
            age = (profile.as_of - profile.last_event_at).total_seconds()
            factor = 2.0 ** (max(age, 0.0) / half_life)
        values = {item: score * factor for item, score in profile.item_scores.items()}
    pairs = sorted(
        (model.index[item], value) for item, value in values.items() if item in model.index
    )
    return UserRow(
        items=np.array([i for i, _ in pairs], dtype=np.int64),
        values=np.array([v for _, v in pairs], dtype=np.float32),
    )


class Recommender:
    """Answers every read of the serving API."""

    def __init__(
        self,
        models: ModelHolder,
        catalog: CatalogIndex,
        profiles: ProfileStore,
        trending: Trending,
        counts: EventCounts,
        client: redis.Redis,
        settings: Settings,
    ) -> None:
        self.models = models
        self.catalog = catalog
        self.profiles = profiles
        self.trending = trending
        self.counts = counts
        self.client = client
        self.settings = settings
        self.answers = AnswerCache(client, settings.answer_cache_seconds)
        self.outage = Outage()
        # One per model served (the active one, and those of experiment variants).
        self._alignments: dict[str, Alignment] = {}
        self._alignment_lock = threading.Lock()

    # -- per model and catalogue -------------------------------------------------------------

    def warm(self) -> None:
        """Build what the first requests would otherwise wait for: the catalogue index, the
        served model's alignment to it and the trending list. Failures are logged and left to
        the requests, which report them."""
        try:
            snapshot = self.catalog.snapshot
            model = self.models.current
            if model is not None:
                self.alignment(model, snapshot)
            self.trending.ranked()
        except Exception:
            log.exception("warming the recommender failed; the first requests will retry")

    def alignment(self, model: ServingModel, snapshot: CatalogSnapshot) -> Alignment:
        cached = self._alignments.get(model.version)
        if cached is not None and cached.model_ref() is model and cached.snapshot is snapshot:
            return cached
        with self._alignment_lock:  # one request builds it; the others wait, then share it
            cached = self._alignments.get(model.version)
            if cached is not None and cached.model_ref() is model and cached.snapshot is snapshot:
                return cached
            return self._align(model, snapshot)

    def _align(self, model: ServingModel, snapshot: CatalogSnapshot) -> Alignment:
        to_catalog = np.array(
            [snapshot.position.get(item_id, -1) for item_id in model.item_ids], dtype=np.int64
        )
        order = np.lexsort((np.arange(model.n_items), -model.popularity))
        popular = [model.item_ids[i] for i in order if model.popularity[i] > 0]
        built = Alignment(weakref.ref(model), snapshot, to_catalog, popular)
        # Copy on write, keeping only the alignments of other models still served (the
        # experiments' variants) to the same catalogue, so old snapshots are released.
        kept = {
            v: a
            for v, a in self._alignments.items()
            if a.snapshot is snapshot and v != model.version and a.model_ref() is not None
        }
        kept[model.version] = built
        self._alignments = dict(list(kept.items())[-ALIGNMENTS_KEPT:])
        return built

    # -- users ---------------------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int,
        offset: int = 0,
        recommendation_id: str | None = None,
        exclude_seen: bool = True,
        categories: Sequence[str] = (),
        exclude: Sequence[str] = (),
        attributes: Sequence[AttributeFilter] = (),
        weights: Mapping[str, float] | None = None,
        model: ServingModel | None = None,
        strategy: Literal["hybrid", "popularity"] = "hybrid",
    ) -> RecommendationList:
        """A page of the user's ranked list; a new list unless ``recommendation_id`` names one.

        An experiment variant may pass another ``model`` than the active one, blend ``weights``,
        or the ``popularity`` strategy (no personal ranking: popular, then trending items).
        """
        now = datetime.now(UTC)
        snapshot = self.catalog.snapshot
        model = self.models.current if model is None else model
        degraded = recommendation_id is not None and recommendation_id.startswith(DEGRADED_PREFIX)
        degraded = degraded or self.outage.active
        if recommendation_id is not None and not degraded:
            try:
                return self._page(recommendation_id, user_id, k, offset, exclude, snapshot, now)
            except redis.RedisError as exc:
                self._unreachable("paging a list", exc)
                degraded = True
        profile = None
        if not degraded:
            try:
                profile = self.profiles.read(user_id, now=now)
            except redis.RedisError as exc:
                self._unreachable("reading the profile", exc)
                degraded = True
        if profile is None:
            profile = ProfileSnapshot(user_id, [], {}, {}, 0, None, now)
        ranked = self._rank(
            profile,
            model,
            snapshot,
            now,
            offset + k,
            categories,
            exclude,
            exclude_seen,
            attributes,
            weights,
            strategy,
            degraded,
        )
        version = None if model is None else model.version
        if degraded:
            # Ranked the same for every page; no store to keep it in.
            return RecommendationList(
                recommendation_id or DEGRADED_PREFIX + secrets.token_hex(8),
                user_id,
                version,
                ranked[offset : offset + k],
                degraded=True,
            )
        field = self.list_field(
            k, offset, exclude_seen, categories, exclude, attributes, weights, strategy
        )
        recommendation_id = "rec-" + secrets.token_hex(8)
        keep = None
        if (
            field is not None
            and model is not None
            and all(s.reason != TRENDING_REASON for s in ranked)
        ):
            until = min(now.timestamp() + self.answers.seconds, snapshot.next_change(now))
            keep = (field, profile.version, snapshot.fingerprint, until)
        try:
            self._store(recommendation_id, user_id, version, ranked, keep)
        except redis.RedisError as exc:
            # Ranked from the profile, but not kept for paging: later pages come ranked
            # without the profile, as while Redis is away.
            self._unreachable("storing the list", exc)
            recommendation_id = DEGRADED_PREFIX + secrets.token_hex(8)
            return RecommendationList(
                recommendation_id, user_id, version, ranked[offset : offset + k], degraded=True
            )
        return RecommendationList(recommendation_id, user_id, version, ranked[offset : offset + k])

    def last_known(
        self,
        user_id: str,
        k: int,
        offset: int,
        field: bytes | None,
        recommendation_id: str | None,
        model: ServingModel | None = None,
    ) -> RecommendationList | None:
        """While Redis is away: the page of a list this process kept a copy of before it went
        (the user's list for these parameters, or the list ``recommendation_id`` names), made
        by the model served and for the catalogue of now; None when there is none."""
        tracked = self.answers.tracked
        snapshot = self.catalog.loaded
        model = self.models.current if model is None else model
        if tracked is None or snapshot is None or model is None:
            return None
        fields = tracked.last_known(user_keys(user_id).answers.encode())
        if recommendation_id is not None:
            candidates = list(fields.values())
        elif field is not None and field in fields:
            candidates = [fields[field]]
        else:
            return None
        clock = datetime.now(UTC).timestamp()
        for raw in candidates:
            try:
                kept = orjson.loads(raw)
                if recommendation_id is not None and kept["id"] != recommendation_id:
                    continue
                if (
                    kept["model_version"] != model.version
                    or kept["catalog"] != snapshot.fingerprint
                ):
                    continue
                items = [
                    entry
                    for entry in _window(kept, offset, k)
                    if snapshot.is_eligible(entry.item_id, clock)
                ]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            return RecommendationList(kept["id"], user_id, model.version, items, degraded=True)
        return None

    def _unreachable(self, doing: str, exc: redis.RedisError) -> None:
        self.outage.failed(doing, exc)

    def _rank(
        self,
        profile: ProfileSnapshot,
        model: ServingModel | None,
        snapshot: CatalogSnapshot,
        now: datetime,
        wanted: int,
        categories: Sequence[str],
        exclude: Sequence[str],
        exclude_seen: bool,
        attributes: Sequence[AttributeFilter],
        weights: Mapping[str, float] | None,
        strategy: Literal["hybrid", "popularity"],
        degraded: bool,
    ) -> list[Scored]:
        """The user's whole ranked list (scores to 5 decimals). ``degraded``: without the live
        profile or trending items (both in Redis), from what this process holds: the model's
        popularity, then the catalogue, the same for every page."""
        size = max(self.settings.recommendation_list_size, wanted)
        allowed = snapshot.eligible(now.timestamp())
        if categories:
            allowed &= snapshot.in_categories(categories)
        if attributes:
            allowed &= snapshot.matching(attributes)
        blocked = set(exclude)
        if exclude_seen:
            blocked.update(profile.item_scores)
        for item_id in blocked:
            position = snapshot.position.get(item_id)
            if position is not None:
                allowed[position] = False

        ranked: list[Scored] = []
        if model is not None and strategy == "hybrid":
            row = user_row(model, profile, self.settings.profile_half_life_seconds)
            if not row.empty:
                ranked = self._personal(model, snapshot, allowed, row, profile, size, weights)
        taken = {entry.item_id for entry in ranked}
        popular = self._popular_source(model, snapshot)
        if degraded:
            sources = [popular]
        elif profile.events == 0 and strategy == "hybrid":
            sources = [self._trending_source(), popular]
        else:
            sources = [popular, self._trending_source()]
        for source, reason in sources:
            if len(ranked) >= size:
                break
            ranked.extend(
                self._backfill(
                    source, reason, snapshot, allowed, taken, size - len(ranked), categories
                )
            )
        if len(ranked) < size:
            rest = ((snapshot.items[p].item_id, 0.0) for p in np.flatnonzero(allowed))
            ranked.extend(
                self._backfill(
                    rest,
                    self._in_category,
                    snapshot,
                    allowed,
                    taken,
                    size - len(ranked),
                    categories,
                )
            )
        # Scores to 5 decimals: what every page of the list shows, first or later.
        return [Scored(s.item_id, round(s.score, 5), s.reason) for s in ranked]

    def list_field(
        self,
        k: int,
        offset: int,
        exclude_seen: bool,
        categories: Sequence[str],
        exclude: Sequence[str],
        attributes: Sequence[AttributeFilter],
        weights: Mapping[str, float] | None,
        strategy: str,
    ) -> bytes | None:
        """The field a list for these parameters is kept under; None when it is not kept
        (kept lists are of the configured size: a page beyond it ranks anew)."""
        size = self.settings.recommendation_list_size
        if not self.answers.enabled or offset + k > size:
            return None
        return list_field(
            strategy=strategy,
            weights=weights,
            exclude_seen=exclude_seen,
            categories=categories,
            exclude=exclude,
            attributes=attributes,
            size=size,
        )

    async def kept(
        self,
        user_id: str,
        k: int,
        offset: int,
        field: bytes,
        model: ServingModel | None = None,
    ) -> RecommendationList | None:
        """The page of the user's kept list for these parameters (see ``app.serving.answers``),
        or None: then :meth:`recommend` ranks. Runs on the event loop: no blocking call."""
        snapshot = self.catalog.loaded
        model = self.models.current if model is None else model
        if snapshot is None or model is None or self.outage.active:
            return None
        now = datetime.now(UTC).timestamp()
        found = await self.answers.lookup(user_id, field, model.version, snapshot.fingerprint, now)
        if found is None:
            return None
        items = list(_window(found.payload, offset, k))
        return RecommendationList(found.recommendation_id, user_id, found.model_version, items)

    def _personal(
        self,
        model: ServingModel,
        snapshot: CatalogSnapshot,
        allowed: npt.NDArray[np.bool_],
        row: UserRow,
        profile: ProfileSnapshot,
        size: int,
        weights: Mapping[str, float] | None,
    ) -> list[Scored]:
        align = self.alignment(model, snapshot)
        # to_catalog is -1 for a model item outside the catalogue: the appended False.
        ok = np.append(allowed, False)[align.to_catalog]
        chosen, scores = model.top(row, ok, size, weights)
        reasons = self._because(model, snapshot, profile, chosen)
        item_ids = model.item_ids
        return [
            Scored(item_ids[i], score, reason)
            for i, score, reason in zip(chosen.tolist(), scores.tolist(), reasons, strict=True)
        ]

    def _because(
        self,
        model: ServingModel,
        snapshot: CatalogSnapshot,
        profile: ProfileSnapshot,
        chosen: IntArray,
    ) -> list[str]:
        """'because you viewed <title>', naming the user's recent item most like each one."""
        anchors: dict[int, str] = {}
        for entry in profile.recent:
            index = model.index.get(entry["item_id"])
            if index is None or index in anchors or entry["type"] == "dislike":
                continue
            if profile.item_scores.get(entry["item_id"], 0.0) < 0:
                continue
            anchors[index] = entry["type"]
            if len(anchors) == ANCHORS:
                break
        if not anchors or chosen.size == 0:
            return ["recommended for you"] * int(chosen.size)
        anchor_idx = np.array(list(anchors), dtype=np.int64)
        nearest = model.nearest_of(chosen, anchor_idx)
        texts = [
            f"because you {VERBS.get(verb, 'viewed')} {self._title(snapshot, model.item_ids[i])}"
            for i, verb in anchors.items()
        ]
        return [texts[position] for position in nearest.tolist()]

    @staticmethod
    def _title(snapshot: CatalogSnapshot, item_id: str) -> str:
        position = snapshot.position.get(item_id)
        title = None if position is None else snapshot.items[position].title
        return title or item_id

    def _popular_source(
        self, model: ServingModel | None, snapshot: CatalogSnapshot
    ) -> tuple[Candidates, Reason]:
        if model is not None:
            align = self.alignment(model, snapshot)
            pop = model.popularity
            index = model.index
            return ((i, float(pop[index[i]])) for i in align.popular), self._popular_in
        return iter(self.counts.ranked()), self._popular_in

    def _trending_source(self) -> tuple[Candidates, Reason]:
        """Trending items, read only when a list needs them."""

        def items() -> Candidates:
            try:
                ranked = self.trending.ranked()
            except redis.RedisError:
                ranked = []
            yield from ranked

        return items(), TRENDING_REASON

    def _popular_in(
        self, snapshot: CatalogSnapshot, position: int, categories: Sequence[str]
    ) -> str:
        category = self._category(snapshot, position, categories)
        return f"popular in {category}" if category else "popular right now"

    def _in_category(
        self, snapshot: CatalogSnapshot, position: int, categories: Sequence[str]
    ) -> str:
        category = self._category(snapshot, position, categories)
        return f"more in {category}" if category else "from our catalogue"

    @staticmethod
    def _category(
        snapshot: CatalogSnapshot, position: int, categories: Sequence[str]
    ) -> str | None:
        own = snapshot.items[position].categories
        for category in own:
            if not categories or category in categories:
                return category
        return None

    def _backfill(
        self,
        source: Candidates,
        reason: Reason,
        snapshot: CatalogSnapshot,
        allowed: npt.NDArray[np.bool_],
        taken: set[str],
        wanted: int,
        categories: Sequence[str],
    ) -> list[Scored]:
        out: list[Scored] = []
        if wanted <= 0:
            return out
        for item_id, score in source:
            position = snapshot.position.get(item_id)
            if position is None or not allowed[position] or item_id in taken:
                continue
            taken.add(item_id)
            text = reason if isinstance(reason, str) else reason(snapshot, position, categories)
            out.append(Scored(item_id, score, text))
            if len(out) >= wanted:
                break
        return out

    # -- paging --------------------------------------------------------------------------------

    def _store(
        self,
        recommendation_id: str,
        user_id: str,
        version: str | None,
        ranked: list[Scored],
        keep: tuple[bytes, bytes, int, float] | None = None,
    ) -> None:
        """Store the list for paging and, with ``keep`` (field, profile version, catalogue
        fingerprint, until), as the user's kept list for its parameters: one round trip;
        ``redis.RedisError`` when Redis fails."""
        # Compact, since every answer stores one: each distinct reason once (a list names at
        # most a few dozen), items as parallel arrays.
        reasons: dict[str, int] = {}
        why = [reasons.setdefault(s.reason, len(reasons)) for s in ranked]
        stored = {
            "user_id": user_id,
            "model_version": version,
            "ids": [s.item_id for s in ranked],
            "scores": [s.score for s in ranked],
            "reasons": list(reasons),
            "why": why,
        }
        ttl = self.settings.recommendation_ttl_seconds
        if keep is None:
            self.client.set(rec_key(recommendation_id), orjson.dumps(stored), ex=ttl)
            return
        field, profile_version, catalog, until = keep
        pipe = self.client.pipeline(transaction=False)
        pipe.set(rec_key(recommendation_id), orjson.dumps(stored), ex=ttl)
        self.answers.store(
            pipe, user_id, field, profile_version, recommendation_id, stored, catalog, until
        )
        execute_scripts(self.client, pipe, (self.answers.script,))

    def _page(
        self,
        recommendation_id: str,
        user_id: str,
        k: int,
        offset: int,
        exclude: Sequence[str],
        snapshot: CatalogSnapshot,
        now: datetime,
    ) -> RecommendationList:
        """A page of a stored list: positions never shift, but an item that became hidden,
        unavailable or excluded since is left out of its page. ``redis.RedisError`` when Redis
        fails."""
        raw = self.client.get(rec_key(recommendation_id))
        ttl_minutes = self.settings.recommendation_ttl_seconds / 60
        if raw is None:
            raise RecommendationNotFound(
                f"recommendation_id {recommendation_id!r} is unknown or expired (lists are kept "
                f"{ttl_minutes:g} min); ask again without recommendation_id for a new list"
            )
        stored = orjson.loads(raw)
        if stored["user_id"] != user_id:
            raise RecommendationNotFound(
                f"recommendation_id {recommendation_id!r} was not made for user {user_id!r}"
            )
        blocked = set(exclude)
        clock = now.timestamp()
        items = [
            entry
            for entry in _window(stored, offset, k)
            if entry.item_id not in blocked and snapshot.is_eligible(entry.item_id, clock)
        ]
        return RecommendationList(recommendation_id, user_id, stored["model_version"], items)

    # -- items ---------------------------------------------------------------------------------

    def similar(self, item_id: str, k: int) -> tuple[str | None, list[Scored]]:
        """Items like ``item_id``: the model's item-item similarity, else popular items of its
        categories, else popular items."""
        now = datetime.now(UTC).timestamp()
        snapshot = self.catalog.snapshot
        position = snapshot.position.get(item_id)
        model = self.models.current
        if position is None and (model is None or item_id not in model.index):
            self.catalog.reload_items([item_id])
            snapshot = self.catalog.snapshot
            position = snapshot.position.get(item_id)
            if position is None:
                raise ItemNotFound(f"item {item_id!r} does not exist")
        allowed = snapshot.eligible(now)
        if position is not None:
            allowed[position] = False
        out: list[Scored] = []
        taken = {item_id}
        if model is not None and item_id in model.index:
            align = self.alignment(model, snapshot)
            scores = model.similar_scores(model.index[item_id])
            in_catalog = align.to_catalog >= 0
            ok = np.zeros(model.n_items, dtype=bool)
            ok[in_catalog] = allowed[align.to_catalog[in_catalog]]
            candidates = np.flatnonzero(ok)
            if candidates.size > k:
                candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
            chosen = candidates[np.lexsort((candidates, -scores[candidates]))]
            reason = f"similar to {self._title(snapshot, item_id)}"
            out = [Scored(model.item_ids[i], float(scores[i]), reason) for i in chosen.tolist()]
            taken.update(s.item_id for s in out)
        if len(out) < k:
            own = () if position is None else snapshot.items[position].categories
            source, reason_fn = self._popular_source(model, snapshot)
            ranked = list(source)
            if own:
                in_own = allowed & snapshot.in_categories(own)
                out.extend(
                    self._backfill(ranked, reason_fn, snapshot, in_own, taken, k - len(out), own)
                )
            out.extend(
                self._backfill(ranked, reason_fn, snapshot, allowed, taken, k - len(out), ())
            )
        return (None if model is None else model.version), out

    def trending_items(self, k: int, category: str | None = None) -> tuple[list[Scored], bool]:
        """Trending items, and whether they are popular items instead (degraded: Redis, which
        counts what trends, is unreachable)."""
        snapshot = self.catalog.snapshot
        allowed = self._allowed(snapshot, category)
        if not self.outage.active:
            try:
                ranked: Ranked = self.trending.ranked()
            except redis.RedisError as exc:
                self.outage.failed("reading trending items", exc)
            else:
                return self._backfill(
                    ranked, TRENDING_REASON, snapshot, allowed, set(), k, ()
                ), False
        return self.popular_items(k, category)[1], True

    def popular_items(self, k: int, category: str | None = None) -> tuple[str | None, list[Scored]]:
        snapshot = self.catalog.snapshot
        allowed = self._allowed(snapshot, category)
        model = self.models.current
        source, reason = self._popular_source(model, snapshot)
        cats = () if category is None else (category,)
        items = self._backfill(source, reason, snapshot, allowed, set(), k, cats)
        return (None if model is None else model.version), items

    @staticmethod
    def _allowed(snapshot: CatalogSnapshot, category: str | None) -> npt.NDArray[np.bool_]:
        allowed = snapshot.eligible(datetime.now(UTC).timestamp())
        if category is not None:
            allowed &= snapshot.in_categories([category])
        return allowed

"""A user's list of recommendations, kept until something it was made from changes.

A list is made from the user's live profile, the model, the catalogue and the request's
parameters. Between two of the user's events usually none of them changes, so a request that
repeats one is answered with the list made before, under the same ``recommendation_id``,
without reading the profile or scoring anything. What keeps that exact:

- Lists live in the user's ``answers`` hash, beside the profile under the user's hash tag, one
  field per set of parameters. The store also sets the profile's ``kept`` field, and every
  profile write (an event applied, a rebuild) that finds it set deletes the hash in the same
  script, so the request after an event ranks anew; writes for users with no lists kept skip
  the deletion.
- A list is stored only if no profile write happened since its profile was read: the read
  takes the profile's version (the number of events counted and the token of its last
  rebuild) with its item scores, and the store succeeds only while the version is unchanged.
- A kept list names the model version and the catalogue's fingerprint it was made with and is
  used only while both are the ones served, and until it expires: after
  ``answer_cache_seconds``, or earlier when an item's availability window opens or closes.
- Lists holding trending items are not kept (trending moves by the minute), nor lists made
  without a model.

The hit path runs on the event loop. Each API process keeps copies of the lists it read,
through Redis client-side caching (``app.serving.tracking``): Redis tells the process when a
user's hash changes, so a list asked for again is answered from memory until the user's next
event, whose invalidation Redis sends as it applies it. Without that (a TLS URL, copies turned
off, a server before Redis 6) the list is read from Redis through an asyncio client on every
request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aredis

from app.monitoring import RECOMMENDATION_CACHE
from app.profiles import GENERATION_FIELD, KEPT_FIELD, user_keys
from app.serving.filters import AttributeFilter
from app.serving.tracking import TrackedHashes

log = logging.getLogger(__name__)
# Sets of parameters kept per user; more, and the hash starts again.
MAX_LISTS = 16
# At most one warning this often about failed reads of kept lists.
WARN_EVERY_SECONDS = 10.0

# KEYS: the user's answers hash and profile hash. ARGV: the profile's version as read
# (``app.profiles.profile_version``), field, list, max_lists, seconds.
STORE_LUA = """
local now = redis.call('HMGET', KEYS[2], 'events', 'generation')
if (now[1] or '') .. '/' .. (now[2] or '') ~= ARGV[1] then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HSET', KEYS[2], 'kept', '1')
return 1
"""
assert (GENERATION_FIELD, KEPT_FIELD) == ("generation", "kept")  # STORE_LUA's literals


@dataclass(frozen=True, slots=True)
class Kept:
    """A list as kept: what :meth:`Recommender._store` stores for paging, plus its name and
    what it was made from."""

    recommendation_id: str
    model_version: str
    catalog: int
    until: float
    payload: dict[str, Any]


def list_field(
    *,
    strategy: str,
    weights: Mapping[str, float] | None,
    exclude_seen: bool,
    categories: Sequence[str],
    exclude: Sequence[str],
    attributes: Sequence[AttributeFilter],
    size: int,
) -> bytes:
    """The hash field of one set of parameters: equal for requests that rank the same list
    (the order of repeated parameters does not matter)."""
    described = orjson.dumps(
        [
            strategy,
            sorted((weights or {}).items()),
            exclude_seen,
            sorted(set(categories)),
            sorted(set(exclude)),
            sorted({(f.name, f.op, f.value) for f in attributes}),
            size,
        ]
    )
    return hashlib.blake2b(described, digest_size=12).hexdigest().encode()


class AnswerCache:
    """Reads and stores kept lists; disabled when ``seconds`` is 0."""

    def __init__(self, client: redis.Redis, seconds: int) -> None:
        self.client = client
        self.seconds = seconds
        self.async_client: aredis.Redis | None = None
        self.tracked: TrackedHashes | None = None
        self.script = client.register_script(STORE_LUA)
        self._hit = RECOMMENDATION_CACHE.labels(outcome="hit")
        self._miss = RECOMMENDATION_CACHE.labels(outcome="miss")
        self._stale = RECOMMENDATION_CACHE.labels(outcome="stale")
        self._warned_at = float("-inf")
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def attach(
        self, tracked: TrackedHashes | None = None, async_client: aredis.Redis | None = None
    ) -> None:
        """The hit path's connections, made on the serving event loop: ``tracked`` keeps
        copies of lists read; without it (or when the server refuses it) each is read through
        ``async_client``."""
        self.tracked = tracked
        self.async_client = async_client

    async def lookup(
        self, user_id: str, field: bytes, model_version: str | None, catalog: int, now: float
    ) -> Kept | None:
        """The list kept for these parameters if it is still the one the request would get;
        None otherwise (and when Redis fails: the caller then ranks, and reports that)."""
        if not self.enabled or model_version is None:
            return None
        key = user_keys(user_id).answers.encode()
        tracked = self.tracked
        raw: bytes | None
        try:
            if tracked is not None and not tracked.unsupported:
                raw = tracked.get(key, field)
                if raw is None:
                    raw = await tracked.fetch(key, field)
            elif self.async_client is not None:
                raw = await self.async_client.hget(key, field)  # type: ignore[assignment]
            else:
                return None
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        if raw is None:
            self._miss.inc()
            return None
        try:
            kept = orjson.loads(raw)
            found = Kept(kept["id"], kept["model_version"], kept["catalog"], kept["until"], kept)
            current = (
                # Lists stored before profiles noted that they keep lists carry no "profile":
                # an event since need not have deleted them.
                "profile" in kept
                and found.model_version == model_version
                and found.catalog == catalog
                and now < found.until
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            # Not a list this code stored (another version's, or damaged): rank anew.
            log.warning("ignoring a kept list that cannot be read: %r", exc)
            current = False
        if not current:
            self._stale.inc()
            return None
        self._hit.inc()
        return found

    def _failed(self, exc: redis.RedisError) -> None:
        # While Redis is away every request fails here: one warning per interval, not per
        # request.
        self._failures += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            log.warning(
                "reading kept lists failed %d time(s) since the last warning, ranking anew: %s",
                self._failures,
                exc,
            )
            self._warned_at, self._failures = now, 0

    def store(
        self,
        pipe: Any,
        user_id: str,
        field: bytes,
        version: bytes,
        recommendation_id: str,
        payload: dict[str, Any],
        catalog: int,
        until: float,
    ) -> None:
        """Queue the store of a list on ``pipe`` (a pipeline of :attr:`client`, run by
        ``app.profiles.execute_scripts`` with :attr:`script`); it keeps the list only if the
        profile's ``version`` (from the read it was made from) is still the profile's."""
        kept = orjson.dumps(
            {
                **payload,
                "id": recommendation_id,
                "catalog": catalog,
                "until": until,
                "profile": version.decode(),
            }
        )
        keys = user_keys(user_id)
        pipe.evalsha(
            self.script.sha,
            2,
            keys.answers,
            keys.profile,
            version,
            field,
            kept,
            MAX_LISTS,
            self.seconds,
        )

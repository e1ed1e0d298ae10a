"""Live user profiles and global activity counters in Redis.

Per user (every key carries the hash tag ``{u:<user_id>}``, so one user's keys share a Redis
Cluster slot and are updated by one atomic script; on a standalone Redis one script call
updates up to ``USERS_PER_SCRIPT_CALL`` users, whose key names it makes from their prefixes
instead of being sent four per user):

- ``recent``: the newest ``profile_recent_max`` interactions, a sorted set scored by event time;
- ``profile``, a hash: per item (``item:<item_id>``), the sum of event-type weights with
  exponential time decay; events per type (``count:<type>``); the decay anchor, last event
  time, number of events, the token of the last rebuild from the database, and whether
  ``answers`` may hold lists. One hash, so that an update reads it once and writes it once;
- ``rebuild-log``: only while a rebuild from the database runs (see ``open_rebuild``);
- ``answers``: lists of recommendations made from the profile (``app.serving.answers``).

Category affinities are not stored: they are the item scores summed per category of the
catalogue (``category_affinities``), the same sums a per-category score would hold, and an item
whose categories change moves its weight with it.

Globally, per time bucket: ``trending:<bucket>`` (items by positive weight) and
``activity:<bucket>`` (events per type), expiring after the retention window.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, NamedTuple, cast

import orjson
import redis
from redis.cluster import RedisCluster

from app.config import Settings

PREFIX = "recsys"
# Users whose events one call of apply_events.lua applies (on a standalone Redis).
USERS_PER_SCRIPT_CALL = 100


class ProfileEvent(NamedTuple):
    """The part of a stored event that profiles are built from.

    A named tuple of plain values: ingestion makes thousands per batch, and the garbage
    collector stops tracking such tuples.
    """

    event_id: str
    user_id: str
    item_id: str
    type: str
    value: float | None
    occurred_at: datetime

    @property
    def epoch(self) -> float:
        return self.occurred_at.timestamp()


# While a rebuild runs, the events applied live are logged for it; the log expires if the
# rebuild dies.
REBUILD_LOG_SECONDS = 300
# Meta fields: set while the user's answers hash may hold lists (app.serving.answers), so that
# a profile write deletes the hash only then; and a token each rebuild from the database writes
# anew, which with the number of events counted makes the profile's version (``read``).
KEPT_FIELD = "kept"
GENERATION_FIELD = "generation"


@dataclass(frozen=True, slots=True)
class UserKeys:
    recent: str
    # The item scores, ``item:<item_id>``, and the profile's bookkeeping (``meta`` of a snapshot).
    profile: str
    log: str
    # Recommendations made from the profile (app.serving.answers): a write of the profile
    # deletes them.
    answers: str

    def all(self) -> list[str]:
        """The keys that hold the profile."""
        return [self.recent, self.profile]

    def script_keys(self) -> list[str]:
        """The keys the profile scripts take, in their order (``profile_functions.lua``)."""
        return [self.recent, self.profile, self.log, self.answers]


# The suffixes of a user's keys, in the order of ``UserKeys.script_keys``; apply_events.lua
# makes the same names from a user's prefix.
_SUFFIXES = ("recent", "profile", "rebuild-log", "answers")
# Keys that earlier versions kept profiles in; a rebuild deletes them.
_FORMER_SUFFIXES = ("items", "meta", "cats", "counts")
# Profile fields of the events per type and of the item scores.
COUNT_FIELD = "count:"
ITEM_FIELD = "item:"
# The profile field that is there while a rebuild of the profile may run (``open_rebuild``).
REBUILDING_FIELD = "rebuilding"


def key_prefix(user_id: str) -> str:
    """What every key of the user's starts with; it holds the user's hash tag."""
    return f"{PREFIX}:{{u:{user_id}}}:"


def user_keys(user_id: str) -> UserKeys:
    prefix = key_prefix(user_id)
    return UserKeys(*(prefix + suffix for suffix in _SUFFIXES))


def _script(name: str) -> str:
    """A profile script: the shared functions followed by the script's own body."""
    folder = resources.files("app")
    return (
        folder.joinpath("profile_functions.lua").read_text()
        + "\n"
        + folder.joinpath(name).read_text()
    )


def event_weight(event_type: str, value: float | None, weights: Mapping[str, float]) -> float:
    """The signed weight of one event: a rating's weight scales with its value."""
    weight = weights[event_type]
    if event_type == "rating" and value is not None:
        return weight * value
    return weight


def recent_member(event: ProfileEvent, epoch: float | None = None) -> bytes:
    """The sorted-set member for one interaction; the same bytes live and when rebuilt.

    ``epoch`` is ``event.epoch`` when the caller has it already.
    """
    return orjson.dumps(
        {
            "event_id": event.event_id,
            "item_id": event.item_id,
            "type": event.type,
            "value": event.value,
            "ts": event.epoch if epoch is None else epoch,
        }
    )


def category_affinities(
    item_scores: Mapping[str, float], categories: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Per category, the sum of the scores of its items; highest first.

    The same numbers as summing each event's weight into its item's categories, computed on
    read from the catalogue's categories (``categories``: item_id -> categories).
    """
    sums: dict[str, float] = defaultdict(float)
    for item_id, score in item_scores.items():
        for category in categories.get(item_id, ()):
            sums[category] += score
    return dict(sorted(sums.items(), key=lambda kv: -kv[1]))


@dataclass
class ProfileSnapshot:
    """A profile read back from Redis with scores decayed to ``as_of``."""

    user_id: str
    recent: list[dict[str, Any]]
    item_scores: dict[str, float]
    counts: dict[str, int]
    events: int
    last_event_at: datetime | None
    as_of: datetime
    # The profile's version: it changes with every write of the profile (``read``).
    version: bytes = b"/"


class ProfileStore:
    """Reads and writes live profiles; raises ``redis.RedisError`` when Redis is unreachable."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.weights = dict(settings.event_weights)
        self.half_life = settings.profile_half_life_seconds
        self.recent_cap = settings.profile_recent_max
        self.bucket_seconds = settings.trending_bucket_seconds
        self.retention_buckets = settings.trending_retention_buckets
        self._apply_script = client.register_script(_script("apply_events.lua"))
        self._replace_script = client.register_script(_script("replace_profile.lua"))
        self._trending_script = client.register_script(ADD_TRENDING_LUA)
        self._cluster = isinstance(cast(object, client), RedisCluster)

    # -- writing ---------------------------------------------------------------------------

    def apply(self, events: Sequence[ProfileEvent], now: datetime | None = None) -> None:
        """Apply newly stored events to their users' profiles and the global counters.

        One pipelined round trip: ``apply_events.lua`` calls, each for up to
        ``USERS_PER_SCRIPT_CALL`` users (one on Redis Cluster), and one call per trending bucket.

        ``events`` are already committed to the database; one whose recent-list member the
        profile holds already counts there and is skipped.
        """
        if not events:
            return
        by_user: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        timed: list[tuple[float, float, ProfileEvent]] = []
        weights = self.weights
        for event in events:
            epoch = event.occurred_at.timestamp()
            weight = event_weight(event.type, event.value, weights)
            timed.append((epoch, weight, event))
            # The time as text: the script stores it as it is instead of formatting it again.
            by_user[event.user_id].append(
                (
                    event.item_id,
                    event.type,
                    weight,
                    repr(epoch),
                    recent_member(event, epoch).decode(),
                )
            )
        pipe = self.client.pipeline(transaction=False)
        half_life, cap, sha = repr(self.half_life), str(self.recent_cap), self._apply_script.sha
        users = list(by_user.items())
        # A script call may only touch one cluster slot there, and names its user's keys, which
        # route it; elsewhere a call takes many users, few enough to keep each call short (Redis
        # serves nobody else while a script runs), and makes their keys' names from their
        # prefixes (``apply_events.lua``).
        per_call = 1 if self._cluster else USERS_PER_SCRIPT_CALL
        for start in range(0, len(users), per_call):
            chunk = users[start : start + per_call]
            keys = user_keys(chunk[0][0]).script_keys() if self._cluster else []
            args = dumps([(key_prefix(user_id), user_events) for user_id, user_events in chunk])
            pipe.evalsha(sha, len(keys), *keys, half_life, cap, args)
        self._add_counters(pipe, timed, now or datetime.now(UTC))
        self._execute(pipe)

    def _execute(self, pipe: Any) -> None:
        execute_scripts(
            self.client, pipe, (self._apply_script, self._replace_script, self._trending_script)
        )

    def _bucket(self, epoch: float) -> int:
        return int(epoch // self.bucket_seconds)

    def _add_counters(
        self, pipe: Any, timed: Iterable[tuple[float, float, ProfileEvent]], now: datetime
    ) -> None:
        """Add events, as (epoch, weight, event), to the trending and activity buckets."""
        oldest = self._bucket(now.timestamp()) - self.retention_buckets + 1
        trending: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        types: dict[int, list[str]] = defaultdict(list)
        seconds = self.bucket_seconds
        for epoch, weight, event in timed:
            bucket = int(epoch // seconds)
            if bucket < oldest:
                continue
            types[bucket].append(event.type)
            if weight > 0:
                trending[bucket][event.item_id] += weight
        activity = {bucket: Counter(listed) for bucket, listed in types.items()}
        for bucket in set(trending) | set(activity):
            expire_at = (bucket + self.retention_buckets + 1) * self.bucket_seconds
            t_key, a_key = trending_key(bucket), activity_key(bucket)
            # ZINCRBY per item and EXPIREAT, in one script call on the bucket's one key.
            pipe.evalsha(
                self._trending_script.sha,
                1,
                t_key,
                str(expire_at),
                dumps(list(trending[bucket].items())),
            )
            for event_type, count in activity[bucket].items():
                pipe.hincrby(a_key, event_type, count)
            pipe.expireat(a_key, expire_at)

    def open_rebuild(self, user_ids: Iterable[str]) -> None:
        """Start logging the events applied live to these users' profiles; call it before the
        database read of a rebuild, and ``replace_users`` after it."""
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            keys = user_keys(user_id)
            # An empty entry only makes the list exist; the scripts skip it.
            pipe.delete(keys.log)
            pipe.rpush(keys.log, "")
            pipe.expire(keys.log, REBUILD_LOG_SECONDS)
            # Tells the live updates to look for the log; replacing the profile drops it.
            pipe.hset(keys.profile, REBUILDING_FIELD, "1")
            if self._cluster:
                pipe.execute()
        pipe.execute()

    def replace_users(self, events_by_user: Mapping[str, Sequence[ProfileEvent]]) -> None:
        """Replace whole profiles with ones computed from each user's complete event history.

        One script call per user, all in one round trip; each is atomic, so a reader never sees
        a half-written profile. Events applied live since ``open_rebuild`` that the history
        lacks are applied again on top; a live update of an event the history has, arriving
        after the rebuild, is skipped (its recent-list member is there already).
        """
        pipe = self.client.pipeline(transaction=False)
        half_life, cap = repr(self.half_life), str(self.recent_cap)
        for user_id, events in events_by_user.items():
            built = self.compute_profile(events)
            fields = {k: str(v) for k, v in built["meta"].items()}
            fields[GENERATION_FIELD] = secrets.token_hex(8)
            fields.update((COUNT_FIELD + k, str(v)) for k, v in built["counts"].items())
            fields.update((ITEM_FIELD + k, v) for k, v in built["items"].items())
            payload = {
                "profile": fields,
                "recent": [
                    [repr(score), member.decode()] for member, score in built["recent"].items()
                ],
            }
            prefix = key_prefix(user_id)
            pipe.delete(*(prefix + suffix for suffix in _FORMER_SUFFIXES))
            keys = user_keys(user_id).script_keys()
            pipe.evalsha(self._replace_script.sha, len(keys), *keys, half_life, cap, dumps(payload))
            if self._cluster:
                self._execute(pipe)
                pipe = self.client.pipeline(transaction=False)
        self._execute(pipe)

    def replace_counters(self, events: Iterable[ProfileEvent], now: datetime | None = None) -> None:
        """Recompute every live time bucket from the given events (all events in the window)."""
        now = now or datetime.now(UTC)
        current = self._bucket(now.timestamp())
        pipe = self.client.pipeline(transaction=False)
        for bucket in range(current - self.retention_buckets + 1, current + 2):
            pipe.delete(trending_key(bucket), activity_key(bucket))
        weights = self.weights
        timed = (
            (event.epoch, event_weight(event.type, event.value, weights), event) for event in events
        )
        self._add_counters(pipe, timed, now)
        self._execute(pipe)

    def compute_profile(self, events: Sequence[ProfileEvent]) -> dict[str, dict[Any, Any]]:
        """What ``apply_events.lua`` builds from ``events``, computed in one pass.

        The anchor is the newest event, so every exponent is at most zero.
        """
        if not events:
            return {"items": {}, "counts": {}, "recent": {}, "meta": {}}
        # Each event's epoch once: converting a datetime is most of the per-event cost here.
        timed = sorted(((e.epoch, e) for e in events), key=_first)
        anchor = timed[-1][0]
        items: dict[str, float] = defaultdict(float)
        counts: Counter[str] = Counter()
        for epoch, event in timed:
            contribution = event_weight(event.type, event.value, self.weights) * 2.0 ** (
                (epoch - anchor) / self.half_life
            )
            items[event.item_id] += contribution
            counts[event.type] += 1
        members = sorted(((epoch, recent_member(e, epoch)) for epoch, e in timed), reverse=True)
        recent = {member: epoch for epoch, member in members[: self.recent_cap]}
        meta = {"anchor": repr(anchor), "last_event_at": repr(anchor), "events": len(events)}
        return {
            "items": {k: repr(v) for k, v in items.items()},
            "counts": dict(counts),
            "recent": recent,
            "meta": meta,
        }

    # -- reading ---------------------------------------------------------------------------

    def read(self, user_id: str, now: datetime | None = None) -> ProfileSnapshot:
        """The user's profile, scores decayed to ``now``; empty for an unknown user.

        The profile hash is read before the recent list, so the snapshot's ``version`` (the
        events counted and the rebuild's token) is never newer than what was read with it: a
        list made from the snapshot is kept only while the version is still the profile's
        (``app.serving.answers``).
        """
        now = now or datetime.now(UTC)
        keys = user_keys(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.profile)
        pipe.zrevrange(keys.recent, 0, -1)
        profile_raw, recent_raw = pipe.execute()
        meta: dict[str, str] = {}
        counts: dict[str, int] = {}
        scores: dict[str, str] = {}
        for key, value in profile_raw.items():
            field_, text = _text(key), _text(value)
            if field_.startswith(ITEM_FIELD):
                scores[field_[len(ITEM_FIELD) :]] = text
            elif field_.startswith(COUNT_FIELD):
                counts[field_[len(COUNT_FIELD) :]] = int(text)
            else:
                meta[field_] = text
        anchor = float(meta.get("anchor", now.timestamp()))
        factor = 2.0 ** ((anchor - now.timestamp()) / self.half_life)
        last = meta.get("last_event_at")
        return ProfileSnapshot(
            user_id=user_id,
            recent=[orjson.loads(member) for member in recent_raw],
            item_scores=_decayed(scores, factor),
            counts=counts,
            events=int(meta.get("events", 0)),
            last_event_at=datetime.fromtimestamp(float(last), UTC) if last else None,
            as_of=now,
            version=profile_version(meta.get("events"), meta.get(GENERATION_FIELD)),
        )

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


# KEYS: the bucket's trending sorted set. ARGV: expire_at, a JSON list of [item_id, weight].
ADD_TRENDING_LUA = """
local key = KEYS[1]
local pairs_ = cjson.decode(ARGV[2])
for i = 1, #pairs_ do
  redis.call('ZINCRBY', key, string.format('%.17g', pairs_[i][2]), pairs_[i][1])
end
redis.call('EXPIREAT', key, ARGV[1])
return #pairs_
"""


def _first(pair: tuple[float, Any]) -> float:
    return pair[0]


def dumps(value: Any) -> str:
    """JSON for a script argument: floats in their shortest exact form, as ``repr`` gives them."""
    return orjson.dumps(value).decode()


def execute_scripts(client: redis.Redis, pipe: Any, scripts: Iterable[Any]) -> list[Any]:
    """Run a pipeline whose scripts are called by SHA (``EVALSHA``), loading ``scripts`` once
    when Redis lacks them; the answers, in the pipeline's order.

    A NOSCRIPT answer means the script did not run at all, so running exactly those commands
    again applies nothing twice. Any other error is raised, as ``pipe.execute()`` does.
    """
    commands = [args for args, _options in pipe.command_stack]
    answers: list[Any] = pipe.execute(raise_on_error=False)
    missing = [i for i, answer in enumerate(answers) if _noscript(answer)]
    errors = [answer for answer in answers if isinstance(answer, Exception)]
    if missing:
        for script in scripts:
            client.script_load(script.script)
        retry = client.pipeline(transaction=False)
        for i in missing:
            _evalsha, sha, *keys_and_args = commands[i]
            retry.evalsha(sha, *keys_and_args)
        for i, answer in zip(missing, retry.execute(), strict=True):
            answers[i] = answer
    for error in errors:
        if not _noscript(error):
            raise error
    return answers


def _noscript(answer: object) -> bool:
    return isinstance(answer, redis.exceptions.NoScriptError)


def trending_key(bucket: int) -> str:
    return f"{PREFIX}:trending:{bucket}"


def activity_key(bucket: int) -> str:
    return f"{PREFIX}:activity:{bucket}"


def profile_version(events: str | None, generation: str | None) -> bytes:
    """The version of a profile from its fields, as the answers' store script makes it."""
    return f"{events or ''}/{generation or ''}".encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decayed(raw: Mapping[str, str], factor: float) -> dict[str, float]:
    out = {}
    for key, value in raw.items():
        decayed = float(value) * factor
        if math.isfinite(decayed):
            out[key] = decayed
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))

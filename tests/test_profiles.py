"""Live profiles: weights, decay, categories, recency, counters; rebuilt from the database they
equal the live ones."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.profiles import (
    ProfileEvent,
    ProfileStore,
    activity_key,
    key_prefix,
    trending_key,
    user_keys,
)
from app.services import Services
from tests.conftest import make_settings


def _ts(days_ago: float, now: datetime) -> str:
    return (now - timedelta(days=days_ago)).isoformat()


def test_scores_follow_event_weights_and_half_life(client: TestClient) -> None:
    now = datetime.now(UTC)
    client.put("/v1/items/a", json={"title": "A", "categories": ["shoes"]})
    events = [
        {"user_id": "u", "item_id": "a", "type": "click", "timestamp": _ts(30, now)},
        {"user_id": "u", "item_id": "b", "type": "rating", "value": 4, "timestamp": _ts(0, now)},
        {"user_id": "u", "item_id": "c", "type": "dislike", "timestamp": _ts(0, now)},
    ]
    assert client.post("/v1/events/batch", json={"events": events}).json()["accepted"] == 3
    profile = client.get("/v1/users/u/profile").json()
    # click weighs 2, one 30-day half-life ago -> 1; rating 4 x weight 1; dislike -4.
    assert profile["item_scores"]["a"] == pytest.approx(1.0, rel=1e-4)
    assert profile["item_scores"]["b"] == pytest.approx(4.0, rel=1e-4)
    assert profile["item_scores"]["c"] == pytest.approx(-4.0, rel=1e-4)
    assert profile["category_affinities"] == {"shoes": pytest.approx(1.0, rel=1e-4)}
    assert profile["counts"] == {"click": 1, "rating": 1, "dislike": 1}


def test_category_affinities_sum_the_item_scores_per_catalogue_category(
    client: TestClient,
) -> None:
    client.put("/v1/items/a", json={"title": "A", "categories": ["shoes", "sale"]})
    client.put("/v1/items/b", json={"title": "B", "categories": ["shoes"]})
    events = [
        {"user_id": "u", "item_id": "a", "type": "purchase"},
        {"user_id": "u", "item_id": "b", "type": "view"},
        {"user_id": "u", "item_id": "b", "type": "dislike"},
        {"user_id": "u", "item_id": "unlisted", "type": "click"},
    ]
    assert client.post("/v1/events/batch", json={"events": events}).json()["accepted"] == 4
    profile = client.get("/v1/users/u/profile").json()
    scores = profile["item_scores"]
    # purchase 8; view 1 + dislike -4 = -3; a stub item has no categories.
    assert profile["category_affinities"] == {
        "sale": pytest.approx(scores["a"]),
        "shoes": pytest.approx(scores["a"] + scores["b"]),
    }
    assert list(profile["category_affinities"]) == ["sale", "shoes"]  # highest first
    # A recategorised item moves its weight with it, as a rebuild from the database would.
    client.put("/v1/items/b", json={"title": "B", "categories": ["boots"]})
    moved = client.get("/v1/users/u/profile").json()["category_affinities"]
    assert moved == {
        "shoes": pytest.approx(scores["a"]),
        "sale": pytest.approx(scores["a"]),
        "boots": pytest.approx(scores["b"]),
    }


def test_profile_says_which_store_is_unreachable(
    settings: Settings, services: Services, dead_redis_url: str
) -> None:
    """503 naming Redis when the profile cannot be read; naming the database when the
    catalogue its affinities are summed with cannot."""
    services.profiles.apply([ProfileEvent("e1", "u", "a", "click", None, datetime.now(UTC))])
    no_redis = make_settings(settings, redis_url=dead_redis_url, redis_timeout_seconds=0.5)
    with TestClient(create_app(no_redis)) as api:
        response = api.get("/v1/users/u/profile")
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "ServiceUnavailable"
    assert "(Redis) is unreachable" in response.json()["detail"]
    no_database = make_settings(
        settings, database_url="postgresql://postgres@127.0.0.1:1/none", auto_migrate=False
    )
    with TestClient(create_app(no_database)) as api:
        response = api.get("/v1/users/u/profile")
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "ServiceUnavailable"
    assert "(database) is unreachable" in response.json()["detail"]


def test_recent_is_newest_first_by_event_time_and_capped(
    settings: Settings, services: Services
) -> None:
    capped = settings.model_copy(update={"profile_recent_max": 5})
    store = ProfileStore(services.redis, capped)
    from app.ingest import EventIngestor

    ingestor = EventIngestor(services.sessions, store, capped)
    now = datetime.now(UTC)
    # Sent in shuffled order: the profile orders by when things happened, not by arrival.
    minutes = list(range(12))
    random.Random(3).shuffle(minutes)
    raw = [
        {
            "event_id": f"e{m}",
            "user_id": "u",
            "item_id": f"i{m}",
            "type": "view",
            "timestamp": (now - timedelta(minutes=m)).isoformat(),
        }
        for m in minutes
    ]
    assert ingestor.ingest_raw(raw).accepted == 12
    recent = store.read("u").recent
    assert [r["event_id"] for r in recent] == ["e0", "e1", "e2", "e3", "e4"]


def test_unknown_user_has_an_empty_profile(client: TestClient) -> None:
    profile = client.get("/v1/users/nobody/profile").json()
    assert profile["events"] == 0
    assert profile["recent"] == []
    assert profile["item_scores"] == {}


def test_user_keys_share_one_cluster_slot() -> None:
    keys = user_keys("user:{odd}id")
    tags = {key[key.index("{") + 1 : key.index("}")] for key in keys.all()}
    assert tags == {"u:user:{odd"}


def test_every_key_of_a_user_starts_with_the_users_prefix() -> None:
    """apply_events.lua makes a user's key names from the prefix and these suffixes."""
    for user_id in ("u1", "user:{odd}id", "ünï"):
        prefix = key_prefix(user_id)
        assert user_keys(user_id).script_keys() == [
            prefix + suffix for suffix in ("recent", "profile", "rebuild-log", "answers")
        ]


def _random_events(
    seed: int, now: datetime, users: int = 4, n: int = 120
) -> list[dict[str, object]]:
    rng = random.Random(seed)
    kinds = ["view", "click", "add_to_cart", "purchase", "like", "dislike", "rating"]
    events = []
    for k in range(n):
        kind = rng.choice(kinds)
        event: dict[str, object] = {
            "event_id": f"r{seed}-{k}",
            "user_id": f"u{rng.randrange(users)}",
            "item_id": f"i{rng.randrange(15)}",
            "type": kind,
            "timestamp": (now - timedelta(days=rng.uniform(0, 200))).isoformat(),
        }
        if kind == "rating":
            event["value"] = rng.choice([0.5, 1, 2.5, 4, 5])
        events.append(event)
    return events


def _comparable(store: ProfileStore, user_id: str, now: datetime) -> dict[str, object]:
    snapshot = store.read(user_id, now=now)
    return {
        "recent": snapshot.recent,
        "items": snapshot.item_scores,
        "counts": snapshot.counts,
        "events": snapshot.events,
        "last": snapshot.last_event_at,
    }


def _assert_same_profile(live: dict[str, object], rebuilt: dict[str, object]) -> None:
    assert rebuilt["recent"] == live["recent"]
    assert rebuilt["counts"] == live["counts"]
    assert rebuilt["events"] == live["events"]
    assert rebuilt["last"] == live["last"]
    live_scores, rebuilt_scores = live["items"], rebuilt["items"]
    assert isinstance(live_scores, dict)
    assert isinstance(rebuilt_scores, dict)
    assert rebuilt_scores.keys() == live_scores.keys()
    for name, score in live_scores.items():
        assert rebuilt_scores[name] == pytest.approx(score, rel=1e-9, abs=1e-12)


def test_calls_made_as_on_redis_cluster_build_the_same_profiles(
    settings: Settings, services: Services
) -> None:
    """On Redis Cluster a script call takes one user and names that user's keys, which route it;
    on a standalone Redis a call takes many users and names none. Both build the same profiles."""
    now = datetime.now(UTC)
    events = [
        ProfileEvent(
            str(raw["event_id"]),
            str(raw["user_id"]),
            str(raw["item_id"]),
            str(raw["type"]),
            raw.get("value"),  # type: ignore[arg-type]
            datetime.fromisoformat(str(raw["timestamp"])),
        )
        for raw in _random_events(11, now, users=6, n=90)
    ]
    users = sorted({event.user_id for event in events})
    standalone = ProfileStore(services.redis, settings)
    standalone.apply(events, now=now)
    expected = {user_id: _comparable(standalone, user_id, now) for user_id in users}
    assert all(profile["events"] for profile in expected.values())

    for user_id in users:
        services.redis.delete(*user_keys(user_id).all())
    as_on_cluster = ProfileStore(services.redis, settings)
    as_on_cluster._cluster = True
    as_on_cluster.apply(events, now=now)
    assert {user_id: _comparable(as_on_cluster, user_id, now) for user_id in users} == expected


@pytest.mark.parametrize("half_life_days", [30.0, 0.5])
def test_profile_rebuilt_from_database_equals_live_profile(
    settings: Settings, services: Services, half_life_days: float
) -> None:
    """Events arrive out of order in several batches; with a half-life of half a day they span
    hundreds of half-lives, so the live script must rescale on the way."""
    tuned = settings.model_copy(
        update={"profile_half_life_days": half_life_days, "profile_recent_max": 20}
    )
    store = ProfileStore(services.redis, tuned)
    from app.catalog import Catalog
    from app.ingest import EventIngestor
    from app.schemas import ItemIn

    Catalog(services.sessions).upsert(
        [ItemIn(item_id=f"i{k}", categories=[f"c{k % 4}", f"d{k % 3}"]) for k in range(15)]
    )
    ingestor = EventIngestor(services.sessions, store, tuned)
    now = datetime.now(UTC)
    events = _random_events(7, now)
    for start in range(0, len(events), 25):
        ingestor.ingest_raw(events[start : start + 25], now=now)

    users = sorted({str(e["user_id"]) for e in events})
    live = {u: _comparable(store, u, now) for u in users}
    for u in users:
        services.redis.delete(*user_keys(u).all())
    from app.reconcile import ProfileRebuilder

    assert ProfileRebuilder(services.sessions, store).rebuild_users(users) == len(users)
    for u in users:
        _assert_same_profile(live[u], _comparable(store, u, now))


def test_trending_and_activity_counters_per_time_bucket(
    client: TestClient, services: Services, settings: Settings
) -> None:
    now = datetime.now(UTC)
    events = [
        {"user_id": "u1", "item_id": "hot", "type": "purchase"},
        {"user_id": "u2", "item_id": "hot", "type": "view"},
        {"user_id": "u2", "item_id": "meh", "type": "dislike"},
        # Older than the retention window: stored, but not counted as trending.
        {"user_id": "u3", "item_id": "old", "type": "view", "timestamp": _ts(30, now)},
    ]
    client.post("/v1/events/batch", json={"events": events})
    bucket = int(now.timestamp()) // settings.trending_bucket_seconds
    trending = dict(services.redis.zrange(trending_key(bucket), 0, -1, withscores=True))
    assert trending == {b"hot": pytest.approx(9.0)}
    activity = services.redis.hgetall(activity_key(bucket))
    assert activity == {b"purchase": b"1", b"view": b"1", b"dislike": b"1"}
    assert services.redis.ttl(trending_key(bucket)) > 0


def _db_events(services: Services, user_id: str) -> list[ProfileEvent]:
    from app.db.queries import as_utc, user_events_query

    with services.sessions() as session:
        return [
            ProfileEvent(r.event_id, r.user_id, r.item_id, r.type, r.value, as_utc(r.occurred_at))
            for r in session.execute(user_events_query([user_id]))
        ]


def _clean_rebuild(services: Services, user_id: str, now: datetime) -> dict[str, object]:
    """The user's profile rebuilt from the database with nothing else going on."""
    from app.reconcile import ProfileRebuilder

    keys = user_keys(user_id)
    services.redis.delete(*keys.all(), keys.log)
    ProfileRebuilder(services.sessions, services.profiles).rebuild_users([user_id])
    return _comparable(services.profiles, user_id, now)


def test_an_event_applied_live_while_its_user_is_rebuilt_is_not_lost(
    services: Services,
) -> None:
    """An event committed after the rebuild read the user's events, and applied live before the
    rebuild wrote the profile, still counts once in the profile the rebuild leaves."""
    from sqlalchemy import event as sa_event

    from app.reconcile import ProfileRebuilder

    now = datetime.now(UTC)
    first = [
        {"event_id": f"a{k}", "user_id": "u", "item_id": f"i{k}", "type": "view"} for k in range(3)
    ]
    assert services.ingestor.ingest_raw(first, now=now).accepted == 3
    late = {"event_id": "late", "user_id": "u", "item_id": "i9", "type": "purchase"}
    fired: list[str] = []

    def during_read(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not fired and "FROM events" in statement and "ORDER BY events.user_id" in statement:
            fired.append(statement)
            outcome = services.ingestor.ingest_raw([late], now=now)
            assert (outcome.accepted, outcome.profile) == (1, "updated")

    sa_event.listen(services.engine, "after_cursor_execute", during_read)
    try:
        ProfileRebuilder(services.sessions, services.profiles).rebuild_users(["u"])
    finally:
        sa_event.remove(services.engine, "after_cursor_execute", during_read)
    assert fired, "the rebuild's read of the events was not seen"

    after = _comparable(services.profiles, "u", now)
    assert after["events"] == len(_db_events(services, "u")) == 4
    assert after["counts"] == {"view": 3, "purchase": 1}
    _assert_same_profile(_clean_rebuild(services, "u", now), after)


def test_an_event_the_rebuild_saw_is_not_applied_again_when_its_live_update_comes_late(
    services: Services,
) -> None:
    """An event committed before the rebuild's read whose live update reaches Redis only after
    the rebuild (a slow request) is not counted twice."""
    from app.reconcile import ProfileRebuilder

    now = datetime.now(UTC)
    events = [
        {"event_id": f"b{k}", "user_id": "w", "item_id": f"i{k}", "type": "click"} for k in range(2)
    ]
    assert services.ingestor.ingest_raw(events, now=now, update_profiles=False).accepted == 2
    stored = _db_events(services, "w")
    ProfileRebuilder(services.sessions, services.profiles).rebuild_users(["w"])
    before = _comparable(services.profiles, "w", now)
    assert before["events"] == 2

    services.profiles.apply(stored, now=now)  # the late live updates

    after = _comparable(services.profiles, "w", now)
    _assert_same_profile(before, after)
    # A new event still counts.
    new = {"event_id": "b9", "user_id": "w", "item_id": "i5", "type": "view"}
    assert services.ingestor.ingest_raw([new], now=now).accepted == 1
    assert _comparable(services.profiles, "w", now)["events"] == 3


def test_applying_the_same_events_twice_counts_them_once(services: Services) -> None:
    """A profile update sent again (a retry after a lost answer) changes nothing: each event's
    recent-list member says it counts already."""
    now = datetime.now(UTC)
    events = [
        {"event_id": f"t{k}", "user_id": "r", "item_id": f"i{k}", "type": "like"} for k in range(3)
    ]
    assert services.ingestor.ingest_raw(events, now=now).accepted == 3
    before = _comparable(services.profiles, "r", now)
    services.profiles.apply(_db_events(services, "r"), now=now)
    _assert_same_profile(before, _comparable(services.profiles, "r", now))
    assert before["events"] == 3


def test_an_update_mixing_counted_and_new_events_counts_each_once(services: Services) -> None:
    """An update whose events the profile partly counts already, in any order (new ones before,
    between and after counted ones), counts just the new ones: the profile equals one that saw
    each event once."""
    now = datetime.now(UTC)
    events = [
        ProfileEvent(
            f"x{k}",
            "x",
            f"i{k % 3}",
            ("view", "click", "like")[k % 3],
            None,
            now - timedelta(minutes=10 - k),
        )
        for k in range(6)
    ]
    services.profiles.apply([events[1], events[2], events[4]], now=now)
    services.profiles.apply(
        [events[0], events[1], events[3], events[2], events[4], events[5]], now=now
    )
    services.profiles.apply([e._replace(user_id="y") for e in events], now=now)
    mixed, once = _comparable(services.profiles, "x", now), _comparable(services.profiles, "y", now)
    assert mixed["events"] == 6
    _assert_same_profile(once, mixed)


def test_profile_keeps_the_anchor_and_the_newest_event_time_exactly(services: Services) -> None:
    """The decay anchor is the first event's time and stays put; the last event time is the
    newest event's, whatever order events arrive in; both as the exact float."""
    first = datetime(2026, 11, 27, 8, 0, 0, 123457, tzinfo=UTC)
    events = [
        ProfileEvent("m1", "m", "a", "view", None, first),
        ProfileEvent("m2", "m", "b", "click", None, first + timedelta(hours=3, microseconds=7)),
    ]
    services.profiles.apply(events, now=first + timedelta(hours=4))
    # An older event arriving late counts, and moves neither time.
    late = ProfileEvent("m3", "m", "c", "view", None, first + timedelta(hours=1))
    services.profiles.apply([late], now=first + timedelta(hours=4))

    raw = services.redis.hgetall(user_keys("m").profile)
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    assert float(meta["anchor"]) == first.timestamp()
    assert float(meta["last_event_at"]) == events[1].occurred_at.timestamp()
    assert meta["events"] == "3"
    snapshot = services.profiles.read("m", now=first + timedelta(hours=4))
    assert snapshot.last_event_at == events[1].occurred_at
    assert [r["event_id"] for r in snapshot.recent] == ["m2", "m3", "m1"]
    assert [r["ts"] for r in snapshot.recent] == [
        e.occurred_at.timestamp() for e in (events[1], late, events[0])
    ]


def test_one_users_thousands_of_items_in_one_update(services: Services) -> None:
    """A script reads and writes a user's item scores in one command each up to a thousand
    fields, and in parts above that: a batch of 2,500 events of one user, with 2,100 items."""
    from app.reconcile import ProfileRebuilder

    now = datetime.now(UTC)
    events = [
        {
            "event_id": f"many{k}",
            "user_id": "many",
            "item_id": f"i{k % 2100}",
            "type": ("view", "click", "dislike")[k % 3],
            "timestamp": _ts(k / 100, now),
        }
        for k in range(2500)
    ]
    outcome = services.ingestor.ingest_raw(events, now=now)
    assert (outcome.accepted, outcome.profile) == (2500, "updated")
    live = _comparable(services.profiles, "many", now)
    assert live["events"] == 2500
    assert live["counts"] == {"view": 834, "click": 833, "dislike": 833}
    items = live["items"]
    assert isinstance(items, dict)
    assert len(items) == 2100

    services.redis.delete(*user_keys("many").all())
    ProfileRebuilder(services.sessions, services.profiles).rebuild_users(["many"])
    _assert_same_profile(live, _comparable(services.profiles, "many", now))


def test_a_rebuild_deletes_the_keys_profiles_were_kept_in_before(services: Services) -> None:
    """Earlier versions kept item scores in ``items`` and the rest in ``meta`` (and before
    that ``cats`` and ``counts``); rebuilding a profile removes what they left."""
    from app.reconcile import ProfileRebuilder

    now = datetime.now(UTC)
    event = {"event_id": "old1", "user_id": "old", "item_id": "i1", "type": "purchase"}
    assert services.ingestor.ingest_raw([event], now=now).accepted == 1
    former = [key_prefix("old") + suffix for suffix in ("items", "meta", "cats", "counts")]
    for key in former:
        services.redis.hset(key, "i1", "1.5")
    before = _comparable(services.profiles, "old", now)

    ProfileRebuilder(services.sessions, services.profiles).rebuild_users(["old"])

    assert services.redis.exists(*former) == 0
    _assert_same_profile(before, _comparable(services.profiles, "old", now))

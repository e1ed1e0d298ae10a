"""Settings: the RECSYS_* environment, API key specs, safe defaults, and a real start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from pydantic import ValidationError

from app.config import DEFAULT_EVENT_WEIGHTS, EVENT_TYPES, Scope, Settings, parse_api_keys

ROOT = Path(__file__).resolve().parents[1]
LONG_A = "aaaaaaaaaaaaaaaa-front"
LONG_B = "bbbbbbbbbbbbbbbb-ops"
ALL_SCOPES = frozenset(Scope)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No RECSYS_* variable from the surrounding shell leaks into the Settings under test."""
    for name in list(os.environ):
        if name.startswith("RECSYS_"):
            monkeypatch.delenv(name)
    return monkeypatch


def read_settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


# -- parse_api_keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param(f"{LONG_A}:read", {LONG_A: frozenset({Scope.READ})}, id="one-scope"),
        pytest.param(
            f"{LONG_A}:ingest+read",
            {LONG_A: frozenset({Scope.INGEST, Scope.READ})},
            id="two-scopes",
        ),
        pytest.param(f"{LONG_A}:admin", {LONG_A: ALL_SCOPES}, id="admin-implies-all"),
        pytest.param(f"{LONG_A}:read+admin", {LONG_A: ALL_SCOPES}, id="admin-among-others"),
        pytest.param(LONG_A, {LONG_A: ALL_SCOPES}, id="no-scope-means-all"),
        pytest.param(
            f" {LONG_A} : Ingest + READ , {LONG_B}:admin ,",
            {LONG_A: frozenset({Scope.INGEST, Scope.READ}), LONG_B: ALL_SCOPES},
            id="spaces-case-trailing-comma",
        ),
        pytest.param(
            f"{LONG_A}:ingest,,{LONG_B}:read",
            {LONG_A: frozenset({Scope.INGEST}), LONG_B: frozenset({Scope.READ})},
            id="empty-entry-skipped",
        ),
    ],
)
def test_parse_api_keys_accepts_good_specs(
    spec: str, expected: dict[str, frozenset[Scope]]
) -> None:
    """KEY:SCOPE[+SCOPE],... parses to key -> scopes; admin implies every scope."""
    assert parse_api_keys(spec) == expected


def test_parse_api_keys_unknown_scope_names_it_and_the_allowed_ones() -> None:
    """A misspelt scope fails with a ValueError naming the bad scope and every allowed one,
    without echoing the key."""
    with pytest.raises(ValueError, match="unknown scope") as caught:
        parse_api_keys(f"{LONG_A}:read,{LONG_B}:wirte")
    message = str(caught.value)
    assert "'wirte'" in message
    assert "#2" in message
    for scope in ("ingest", "read", "admin"):
        assert scope in message
    assert LONG_A not in message
    assert LONG_B not in message


@pytest.mark.parametrize("short_key", ["k3y-s3cr3t", "fifteen-chars-x", "   p4dd3d-k3y   "])
def test_parse_api_keys_rejects_short_keys_without_echoing_them(short_key: str) -> None:
    """Keys under 16 characters are refused; the message gives the rule, not the key."""
    with pytest.raises(ValueError, match="16 characters") as caught:
        parse_api_keys(f"{LONG_A}:admin,{short_key}:read")
    assert short_key.strip() not in str(caught.value)
    assert "#2" in str(caught.value)


def test_parse_api_keys_accepts_exactly_16_characters() -> None:
    """16 characters is the minimum, inclusive."""
    assert parse_api_keys("k" * 16 + ":read") == {"k" * 16: frozenset({Scope.READ})}


# -- Settings ----------------------------------------------------------------------------------


def test_defaults_are_sqlite_and_embedded_redis_under_var(clean_env: pytest.MonkeyPatch) -> None:
    """With no configuration at all, the service runs on a SQLite file and an embedded Redis
    under ./var, open (no keys), in development mode."""
    settings = read_settings()
    assert settings.env == "development"
    assert settings.var_dir == Path("var")
    assert settings.database_url == ""
    assert settings.sqlalchemy_url == "sqlite:///var/recsys.db"
    assert settings.redis_url == ""
    assert settings.embedded_redis_path == Path("var/redis.rdb")
    assert settings.api_keys == {}
    assert settings.auth_enabled is False
    assert settings.public_read is False
    assert settings.auto_migrate is True
    assert settings.unknown_items == "stub"
    assert settings.max_batch_size == 10_000
    assert settings.max_future_seconds == 86_400
    assert settings.event_weights == DEFAULT_EVENT_WEIGHTS


def test_settings_read_recsys_environment_variables(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every knob comes from RECSYS_<NAME>: URLs, keys, limits, flags and weights."""
    env = {
        "RECSYS_ENV": "production",
        "RECSYS_API_KEYS": f"{LONG_A}:ingest,{LONG_B}:admin",
        "RECSYS_DATABASE_URL": "postgresql://recsys:secret@db.internal:5432/recsys",
        "RECSYS_REDIS_URL": "redis://cache.internal:6379/2",
        "RECSYS_VAR_DIR": str(tmp_path),
        "RECSYS_MAX_BATCH_SIZE": "25",
        "RECSYS_MAX_BODY_BYTES": "4096",
        "RECSYS_PUBLIC_READ": "true",
        "RECSYS_UNKNOWN_ITEMS": "reject",
        "RECSYS_EVENT_WEIGHTS": '{"view": 0.5}',
        "RECSYS_PROFILE_HALF_LIFE_DAYS": "7",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = read_settings()
    assert settings.env == "production"
    assert settings.api_keys == {LONG_A: frozenset({Scope.INGEST}), LONG_B: ALL_SCOPES}
    assert settings.auth_enabled is True
    assert settings.sqlalchemy_url == "postgresql+psycopg://recsys:secret@db.internal:5432/recsys"
    assert settings.redis_url == "redis://cache.internal:6379/2"
    assert settings.var_dir == tmp_path
    assert settings.embedded_redis_path == tmp_path / "redis.rdb"
    assert settings.max_batch_size == 25
    assert settings.max_body_bytes == 4096
    assert settings.public_read is True
    assert settings.unknown_items == "reject"
    assert settings.event_weights == {**DEFAULT_EVENT_WEIGHTS, "view": 0.5}
    assert settings.profile_half_life_seconds == 7 * 86_400


def test_sqlite_default_follows_var_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Moving RECSYS_VAR_DIR moves the default SQLite file with it."""
    clean_env.setenv("RECSYS_VAR_DIR", str(tmp_path))
    assert read_settings().sqlalchemy_url == f"sqlite:///{(tmp_path / 'recsys.db').as_posix()}"


def test_production_without_keys_refuses_to_start(clean_env: pytest.MonkeyPatch) -> None:
    """RECSYS_ENV=production with no RECSYS_API_KEYS is an error that says what to set."""
    clean_env.setenv("RECSYS_ENV", "production")
    with pytest.raises(ValidationError, match="RECSYS_API_KEYS") as caught:
        read_settings()
    assert "KEY:SCOPE" in str(caught.value)
    with pytest.raises(ValidationError, match="RECSYS_API_KEYS"):
        Settings(_env_file=None, env="production")  # type: ignore[call-arg]


def test_production_with_keys_starts(clean_env: pytest.MonkeyPatch) -> None:
    """The production check passes once keys are configured."""
    clean_env.setenv("RECSYS_ENV", "production")
    clean_env.setenv("RECSYS_API_KEYS", f"{LONG_A}:admin")
    assert read_settings().auth_enabled is True


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        pytest.param("RECSYS_API_KEYS", f"{LONG_A}:superuser", "allowed", id="bad-scope"),
        pytest.param("RECSYS_API_KEYS", "tiny:admin", "16 characters", id="short-key"),
        pytest.param("RECSYS_EVENT_WEIGHTS", '{"teleport": 1}', "teleport", id="bad-weight"),
        pytest.param("RECSYS_UNKNOWN_ITEMS", "ignore", "unknown_items", id="bad-policy"),
        pytest.param("RECSYS_MAX_BATCH_SIZE", "0", "max_batch_size", id="zero-batch"),
        pytest.param("RECSYS_MAX_BODY_BYTES", "100", "max_body_bytes", id="tiny-body"),
    ],
)
def test_bad_environment_values_fail_with_a_clear_message(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    """A bad RECSYS_ value stops start-up with a message naming the problem."""
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        read_settings()


@pytest.mark.parametrize(
    ("env", "secrets"),
    [
        pytest.param(
            {"RECSYS_API_KEYS": f"{LONG_A}:read,{LONG_B}:superuser"},
            [LONG_A, LONG_B],
            id="bad-scope-after-a-good-key",
        ),
        pytest.param(
            {"RECSYS_API_KEYS": f"{LONG_A}:admin,k3y-s3cr3t:read"},
            [LONG_A, "k3y-s3cr3t"],
            id="short-key-after-a-good-key",
        ),
        pytest.param(
            {"RECSYS_ENV": "production", "RECSYS_DATABASE_URL": "postgresql://app:pw-9f3k@db/x"},
            ["pw-9f3k"],
            id="production-without-keys-with-db-password",
        ),
    ],
)
def test_settings_errors_never_echo_secrets(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], secrets: list[str]
) -> None:
    """A configuration error is printed at start-up and lands in logs: it must name the problem
    without repeating API keys or the database password it was given."""
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        read_settings()
    message = str(caught.value)
    assert "RECSYS_API_KEYS" in message
    for secret in secrets:
        assert secret not in message


def test_bad_event_weight_lists_allowed_types(clean_env: pytest.MonkeyPatch) -> None:
    """An unknown event type in RECSYS_EVENT_WEIGHTS names the types that exist."""
    clean_env.setenv("RECSYS_EVENT_WEIGHTS", '{"teleport": 1}')
    with pytest.raises(ValidationError) as caught:
        read_settings()
    for event_type in EVENT_TYPES:
        assert event_type in str(caught.value)


# -- a real process ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bare_environment() -> dict[str, str]:
    """The current environment without any RECSYS_ variable, able to import the app."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RECSYS_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def python() -> str:
    venv_python = ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


@pytest.mark.slow
def test_uvicorn_starts_on_the_embedded_defaults(tmp_path: Path) -> None:
    """`uvicorn app.main:app` in an empty directory with no RECSYS_ variables starts, is ready
    (database and embedded Redis answer), and creates ./var/recsys.db there."""
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    workdir = tmp_path / "empty"
    workdir.mkdir()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [python(), "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=bare_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            healthy = False
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    healthy = httpx.get(f"{base}/healthz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    healthy = False
                if healthy:
                    break
                time.sleep(0.2)
            assert healthy, log_path.read_text(errors="replace")
            ready = httpx.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
            assert (workdir / "var" / "recsys.db").is_file()
        finally:
            stop_process(process)


@pytest.mark.slow
def test_uvicorn_in_production_without_keys_exits_naming_recsys_api_keys(tmp_path: Path) -> None:
    """With RECSYS_ENV=production and no keys the process refuses to start: a non-zero exit and
    a message about RECSYS_API_KEYS, instead of serving an open API."""
    env = bare_environment()
    env["RECSYS_ENV"] = "production"
    finished = subprocess.run(
        [python(), "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0
    assert "RECSYS_API_KEYS" in finished.stdout + finished.stderr
    assert not (tmp_path / "var" / "recsys.db").exists()

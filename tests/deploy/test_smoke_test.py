"""deploy/smoke_test.py against the real service: `python -m app serve` on a free port with its
own state folder (SQLite and an embedded Redis under RECSYS_VAR_DIR) and an API key."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.test_config import ROOT, bare_environment, free_port, python, stop_process

SCRIPT = ROOT / "deploy" / "smoke_test.py"
API_KEY = "smoke-test-key-0123456789"
# The service's own start-up (migrations, the embedded Redis) is the script's first wait.
READY_TIMEOUT = "90"


@dataclass(frozen=True)
class Server:
    base_url: str
    log: Path


@contextmanager
def serve(var_dir: Path) -> Iterator[Server]:
    """`python -m app serve` on a free port, its state in ``var_dir``; not waited for."""
    port = free_port()
    env = bare_environment()
    env.update(RECSYS_VAR_DIR=str(var_dir), RECSYS_API_KEYS=f"{API_KEY}:ingest+read")
    log_path = var_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [python(), "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=var_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Server(f"http://127.0.0.1:{port}", log_path)
        finally:
            stop_process(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A service just started: the smoke test's first check waits for it."""
    with serve(tmp_path_factory.mktemp("smoke-var")) as started:
        yield started


def wait_ready(api: httpx.Client, server: Server) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if api.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(server.log.read_text("replace"))


def smoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python(), str(SCRIPT), *args],
        env={**bare_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_smoke_test_passes_against_a_service_just_started(server: Server) -> None:
    """It waits for the service to be ready; the empty shop has no popular item, so the event
    is about smoke-test-item."""
    done = smoke("--base-url", server.base_url, "--api-key", API_KEY, "--timeout", READY_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr + server.log.read_text("replace")
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "ok    ready",
        "ok    popular",
        "ok    event",
        "ok    recommendations",
        "ok    profile",
    ]
    assert "no items yet: using 'smoke-test-item'" in lines[1]
    assert lines[2].startswith("ok    event: POST /v1/events 201: smoke-")
    assert lines[-1] == f"smoke test passed: 5 checks against {server.base_url}"
    assert done.stderr == ""


def test_the_smoke_test_uses_a_popular_item_and_runs_again(tmp_path: Path) -> None:
    """In a shop with events it records its event on the most popular item; run again (a new
    event id), with the key from RECSYS_SMOKE_API_KEY, it passes again."""
    with (
        serve(tmp_path) as started,
        httpx.Client(base_url=started.base_url, headers={"X-API-Key": API_KEY}, timeout=10) as api,
    ):
        wait_ready(api, started)
        assert api.put("/v1/items/sku-smoke", json={"title": "Smoke"}).status_code == 200
        event = {"user_id": "shopper", "item_id": "sku-smoke", "type": "click"}
        assert api.post("/v1/events", json=event).status_code == 201

        for _run in range(2):
            done = smoke(
                "--base-url", started.base_url + "/", env={"RECSYS_SMOKE_API_KEY": API_KEY}
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "ok    popular: GET /v1/items/popular?k=1 200: item 'sku-smoke'" in done.stdout
            assert "smoke test passed" in done.stdout
        profile = api.get("/v1/users/smoke-test/profile").json()
        assert [r["item_id"] for r in profile["recent"]] == ["sku-smoke", "sku-smoke"]
        assert len({r["event_id"] for r in profile["recent"]}) == 2


def test_a_wrong_key_fails_the_first_check_that_needs_one(server: Server) -> None:
    done = smoke(
        "--base-url", server.base_url, "--api-key", "not-the-key-0123456789", "--timeout", "90"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ok    ready: " in done.stdout
    assert "FAIL  popular: GET /v1/items/popular?k=1 answered 401" in done.stderr
    assert "smoke test FAILED at check 'popular'" in done.stderr


def test_nothing_listening_fails_the_ready_check_after_the_timeout() -> None:
    base_url = f"http://127.0.0.1:{free_port()}"
    done = smoke("--base-url", base_url, "--timeout", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  ready: GET /readyz did not answer 200 within 2 s" in done.stderr
    assert "no answer" in done.stderr
    assert f"smoke test FAILED at check 'ready' ({base_url})" in done.stderr
    assert done.stdout == ""

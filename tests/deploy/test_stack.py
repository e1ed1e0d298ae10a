"""The compose stack for real: the image built, PostgreSQL, Redis, the migrations, the API, the
stream consumer and the trainer in containers; the demo shop posted through the API, a model
trained in the trainer container and served by the API container; and a restart of the API
container while a client keeps posting events loses none and stores none twice.

It takes minutes and needs podman and podman-compose, so it runs only when
``RECSYS_TEST_STACK=1`` (``.ci/run`` sets it once podman is installed). The images for PostgreSQL
and Redis are stand-ins built from ``tests/deploy/images/`` (no registry is reachable here);
every service runs on the host's network (``tests/deploy/compose.host.yml``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from training import demo

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
PROJECT = "recsys-stack-test"
API_KEY = "stack-test-admin-key-0123456789"
DEMO = demo.DemoSpec(users=150, items=60, events=4_000, days=30)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("RECSYS_TEST_STACK") != "1",
        reason="the container stack test runs with RECSYS_TEST_STACK=1 (.ci/run sets it)",
    ),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900, stderr: bool = False
) -> str:
    """Run a command, failing the test with its output when it fails; its standard output,
    followed by its standard error with ``stderr`` (where the CLIs report progress)."""
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}\n{done.stdout[-4000:]}\n"
            f"{done.stderr[-4000:]}"
        )
    return done.stdout + done.stderr if stderr else done.stdout


@dataclass
class Stack:
    """A running compose project and how to reach it."""

    env: dict[str, str]
    api: str
    database_url: str
    redis_port: int
    compose: list[str] = field(default_factory=list)

    def call(self, *args: str, timeout: float = 900, stderr: bool = False) -> str:
        return run(*self.compose, *args, env=self.env, timeout=timeout, stderr=stderr)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body, default=_json_default).encode()
        request = urllib.request.Request(  # noqa: S310 (loopback)
            self.api + path,
            data=data,
            method=method,
            headers={"content-type": "application/json", "x-api-key": API_KEY},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read() or b"null")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def podman(*args: str, timeout: float = 900) -> str:
    return run("podman", *args, timeout=timeout)


def wait_until(what: str, check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, urllib.error.URLError, psycopg.Error, redis.RedisError):
            result = None
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {seconds:.0f} s")


def healthy(container: str) -> bool:
    """Run the container's own health check (podman runs them on demand without systemd)."""
    done = subprocess.run(
        ["podman", "healthcheck", "run", container], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The project's image and the stand-ins, built now (layers are cached between runs)."""
    if shutil.which("podman") is None or shutil.which("podman-compose") is None:
        pytest.fail("RECSYS_TEST_STACK=1 needs podman and podman-compose on PATH")
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE], check=False).returncode:
        pytest.fail(f"{BASE_IMAGE} is missing: build it first (.ci/run does)")
    tags = {
        "recsys": "localhost/recsys:stack-test",
        "postgres": "localhost/recsys-test-postgres:latest",
        "redis": "localhost/recsys-test-redis:latest",
    }
    build = ["build", "--network=host", "--format", "docker", "-t"]
    podman(*build, tags["recsys"], str(ROOT), timeout=1800)
    podman(*build, tags["postgres"], str(HERE / "images" / "postgres"))
    podman(*build, tags["redis"], str(HERE / "images" / "redis"))
    return tags


@pytest.fixture(scope="module")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The compose stack up, on free ports, with its own volumes; taken down afterwards."""
    ports = {name: free_port() for name in ("pg", "redis", "api", "metrics")}
    database_url = f"postgresql://recsys:stack-test-password@127.0.0.1:{ports['pg']}/recsys"
    env_file = tmp_path_factory.mktemp("stack") / "stack.env"
    env_file.write_text(
        "POSTGRES_USER=recsys\n"
        "POSTGRES_PASSWORD=stack-test-password\n"
        "POSTGRES_DB=recsys\n"
        f"RECSYS_DATABASE_URL={database_url}\n"
        f"RECSYS_API_KEYS={API_KEY}:admin\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")},
        "RECSYS_IMAGE": images["recsys"],
        "RECSYS_ENV_FILE": str(env_file),
        "STACK_PG_PORT": str(ports["pg"]),
        "STACK_REDIS_PORT": str(ports["redis"]),
        "STACK_API_PORT": str(ports["api"]),
        "STACK_METRICS_PORT": str(ports["metrics"]),
    }
    compose = [
        "podman-compose",
        "-p",
        PROJECT,
        "-f",
        str(ROOT / "docker-compose.yml"),
        "-f",
        str(HERE / "compose.host.yml"),
    ]
    stack = Stack(env, f"http://127.0.0.1:{ports['api']}", database_url, ports["redis"], compose)
    stack.call("down", "-v", timeout=300)
    try:
        # podman 4.3 ignores depends_on conditions (podman-compose says so and starts everything
        # at once), so the test takes the steps they describe: the data stores healthy, the
        # migrations completed, then the services that wait for them.
        stack.call("up", "-d", "postgres", "redis")
        for service in ("postgres", "redis"):
            wait_until(f"{service} healthy", lambda s=service: healthy(stack.container(s)), 120)
        stack.call("up", "--no-deps", "migrate")
        state = podman("inspect", "--format", "{{.State.ExitCode}}", stack.container("migrate"))
        assert state.strip() == "0"
        stack.call("up", "-d", "--no-deps", "api", "consumer", "trainer")
        for service in ("api", "consumer", "trainer"):
            wait_until(f"{service} healthy", lambda s=service: healthy(stack.container(s)), 180)
        yield stack
    finally:
        for service in ("api", "consumer", "trainer", "migrate"):
            logs = subprocess.run(
                ["podman", "logs", "--tail", "30", stack.container(service)],
                capture_output=True,
                text=True,
                check=False,
            )
            print(f"--- {service}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        stack.call("down", "-v", timeout=300)


def stored_event_ids(stack: Stack) -> list[str]:
    with psycopg.connect(stack.database_url) as connection:
        rows = connection.execute("SELECT event_id FROM events").fetchall()
    return [row[0] for row in rows]


def test_the_stack_serves_a_model_trained_in_its_trainer_and_loses_nothing_on_restart(
    stack: Stack,
) -> None:
    """The whole life of a deployment on one host, in order."""
    # The demo shop, posted through the API container.
    shop = demo.generate(DEMO)
    status, body = stack.request("POST", "/v1/items/batch", {"items": shop.items})
    assert status == 200, body
    for start in range(0, len(shop.events), 1_000):
        batch = shop.events[start : start + 1_000]
        status, body = stack.request("POST", "/v1/events/batch", {"events": batch}, timeout=60)
        assert status == 200, body
        assert {r["status"] for r in body["results"]} == {"accepted"}, body["results"][:3]

    # An event from the stream, stored by the consumer container.
    stream = redis.Redis(port=stack.redis_port)
    stream.xadd(
        "recsys:events",
        {
            "event_id": "stack-stream-1",
            "user_id": shop.events[0]["user_id"],
            "item_id": shop.items[0]["item_id"],
            "type": "click",
        },
    )
    wait_until("the stream event stored", lambda: "stack-stream-1" in stored_event_ids(stack), 60)

    # A model trained in the trainer container; the API container serves it without a restart.
    output = stack.call("exec", "-T", "trainer", "python", "-m", "training", "train", timeout=900)
    assert "promoted" in output, output
    version = output.split("version ", 1)[1].split(":", 1)[0]
    assert f"database:{version}" in output
    wait_until(
        "the API serving the new version",
        lambda: stack.request("GET", "/v1/models/current")[1]["version"] == version,
        60,
    )
    user = shop.events[0]["user_id"]
    status, body = stack.request("GET", f"/v1/users/{user}/recommendations?k=5")
    assert status == 200, body
    assert body["model_version"] == version
    assert len(body["items"]) == 5

    # A click on that list: online quality per version and variant, drift against the new
    # version's training data and freshness, from the monitor endpoints.
    click = {
        "event_id": "stack-click-1",
        "user_id": user,
        "item_id": body["items"][0]["item_id"],
        "type": "click",
        "recommendation_id": body["recommendation_id"],
    }
    assert stack.request("POST", "/v1/events", click)[0] in (200, 201)
    status, quality = stack.request("GET", "/v1/monitoring/quality?refresh=true", timeout=60)
    assert status == 200, quality
    rows = {(r["model_version"], r["variant"]): r for r in quality["windows"][0]["rows"]}
    assert rows[(version, "control")]["clicked"] == 1, rows
    assert quality["freshness"]["active_version"] == version
    status, drifted = stack.request("GET", "/v1/monitoring/drift", timeout=60)
    assert status == 200, drifted
    assert drifted["reference_version"] == version
    assert {f["feature"] for f in drifted["windows"][0]["features"]} >= {"event_type", "category"}
    # The scheduled job's command: a fresh model and few new events, so nothing to do.
    output = stack.call(
        "exec", "-T", "trainer", "python", "-m", "training", "retrain", "--once", stderr=True
    )
    assert "nothing to do" in " ".join(output.split()), output

    # The deploy workflow's smoke test passes against the API container.
    smoke = run(
        sys.executable,
        str(ROOT / "deploy" / "smoke_test.py"),
        "--base-url",
        stack.api,
        "--api-key",
        API_KEY,
        "--timeout",
        "30",
    )
    assert "smoke test passed" in smoke

    # A restart of the API container while a client posts events, retrying each with the same
    # event_id until it is acknowledged.
    acknowledged: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def post_events() -> None:
        n = 0
        while not stop.is_set() or n < 20:
            event_id = f"stack-restart-{n}"
            event = {
                "event_id": event_id,
                "user_id": user,
                "item_id": shop.items[n % len(shop.items)]["item_id"],
                "type": "view",
            }
            deadline = time.monotonic() + 180
            while True:
                try:
                    status, _ = stack.request("POST", "/v1/events", event, timeout=5)
                except (OSError, urllib.error.URLError) as exc:
                    failures.append(str(exc))
                    status = 0
                if status in (200, 201):
                    acknowledged.append(event_id)
                    break
                if status:
                    failures.append(f"HTTP {status}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{event_id} never acknowledged: {failures[-3:]}")
                time.sleep(0.2)
            n += 1

    started_before = podman("inspect", "--format", "{{.State.StartedAt}}", stack.container("api"))
    client = threading.Thread(target=post_events)
    client.start()
    wait_until("events acknowledged before the restart", lambda: len(acknowledged) >= 20, 60)
    stack.call("restart", "api", timeout=300)
    wait_until("the API ready again", lambda: healthy(stack.container("api")), 180)
    before_stop = len(acknowledged)
    wait_until(
        "events acknowledged after the restart", lambda: len(acknowledged) > before_stop + 20, 60
    )
    stop.set()
    client.join(timeout=240)
    assert not client.is_alive()
    started_after = podman("inspect", "--format", "{{.State.StartedAt}}", stack.container("api"))
    assert started_after != started_before, "the API container was not restarted"

    # The restart was a graceful one: the server drained and finished before the new one began.
    logs = subprocess.run(
        ["podman", "logs", stack.container("api")], capture_output=True, text=True, check=False
    )
    assert "Application shutdown complete" in logs.stdout + logs.stderr
    assert "Finished server process" in logs.stdout + logs.stderr

    stored = stored_event_ids(stack)
    restart_ids = [e for e in stored if e.startswith("stack-restart-")]
    assert len(restart_ids) == len(set(restart_ids)), "an event was stored twice"
    assert set(acknowledged) <= set(restart_ids), "an acknowledged event is missing"
    smoke_ids = [e for e in stored if e.startswith("smoke-")]
    assert len(smoke_ids) == 1
    # Nothing else was stored: the demo shop, the stream's event, the click, the smoke test's,
    # the client's.
    assert len(stored) == len(shop.events) + 1 + 1 + 1 + len(set(restart_ids))


def test_the_workers_stop_cleanly_on_sigterm(stack: Stack) -> None:
    """`stop` sends SIGTERM: the stream consumer finishes its batch and the retrain loop ends
    its wait, both exiting 0 well within the grace period (a kill would exit 137)."""
    started = time.monotonic()
    stack.call("stop", "consumer", "trainer", timeout=120)
    assert time.monotonic() - started < 25
    for service in ("consumer", "trainer"):
        code = podman("inspect", "--format", "{{.State.ExitCode}}", stack.container(service))
        assert code.strip() == "0", service

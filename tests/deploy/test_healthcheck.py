"""deploy/healthcheck.py, the image's health check: healthy only on a 200 or a fresh heartbeat,
and the reason printed otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_config import ROOT, free_port

SCRIPT = ROOT / "deploy" / "healthcheck.py"


class Answers(BaseHTTPRequestHandler):
    """200 on /healthz and /metrics, 503 on /readyz."""

    def do_GET(self) -> None:
        self.send_response(503 if self.path == "/readyz" else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
        check=False,
    )


def test_a_path_is_the_api_on_recsys_port(port: int) -> None:
    assert check(RECSYS_PORT=str(port)).returncode == 0
    unready = check("/readyz", RECSYS_PORT=str(port))
    assert unready.returncode == 1
    assert "503" in unready.stderr


def test_metrics_is_the_consumer_on_its_metrics_port(port: int) -> None:
    assert check("--metrics", RECSYS_STREAM_METRICS_PORT=str(port)).returncode == 0


def test_nobody_listening_is_unhealthy() -> None:
    closed = check(f"http://127.0.0.1:{free_port()}/healthz")
    assert closed.returncode == 1
    assert closed.stderr.startswith("unhealthy: http://127.0.0.1:")


def test_a_heartbeat_is_healthy_while_fresh(tmp_path: Path) -> None:
    beat = tmp_path / "retrain.heartbeat"
    assert check("--file", str(beat)).returncode == 1
    beat.touch()
    assert check("--file", str(beat), "--max-age", "60").returncode == 0
    old = time.time() - 300
    os.utime(beat, (old, old))
    stale = check("--file", str(beat), "--max-age", "60")
    assert stale.returncode == 1
    assert "last touched 300 s ago" in stale.stderr

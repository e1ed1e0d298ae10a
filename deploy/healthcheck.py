"""The container's health check: exit 0 when the service answers, 1 (with why) when not.

``python healthcheck.py [URL]``: the URL answers 200 within 4 s. A URL that is only a path
(``/readyz``) is the API's on ``RECSYS_PORT``; the default is ``/healthz``. ``--metrics``: the
stream consumer's metrics on ``RECSYS_STREAM_METRICS_PORT``.
``python healthcheck.py --file PATH --max-age SECONDS``: the file was touched that recently (the
``retrain`` loop's heartbeat). Standard library only: a check costs a fraction of a start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request


def check_url(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def check_file(path: str, max_age: float) -> str | None:
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError as exc:
        return f"{path}: {exc}"
    return None if age <= max_age else f"{path} was last touched {age:.0f} s ago"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="/healthz")
    parser.add_argument("--metrics", action="store_true", help="the stream consumer's metrics")
    parser.add_argument("--file", help="check this file's age instead of a URL")
    parser.add_argument("--max-age", type=float, default=120.0, help="seconds (with --file)")
    args = parser.parse_args(argv)
    url = args.url
    if args.metrics:
        port = os.environ.get("RECSYS_STREAM_METRICS_PORT", "9109")
        url = f"http://127.0.0.1:{port}/metrics"
    elif url.startswith("/"):
        url = f"http://127.0.0.1:{os.environ.get('RECSYS_PORT', '8000')}{url}"
    problem = check_file(args.file, args.max_age) if args.file else check_url(url)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

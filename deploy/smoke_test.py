#!/usr/bin/env python3
"""Smoke test of a running recsys API, through its public HTTP interface only.

    python deploy/smoke_test.py --base-url http://127.0.0.1:8000 [--api-key KEY]
        [--timeout 120] [--user-id smoke-test]

Checks, in order, one line each; the first that fails ends the run with exit status 1:

1. ready: ``GET /readyz`` answers 200 (polled every second for up to ``--timeout`` seconds;
   connection errors are retried here, and only here);
2. popular: ``GET /v1/items/popular?k=1`` lists items (the first is used; an empty shop uses
   ``smoke-test-item``);
3. event: ``POST /v1/events`` with a fresh ``smoke-<uuid4>`` event id answers 201 (stored);
4. recommendations: ``GET /v1/users/<user>/recommendations?k=5`` answers 200 with a list;
5. profile: ``GET /v1/users/<user>/profile`` answers 200 and its recent interactions hold the
   event just sent.

The API key (a key with the ``ingest`` and ``read`` scopes) comes from ``--api-key`` or the
``RECSYS_SMOKE_API_KEY`` environment variable; without one no ``X-API-Key`` header is sent.
Standard library only, so it runs wherever Python 3.11 does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FALLBACK_ITEM_ID = "smoke-test-item"
REQUEST_TIMEOUT_SECONDS = 30.0
BODY_EXCERPT = 500


class CheckFailed(Exception):
    """A check that did not pass; ``check`` names it."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def text(self) -> str:
        text = self.body.decode("utf-8", errors="replace").strip()
        return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + "..."

    def json(self, check: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CheckFailed(check, f"the answer is not JSON: {self.text()!r}") from None


def is_http_url(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


class Api:
    """Plain HTTP calls to the API; an HTTP error status is an answer, not an exception."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        if not is_http_url(base_url):
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    def call(
        self,
        method: str,
        path: str,
        payload: object = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> Answer:
        """Raises ``OSError`` or ``http.client.HTTPException`` when no answer comes back."""
        headers = {"Accept": "application/json", "User-Agent": "recsys-smoke-test"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        # The base URL is checked in __init__: only http(s) URLs are opened.
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Answer(response.status, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Answer(error.code, error.read())


NO_ANSWER = (OSError, http.client.HTTPException)


def describe(error: BaseException) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return f"{type(error).__name__}: {reason}"


def ok(check: str, detail: str) -> None:
    print(f"ok    {check}: {detail}", flush=True)


def fetch(api: Api, check: str, method: str, path: str, payload: object = None) -> Answer:
    """One call for a check after the first: no answer at all fails the check (no retry)."""
    try:
        return api.call(method, path, payload)
    except NO_ANSWER as error:
        raise CheckFailed(check, f"{method} {path} got no answer ({describe(error)})") from None


def expect_status(answer: Answer, check: str, what: str, *statuses: int) -> None:
    if answer.status not in statuses:
        wanted = " or ".join(str(s) for s in statuses)
        raise CheckFailed(check, f"{what} answered {answer.status}, not {wanted}: {answer.text()}")


def check_ready(api: Api, timeout: float) -> None:
    check, path = "ready", "/readyz"
    started = time.monotonic()
    deadline = started + timeout
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            answer = api.call("GET", path, timeout=max(0.5, min(10.0, remaining)))
        except NO_ANSWER as error:
            last = f"no answer ({describe(error)})"
        else:
            if answer.status == 200:
                model = _field(answer, "model")
                elapsed = time.monotonic() - started
                ok(check, f"GET {path} 200 after {elapsed:.1f} s (model: {model or 'none'})")
                return
            last = f"status {answer.status}: {answer.text()}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CheckFailed(
                check, f"GET {path} did not answer 200 within {timeout:g} s; last: {last}"
            )
        time.sleep(min(1.0, remaining))


def _field(answer: Answer, name: str) -> object:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def check_popular(api: Api) -> str:
    check, path = "popular", "/v1/items/popular?k=1"
    answer = fetch(api, check, "GET", path)
    expect_status(answer, check, f"GET {path}", 200)
    _, items = list_field(answer, check, path, "items")
    if not items:
        ok(check, f"GET {path} 200, no items yet: using {FALLBACK_ITEM_ID!r}")
        return FALLBACK_ITEM_ID
    first = items[0]
    item_id = first.get("item_id") if isinstance(first, dict) else None
    if not isinstance(item_id, str) or not item_id:
        raise CheckFailed(check, f"GET {path}: the first item has no 'item_id': {answer.text()}")
    ok(check, f"GET {path} 200: item {item_id!r}")
    return item_id


def check_event(api: Api, user_id: str, item_id: str) -> str:
    check, path = "event", "/v1/events"
    event_id = f"smoke-{uuid.uuid4()}"
    event = {"event_id": event_id, "user_id": user_id, "item_id": item_id, "type": "view"}
    answer = fetch(api, check, "POST", path, event)
    if answer.status == 200:
        raise CheckFailed(
            check, f"POST {path} answered 200 (a duplicate) for the new event id {event_id}"
        )
    expect_status(answer, check, f"POST {path}", 201)
    profile = _field(answer, "profile")
    ok(check, f"POST {path} 201: {event_id} stored (profile: {profile})")
    return event_id


def list_field(
    answer: Answer, check: str, path: str, name: str
) -> tuple[dict[str, Any], list[Any]]:
    """The answer's JSON object and its list ``name``; the check fails without them."""
    body = answer.json(check)
    values = body.get(name) if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(values, list):
        raise CheckFailed(check, f"GET {path} has no list {name!r}: {answer.text()}")
    return body, values


def check_recommendations(api: Api, user_path: str) -> None:
    check, path = "recommendations", f"/v1/users/{user_path}/recommendations?k=5"
    answer = fetch(api, check, "GET", path)
    expect_status(answer, check, f"GET {path}", 200)
    body, items = list_field(answer, check, path, "items")
    ok(check, f"GET {path} 200: {len(items)} items (model: {body.get('model_version') or 'none'})")


def check_profile(api: Api, user_path: str, event_id: str, item_id: str) -> None:
    check, path = "profile", f"/v1/users/{user_path}/profile"
    answer = fetch(api, check, "GET", path)
    expect_status(answer, check, f"GET {path}", 200)
    _, recent = list_field(answer, check, path, "recent")
    found = any(
        isinstance(r, dict) and r.get("event_id") == event_id and r.get("item_id") == item_id
        for r in recent
    )
    if not found:
        raise CheckFailed(
            check,
            f"GET {path}: the recent interactions do not hold {event_id} on {item_id!r}: "
            f"{answer.text()}",
        )
    ok(check, f"GET {path} 200: the recent interactions hold {event_id}")


def run(base_url: str, api_key: str | None, timeout: float, user_id: str) -> None:
    api = Api(base_url, api_key)
    user_path = urllib.parse.quote(user_id, safe="")
    check_ready(api, timeout)
    item_id = check_popular(api)
    event_id = check_event(api, user_id, item_id)
    check_recommendations(api, user_path)
    check_profile(api, user_path, event_id, item_id)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Smoke test of a running recsys API: ready, popular items, one event, "
        "recommendations and the profile that shows the event."
    )
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key",
        default=None,
        help="a key with the ingest and read scopes (default: $RECSYS_SMOKE_API_KEY; none sends "
        "no X-API-Key header)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for GET /readyz to answer 200 (default: 120)",
    )
    parser.add_argument(
        "--user-id", default="smoke-test", help="the user the test event is recorded for"
    )
    args = parser.parse_args(argv)
    if not is_http_url(args.base_url):
        parser.error(f"--base-url must be an http:// or https:// URL, not {args.base_url!r}")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if not args.user_id.strip():
        parser.error("--user-id must not be empty")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    api_key = args.api_key or os.environ.get("RECSYS_SMOKE_API_KEY") or None
    try:
        run(args.base_url, api_key, args.timeout, args.user_id.strip())
    except CheckFailed as failed:
        print(f"FAIL  {failed.check}: {failed.detail}", file=sys.stderr)
        print(f"smoke test FAILED at check '{failed.check}' ({args.base_url})", file=sys.stderr)
        return 1
    print(f"smoke test passed: 5 checks against {args.base_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP imports: a paged JSON API served on 127.0.0.1, followed by next links or a page
parameter, with an auth header, and retried with backoff on 429 and 5xx."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from app.cleansing import EventCleanser
from app.config import DEFAULT_EVENT_TYPE_ALIASES
from app.services import Services
from tests.conftest import count_rows
from tests.training.test_cli import cli_env, run  # noqa: F401 (fixture)
from training.importer import Importer
from training.sources import SourceError
from training.sources.http import HttpSource

TOKEN = "Bearer test-token-0123456789"
EVENTS = [
    {"event_id": f"h{n}", "user_id": f"u{n % 3}", "item_id": f"i{n % 5}", "type": "view"}
    for n in range(7)
]

# (status, headers, body) for one request; the test server answers what the script says.
Answer = tuple[int, dict[str, str], Any]


class Api:
    """A test API on a free loopback port: ``answer(path, query, headers)`` decides each reply,
    and every request is recorded."""

    def __init__(self, answer: Callable[[str, dict[str, str], dict[str, str]], Answer]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                api.requests.append((parsed.path, query, headers))
                status, extra, body = api.answer(parsed.path, query, headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Api:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def waits() -> list[float]:
    return []


def source(url: str, waits: list[float], **options: Any) -> HttpSource:
    return HttpSource(url, sleep=waits.append, backoff=0.01, timeout=5, **options)


def import_http(services: Services, http: HttpSource) -> Any:
    importer = Importer(
        services, "events", EventCleanser(DEFAULT_EVENT_TYPE_ALIASES), None, batch_size=3
    )
    return importer.run(http.records())


def linked_pages(path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
    if headers.get("authorization") != TOKEN:
        return 401, {}, {"error": "who are you?"}
    cursor = int(query.get("cursor", "0"))
    page = EVENTS[cursor : cursor + 3]
    following = f"/events?cursor={cursor + 3}" if cursor + 3 < len(EVENTS) else None
    return 200, {}, {"data": page, "links": {"next": following}}


def test_next_links_in_the_body_are_followed_with_the_auth_header(
    services: Services, waits: list[float]
) -> None:
    with Api(linked_pages) as api:
        http = source(
            api.url + "/events", waits, next_path="links.next", headers={"Authorization": TOKEN}
        )
        report = import_http(services, http)
    assert (report.read, report.imported) == (7, 7)
    assert http.pages == 3
    assert [query.get("cursor") for _, query, _ in api.requests] == [None, "3", "6"]
    assert count_rows(services, "events") == 7


def test_a_link_header_and_a_page_parameter_page_through_too(
    services: Services, waits: list[float]
) -> None:
    def link_header(path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        page = int(query.get("p", "1"))
        extra = {"link": f'</feed?p={page + 1}>; rel="next"'} if page < 3 else {}
        return 200, extra, EVENTS[(page - 1) * 3 : page * 3]

    with Api(link_header) as api:
        assert len(list(source(api.url + "/feed", waits).records())) == 7

    def numbered(path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        page, size = int(query["page"]), int(query["per_page"])
        return 200, {}, {"results": EVENTS[page * size : (page + 1) * size]}

    with Api(numbered) as api:
        http = source(
            api.url + "/list", waits, page_param="page", page_start=0, params={"per_page": "2"}
        )
        report = import_http(services, http)
    assert (report.read, report.imported) == (7, 7)
    # Pages 0-3 hold the records; page 4 comes back empty and ends the import.
    assert [query["page"] for _, query, _ in api.requests] == ["0", "1", "2", "3", "4"]


def test_429_and_5xx_are_retried_with_backoff_and_retry_after(
    services: Services, waits: list[float]
) -> None:
    failures = iter([(503, {}), (429, {"retry-after": "2"}), (500, {})])

    def flaky(path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        if query.get("cursor") == "3":
            failure = next(failures, None)
            if failure is not None:
                return failure[0], failure[1], {"error": "try again"}
        return linked_pages(path, query, headers)

    with Api(flaky) as api:
        http = source(
            api.url + "/events", waits, next_path="links.next", headers={"Authorization": TOKEN}
        )
        report = import_http(services, http)
    assert (report.read, report.imported) == (7, 7)
    assert http.retried == 3
    # Exponential backoff with jitter (0.5-1 x 0.01 s, then x4 after the Retry-After wait).
    assert 0.005 <= waits[0] <= 0.01
    assert waits[1] == 2.0
    assert 0.02 <= waits[2] <= 0.04


def test_an_api_that_keeps_failing_stops_the_import_after_the_pages_before(
    services: Services, waits: list[float]
) -> None:
    def broken_second_page(path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        if query.get("cursor") == "3":
            return 502, {}, {"error": "bad gateway"}
        return linked_pages(path, query, headers)

    with Api(broken_second_page) as api:
        http = source(
            api.url + "/events",
            waits,
            next_path="links.next",
            headers={"Authorization": TOKEN},
            retries=2,
        )
        report = import_http(services, http)
    assert report.failed
    assert report.stopped is not None
    assert "failed 3 times; last: HTTP 502" in report.stopped
    assert (report.read, report.imported) == (3, 3)
    assert len(waits) == 2


def test_client_errors_are_not_retried(services: Services, waits: list[float]) -> None:
    with Api(linked_pages) as api:
        http = source(api.url + "/events", waits, next_path="links.next")
        with pytest.raises(SourceError, match="answered HTTP 401"):
            list(http.records())
    assert len(api.requests) == 1
    assert waits == []


def test_a_page_without_recognisable_records_says_which_path_to_give(waits: list[float]) -> None:
    with Api(lambda *_: (200, {}, {"hits": {"list": EVENTS}})) as api:
        with pytest.raises(SourceError, match="pass --records PATH"):
            list(source(api.url, waits).records())
        assert len(list(source(api.url, waits, records_path="hits.list").records())) == 7


def test_cli_imports_from_http_with_the_authorization_setting(
    cli_env: Path,  # noqa: F811
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.config import get_settings

    monkeypatch.setenv("RECSYS_IMPORT_AUTHORIZATION", TOKEN)
    get_settings.cache_clear()
    with Api(linked_pages) as api:
        result = run(
            "import", "events", "--from-http", api.url + "/events", "--next", "links.next",
            "--records", "data",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert count_rows(services, "events") == 7
    assert api.requests[0][2]["authorization"] == TOKEN

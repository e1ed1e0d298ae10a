"""Records of a paged JSON API.

Pages are followed by a next link (a field of the body given by ``next_path``, or the
``Link: <...>; rel="next"`` header) or by a page number parameter incremented until a page comes
back empty. Requests answered 429 or 5xx, and ones that fail on the network, are retried with
exponential backoff and jitter, honouring ``Retry-After``; other 4xx answers stop the import.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import httpx2 as httpx

from training.sources import SourceError

# Where the records of a page are looked for when no path is given.
RECORD_KEYS = ("data", "results", "items", "records", "events")
RETRYABLE = frozenset({429, 500, 502, 503, 504})


def dig(body: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``links.next``) of a JSON body; ``None`` when absent."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def parse_header(spec: str) -> tuple[str, str]:
    """``Name: value`` from the command line."""
    name, sep, value = spec.partition(":")
    if not sep or not name.strip():
        raise SourceError(f"--header {spec!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    header = response.headers.get("retry-after")
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpSource:
    """Every record of every page, in order.

    Parameters
    ----------
    url : the first page
    records_path : dotted path of the records array in a page (default: the body itself when it
        is an array, else the first of ``data``, ``results``, ``items``, ``records``, ``events``)
    next_path : dotted path of the next page's URL in the body; without it (and without
        ``page_param``) the ``Link`` header is followed when there is one
    page_param : query parameter that numbers pages, from ``page_start``, until a page is empty
    params : further query parameters (e.g. a page size)
    headers : request headers (e.g. ``Authorization``)
    retries : further attempts at a request that failed in a retryable way
    backoff : first wait in seconds; each retry doubles it, up to ``max_backoff``
    """

    def __init__(
        self,
        url: str,
        records_path: str | None = None,
        next_path: str | None = None,
        page_param: str | None = None,
        page_start: int = 1,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
        max_pages: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise SourceError(f"--from-http {url!r}: expected an http:// or https:// URL")
        if next_path and page_param:
            raise SourceError("use either --next or --page-param, not both")
        self.url = url
        self.records_path = records_path
        self.next_path = next_path
        self.page_param = page_param
        self.page_start = page_start
        self.params = dict(params or {})
        self.headers = dict(headers or {})
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.max_pages = max_pages
        self.sleep = sleep
        self.transport = transport
        self.pages = 0
        self.requests = 0
        self.retried = 0

    def describe(self) -> str:
        return self.url

    def records(self) -> Iterator[Any]:
        with httpx.Client(
            headers=self.headers,
            timeout=self.timeout,
            follow_redirects=True,
            transport=self.transport,
        ) as client:
            if self.page_param:
                yield from self._numbered_pages(client)
            else:
                yield from self._linked_pages(client)

    def _linked_pages(self, client: httpx.Client) -> Iterator[Any]:
        url: str | None = self.url
        params: Mapping[str, str] | None = self.params
        seen: set[str] = set()
        while url is not None and not self._enough():
            seen.add(url)
            response, body = self._get(client, url, params)
            yield from self._records(body, url)
            following = dig(body, self.next_path) if self.next_path else None
            if following is None and not self.next_path:
                following = response.links.get("next", {}).get("url")
            if following is not None and not isinstance(following, str):
                raise SourceError(f"the next link at {self.next_path!r} of {url} is not a URL")
            # A next link carries its own query; the first page's parameters are not repeated.
            url, params = (urljoin(url, following) if following else None), None
            if url is not None and url in seen:
                raise SourceError(f"the API links back to a page already read: {url}")

    def _numbered_pages(self, client: httpx.Client) -> Iterator[Any]:
        assert self.page_param is not None
        page = self.page_start
        while not self._enough():
            params = {**self.params, self.page_param: str(page)}
            _response, body = self._get(client, self.url, params)
            records = self._records(body, self.url)
            if not records:
                return
            yield from records
            page += 1

    def _enough(self) -> bool:
        return self.max_pages is not None and self.pages >= self.max_pages

    def _records(self, body: Any, url: str) -> list[Any]:
        if self.records_path:
            records = dig(body, self.records_path)
            if records is None:
                records = []
        elif isinstance(body, list):
            records = body
        else:
            records = next(
                (body[key] for key in RECORD_KEYS if isinstance(body, dict) and key in body),
                None,
            )
            if records is None:
                keys = ", ".join(body) if isinstance(body, dict) else type(body).__name__
                raise SourceError(
                    f"cannot find the records in the answer of {url} (it has: {keys}); "
                    "pass --records PATH"
                )
        if not isinstance(records, list):
            raise SourceError(f"the records of {url} are not a JSON array")
        return records

    def _get(
        self, client: httpx.Client, url: str, params: Mapping[str, str] | None
    ) -> tuple[httpx.Response, Any]:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self.requests += 1
            wait: float | None = None
            try:
                response = client.get(url, params=params)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in RETRYABLE:
                    last = f"HTTP {response.status_code}"
                    wait = retry_after(response)
                elif response.status_code >= 400:
                    raise SourceError(
                        f"{response.request.url} answered HTTP {response.status_code}: "
                        f"{response.text[:200]}"
                    )
                else:
                    try:
                        body = response.json()
                    except ValueError:
                        raise SourceError(f"{response.request.url} did not answer JSON") from None
                    self.pages += 1
                    return response, body
            if attempt == self.retries:
                break
            if wait is None:
                # Exponential backoff with jitter: retries of many clients do not line up.
                wait = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
            self.sleep(min(wait, max(self.max_backoff, 300.0)))
        raise SourceError(f"{url} failed {self.retries + 1} times; last: {last}")

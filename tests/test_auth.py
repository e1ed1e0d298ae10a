"""API keys and scopes: who may call what, and that a key never leaks into an answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from app.auth import scopes_for_key
from app.config import Scope, Settings, parse_api_keys
from app.main import create_app
from app.services import Services
from tests.conftest import count_rows, make_settings

INGEST_KEY = "ingest-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef00"
ADMIN_KEY = "admin-key-0123456789abcdef0"
BOTH_KEY = "ingest-read-key-0123456789ab"
KEYS_SPEC = f"{INGEST_KEY}:ingest,{READ_KEY}:read,{ADMIN_KEY}:admin,{BOTH_KEY}:ingest+read"
ALL_KEYS = (INGEST_KEY, READ_KEY, ADMIN_KEY, BOTH_KEY)

EVENT = {"user_id": "u1", "item_id": "sku-1", "type": "view"}

AppFactory = Callable[..., Any]


@pytest.fixture
def keyed_app(settings: Settings, services: Services) -> AppFactory:
    """Builds the app with the test keys configured (plus any other overrides)."""

    @contextmanager
    def build(**overrides: object) -> Iterator[TestClient]:
        configured = make_settings(settings, api_keys=parse_api_keys(KEYS_SPEC), **overrides)
        with TestClient(create_app(configured), raise_server_exceptions=False) as client:
            yield client

    return build


def call(client: TestClient, endpoint: str, key: str | None = None) -> httpx.Response:
    """One request to ``endpoint`` (a short name), with ``key`` in X-API-Key when given."""
    headers = {"X-API-Key": key} if key is not None else {}
    if endpoint == "post-event":
        return client.post("/v1/events", json=EVENT, headers=headers)
    if endpoint == "post-events-batch":
        return client.post("/v1/events/batch", json={"events": [EVENT]}, headers=headers)
    if endpoint == "put-item":
        return client.put("/v1/items/sku-1", json={"title": "t"}, headers=headers)
    if endpoint == "post-items-batch":
        return client.post("/v1/items/batch", json={"items": [{"item_id": "b"}]}, headers=headers)
    if endpoint == "delete-item":
        return client.delete("/v1/items/sku-1", headers=headers)
    if endpoint == "get-item":
        return client.get("/v1/items/sku-1", headers=headers)
    if endpoint == "get-profile":
        return client.get("/v1/users/u1/profile", headers=headers)
    raise AssertionError(endpoint)


INGEST_ENDPOINTS = [
    "post-event",
    "post-events-batch",
    "put-item",
    "post-items-batch",
    "delete-item",
]
READ_ENDPOINTS = ["get-item", "get-profile"]


def assert_auth_error(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == name
    assert body["detail"].strip()
    for key in ALL_KEYS:
        assert key not in response.text
    return body


@pytest.mark.parametrize("endpoint", INGEST_ENDPOINTS + READ_ENDPOINTS)
def test_missing_key_is_401_naming_the_header(keyed_app: AppFactory, endpoint: str) -> None:
    """With keys configured, a request without X-API-Key is 401 telling the client which header
    and scope it needs, with a WWW-Authenticate challenge."""
    with keyed_app() as client:
        response = call(client, endpoint)
        body = assert_auth_error(response, 401, "Unauthorized")
        assert "X-API-Key" in body["detail"]
        assert response.headers.get("www-authenticate")


@pytest.mark.parametrize(
    "wrong_key",
    [
        pytest.param("not-a-configured-key-at-all", id="unknown"),
        pytest.param(ADMIN_KEY[:-1], id="prefix-of-admin-key"),
        pytest.param(ADMIN_KEY + "x", id="admin-key-plus-suffix"),
        pytest.param(ADMIN_KEY.upper(), id="admin-key-other-case"),
        pytest.param("", id="empty"),
    ],
)
@pytest.mark.parametrize("endpoint", ["post-event", "get-profile"])
def test_wrong_key_is_401_and_not_echoed(
    keyed_app: AppFactory, endpoint: str, wrong_key: str
) -> None:
    """A key that is not exactly a configured one is 401, and the answer never contains it."""
    with keyed_app() as client:
        response = call(client, endpoint, wrong_key)
        assert_auth_error(response, 401, "Unauthorized")
        if wrong_key:
            assert wrong_key not in response.text


@pytest.mark.parametrize("endpoint", READ_ENDPOINTS)
def test_ingest_only_key_cannot_read(keyed_app: AppFactory, endpoint: str) -> None:
    """A key with only the ingest scope gets 403 on read endpoints, naming the missing scope."""
    with keyed_app() as client:
        body = assert_auth_error(call(client, endpoint, INGEST_KEY), 403, "Forbidden")
        assert "read" in body["detail"]


@pytest.mark.parametrize("endpoint", INGEST_ENDPOINTS)
def test_read_only_key_cannot_write(
    keyed_app: AppFactory, services: Services, endpoint: str
) -> None:
    """A key with only the read scope gets 403 on every write endpoint, and nothing is written."""
    with keyed_app() as client:
        body = assert_auth_error(call(client, endpoint, READ_KEY), 403, "Forbidden")
        assert "ingest" in body["detail"]
    assert count_rows(services, "events") == 0
    assert count_rows(services, "items") == 0


def test_scoped_keys_can_use_their_own_endpoints(keyed_app: AppFactory) -> None:
    """The ingest key writes, the read key reads, and a key with both scopes does both."""
    with keyed_app() as client:
        assert call(client, "put-item", INGEST_KEY).status_code == 200
        assert call(client, "post-event", INGEST_KEY).status_code == 201
        assert call(client, "get-item", READ_KEY).status_code == 200
        assert call(client, "get-profile", READ_KEY).json()["events"] == 1
        assert call(client, "post-events-batch", BOTH_KEY).status_code == 200
        assert call(client, "get-profile", BOTH_KEY).json()["events"] == 2


def test_admin_key_can_do_everything(keyed_app: AppFactory) -> None:
    """The admin scope implies ingest and read: every endpoint succeeds with the admin key."""
    with keyed_app() as client:
        expected = {
            "put-item": 200,
            "post-event": 201,
            "post-events-batch": 200,
            "post-items-batch": 200,
            "get-item": 200,
            "get-profile": 200,
            "delete-item": 200,
        }
        for endpoint, status in expected.items():
            response = call(client, endpoint, ADMIN_KEY)
            assert response.status_code == status, (endpoint, response.text)


def test_public_read_serves_gets_without_a_key_but_not_writes(
    keyed_app: AppFactory, services: Services
) -> None:
    """With public_read, GETs need no key; every write still needs an ingest key."""
    with keyed_app(public_read=True) as client:
        assert call(client, "put-item", INGEST_KEY).status_code == 200
        assert call(client, "get-item").status_code == 200
        assert call(client, "get-profile").status_code == 200
        for endpoint in INGEST_ENDPOINTS:
            assert_auth_error(call(client, endpoint), 401, "Unauthorized")
    assert count_rows(services, "events") == 0


def test_without_keys_the_service_is_open(client: TestClient) -> None:
    """With no RECSYS_API_KEYS every endpoint works without a key (development mode)."""
    assert call(client, "put-item").status_code == 200
    assert call(client, "post-event").status_code == 201
    assert call(client, "get-item").status_code == 200
    assert call(client, "get-profile").json()["events"] == 1


def test_health_endpoints_need_no_key(keyed_app: AppFactory) -> None:
    """Liveness and readiness probes carry no key: they stay open when keys are configured."""
    with keyed_app() as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_valid_key_is_not_echoed_in_validation_errors(keyed_app: AppFactory) -> None:
    """Even when a request with a good key fails validation, the key is not in the answer."""
    with keyed_app() as client:
        response = client.post(
            "/v1/events",
            json={"user_id": "", "item_id": ADMIN_KEY * 10, "type": "teleport"},
            headers={"X-API-Key": INGEST_KEY},
        )
        assert response.status_code == 422
        assert INGEST_KEY not in response.text


KEYS = {
    "abcdefghijklmnop": frozenset({Scope.READ}),
    "abcdefghijklmnopq": frozenset({Scope.INGEST}),
}


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        pytest.param("abcdefghijklmnop", frozenset({Scope.READ}), id="exact-short"),
        pytest.param("abcdefghijklmnopq", frozenset({Scope.INGEST}), id="exact-long"),
        pytest.param("abcdefghijklmno", None, id="prefix"),
        pytest.param("abcdefghijklmnopqr", None, id="extension"),
        pytest.param("ABCDEFGHIJKLMNOP", None, id="other-case"),
        pytest.param(" abcdefghijklmnop", None, id="leading-space"),
        pytest.param("", None, id="empty"),
    ],
)
def test_scopes_for_key_matches_exactly(presented: str, expected: frozenset[Scope] | None) -> None:
    """Only the exact key matches: a prefix, an extension or another case gets no scopes, and
    a key that is a prefix of another gets its own scopes, not the other's."""
    assert scopes_for_key(KEYS, presented) == expected


def test_scopes_for_key_with_no_keys_configured_is_none() -> None:
    """No configured keys means no key is valid."""
    assert scopes_for_key({}, "abcdefghijklmnop") is None

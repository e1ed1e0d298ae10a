"""Liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.services import Services
from tests.conftest import count_rows, make_settings

EVENT = {"user_id": "u1", "item_id": "sku-1", "type": "view"}


def test_healthz_is_200(client: TestClient) -> None:
    """/healthz answers 200 ok while the process is up."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_database_and_redis_answer(client: TestClient) -> None:
    """/readyz is 200 "ready" with both checks ok when the database and Redis answer."""
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "down": [],
        "checks": {"database": "ok", "redis": "ok"},
        # No model trained: the service works (trending/popular), and says so.
        "model": None,
    }


def test_readyz_is_503_naming_redis_when_redis_is_down(
    settings: Settings, services: Services, dead_redis_url: str
) -> None:
    """With Redis unreachable, /readyz answers 503 with "redis" in `down` and a reason, while the
    database check still passes and /healthz stays 200."""
    with TestClient(create_app(make_settings(settings, redis_url=dead_redis_url))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["down"] == ["redis"]
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"] != "ok"
        assert body["checks"]["redis"].strip()
        assert client.get("/healthz").status_code == 200


def events_total(client: TestClient, event_type: str, outcome: str) -> float:
    """The current value of recsys_events_total{type, outcome} as /metrics exposes it."""
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        if family.name != "recsys_events":
            continue
        for sample in family.samples:
            if (
                sample.name == "recsys_events_total"
                and sample.labels.get("type") == event_type
                and sample.labels.get("outcome") == outcome
            ):
                return float(sample.value)
    return 0.0


def test_metrics_exposes_recsys_events_total_as_a_counter(client: TestClient) -> None:
    """/metrics is Prometheus text with recsys_events_total declared as a counter."""
    client.post("/v1/events", json=EVENT)
    text = client.get("/metrics").text
    assert "# TYPE recsys_events_total counter" in text
    assert 'recsys_events_total{outcome="accepted",type="view"}' in text


def test_events_total_counts_accepted_duplicate_and_rejected_events(client: TestClient) -> None:
    """Each outcome increments recsys_events_total under its event type: accepted, duplicate
    (same event_id again) and rejected (bad events in a batch, a too-future timestamp)."""
    labels = [
        ("view", "accepted"),
        ("view", "duplicate"),
        ("click", "accepted"),
        ("click", "rejected"),
        ("invalid", "rejected"),
        ("purchase", "rejected"),
    ]
    before = {label: events_total(client, *label) for label in labels}

    assert client.post("/v1/events", json={**EVENT, "event_id": "e-1"}).status_code == 201
    assert client.post("/v1/events", json={**EVENT, "event_id": "e-1"}).status_code == 200
    batch = client.post(
        "/v1/events/batch",
        json={
            "events": [
                {**EVENT, "type": "click"},
                {"item_id": "sku-1", "type": "click"},
                {**EVENT, "type": "teleport"},
                {**EVENT, "event_id": "e-1"},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    future = client.post(
        "/v1/events", json={**EVENT, "type": "purchase", "timestamp": "2999-01-01T00:00:00Z"}
    )
    assert future.status_code == 422

    after = {label: events_total(client, *label) for label in labels}
    increase = {label: after[label] - before[label] for label in labels}
    assert increase == {
        ("view", "accepted"): 1,
        ("view", "duplicate"): 2,
        ("click", "accepted"): 1,
        ("click", "rejected"): 1,
        ("invalid", "rejected"): 1,
        ("purchase", "rejected"): 1,
    }


def test_events_total_counts_single_events_rejected_by_validation(
    client: TestClient, services: Services
) -> None:
    """A single POST /v1/events refused for bad input is a rejected event too: it must show in
    recsys_events_total{outcome="rejected"} as it does when sent in a batch."""
    before = events_total(client, "rating", "rejected")
    response = client.post("/v1/events", json={**EVENT, "type": "rating"})
    assert response.status_code == 422
    assert count_rows(services, "events") == 0
    assert events_total(client, "rating", "rejected") - before == 1


V1_OPERATIONS = [
    ("/v1/events", "post"),
    ("/v1/events/batch", "post"),
    ("/v1/items/{item_id}", "put"),
    ("/v1/items/{item_id}", "get"),
    ("/v1/items/{item_id}", "delete"),
    ("/v1/items/batch", "post"),
    ("/v1/users/{user_id}/profile", "get"),
    ("/v1/users/{user_id}/recommendations", "get"),
    ("/v1/items/{item_id}/similar", "get"),
    ("/v1/items/trending", "get"),
    ("/v1/items/popular", "get"),
    ("/v1/models/current", "get"),
    ("/v1/models/reload", "post"),
    ("/v1/experiments", "post"),
    ("/v1/experiments", "get"),
    ("/v1/experiments/{name}", "get"),
    ("/v1/experiments/{name}/start", "post"),
    ("/v1/experiments/{name}/stop", "post"),
    ("/v1/experiments/{name}/results", "get"),
    ("/v1/monitoring/drift", "get"),
    ("/v1/monitoring/quality", "get"),
]


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_openapi_documents_every_v1_endpoint(openapi: dict[str, Any]) -> None:
    """Every /v1 operation is in the document with a summary or description, and no /v1
    operation is there that this list does not know about."""
    documented = {
        (path, method)
        for path, operations in openapi["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    assert documented == set(V1_OPERATIONS)
    for path, method in V1_OPERATIONS:
        operation = openapi["paths"][path][method]
        assert operation.get("description") or operation.get("summary"), (path, method)


def test_openapi_declares_the_api_key_scheme_on_every_v1_endpoint(
    openapi: dict[str, Any],
) -> None:
    """The X-API-Key header is a declared apiKey security scheme, required by every /v1
    operation, so generated clients send it."""
    schemes = openapi["components"]["securitySchemes"]
    names = [
        name
        for name, scheme in schemes.items()
        if scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    ]
    assert len(names) == 1, schemes
    for path, method in V1_OPERATIONS:
        security = openapi["paths"][path][method].get("security") or []
        assert any(names[0] in requirement for requirement in security), (path, method)


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/a/b``) to the schema it names."""
    while "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


@pytest.mark.parametrize(
    ("path", "title", "field", "element"),
    [
        ("/v1/events/batch", "EventBatchIn", "events", "EventIn"),
        ("/v1/items/batch", "ItemBatchIn", "items", "ItemIn"),
    ],
)
def test_openapi_documents_batch_request_bodies(
    openapi: dict[str, Any], path: str, title: str, field: str, element: str
) -> None:
    """The batch endpoints parse their bodies by hand, yet their request bodies are documented:
    a required JSON body of the batch schema, a list of the element schema."""
    body = openapi["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    schema = resolve(openapi, body["content"]["application/json"]["schema"])
    assert schema.get("title") == title
    assert field in schema.get("required", [])
    items = schema["properties"][field]
    assert items["type"] == "array"
    element_schema = resolve(openapi, items["items"])
    assert element_schema.get("title") == element
    assert "item_id" in element_schema["properties"]


def test_openapi_references_all_resolve(openapi: dict[str, Any]) -> None:
    """Every $ref in the document points at a schema the document contains; a dangling one
    breaks client generators and the docs UI."""
    refs: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    refs.add(value)
                else:
                    collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(openapi)
    assert refs
    dangling = []
    for ref in sorted(refs):
        try:
            resolve(openapi, {"$ref": ref})
        except KeyError:
            dangling.append(ref)
    assert dangling == []

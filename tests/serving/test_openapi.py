"""The serving endpoints' OpenAPI: what a frontend developer reads on /docs."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

SERVING = [
    ("/v1/users/{user_id}/recommendations", "get"),
    ("/v1/items/{item_id}/similar", "get"),
    ("/v1/items/trending", "get"),
    ("/v1/items/popular", "get"),
    ("/v1/models/current", "get"),
    ("/v1/models/reload", "post"),
]


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/openapi.json").json()
    return body


def test_every_serving_parameter_has_a_description_and_an_example(
    document: dict[str, Any],
) -> None:
    """Each parameter of the serving endpoints says what it does and shows a value."""
    for path, method in SERVING:
        for parameter in document["paths"][path][method].get("parameters", []):
            where = (path, parameter["name"])
            assert parameter.get("description"), where
            assert parameter.get("examples") or parameter["schema"].get("examples"), where


def test_every_serving_error_is_documented(document: dict[str, Any]) -> None:
    """Auth errors everywhere; 422 with an example wherever a parameter can be wrong; 404 for an
    unknown recommendation_id and an unknown item."""
    for path, method in SERVING:
        responses = document["paths"][path][method]["responses"]
        assert {"401", "403"} <= set(responses), path
        if document["paths"][path][method].get("parameters"):
            example = responses["422"]["content"]["application/json"]["example"]
            assert example["error"] == "ValidationError"
    recs = document["paths"]["/v1/users/{user_id}/recommendations"]["get"]["responses"]
    assert "expired" in recs["404"]["content"]["application/json"]["example"]["detail"]
    assert "404" in document["paths"]["/v1/items/{item_id}/similar"]["get"]["responses"]

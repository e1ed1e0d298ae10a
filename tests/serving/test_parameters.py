"""The recommendations route reads its parameters itself (``RecommendationsRoute``); the same
endpoint served the usual way, through FastAPI's declared parameters, must answer every request
exactly as it does: the same lists, the same errors, the same refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.api.recommendations import get_recommendations
from app.auth import RequireRead
from app.config import Settings, parse_api_keys
from app.main import create_app
from app.schemas import RecommendationsOut
from tests.conftest import make_settings
from training import demo
from training.pipeline import TrainResult

READ_KEY = "read-key-0123456789abcdef"
INGEST_KEY = "ingest-key-0123456789abcdef"
DECLARED = "/v1/users/{user_id}/recommendations-declared"


@pytest.fixture
def both(
    serving_settings: Settings,
    shop: demo.DemoData,
    train_model: Callable[..., TrainResult],
) -> Iterator[TestClient]:
    """The app, with the endpoint also served through FastAPI's declared parameters."""
    train_model()
    keys = parse_api_keys(f"{READ_KEY}:read,{INGEST_KEY}:ingest")
    app = create_app(make_settings(serving_settings, api_keys=keys))
    app.router.add_api_route(
        DECLARED,
        get_recommendations,
        methods=["GET"],
        response_model=RecommendationsOut,
        dependencies=[RequireRead],
        route_class_override=APIRoute,
    )
    with TestClient(app, headers={"X-API-Key": READ_KEY}) as client:
        yield client


def answers(client: TestClient, user: str, query: str) -> tuple[Any, Any]:
    """The route's answer and the declared endpoint's, each as (status, JSON body)."""
    results = []
    for path in ("/v1/users/{user_id}/recommendations", DECLARED):
        response = client.get(path.format(user_id=user) + "?" + query)
        results.append((response.status_code, response.json()))
    return results[0], results[1]


VALID = [
    "",
    "k=5",
    "k=5&offset=5",
    "k=3&k=4",  # the last of a repeated single parameter
    "exclude_seen=false",
    "exclude_seen=0&k=7",
    "categories=cat-01&categories=cat-02",
    "exclude=sku-00001&exclude=sku-00002",
    "attribute=price%3C%3D100",
    "unknown=1&user_id=someone-else",
    "k=%2010%20",
    "categories=",  # an empty repeated parameter is as if absent
    "recommendation_id=rec-unknown",  # 404, the same way
]
INVALID = [
    "k=0",
    "k=101",
    "k=ten",
    "k=",
    "k=1.5",
    "offset=-1",
    "offset=10001",
    "exclude_seen=maybe",
    "categories=%20",
    "categories=" + "c" * 129,
    "exclude=" + "x" * 129,
    "exclude=%01",
    "recommendation_id=" + "r" * 1001,
    "recommendation_id=%20",
    "attribute=price",
    "attribute=price%3Cabc",
    "k=0&offset=-1&exclude_seen=maybe",  # every error at once
    "&".join(["categories=c"] * 101),
]


@pytest.mark.parametrize("query", VALID + INVALID)
def test_every_query_gets_the_declared_endpoints_answer(
    both: TestClient, shop: demo.DemoData, query: str
) -> None:
    user = shop.events[0]["user_id"]
    served, declared = answers(both, user, query)
    assert served == declared
    if query in INVALID:
        assert served[0] == 422, served


@pytest.mark.parametrize("user", ["u" * 129, "%01bad", "%20", "new-user"])
def test_every_user_id_gets_the_declared_endpoints_answer(both: TestClient, user: str) -> None:
    served, declared = answers(both, user, "k=0")
    assert served == declared
    assert served[0] == 422


@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), ("", 401), ("wrong-key-0123456789", 401), (INGEST_KEY, 403)]
)
def test_every_refusal_is_the_declared_endpoints(
    both: TestClient, shop: demo.DemoData, key: str | None, status: int
) -> None:
    """The key is checked first, as FastAPI solves the route's dependencies first."""
    headers = {"X-API-Key": key} if key is not None else {}
    client = TestClient(both.app, headers=headers)
    served, declared = answers(client, shop.events[0]["user_id"], "k=0")
    assert served == declared
    assert served[0] == status


def test_the_route_is_documented_by_its_declared_parameters(both: TestClient) -> None:
    paths = both.get("/openapi.json").json()["paths"]
    served = paths["/v1/users/{user_id}/recommendations"]["get"]
    declared = paths[DECLARED]["get"]
    assert served["parameters"] == declared["parameters"]
    assert [p["name"] for p in served["parameters"]] == [
        "user_id",
        "k",
        "offset",
        "recommendation_id",
        "exclude_seen",
        "categories",
        "exclude",
        "attribute",
    ]
    assert served["security"] == [{"APIKeyHeader": []}]

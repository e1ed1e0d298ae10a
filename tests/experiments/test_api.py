"""The experiments admin API: define, list, read, start, stop; bad definitions are refused with
answers a person can act on."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings, parse_api_keys
from app.main import create_app
from app.services import Services
from tests.conftest import make_settings
from training.pipeline import TrainResult

Served = tuple[TestClient, TrainResult]


def definition(name: str = "exp", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "description": "does popularity beat the hybrid?",
        "variants": [
            {"name": "control", "share": 50},
            {"name": "popular", "share": 50, "config": {"strategy": "popularity"}},
        ],
    }
    body.update(overrides)
    return body


def test_define_start_stop(client: TestClient) -> None:
    """An experiment goes draft -> running -> stopped, with times, and is listed and read."""
    created = client.post("/v1/experiments", json=definition())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "draft"
    assert body["control"] == "control"
    assert [v["share"] for v in body["variants"]] == [50, 50]
    assert body["variants"][1]["config"]["strategy"] == "popularity"
    assert body["attribution_window_seconds"] == 1800
    assert body["click_event_types"] == ["click"]
    assert body["conversion_event_types"] == ["purchase"]
    assert len(body["salt"]) == 16

    started = client.post("/v1/experiments/exp/start")
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running"
    assert started.json()["started_at"] is not None
    assert client.get("/v1/experiments/exp").json()["status"] == "running"
    running = client.get("/v1/experiments", params={"status": "running"}).json()["experiments"]
    assert [e["name"] for e in running] == ["exp"]

    stopped = client.post("/v1/experiments/exp/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["stopped_at"] is not None
    assert client.get("/v1/experiments", params={"status": "running"}).json()["experiments"] == []
    assert [e["name"] for e in client.get("/v1/experiments").json()["experiments"]] == ["exp"]


def test_a_given_salt_and_window_are_kept(client: TestClient) -> None:
    response = client.post(
        "/v1/experiments",
        json=definition(
            salt="fixed-salt",
            attribution_window_seconds=0,
            click_event_types=["click", "add_to_cart", "click"],
        ),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["salt"] == "fixed-salt"
    assert body["attribution_window_seconds"] == 0
    assert body["click_event_types"] == ["click", "add_to_cart"]


def two(**second: Any) -> list[dict[str, Any]]:
    return [{"name": "control", "share": 50}, {"name": "b", "share": 50, **second}]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"variants": [{"name": "a", "share": 50}, {"name": "b", "share": 40}]},
            "variant shares must sum to 100 (percent), got 90: a 50 + b 40",
        ),
        (
            {"variants": [{"name": "a", "share": 50}, {"name": "a", "share": 50}]},
            "variant names must be unique; repeated: a",
        ),
        ({"variants": [{"name": "a", "share": 100}]}, "variants: List should have at least 2"),
        ({"variants": two(share=0)}, "variants[1].share: Input should be greater than 0"),
        (
            {"variants": [{"name": "a", "share": 33.333}, {"name": "b", "share": 66.667}]},
            "must have at most two decimals",
        ),
        ({"variants": two(name="b c")}, "variants[1].name: must be 1-64 letters"),
        (
            {"variants": two(config={"weights": {"als": -1}})},
            "blend weight 'als' must be a finite number >= 0",
        ),
        (
            {"variants": two(config={"weights": {"als": 0, "content": 0, "popularity": 0}})},
            "at least one blend weight must be above 0",
        ),
        (
            {"variants": two(config={"weights": {"svd": 1}})},
            "variants[1].config.weights.svd",
        ),
        (
            {"variants": two(config={"strategy": "popularity", "weights": {"als": 1}})},
            "the popularity strategy has none to override",
        ),
        ({"variants": two(config={"strategy": "random"})}, "'hybrid' or 'popularity'"),
        ({"variants": two(config={"model": "v1"})}, "variants[1].config.model: is not a known"),
        (
            {"variants": two(config={"model_version": "no-such-version"})},
            "unknown model versions: variant 'b' names 'no-such-version'; "
            "`python -m training models list` shows the registered ones",
        ),
        ({"name": "has space"}, "name: must be 1-64 letters"),
        ({"click_event_types": ["tap"]}, "click_event_types[0]: Input should be"),
        ({"conversion_event_types": []}, "conversion_event_types: List should have at least 1"),
        ({"attribution_window_seconds": 10**7}, "attribution_window_seconds: Input should be"),
    ],
)
def test_bad_definitions_are_refused(
    client: TestClient, overrides: dict[str, Any], expected: str
) -> None:
    """Each mistake gets a 422 whose detail names it; nothing is stored."""
    response = client.post("/v1/experiments", json=definition(**overrides))
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    assert client.get("/v1/experiments").json()["experiments"] == []


def test_malformed_json_is_a_400(client: TestClient) -> None:
    response = client.post(
        "/v1/experiments", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "MalformedJSON"


def test_a_taken_name_is_a_conflict(client: TestClient) -> None:
    assert client.post("/v1/experiments", json=definition()).status_code == 201
    response = client.post("/v1/experiments", json=definition())
    assert response.status_code == 409
    assert response.json() == {
        "error": "Conflict",
        "detail": "an experiment named 'exp' exists already (draft); choose another name",
    }


def test_lifecycle_conflicts(client: TestClient) -> None:
    """One experiment runs at a time; a stopped one stays stopped; only a running one stops."""
    for name in ("first", "second"):
        assert client.post("/v1/experiments", json=definition(name)).status_code == 201
    response = client.post("/v1/experiments/second/stop")
    assert response.status_code == 409
    assert "is draft; only a running experiment can be stopped" in response.json()["detail"]

    assert client.post("/v1/experiments/first/start").status_code == 200
    response = client.post("/v1/experiments/first/start")
    assert response.status_code == 409
    assert response.json()["detail"] == "experiment 'first' is running already"
    response = client.post("/v1/experiments/second/start")
    assert response.status_code == 409
    assert "experiment 'first' is running; stop it first" in response.json()["detail"]

    assert client.post("/v1/experiments/first/stop").status_code == 200
    response = client.post("/v1/experiments/first/start")
    assert response.status_code == 409
    assert "stays stopped" in response.json()["detail"]
    assert client.post("/v1/experiments/second/start").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/experiments/nope"),
        ("post", "/v1/experiments/nope/start"),
        ("post", "/v1/experiments/nope/stop"),
        ("get", "/v1/experiments/nope/results"),
    ],
)
def test_unknown_experiment_is_a_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {
        "error": "ExperimentNotFound",
        "detail": "experiment 'nope' does not exist; GET /v1/experiments lists them",
    }


def test_bad_name_in_the_path_and_bad_status_filter(client: TestClient) -> None:
    response = client.get("/v1/experiments/bad%20name")
    assert response.status_code == 422
    assert "name: must be 1-64 letters" in response.json()["detail"]
    response = client.get("/v1/experiments", params={"status": "paused"})
    assert response.status_code == 422
    assert "status" in response.json()["detail"]


def test_experiments_need_the_admin_scope(settings: Settings, services: Services) -> None:
    """Keys with ingest or read scope are refused (403), no key is refused (401)."""
    keys = "read-key-0123456789abcdef00:read+ingest,admin-key-0123456789abcdef0:admin"
    configured = make_settings(settings, api_keys=parse_api_keys(keys))
    with TestClient(create_app(configured)) as client:
        assert client.get("/v1/experiments").status_code == 401
        read = {"X-API-Key": "read-key-0123456789abcdef00"}
        admin = {"X-API-Key": "admin-key-0123456789abcdef0"}
        assert client.post("/v1/experiments", json=definition(), headers=read).status_code == 403
        assert client.get("/v1/experiments/exp/results", headers=read).status_code == 403
        assert client.post("/v1/experiments", json=definition(), headers=admin).status_code == 201
        assert client.post("/v1/experiments/exp/start", headers=admin).status_code == 200


def test_a_variant_whose_model_cannot_be_loaded_is_not_started(
    served: Served, train_model: Callable[..., TrainResult]
) -> None:
    """The artifact of the variant's version is gone: starting says so, and nothing runs."""
    client, first = served
    second = train_model()
    assert client.post("/v1/models/reload").json()["version"] == second.version
    body = definition(variants=two(config={"model_version": first.version}))
    assert client.post("/v1/experiments", json=body).status_code == 201
    shutil.rmtree(first.path)
    response = client.post("/v1/experiments/exp/start")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"variant 'b' cannot be served: model version '{first.version}' cannot be" in detail
    assert client.get("/v1/experiments/exp").json()["status"] == "draft"


ENDPOINTS = [
    ("/v1/experiments", "post"),
    ("/v1/experiments", "get"),
    ("/v1/experiments/{name}", "get"),
    ("/v1/experiments/{name}/start", "post"),
    ("/v1/experiments/{name}/stop", "post"),
    ("/v1/experiments/{name}/results", "get"),
]


def test_openapi_documents_every_parameter_and_error(client: TestClient) -> None:
    """What an operator reads on /docs: parameters with descriptions and examples, and every
    error answer with an example body."""
    document = client.get("/openapi.json").json()
    for path, method in ENDPOINTS:
        operation = document["paths"][path][method]
        assert operation.get("summary"), (path, method)
        assert operation.get("description"), (path, method)
        for parameter in operation.get("parameters", []):
            where = (path, method, parameter["name"])
            assert parameter.get("description"), where
            assert parameter.get("examples") or parameter["schema"].get("examples"), where
        responses = operation["responses"]
        assert {"401", "403", "422"} <= set(responses), (path, method)
        for status, response in responses.items():
            if status.startswith("4") and status not in ("401", "403"):
                example = response["content"]["application/json"]["example"]
                assert example["error"], (path, method, status)
                assert example["detail"], (path, method, status)
        if "{name}" in path:
            assert "404" in responses, (path, method)
    for path, method in [ENDPOINTS[0], ENDPOINTS[3], ENDPOINTS[4]]:
        assert "409" in document["paths"][path][method]["responses"], (path, method)
    schemas = document["components"]["schemas"]
    assert schemas["ExperimentIn"]["examples"]
    assert schemas["VariantConfig"]["examples"]

"""Hot reload of the registry's active version, refusal of broken artifacts, and the models
endpoints."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.config import Settings, parse_api_keys
from app.main import create_app
from tests.conftest import make_settings
from tests.serving.conftest import metric_value
from training import demo
from training.artifact import ARRAYS_FILE
from training.evaluation import ModelChoice
from training.pipeline import TrainResult
from training.recommenders import ALSParams
from training.registry import Registry

Served = tuple[TestClient, TrainResult]
# Another model of the same data: a different ALS, so its lists differ from the first one's.
OTHER_CHOICE = ModelChoice(
    als=ALSParams(factors=10, iterations=4, regularization=1.0, alpha=10.0, random_state=7)
)


def wait_for_version(client: TestClient, version: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/v1/models/current").json()["version"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the app never served {version}")


def test_hot_reload_under_concurrent_requests_never_mixes_versions(
    shop: demo.DemoData,
    train_model: Callable[..., TrainResult],
    app_client: Callable[..., TestClient],
) -> None:
    """While threads ask for recommendations, a new version is promoted; the poller swaps it in
    within seconds. Every answer succeeds and is exactly the list its labelled version gives
    (the profiles do not change meanwhile): no request mixes the two models."""
    first = train_model()
    client = app_client(model_poll_seconds=0.1)
    users = sorted({e["user_id"] for e in shop.events})[:4]

    def ask(user: str) -> tuple[int, str | None, list[tuple[str, float]]]:
        response = client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
        if response.status_code != 200:
            return response.status_code, None, []
        body = response.json()
        return 200, body["model_version"], [(e["item_id"], e["score"]) for e in body["items"]]

    expected = {first.version: {user: ask(user)[2] for user in users}}
    answers: list[tuple[str, tuple[int, str | None, list[tuple[str, float]]]]] = []
    stop = threading.Event()

    def hammer(user: str) -> None:
        while not stop.is_set():
            answers.append((user, ask(user)))

    threads = [threading.Thread(target=hammer, args=(u,)) for u in users[:3]]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        second = train_model(OTHER_CHOICE)
        wait_for_version(client, second.version)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    expected[second.version] = {user: ask(user)[2] for user in users}
    assert expected[first.version] != expected[second.version]
    assert answers
    versions = set()
    for user, (status, version, items) in answers:
        assert status == 200
        assert version in expected, version
        versions.add(version)
        assert [i for i, _ in items] == [i for i, _ in expected[version][user]]
        assert all(
            abs(a - b) < 1e-5 for (_, a), (_, b) in zip(items, expected[version][user], strict=True)
        )
    assert versions == {first.version, second.version}


def test_a_corrupt_artifact_is_refused_and_the_old_model_keeps_serving(
    shop: demo.DemoData,
    train_model: Callable[..., TrainResult],
    app_client: Callable[..., TestClient],
) -> None:
    """A promoted version whose arrays file is corrupt is refused: the old version keeps
    serving, recsys_model_reload_failures_total grows, /v1/models/reload says why; once the
    registry points at a good version again it is served."""
    first = train_model()
    client = app_client()
    before = metric_value(client, "recsys_model_reload_failures_total")
    second = train_model()
    (second.path / ARRAYS_FILE).write_bytes(b"not a zip file at all")
    reload = client.post("/v1/models/reload")
    assert reload.status_code == 200, reload.text
    body = reload.json()
    assert body["version"] == first.version
    assert body["active_version"] == second.version
    assert body["changed"] is False
    assert "corrupt" in body["last_error"]
    current = client.get("/v1/models/current").json()
    assert (current["version"], current["active_version"]) == (first.version, second.version)
    assert metric_value(client, "recsys_model_reload_failures_total") == before + 1
    assert metric_value(client, "recsys_model_info", version=first.version) == 1
    user = shop.events[0]["user_id"]
    response = client.get(f"/v1/users/{user}/recommendations")
    assert response.status_code == 200
    assert response.json()["model_version"] == first.version

    Registry(client.app.state.services.sessions).rollback()  # type: ignore[attr-defined]
    third = train_model()
    reload = client.post("/v1/models/reload").json()
    assert reload["version"] == third.version
    assert reload["previous_version"] == first.version
    assert reload["changed"] is True
    assert reload["last_error"] is None
    assert metric_value(client, "recsys_model_loaded") == 1


def test_current_names_the_active_version_it_serves(served: Served) -> None:
    """With the registry's active version served, /v1/models/current names it both as the
    version served and as the registry's active one."""
    client, result = served
    body = client.get("/v1/models/current").json()
    assert body["version"] == body["active_version"] == result.version


def test_reload_needs_the_admin_scope(settings: Settings, served: Served) -> None:
    """POST /v1/models/reload answers 401 without a key, 403 with a read-only key;
    /v1/models/current needs only read."""
    keys = {"r" * 16: "read", "a" * 16: "admin"}
    spec = ",".join(f"{k}:{s}" for k, s in keys.items())
    guarded = make_settings(settings, api_keys=parse_api_keys(spec), model_poll_seconds=3600.0)
    with TestClient(create_app(guarded)) as client:
        assert client.post("/v1/models/reload").status_code == 401
        read = {"X-API-Key": "r" * 16}
        assert client.post("/v1/models/reload", headers=read).status_code == 403
        assert client.get("/v1/models/current", headers=read).status_code == 200
        admin = {"X-API-Key": "a" * 16}
        assert client.post("/v1/models/reload", headers=admin).json()["changed"] is False


def test_bad_parameters_get_clear_4xx_answers(served: Served) -> None:
    """Each bad parameter gets a JSON error naming the parameter and the rule."""
    client, _ = served
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/v1/users/u1/recommendations", {"k": 0}, 422, "k"),
        ("/v1/users/u1/recommendations", {"k": 101}, 422, "k"),
        ("/v1/users/u1/recommendations", {"k": "ten"}, 422, "k"),
        ("/v1/users/u1/recommendations", {"offset": -1}, 422, "offset"),
        ("/v1/users/u1/recommendations", {"recommendation_id": "rec-nope"}, 404, "rec-nope"),
        (
            "/v1/users/u1/recommendations",
            {"recommendation_id": "x" * 129},
            422,
            "recommendation_id",
        ),
        ("/v1/users/u1/recommendations", {"exclude": ["x" * 129]}, 422, "exclude"),
        ("/v1/users/u1/recommendations", {"categories": [" "]}, 422, "categories"),
        ("/v1/users/" + "u" * 129 + "/recommendations", {}, 422, "user_id"),
        ("/v1/users/%01bad/recommendations", {}, 422, "user_id"),
        ("/v1/items/trending", {"k": 101}, 422, "k"),
        ("/v1/items/popular", {"k": 0}, 422, "k"),
        ("/v1/items/sku-00001/similar", {"k": 0}, 422, "k"),
        ("/v1/items/" + "i" * 129 + "/similar", {}, 422, "item_id"),
    ]
    for path, params, status, mention in cases:
        response = client.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        body = response.json()
        assert body["error"], (path, params, body)
        assert mention in body["detail"], (path, params, body)
    other = client.get("/v1/users/u1/recommendations").json()["recommendation_id"]
    response = client.get("/v1/users/u2/recommendations", params={"recommendation_id": other})
    assert response.status_code == 404
    assert "not made for user 'u2'" in response.json()["detail"]


def test_a_swapped_out_model_is_released(
    shop: demo.DemoData,
    train_model: Callable[..., TrainResult],
    app_client: Callable[..., TestClient],
) -> None:
    """Once a new version serves, nothing keeps the old model's arrays in memory: neither the
    catalogue alignment built for it nor anything else."""
    train_model()
    client = app_client()
    services = client.app.state.services  # type: ignore[attr-defined]
    user = shop.events[0]["user_id"]
    assert client.get(f"/v1/users/{user}/recommendations").status_code == 200
    old = weakref.ref(services.models.current)

    second = train_model()
    assert client.post("/v1/models/reload").json()["version"] == second.version
    assert client.get(f"/v1/users/{user}/recommendations").json()["model_version"] == (
        second.version
    )
    gc.collect()
    assert old() is None

"""Variant routing in the middleware: which requests name a user, the headers, the cache."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.engine import session_scope
from app.db.models import Experiment
from app.experiments.middleware import user_of
from app.main import create_app
from app.services import Services
from tests.conftest import make_settings
from tests.experiments.conftest import MakeExperiment


def scope(path: str, headers: dict[str, str] | None = None, query: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "query_string": query.encode(),
    }


@pytest.mark.parametrize(
    ("request_scope", "expected"),
    [
        (scope("/v1/users/u-42/recommendations"), "u-42"),
        (scope("/v1/users/u-42"), "u-42"),
        (scope("/v1/users/ u-42 /profile"), "u-42"),  # trimmed, as the API trims ids
        (scope("/v1/users/u-42/recommendations", {"X-User-Id": "other"}), "u-42"),
        (scope("/v1/items/popular", {"X-User-Id": "u-7"}), "u-7"),
        (scope("/v1/items/popular", query="k=5&user_id=u-9"), "u-9"),
        (scope("/v1/items/popular", {"X-User-Id": "u-7"}, "user_id=u-9"), "u-7"),
        (scope("/v1/items/popular", query="k=5&xuser_id=u-9"), None),
        (scope("/v1/items/popular"), None),
        (scope("/healthz", {"X-User-Id": "  "}), None),
        (scope("/v1/users/" + "x" * 129 + "/profile"), None),
        (scope("/v1/users/\x00/profile", query="user_id=u-1"), "u-1"),
    ],
)
def test_the_user_a_request_names(request_scope: dict[str, Any], expected: str | None) -> None:
    """Path first, then X-User-Id, then ?user_id; ids the API would refuse name nobody."""
    assert user_of(request_scope) == expected


def test_requests_naming_a_user_are_tagged(
    client: TestClient, services: Services, make_experiment: MakeExperiment
) -> None:
    experiment = make_experiment()
    services_in_app: Services = client.app.state.services  # type: ignore[attr-defined]
    running = services_in_app.experiments.cache.refresh()
    assert running is not None
    assert running.id == experiment.id

    expected = running.assign("u-1").name
    for response in (
        client.get("/v1/users/u-1/profile"),
        client.get("/healthz", headers={"X-User-Id": "u-1"}),
        client.get("/v1/items/trending", params={"user_id": "u-1"}),
    ):
        assert response.headers["X-Experiment"] == "exp"
        assert response.headers["X-Variant"] == expected

    # An error answer is tagged as well: the request was still in the experiment.
    missing = client.get("/v1/users/u-1/nowhere")
    assert missing.status_code == 404
    assert missing.headers["X-Variant"] == expected

    untagged = client.get("/healthz")
    assert "X-Experiment" not in untagged.headers
    assert "X-Variant" not in untagged.headers


def test_both_variants_occur_and_each_user_keeps_theirs(
    client: TestClient, make_experiment: MakeExperiment
) -> None:
    make_experiment()
    client.app.state.services.experiments.cache.refresh()  # type: ignore[attr-defined]
    seen: dict[str, str] = {}
    for round_ in range(2):
        for n in range(40):
            variant = client.get(f"/v1/users/u-{n}/profile").headers["X-Variant"]
            if round_:
                assert seen[f"u-{n}"] == variant
            seen[f"u-{n}"] = variant
    assert set(seen.values()) == {"control", "treatment"}


def test_no_running_experiment_means_no_tags(
    client: TestClient, make_experiment: MakeExperiment
) -> None:
    make_experiment(status="draft")
    client.app.state.services.experiments.cache.refresh()  # type: ignore[attr-defined]
    response = client.get("/v1/users/u-1/profile")
    assert response.status_code == 200
    assert "X-Experiment" not in response.headers


def test_the_running_experiment_comes_from_the_cache_not_the_database(
    client: TestClient, services: Services, make_experiment: MakeExperiment
) -> None:
    """An experiment started behind the process's back is served from its next refresh, not
    from the next request: requests never read the database for it."""
    make_experiment(status="draft")
    runtime = client.app.state.services.experiments  # type: ignore[attr-defined]
    runtime.cache.refresh()
    with session_scope(services.sessions) as session:
        row = session.query(Experiment).one()
        row.status = "running"
    assert "X-Experiment" not in client.get("/v1/users/u-1/profile").headers
    runtime.cache.refresh()
    assert client.get("/v1/users/u-1/profile").headers["X-Experiment"] == "exp"
    # And a stop seen by the refresh ends the tagging.
    with session_scope(services.sessions) as session:
        session.query(Experiment).one().status = "stopped"
    runtime.cache.refresh()
    assert "X-Experiment" not in client.get("/v1/users/u-1/profile").headers


def test_the_cache_is_refreshed_in_the_background(
    settings: Settings, services: Services, make_experiment: MakeExperiment
) -> None:
    """With a short refresh period, an experiment started elsewhere is picked up on its own."""
    quick = make_settings(settings, experiments_refresh_seconds=0.05)
    with TestClient(create_app(quick)) as client:
        assert "X-Experiment" not in client.get("/v1/users/u-1/profile").headers
        make_experiment()
        deadline = time.monotonic() + 5
        while "X-Experiment" not in client.get("/v1/users/u-1/profile").headers:
            assert time.monotonic() < deadline, "the experiment was never picked up"
            time.sleep(0.05)

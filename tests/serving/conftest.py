"""A small demo shop, a model trained on it by the real pipeline, and the app serving it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.schemas import RecommendationsOut
from app.services import Services
from tests.conftest import make_settings
from training import demo
from training.evaluation import ModelChoice
from training.loading import load_events, load_items
from training.pipeline import TrainOptions, TrainResult, train
from training.recommenders import ALSParams

DEMO = demo.DemoSpec(users=80, items=40, events=1500, days=20)
# Small and quick, still a real ALS + content + popularity hybrid.
CHOICE = ModelChoice(
    als=ALSParams(factors=8, iterations=4, regularization=1.0, alpha=10.0, random_state=1)
)


@pytest.fixture
def serving_settings(settings: Settings) -> Settings:
    """Long refresh intervals (tests trigger refreshes), no trending cache."""
    return make_settings(
        settings,
        model_poll_seconds=3600.0,
        catalog_refresh_seconds=3600.0,
        trending_cache_seconds=0.0,
    )


@pytest.fixture
def shop(services: Services) -> demo.DemoData:
    """The demo shop loaded through the ingestion path."""
    data = demo.generate(DEMO)
    assert load_items(services, data.items).rejected == 0
    assert load_events(services, data.events).rejected == 0
    return data


@pytest.fixture
def train_model(services: Services, tmp_path: Path) -> Callable[..., TrainResult]:
    """Train, register and promote (forced) a version from everything stored."""

    def run(choice: ModelChoice = CHOICE, **options: Any) -> TrainResult:
        return train(
            services.engine,
            services.sessions,
            dict(services.settings.event_weights),
            tmp_path / "models",
            TrainOptions(choice=choice, force=True, eval_users=50, **options),
        )

    return run


@pytest.fixture
def app_client(serving_settings: Settings, services: Services) -> Iterator[Callable[..., Any]]:
    """Start the app (its lifespan loads the active model) on the test's storage."""
    started: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(serving_settings, **overrides)))
        client.__enter__()
        started.append(client)
        return client

    yield start
    for client in started:
        client.__exit__(None, None, None)


@pytest.fixture
def served(
    shop: demo.DemoData, train_model: Callable[..., TrainResult], app_client: Callable[..., Any]
) -> tuple[TestClient, TrainResult]:
    """The demo shop with a trained, active model and an app serving it."""
    result = train_model()
    client = app_client()
    assert client.get("/v1/models/current").json()["version"] == result.version
    return client, result


Served = tuple[TestClient, TrainResult]


def recs(client: TestClient, user_id: str, **params: Any) -> dict[str, Any]:
    """The user's recommendations, asserting a 200 and that the answer is exactly what its
    documented model (``RecommendationsOut``) writes."""
    response = client.get(f"/v1/users/{user_id}/recommendations", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert RecommendationsOut.model_validate(body).model_dump(mode="json") == body
    return body


def metric_value(client: TestClient, name: str, **labels: str) -> float:
    """A sample's current value from /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def hget_calls(client: redis.Redis) -> int:
    """How many HGET commands the Redis server has run (its command statistics)."""
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))

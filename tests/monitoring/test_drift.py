"""Drift of live events against the training data, on real storage: events drawn like the
training data report ``ok``; a shifted category mix, a popularity flip and a new event type
cross the threshold on the features they change."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from app.artifacts import make_artifact_store
from app.config import Settings
from app.db.models import Event
from app.monitoring import drift
from app.monitoring.monitor import Monitor
from app.services import Services
from tests.conftest import make_settings
from training import demo
from training.pipeline import TrainResult
from training.registry import Registry

# As long as the demo shop's history (20 days), which live events replay a window later.
WINDOW = 21 * 86_400
SHIFT = timedelta(seconds=WINDOW)
N_EVENTS = 1000


@pytest.fixture
def trained(
    shop: demo.DemoData, train_model: Callable[..., TrainResult]
) -> tuple[demo.DemoData, TrainResult]:
    return shop, train_model()


def monitor_for(services: Services, settings: Settings) -> Monitor:
    tuned = make_settings(settings, monitor_windows=[WINDOW], drift_min_events=200)
    artifacts = make_artifact_store(tuned.artifact_store, services.sessions, tuned.model_dir)
    return Monitor(tuned, services.engine, services.sessions, None, artifacts, lambda: 40)


def post_window(client: TestClient, events: list[dict[str, Any]], shift: timedelta) -> None:
    """``events`` sent again with new ids, ``shift`` later: the same rhythm, another period."""
    batch = [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": event["user_id"],
            "item_id": event["item_id"],
            "type": event["type"],
            **({"value": event["value"]} if event.get("value") is not None else {}),
            "timestamp": (datetime.fromisoformat(event["timestamp"]) + shift).isoformat(),
        }
        for event in events
    ]
    response = client.post("/v1/events/batch", json={"events": batch})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(batch)


def features(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (window,) = report["windows"]
    return {f["feature"]: f for f in window["features"]}


def later(shop: demo.DemoData) -> datetime:
    """The end of a window as long as the shop's history, right after it: the window holds
    only events posted ``SHIFT`` later."""
    newest = max(datetime.fromisoformat(e["timestamp"]) for e in shop.events)
    return newest + SHIFT + timedelta(seconds=1)


def test_a_window_drawn_like_the_training_data_is_ok(
    trained: tuple[demo.DemoData, TrainResult],
    services: Services,
    settings: Settings,
    app_client: Callable[..., TestClient],
) -> None:
    shop, _ = trained
    client = app_client(max_future_seconds=30 * 86_400)
    rng = np.random.default_rng(1)
    sample = [shop.events[i] for i in rng.choice(len(shop.events), N_EVENTS, replace=False)]
    now = later(shop)
    post_window(client, sample, SHIFT)

    report = monitor_for(services, settings).drift(now)
    found = features(report)
    assert report["windows"][0]["events"] == N_EVENTS
    assert {"event_type", "item_popularity", "unknown_items", "category"} <= set(found)
    for name in ("event_type", "item_popularity", "unknown_items", "category"):
        assert found[name]["psi"] < 0.1, found[name]
    assert report["windows"][0]["verdict"] == "ok", {
        k: (f["verdict"], f["psi"]) for k, f in found.items() if f["verdict"] != "ok"
    }


def test_a_shifted_category_mix_and_a_popularity_flip_drift_on_those_features(
    trained: tuple[demo.DemoData, TrainResult],
    services: Services,
    settings: Settings,
    app_client: Callable[..., TestClient],
) -> None:
    shop, result = trained
    client = app_client(max_future_seconds=30 * 86_400)
    monitor = monitor_for(services, settings)
    reference = monitor._reference(Registry(services.sessions).get(result.version))
    assert reference is not None
    # The least popular half of the model's items, all of one category: both features move.
    rest = {
        item_id
        for item_id, row in reference.index.items()
        if drift.POPULARITY_BUCKETS[reference.buckets[row]] == "rest"
    }
    category = {i["item_id"]: i["categories"][0] for i in shop.items if i.get("categories")}
    target = sorted(rest, key=lambda i: category.get(i, ""))
    chosen = [i for i in target if category.get(i) == category.get(target[0])] or target
    rng = np.random.default_rng(2)
    events = [
        {**shop.events[k], "item_id": str(rng.choice(chosen)), "type": "view", "value": None}
        for k in rng.choice(len(shop.events), N_EVENTS, replace=False)
    ]
    now = later(shop)
    post_window(client, events, SHIFT)

    found = features(monitor.drift(now))
    assert found["item_popularity"]["verdict"] == "drift", found["item_popularity"]
    assert found["item_popularity"]["live"]["rest"] == 1.0
    assert found["category"]["verdict"] == "drift", found["category"]
    assert found["unknown_items"]["verdict"] == "ok"


def test_a_new_event_type_drifts_on_the_event_type_mix(
    shop: demo.DemoData,
    train_model: Callable[..., TrainResult],
    services: Services,
    settings: Settings,
    app_client: Callable[..., TestClient],
) -> None:
    """Trained before the shop sent likes; then a third of the events are likes."""
    with services.engine.begin() as connection:
        connection.execute(delete(Event).where(Event.type == "like"))
    train_model()
    client = app_client(max_future_seconds=30 * 86_400)
    rng = np.random.default_rng(3)
    sample = [
        {**e, "type": "like" if k % 3 == 0 else e["type"]}
        for k, e in enumerate(
            shop.events[i] for i in rng.choice(len(shop.events), N_EVENTS, replace=False)
        )
        if e["type"] != "like"
    ]
    now = later(shop)
    post_window(client, sample, SHIFT)

    found = features(monitor_for(services, settings).drift(now))
    assert found["event_type"]["verdict"] == "drift", found["event_type"]
    assert found["event_type"]["reference"]["like"] == 0.0
    assert found["event_type"]["live"]["like"] > 0.25
    assert found["item_popularity"]["verdict"] == "ok"


def test_too_few_events_are_not_judged() -> None:
    """Below the minimum a feature says so rather than guessing."""
    ref = {"a": 0.5, "b": 0.5}
    thresholds = drift.Thresholds(0.1, 0.25, 0.01, min_events=200)
    found = drift._categorical("event_type", ref, {"a": 10, "b": 0}, thresholds)
    assert found.verdict == drift.INSUFFICIENT
    assert found.psi is not None
    assert found.psi > 0.25


def test_the_tests_agree_with_scipy_stats() -> None:
    """The closed-form distributions equal scipy.stats'; chi-square exactly, and
    Kolmogorov-Smirnov (asymptotic p-value, weighted sample) within a few percent of its exact
    one."""
    from scipy import stats

    for dof in range(1, 30):
        for value in (0.01, 0.5, 2.0, 10.0, 80.0, 1000.0):
            assert drift.chi_square_sf(value, dof) == pytest.approx(
                stats.chi2.sf(value, dof), rel=1e-9, abs=1e-300
            )
    for value in np.linspace(0.01, 3.0, 60):
        assert drift.kolmogorov_sf(value) == pytest.approx(stats.kstwobign.sf(value), abs=1e-12)

    observed, expected = np.array([30.0, 50, 20]), np.array([33.0, 33, 34])
    statistic, p_value = drift.chi_square(observed, expected)
    reference = stats.chisquare(observed, expected)
    assert statistic == pytest.approx(reference.statistic)
    assert p_value == pytest.approx(reference.pvalue)

    rng = np.random.default_rng(0)
    quantiles = np.quantile(rng.normal(size=100_000), np.linspace(0, 1, drift.QUANTILES))
    live = np.round(rng.normal(0.1, 1.0, size=500), 1)
    values, counts = np.unique(live, return_counts=True)
    statistic, p_value = drift.kolmogorov_smirnov(values, counts.astype(float), quantiles)
    exact = stats.kstest(
        live, lambda x: np.interp(x, quantiles, np.linspace(0, 1, drift.QUANTILES))
    )
    assert statistic == pytest.approx(exact.statistic)
    assert p_value == pytest.approx(exact.pvalue, rel=0.1)

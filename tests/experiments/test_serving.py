"""Recommendations under an experiment: each variant is served as configured, every answer's
exposure is logged, and the whole loop (define, run, click, read results) works through the
API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.models import ExperimentExposure
from app.schemas import RecommendationsOut
from app.services import Services
from training import demo
from training.pipeline import TrainResult

Served = tuple[TestClient, TrainResult]
POPULARITY_ONLY = {"als": 0.0, "content": 0.0, "popularity": 1.0}


def app_services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def start(client: TestClient, variants: list[dict[str, Any]], name: str = "exp") -> None:
    created = client.post("/v1/experiments", json={"name": name, "variants": variants})
    assert created.status_code == 201, created.text
    started = client.post(f"/v1/experiments/{name}/start")
    assert started.status_code == 200, started.text


def shop_users(shop: demo.DemoData) -> list[str]:
    return sorted({e["user_id"] for e in shop.events})


def test_each_variant_is_served_as_configured(
    served: Served, shop: demo.DemoData, train_model: Callable[..., TrainResult]
) -> None:
    """control: the active model; pinned: an older version; popular: no personal ranking;
    reweighted: the active model's ranking with the variant's blend weights."""
    client, first = served
    second = train_model()
    assert client.post("/v1/models/reload").json()["version"] == second.version
    start(
        client,
        [
            {"name": "control", "share": 25},
            {"name": "pinned", "share": 25, "config": {"model_version": first.version}},
            {"name": "popular", "share": 25, "config": {"strategy": "popularity"}},
            {"name": "reweighted", "share": 25, "config": {"weights": POPULARITY_ONLY}},
        ],
    )
    recommender = app_services(client).recommender
    seen: set[str] = set()
    reweighting_changed_a_list = False
    for user in shop_users(shop):
        response = client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
        assert response.status_code == 200, response.text
        body = response.json()
        assert RecommendationsOut.model_validate(body).model_dump(mode="json") == body
        variant = body["variant"]
        seen.add(variant)
        assert response.headers["X-Variant"] == variant
        assert body["experiment"] == "exp"
        reasons = [item["reason"] for item in body["items"]]
        if variant == "pinned":
            assert body["model_version"] == first.version
        else:
            assert body["model_version"] == second.version
        if variant == "popular":
            assert not any(r.startswith("because") for r in reasons), reasons
            assert all(r.startswith("popular") for r in reasons[:5]), reasons
        else:
            assert any(r.startswith("because") for r in reasons), (variant, reasons)
        if variant == "reweighted":
            direct = recommender.recommend(user, k=10, weights=POPULARITY_ONLY)
            assert [i["item_id"] for i in body["items"]] == [s.item_id for s in direct.items]
            default = recommender.recommend(user, k=10)
            reweighting_changed_a_list |= [s.item_id for s in default.items] != [
                s.item_id for s in direct.items
            ]
    assert seen == {"control", "pinned", "popular", "reweighted"}
    assert reweighting_changed_a_list


def test_without_an_experiment_answers_are_the_default(served: Served) -> None:
    client, result = served
    response = client.get("/v1/users/u-1/recommendations")
    body = response.json()
    assert (body["experiment"], body["variant"]) == (None, "control")
    assert "X-Variant" not in response.headers
    assert body["model_version"] == result.version


def test_every_answer_is_logged_as_an_exposure(served: Served, shop: demo.DemoData) -> None:
    """First pages and later pages alike: one row per answer, with the variant, user, model
    version and the items exactly as shown."""
    client, _ = served
    start(client, [{"name": "control", "share": 50}, {"name": "treatment", "share": 50}])
    answers = []
    for user in shop_users(shop)[:20]:
        first = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        second = client.get(
            f"/v1/users/{user}/recommendations",
            params={"k": 5, "offset": 5, "recommendation_id": first["recommendation_id"]},
        ).json()
        answers += [first, second]
    runtime = app_services(client).experiments
    runtime.exposures.flush()
    with app_services(client).sessions() as session:
        rows = session.scalars(select(ExperimentExposure).order_by(ExperimentExposure.id)).all()
    assert len(rows) == len(answers)
    for row, answer in zip(rows, answers, strict=True):
        assert row.recommendation_id == answer["recommendation_id"]
        assert row.user_id == answer["user_id"]
        assert row.variant == answer["variant"]
        assert row.model_version == answer["model_version"]
        assert row.items == [item["item_id"] for item in answer["items"]]
        assert (row.attributable_until - row.shown_at).total_seconds() == 1800


def test_define_run_click_and_read_results(served: Served, shop: demo.DemoData) -> None:
    """Users see lists, click their first item (sending the recommendation_id) and some buy it;
    the results count exactly those clicks and conversions per variant, and say there is not
    enough data yet for a verdict."""
    client, _ = served
    start(client, [{"name": "control", "share": 50}, {"name": "treatment", "share": 50}])
    expected: dict[str, dict[str, int]] = {}
    for n, user in enumerate(shop_users(shop)):
        body = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        counts = expected.setdefault(body["variant"], {"users": 0, "clicks": 0, "buyers": 0})
        counts["users"] += 1
        if n % 2 == 0:
            continue
        event = {
            "user_id": user,
            "item_id": body["items"][0]["item_id"],
            "recommendation_id": body["recommendation_id"],
        }
        assert client.post("/v1/events", json={**event, "type": "click"}).status_code == 201
        counts["clicks"] += 1
        if n % 3 == 0:
            assert client.post("/v1/events", json={**event, "type": "purchase"}).status_code == 201
            counts["buyers"] += 1

    response = client.get("/v1/experiments/exp/results")
    assert response.status_code == 200, response.text
    results = response.json()
    assert results["verdict"] == "not_enough_data"
    assert "of the 100 users needed" in results["summary"]
    by_name = {v["name"]: v for v in results["variants"]}
    for name, counts in expected.items():
        variant = by_name[name]
        assert variant["users"] == variant["exposures"] == counts["users"]
        assert variant["clicks"] == counts["clicks"]
        assert variant["converting_users"] == counts["buyers"]
        assert variant["ctr"]["value"] == counts["clicks"] / counts["users"]
    assert results["attribution"]["by_recommendation_id"] == sum(
        c["clicks"] + c["buyers"] for c in expected.values()
    )
    assert by_name["treatment"]["ctr_vs_control"]["p_value"] is None
    assert by_name["treatment"]["ctr_vs_control"]["significant"] is None

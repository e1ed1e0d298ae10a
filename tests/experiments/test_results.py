"""Results through the API on simulated experiments stored in the database: a real effect is
found, no effect is not claimed, a broken split and small samples are called what they are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import insert

from app.db.models import Experiment, ExperimentExposure
from app.experiments.assignment import assign_many
from app.services import Services
from tests.experiments.conftest import MakeExperiment

T = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)


def simulate(
    services: Services,
    experiment: Experiment,
    users: int,
    ctr: dict[str, float],
    seed: int,
    split: list[int] | None = None,
) -> None:
    """Users see 1-3 answers of 5 items each; each answer is clicked with its variant's CTR
    (the click carries the recommendation_id), and a third of clicks end in a purchase.

    Users are assigned by the experiment's hash, unless ``split`` forces how many go to each
    variant (a broken assignment)."""
    rng = np.random.default_rng(seed)
    names = [v["name"] for v in experiment.variants]
    ids = [f"user-{n}" for n in range(users)]
    if split is None:
        shares = [v["share_bp"] for v in experiment.variants]
        variant_of = [names[i] for i in assign_many(experiment.salt, shares, ids)]
    else:
        variant_of = [name for name, count in zip(names, split, strict=True) for _ in range(count)]
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for n, (user, variant) in enumerate(zip(ids, variant_of, strict=True)):
        for answer in range(int(rng.integers(1, 4))):
            shown_at = T + timedelta(minutes=n % 300, seconds=answer)
            rec = f"rec-{n}-{answer}"
            items = [f"sku-{int(i)}" for i in rng.choice(50, size=5, replace=False)]
            exposures.append(
                {
                    "experiment_id": experiment.id,
                    "recommendation_id": rec,
                    "variant": variant,
                    "user_id": user,
                    "model_version": None,
                    "items": items,
                    "shown_at": shown_at,
                    "attributable_until": shown_at + timedelta(minutes=30),
                }
            )
            if rng.random() < ctr[variant]:
                click = {
                    "user_id": user,
                    "item_id": items[0],
                    "recommendation_id": rec,
                    "timestamp": (shown_at + timedelta(seconds=20)).isoformat(),
                }
                events.append({**click, "type": "click"})
                if rng.random() < 1 / 3:
                    events.append({**click, "type": "purchase"})
    with services.engine.begin() as connection:
        connection.execute(insert(ExperimentExposure), exposures)
    assert services.ingestor.ingest_raw(events).rejected == 0


def results(client: TestClient, name: str = "exp") -> dict[str, Any]:
    response = client.get(f"/v1/experiments/{name}/results")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_truly_better_variant_is_significant(
    client: TestClient, services: Services, make_experiment: MakeExperiment
) -> None:
    """Treatment answers are clicked 9% of the time, control ones 5%: significant, with a
    positive lift whose interval excludes 0 and contains the true +80%."""
    experiment = make_experiment()
    simulate(services, experiment, 6000, {"control": 0.05, "treatment": 0.09}, seed=1)
    body = results(client)
    assert body["verdict"] == "significant", body["summary"]
    assert body["sample_ratio"]["mismatch"] is False
    control, treatment = body["variants"]
    assert control["is_control"]
    assert control["ctr_vs_control"] is None
    assert 0.04 < control["ctr"]["value"] < 0.06
    assert control["ctr"]["ci_low"] < 0.05 < control["ctr"]["ci_high"]
    comparison = treatment["ctr_vs_control"]
    assert comparison["significant"] is True
    assert comparison["p_value"] < 0.001
    assert 0 < comparison["lift_ci_low"] < 0.8 < comparison["lift_ci_high"]
    assert body["summary"].startswith("treatment: CTR +")
    assert treatment["conversion_rate"]["value"] > control["conversion_rate"]["value"]
    assert treatment["conversion_rate_vs_control"]["enough_data"] is True


def test_no_difference_is_not_claimed(
    client: TestClient, services: Services, make_experiment: MakeExperiment
) -> None:
    experiment = make_experiment()
    simulate(services, experiment, 6000, {"control": 0.06, "treatment": 0.06}, seed=2)
    body = results(client)
    assert body["verdict"] == "not_significant", body["summary"]
    comparison = body["variants"][1]["ctr_vs_control"]
    assert comparison["significant"] is False
    assert comparison["lift_ci_low"] < 0 < comparison["lift_ci_high"]


def test_several_treatments_are_compared_at_a_bonferroni_adjusted_level(
    client: TestClient, services: Services, make_experiment: MakeExperiment
) -> None:
    variants = [
        {"name": name, "share_bp": share, "config": {}}
        for name, share in (("control", 4000), ("b", 3000), ("c", 3000))
    ]
    experiment = make_experiment(variants=variants)
    simulate(services, experiment, 6000, {"control": 0.05, "b": 0.05, "c": 0.09}, seed=3)
    body = results(client)
    assert body["verdict"] == "significant"
    by_name = {v["name"]: v for v in body["variants"]}
    assert by_name["c"]["ctr_vs_control"]["significant"] is True
    assert by_name["b"]["ctr_vs_control"]["significant"] is False
    assert [v["share"] for v in body["variants"]] == [40, 30, 30]


def test_a_broken_split_is_reported_before_any_effect(
    client: TestClient, services: Services, make_experiment: MakeExperiment
) -> None:
    """Configured 50/50, observed 3,300/2,700: sample ratio mismatch, whatever the CTRs say."""
    experiment = make_experiment()
    simulate(
        services,
        experiment,
        6000,
        {"control": 0.05, "treatment": 0.09},
        seed=4,
        split=[3300, 2700],
    )
    body = results(client)
    assert body["verdict"] == "sample_ratio_mismatch"
    assert body["sample_ratio"]["mismatch"] is True
    assert body["sample_ratio"]["observed_users"] == {"control": 3300, "treatment": 2700}
    assert body["sample_ratio"]["expected_users"] == {"control": 3000, "treatment": 3000}
    assert "no conclusion should be drawn" in body["summary"]


def test_small_samples_say_not_enough_data(
    client: TestClient, services: Services, make_experiment: MakeExperiment
) -> None:
    """A huge difference on 80 users is still not claimed: too few users to trust a test."""
    experiment = make_experiment()
    simulate(services, experiment, 80, {"control": 0.0, "treatment": 0.9}, seed=5)
    body = results(client)
    assert body["verdict"] == "not_enough_data"
    assert body["summary"].startswith("not enough data: control has ")
    comparison = body["variants"][1]["ctr_vs_control"]
    assert comparison["enough_data"] is False
    assert comparison["p_value"] is None
    assert comparison["significant"] is None
    assert "of the 100 users needed" in comparison["note"]


def test_a_draft_has_not_started(client: TestClient, make_experiment: MakeExperiment) -> None:
    make_experiment(status="draft")
    body = results(client)
    assert body["verdict"] == "not_started"
    assert [v["users"] for v in body["variants"]] == [0, 0]
    assert body["variants"][0]["ctr"] == {"value": None, "ci_low": None, "ci_high": None}

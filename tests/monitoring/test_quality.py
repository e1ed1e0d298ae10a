"""Online quality on real storage: known served lists and known clicks give exact CTR and
conversion per model version and variant; the route records what it serves; the endpoints
and gauges answer the same figures."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db.models import ServedList
from app.monitoring.quality import served_row
from app.services import Services
from tests.serving.conftest import Served, metric_value, recs


def event(user: str, item: str, kind: str, rec: str | None, at: datetime) -> dict[str, Any]:
    body = {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": item,
        "type": kind,
        "timestamp": at.isoformat(),
    }
    if rec is not None:
        body["recommendation_id"] = rec
    return body


def test_known_lists_and_clicks_give_exact_ctr_and_conversion_per_version_and_variant(
    services: Services, app_client: Callable[..., TestClient]
) -> None:
    client = app_client(monitor_windows=[3600])
    writer = client.app.state.services.served_lists  # type: ignore[attr-defined]
    shown = datetime.now(UTC) - timedelta(minutes=10)
    plan = {  # (version, variant): lists
        ("v1", "control"): 10,
        ("v2", "treatment"): 4,
    }
    lists: dict[tuple[str, str], list[str]] = {}
    for (version, variant), n in plan.items():
        for k in range(n):
            rec = f"rec-{version}-{k}"
            lists.setdefault((version, variant), []).append(rec)
            row = served_row(
                rec,
                f"u{k}",
                version,
                "exp",
                variant,
                [f"i{k}", "i-common"],
                [2.0, 1.0],
                5.0 + k,
                shown,
            )
            writer.record(row)
            if k == 0:
                writer.record({**row, "shown_at": shown + timedelta(seconds=5)})  # asked again
    writer.flush()
    after = shown + timedelta(minutes=1)
    v1, v2 = lists[("v1", "control")], lists[("v2", "treatment")]
    events = [
        # v1: lists 0, 1, 2 clicked (list 0 twice: it counts once), list 1 also converts.
        event("u0", "i0", "click", v1[0], after),
        event("u0", "i-common", "click", v1[0], after),
        event("u1", "i1", "click", v1[1], after),
        event("u1", "i1", "purchase", v1[1], after),
        event("u2", "i-common", "click", v1[2], after),
        # Not attributed: an item the list did not show, no recommendation id, a view.
        event("u3", "i-other", "click", v1[3], after),
        event("u4", "i4", "click", None, after),
        event("u5", "i5", "view", v1[5], after),
        # v2: every list clicked, two converted (one of them without a click).
        *(event(f"u{k}", f"i{k}", "click", v2[k], after) for k in range(4)),
        event("u0", "i0", "purchase", v2[0], after),
        event("u9", "i-common", "purchase", v2[3], after),
    ]
    assert client.post("/v1/events/batch", json={"events": events}).status_code == 200

    body = client.get("/v1/monitoring/quality", params={"refresh": "true"}).json()
    (window,) = body["windows"]
    assert window["window"] == "1h"
    rows = {(r["model_version"], r["variant"]): r for r in window["rows"]}
    first, second = rows[("v1", "control")], rows[("v2", "treatment")]
    assert (first["lists"], first["answers"], first["clicked"], first["converted"]) == (
        10,
        11,
        3,
        1,
    )
    assert first["ctr"] == 0.3
    assert first["conversion_rate"] == 0.1
    assert (second["lists"], second["clicked"], second["converted"]) == (4, 4, 2)
    assert second["ctr"] == 1.0
    assert second["conversion_rate"] == 0.5
    assert first["latency_p50_ms"] == 9.0  # the median of 5, 5, 6, 7, ..., 14 ms
    labels = {"window": "1h", "model_version": "v1", "variant": "control"}
    assert metric_value(client, "recsys_online_ctr", **labels) == 0.3
    assert metric_value(client, "recsys_online_conversion_rate", **labels) == 0.1
    assert metric_value(client, "recsys_online_lists", **labels) == 10


def test_the_route_records_each_list_it_makes_and_each_page_with_version_and_variant(
    served: Served,
) -> None:
    """A new list and a page of it are recorded; the same list answered again from the kept
    copy is not (it was recorded when made)."""
    client, result = served
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    first = recs(client, "user-00001", k=5)
    again = recs(client, "user-00001", k=5)
    assert again["recommendation_id"] == first["recommendation_id"]
    page = recs(client, "user-00001", k=5, offset=5, recommendation_id=first["recommendation_id"])
    services.served_lists.flush()
    with services.engine.connect() as connection:
        rows = connection.execute(
            select(
                ServedList.recommendation_id,
                ServedList.model_version,
                ServedList.variant,
                ServedList.items,
            ).order_by(ServedList.id)
        ).all()
    assert [r.recommendation_id for r in rows] == [first["recommendation_id"]] * 2
    assert {(r.model_version, r.variant) for r in rows} == {(result.version, "control")}
    assert rows[0].items == [i["item_id"] for i in first["items"]]
    assert rows[1].items == [i["item_id"] for i in page["items"]]

    body = client.get("/v1/monitoring/quality", params={"refresh": "true"}).json()
    row = body["windows"][0]["rows"][0]
    assert (row["model_version"], row["lists"], row["answers"]) == (result.version, 1, 2)
    assert 0 < row["coverage"] <= 1
    assert body["freshness"]["active_version"] == result.version


def test_no_answer_is_recorded_with_a_share_of_zero(
    served: Served, app_client: Callable[..., TestClient]
) -> None:
    client = app_client(served_lists_share=0.0)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    recs(client, "user-00002", k=5)
    services.served_lists.flush()
    with services.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ServedList)).scalar_one() == 0


def test_the_monitoring_endpoints_need_the_admin_scope(
    services: Services, app_client: Callable[..., TestClient]
) -> None:
    client = app_client(api_keys={"reader": frozenset({"read"}), "boss": frozenset({"admin"})})
    for path in ("/v1/monitoring/drift", "/v1/monitoring/quality"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": "reader"}).status_code == 403
        assert client.get(path, headers={"X-API-Key": "boss"}).status_code == 200


def test_one_process_computes_a_round_and_every_process_exports_it(services: Services) -> None:
    """The round's lock in Redis: the first monitor computes and stores the report, a second
    one in the same round only reads it; both set the same gauges."""
    from prometheus_client import REGISTRY

    from app.artifacts import LocalArtifactStore
    from app.monitoring.monitor import LOCK_KEY, REPORT_KEY, Monitor

    settings = services.settings
    first, second = (
        Monitor(
            settings,
            services.engine,
            services.sessions,
            services.redis,
            LocalArtifactStore(),
            lambda: 10,
        )
        for _ in range(2)
    )
    computed: list[str] = []
    original = first.compute

    def counted(now: datetime | None = None) -> dict[str, Any]:
        computed.append("first")
        return original(now)

    first.compute = counted  # type: ignore[method-assign]
    first.tick()
    assert computed == ["first"]
    assert services.redis.exists(REPORT_KEY)
    assert services.redis.ttl(LOCK_KEY) > 0
    stored = first.stored()
    assert stored is not None
    assert REGISTRY.get_sample_value("recsys_monitor_last_run_timestamp_seconds") == (
        datetime.fromisoformat(stored["computed_at"]).timestamp()
    )
    second.compute = lambda now=None: pytest.fail("the round was computed twice")  # type: ignore[method-assign]
    second.tick()
    assert second.stored() == stored

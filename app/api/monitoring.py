"""Drift, online quality and freshness, as the monitor last computed them."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.api.responses import AUTH_ERRORS
from app.auth import RequireAdmin
from app.schemas import DriftOut, QualityOut

# Time allowed for another worker's writer to finish the batch it started at its flush interval.
_WRITE_MARGIN_SECONDS = 0.5

router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"], dependencies=[RequireAdmin])

Refresh = Annotated[
    bool,
    Query(
        description="Compute the figures now instead of answering those of the monitor's last "
        "round (every `RECSYS_MONITOR_INTERVAL_SECONDS`). The answer waits one "
        "`RECSYS_EXPOSURE_FLUSH_SECONDS` so that lists served by every process count."
    ),
]


async def _report(services: ServicesDep, refresh: bool) -> dict[str, Any]:
    # A refresh counts every answer served before it, by any worker or replica: this process's
    # queue is written now, and every other process's writer writes its queue within one flush
    # interval, which the refresh waits out.
    if refresh:
        await run_in_threadpool(services.served_lists.flush)
        await asyncio.sleep(services.settings.exposure_flush_seconds + _WRITE_MARGIN_SECONDS)
    return await run_in_threadpool(services.monitor.report, refresh)


@router.get("/drift", response_model=DriftOut, responses=AUTH_ERRORS)
async def get_drift(services: ServicesDep, refresh: Refresh = False) -> dict[str, Any]:
    """Live events of each window against the training data of the active version: per
    feature the PSI, a chi-square or Kolmogorov-Smirnov test and a verdict (`ok`, `warn`,
    `drift`, or `insufficient_data` while the window holds too few events)."""
    report = await _report(services, refresh)
    return {"computed_at": report["computed_at"], **report["drift"]}


@router.get("/quality", response_model=QualityOut, responses=AUTH_ERRORS)
async def get_quality(services: ServicesDep, refresh: Refresh = False) -> dict[str, Any]:
    """Per model version and variant over each window: lists served, CTR and conversion of the
    lists (events that name their `recommendation_id`), catalogue coverage, novelty,
    popularity and latency; whether the active version's CTR is significantly below the
    previous version's; and the freshness of the model."""
    report = await _report(services, refresh)
    return {
        "computed_at": report["computed_at"],
        **report["quality"],
        "freshness": report["freshness"],
    }

"""The FastAPI application: ``uvicorn app.main:app``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from app.api import (
    events,
    experiments,
    health,
    items,
    models,
    monitoring,
    recommendations,
    users,
)
from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.experiments.middleware import ExperimentMiddleware
from app.memory import limit_heaps
from app.middleware import BodySizeLimit
from app.schemas import EventBatchIn, EventIn, ItemBatchIn
from app.services import Services, connect_async_redis, connect_tracked_hashes

# Allocations (net of frees) between two collections of the youngest generation.
YOUNG_COLLECTION_THRESHOLD = 20_000
ROUTE_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

log = logging.getLogger("app")

DESCRIPTION = """
Records what users do and answers what to show them next.

* **Events** are stored durably and exactly once per `event_id`, and update the user's live
  profile in Redis in the same request.
* **Items** form the catalogue; deleted items are hidden, never recommended, their history kept.
* **Auth**: send `X-API-Key` with a key from `RECSYS_API_KEYS` holding the endpoint's scope
  (`ingest`, `read` or `admin`).
* **Experiments** split users into A/B variants by a hash of their id (taken from the path,
  the `X-User-Id` header or the `user_id` query parameter); responses carry `X-Experiment` and
  `X-Variant` headers, and results report lift with confidence intervals and p-values.
* **Errors** are JSON: `{"error": "ItemNotFound", "detail": "item 'x' does not exist"}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; resources are created when it starts, not here."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_enabled:
            log.warning(
                "NO API KEYS CONFIGURED: every endpoint is open to anyone who can reach it. "
                "Set RECSYS_API_KEYS (format KEY:SCOPE[+SCOPE],...) before exposing the service."
            )
        # Requests run concurrently and each scores one user (or a batch of them): BLAS
        # threads would only compete with the request threads for the same cores.
        threadpool_limits(limits=1, user_api="blas")
        limit_heaps()
        services = await run_in_threadpool(Services.create, settings)
        app.state.services = services
        # Made here: an asyncio client belongs to the loop it first runs on.
        answers = services.recommender.answers
        answers.attach(
            tracked=connect_tracked_hashes(settings, services.embedded_redis),
            async_client=connect_async_redis(settings, services.embedded_redis),
        )
        services.start_background()
        # Start-up objects (the model, the catalogue, imported modules) live as long as the
        # process: keep them out of every later garbage collection, which otherwise walks them
        # all and stalls requests.
        gc.collect()
        gc.freeze()
        # A batch of events allocates tens of thousands of short-lived containers. At the
        # default threshold (700) they trigger dozens of young collections per batch and a full
        # one every few batches, which walks everything built since start-up (the catalogue
        # index, caches): side by side, 20,000 takes about 2 ms of CPU per 1,000 events off the
        # service (docs/ingestion.md, *Measured design decisions*); cyclic garbage waits a
        # little longer to be freed.
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, 10, 10)
        try:
            yield
        finally:
            if answers.async_client is not None:
                await answers.async_client.aclose()
            if answers.tracked is not None:
                answers.tracked.close()
            answers.attach()
            await run_in_threadpool(services.close)

    app = FastAPI(
        title="recsys",
        version="0.1.0",
        summary="Real-time recommendation service",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (
        events.router,
        items.router,
        users.router,
        recommendations.router,
        models.router,
        experiments.router,
        monitoring.router,
        health.router,
    ):
        app.include_router(router)
    # Per-route latency buckets fine enough for a p50 and a p99 in milliseconds.
    instrumentator = Instrumentator(excluded_handlers=["/metrics"]).add(
        metrics.default(latency_lowr_buckets=ROUTE_LATENCY_BUCKETS)
    )
    instrumentator.instrument(app).expose(
        app, endpoint="/metrics", include_in_schema=True, tags=["health"]
    )
    app.add_middleware(ExperimentMiddleware)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_openapi(app, body_models=(EventIn, EventBatchIn, ItemBatchIn))
    return app


def install_openapi(app: FastAPI, body_models: tuple[type[BaseModel], ...]) -> None:
    """Publish the schemas of bodies that handlers parse themselves (to validate batch entries
    one by one) as named components, so every ``$ref`` in the document resolves."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in body_models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app on first access, so importing this module
    # reads no settings and connects to nothing.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)

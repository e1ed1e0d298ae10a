"""The FastAPI application: ``uvicorn app.main:app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.concurrency import run_in_threadpool

from app.api import events, health, items, users
from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.middleware import BodySizeLimit
from app.services import Services

log = logging.getLogger("app")

DESCRIPTION = """
Records what users do and answers what to show them next.

* **Events** are stored durably and exactly once per `event_id`, and update the user's live
  profile in Redis in the same request.
* **Items** form the catalogue; deleted items are hidden, never recommended, their history kept.
* **Auth**: send `X-API-Key` with a key from `RECSYS_API_KEYS` holding the endpoint's scope
  (`ingest`, `read` or `admin`).
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
        services = await run_in_threadpool(Services.create, settings)
        app.state.services = services
        services.start_background()
        try:
            yield
        finally:
            await run_in_threadpool(services.close)

    app = FastAPI(
        title="recsys",
        version="0.1.0",
        summary="Real-time recommendation service",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (events.router, items.router, users.router, health.router):
        app.include_router(router)
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(
        app, endpoint="/metrics", include_in_schema=True, tags=["health"]
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app on first access, so importing this module
    # reads no settings and connects to nothing.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)

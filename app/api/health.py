"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServicesDep
from app.monitoring import DEPENDENCY_UP

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Alive")
async def healthz() -> dict[str, str]:
    """The process is up; says nothing about its dependencies."""
    # async: answered on the event loop, so a liveness probe never queues behind requests
    # that fill the thread pool.
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready",
    responses={
        200: {
            "description": "Ready. `model` names the served model version; null means none is "
            "loaded and recommendations fall back to trending and popular items (the service "
            "still works, so this stays 200).",
            "content": {
                "application/json": {
                    "example": {
                        "status": "ready",
                        "down": [],
                        "checks": {"database": "ok", "redis": "ok"},
                        "model": "20261126T101500Z-a1b2c3",
                    }
                }
            },
        },
        503: {"description": "A dependency is down; `down` names it and `checks` says why."},
    },
)
def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when the database and Redis answer; 503 naming what is down otherwise."""
    checks = {"database": services.check_database(), "redis": services.check_redis()}
    down = [name for name, problem in checks.items() if problem is not None]
    for name, problem in checks.items():
        DEPENDENCY_UP.labels(dependency=name).set(0 if problem else 1)
    body = {
        "status": "unavailable" if down else "ready",
        "down": down,
        "checks": {name: problem or "ok" for name, problem in checks.items()},
        "model": services.models.version,
    }
    return JSONResponse(body, status_code=503 if down else 200)

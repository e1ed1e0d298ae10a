"""The served model."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.api.responses import AUTH_ERRORS
from app.auth import RequireAdmin, RequireRead
from app.schemas import ModelOut, ModelReloadOut
from app.serving.store import ModelHolder

router = APIRouter(prefix="/v1/models", tags=["models"])


def describe(models: ModelHolder) -> ModelOut:
    model = models.current
    active_version = models.active_version
    if model is None:
        return ModelOut(version=None, active_version=active_version, last_error=models.last_error)
    return ModelOut(
        version=model.version,
        active_version=active_version,
        created_at=model.created_at or None,
        loaded_at=model.loaded_at,
        n_items=model.n_items,
        n_factors=model.n_factors,
        value_scheme=model.value_scheme,
        weights=model.weights,
        last_error=models.last_error,
    )


@router.get("/current", response_model=ModelOut, dependencies=[RequireRead], responses=AUTH_ERRORS)
def get_current(services: ServicesDep) -> ModelOut:
    """The model version this process serves (null: trending and popular stand in)."""
    return describe(services.models)


@router.post(
    "/reload", response_model=ModelReloadOut, dependencies=[RequireAdmin], responses=AUTH_ERRORS
)
async def reload_model(services: ServicesDep) -> ModelReloadOut:
    """Check the registry now; a refused version is tried again. Answers what is served."""
    outcome = await run_in_threadpool(services.models.check, True)
    served = describe(services.models)
    return ModelReloadOut(
        **served.model_dump(),
        previous_version=outcome.previous_version,
        changed=outcome.changed,
    )

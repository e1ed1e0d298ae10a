"""The item catalogue."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep, read_batch
from app.api.responses import (
    AUTH_ERRORS,
    BAD_JSON,
    INVALID,
    ITEM_NOT_FOUND,
    TOO_LARGE,
    json_body,
)
from app.auth import RequireIngest, RequireRead
from app.schemas import ItemBatchAck, ItemFields, ItemIdPath, ItemIn, ItemOut

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.put(
    "/{item_id}",
    response_model=ItemOut,
    dependencies=[RequireIngest],
    responses={**AUTH_ERRORS, **INVALID},
)
def put_item(item_id: ItemIdPath, body: ItemFields, services: ServicesDep) -> ItemOut:
    """Create or replace an item; a hidden item becomes visible again."""
    item = ItemIn(item_id=item_id, **body.model_dump())
    services.catalog.upsert([item])
    return services.catalog.get(item.item_id)


@router.post(
    "/batch",
    response_model=ItemBatchAck,
    dependencies=[RequireIngest],
    responses={**AUTH_ERRORS, **BAD_JSON, **TOO_LARGE, **INVALID},
    openapi_extra=json_body({"$ref": "#/components/schemas/ItemBatchIn"}),
)
async def post_items(request: Request, services: ServicesDep) -> ItemBatchAck:
    """Create or replace up to 10,000 items; each is checked on its own and reported."""
    raw = await read_batch(request, "items", services.settings.max_batch_size)
    return await run_in_threadpool(services.catalog.upsert_raw, raw)


@router.get(
    "/{item_id}",
    response_model=ItemOut,
    dependencies=[RequireRead],
    responses={**AUTH_ERRORS, **ITEM_NOT_FOUND},
)
def get_item(item_id: ItemIdPath, services: ServicesDep) -> ItemOut:
    """Read an item, hidden ones included."""
    return services.catalog.get(item_id)


@router.delete(
    "/{item_id}",
    response_model=ItemOut,
    dependencies=[RequireIngest],
    responses={**AUTH_ERRORS, **ITEM_NOT_FOUND},
)
def delete_item(item_id: ItemIdPath, services: ServicesDep) -> ItemOut:
    """Hide an item: it is never recommended again, and its history stays."""
    return services.catalog.hide(item_id)

"""The item catalogue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep, read_batch
from app.api.responses import (
    AUTH_ERRORS,
    BAD_JSON,
    BAD_QUERY,
    DEGRADED,
    DEGRADED_HEADER,
    INVALID,
    ITEM_NOT_FOUND,
    TOO_LARGE,
    json_body,
)
from app.auth import RequireIngest, RequireRead
from app.monitoring import DEGRADED_ANSWERS
from app.schemas import (
    ID_MAX,
    ItemBatchAck,
    ItemFields,
    ItemIdPath,
    ItemIn,
    ItemListOut,
    ItemOut,
    Label,
    RecommendedItem,
    SimilarItemsOut,
)
from app.serving.recommender import Scored

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
    services.catalog_index.reload_items([item.item_id])
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
    ack = await run_in_threadpool(services.catalog.upsert_raw, raw)
    stored = [r.item_id for r in ack.results if r.status == "stored" and r.item_id]
    await run_in_threadpool(services.catalog_index.reload_items, stored)
    return ack


K = Annotated[int, Query(ge=1, le=100, description="How many items (1-100).", examples=[10])]
Category = Annotated[
    Label | None,
    Query(
        max_length=1000,
        description=f"Only items of this category (1-{ID_MAX} characters).",
        examples=["running"],
    ),
]


def _items(scored: list[Scored]) -> list[RecommendedItem]:
    return [RecommendedItem(item_id=s.item_id, score=s.score, reason=s.reason) for s in scored]


# Declared before /{item_id}, which would otherwise take "trending" and "popular" for ids.
@router.get(
    "/trending",
    response_model=ItemListOut,
    dependencies=[RequireRead],
    responses={**AUTH_ERRORS, **BAD_QUERY, **DEGRADED},
)
def get_trending(
    services: ServicesDep, response: Response, k: K = 10, category: Category = None
) -> ItemListOut:
    """Items with the most activity lately, older activity counting less (half-life 24 h).

    While Redis is unreachable, popular items stand in, marked `degraded`."""
    items, degraded = services.recommender.trending_items(k, category)
    if degraded:
        response.headers[DEGRADED_HEADER] = "true"
        DEGRADED_ANSWERS.labels(endpoint="trending").inc()
    return ItemListOut(items=_items(items), degraded=degraded)


@router.get(
    "/popular",
    response_model=ItemListOut,
    dependencies=[RequireRead],
    responses={**AUTH_ERRORS, **BAD_QUERY},
)
def get_popular(services: ServicesDep, k: K = 10, category: Category = None) -> ItemListOut:
    """The most popular items: the model's popularity, or event counts without a model."""
    version, items = services.recommender.popular_items(k, category)
    return ItemListOut(model_version=version, items=_items(items))


@router.get(
    "/{item_id}/similar",
    response_model=SimilarItemsOut,
    dependencies=[RequireRead],
    responses={**AUTH_ERRORS, **ITEM_NOT_FOUND, **BAD_QUERY},
)
def get_similar(item_id: ItemIdPath, services: ServicesDep, k: K = 10) -> SimilarItemsOut:
    """Items like this one (bought or viewed together, similar description); an item the model
    does not know gets popular items of its categories."""
    version, items = services.recommender.similar(item_id, k)
    return SimilarItemsOut(item_id=item_id, model_version=version, items=_items(items))


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
    hidden = services.catalog.hide(item_id)
    services.catalog_index.reload_items([item_id])
    return hidden

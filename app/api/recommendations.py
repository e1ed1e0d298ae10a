"""What to show a user."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.api.responses import AUTH_ERRORS, BAD_QUERY, PROFILES_DOWN, Responses
from app.auth import RequireRead
from app.errors import InvalidInput
from app.experiments.runtime import Assignment
from app.schemas import (
    ID_MAX,
    ErrorResponse,
    Identifier,
    Label,
    RecommendationsOut,
    UserIdPath,
)
from app.serving.filters import AttributeFilter, FilterError
from app.serving.recommender import RecommendationList

router = APIRouter(prefix="/v1/users", tags=["recommendations"])

UNKNOWN_LIST: Responses = {
    404: {
        "model": ErrorResponse,
        "description": "`recommendation_id` is unknown, expired, or was made for another user.",
        "content": {
            "application/json": {
                "example": {
                    "error": "RecommendationNotFound",
                    "detail": "recommendation_id 'rec-5f2c' is unknown or expired (lists are "
                    "kept 15 min); ask again without recommendation_id for a new list",
                }
            }
        },
    }
}

K = Annotated[
    int,
    Query(ge=1, le=100, description="How many items to return (1-100).", examples=[10]),
]
Offset = Annotated[
    int,
    Query(
        ge=0,
        le=10_000,
        description="Items of the ranked list to skip. Send the first answer's "
        "`recommendation_id` along to page through that same list.",
        examples=[10],
    ),
]


def parse_filters(texts: Sequence[str]) -> list[AttributeFilter]:
    filters = []
    for text in texts:
        try:
            filters.append(AttributeFilter.parse(text))
        except FilterError as exc:
            raise InvalidInput(f"attribute: {exc}") from None
    return filters


@router.get(
    "/{user_id}/recommendations",
    response_model=RecommendationsOut,
    dependencies=[RequireRead],
    responses={**AUTH_ERRORS, **UNKNOWN_LIST, **BAD_QUERY, **PROFILES_DOWN},
)
async def get_recommendations(
    request: Request,
    user_id: UserIdPath,
    services: ServicesDep,
    k: K = 10,
    offset: Offset = 0,
    recommendation_id: Annotated[
        Identifier | None,
        Query(
            max_length=1000,
            description="Page through a list made before (kept 15 minutes by default) instead of "
            "ranking anew; the other filters of that first request still apply.",
            examples=["rec-5f2c1a9e0b7d4c3a"],
        ),
    ] = None,
    exclude_seen: Annotated[
        bool, Query(description="Leave out items the user interacted with.", examples=[True])
    ] = True,
    categories: Annotated[
        list[Label] | None,
        Query(
            max_length=100,
            description=f"Only items in any of these categories (repeat the parameter; each "
            f"1-{ID_MAX} characters).",
            examples=[["running", "hiking"]],
        ),
    ] = None,
    exclude: Annotated[
        list[Identifier] | None,
        Query(
            max_length=1000,
            description="Item ids never to return (repeat the parameter), e.g. what the page "
            "already shows.",
            examples=[["sku-123"]],
        ),
    ] = None,
    attribute: Annotated[
        list[str] | None,
        Query(
            max_length=50,
            description="Only items whose attributes pass every filter `NAME OP VALUE`, OP one "
            "of `=`, `!=`, `<`, `<=`, `>`, `>=` (repeat the parameter; several `=` on one name "
            "mean any of those values). `=` compares numbers by value and booleans as "
            "`true`/`false`; the order operators need a number.",
            examples=[["brand=Acme", "price<=100"]],
        ),
    ] = None,
) -> Response:
    """The user's recommendations, reflecting their events up to this moment.

    Asked again with the same filters while nothing changed (no event of the user, the same
    model and catalogue), the answer is the list made before, under the same
    `recommendation_id`; the user's next event ends that at once.

    While an experiment runs, the user's variant decides how the list is made (model version,
    blend weights or strategy); the answer names the variant, as do the `X-Experiment` and
    `X-Variant` headers, and its exposure is logged for the experiment's results.
    """
    assignment: Assignment | None = getattr(request.state, "experiment", None)
    if assignment is not None and assignment.user_id != user_id:
        assignment = None  # an X-User-Id header naming someone else than the path
    variant = None if assignment is None else assignment.variant
    filters = parse_filters(attribute or ())
    recommender = services.recommender
    weights = None if variant is None else variant.weights
    model = None if assignment is None else services.experiments.model_for(assignment)
    strategy: Literal["hybrid", "popularity"] = "hybrid" if variant is None else variant.strategy
    result: RecommendationList | None = None
    if recommendation_id is None:
        field = recommender.list_field(
            k, offset, exclude_seen, categories or (), exclude or (), filters, weights, strategy
        )
        if field is not None:
            result = await recommender.kept(user_id, k, offset, field, model)
    if result is None:
        result = await run_in_threadpool(
            recommender.recommend,
            user_id,
            k=k,
            offset=offset,
            recommendation_id=recommendation_id,
            exclude_seen=exclude_seen,
            categories=categories or (),
            exclude=exclude or (),
            attributes=filters,
            weights=weights,
            model=model,
            strategy=strategy,
        )
    items = [{"item_id": s.item_id, "score": s.score, "reason": s.reason} for s in result.items]
    answer = {
        "recommendation_id": result.recommendation_id,
        "user_id": result.user_id,
        "model_version": result.model_version,
        "experiment": None,
        "variant": "control",
        "items": items,
    }
    if assignment is not None:
        services.experiments.record(
            assignment,
            result.recommendation_id,
            result.model_version,
            [item.item_id for item in result.items],
        )
        answer["experiment"] = assignment.experiment.name
        answer["variant"] = assignment.variant.name
    # The shape of RecommendationsOut (the documented response_model), serialised directly.
    return Response(orjson.dumps(answer), media_type="application/json")

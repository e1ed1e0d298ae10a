"""What to show a user."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.api.responses import AUTH_ERRORS, BAD_QUERY, DEGRADED, DEGRADED_HEADER, Responses
from app.auth import RequireRead, check_read
from app.errors import InvalidInput
from app.experiments.runtime import Assignment
from app.monitoring import DEGRADED_ANSWERS
from app.monitoring.quality import sampled, served_row
from app.schemas import (
    ID_MAX,
    ErrorResponse,
    Identifier,
    Label,
    RecommendationsOut,
    UserIdPath,
)
from app.services import Services
from app.serving.filters import AttributeFilter, FilterError
from app.serving.recommender import DEGRADED_PREFIX, RecommendationList

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


class RecommendationsQuery(BaseModel):
    """The route's query parameters: documented from this model and validated by it."""

    model_config = ConfigDict(extra="ignore")

    k: int = Field(
        default=10, ge=1, le=100, description="How many items to return (1-100).", examples=[10]
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Items of the ranked list to skip. Send the first answer's "
        "`recommendation_id` along to page through that same list.",
        examples=[10],
    )
    recommendation_id: Identifier | None = Field(
        default=None,
        max_length=1000,
        description="Page through a list made before (kept 15 minutes by default) instead of "
        "ranking anew; the other filters of that first request still apply.",
        examples=["rec-5f2c1a9e0b7d4c3a"],
    )
    exclude_seen: bool = Field(
        default=True, description="Leave out items the user interacted with.", examples=[True]
    )
    categories: list[Label] | None = Field(
        default=None,
        max_length=100,
        description=f"Only items in any of these categories (repeat the parameter; each "
        f"1-{ID_MAX} characters).",
        examples=[["running", "hiking"]],
    )
    exclude: list[Identifier] | None = Field(
        default=None,
        max_length=1000,
        description="Item ids never to return (repeat the parameter), e.g. what the page "
        "already shows.",
        examples=[["sku-123"]],
    )
    attribute: list[str] | None = Field(
        default=None,
        max_length=50,
        description="Only items whose attributes pass every filter `NAME OP VALUE`, OP one "
        "of `=`, `!=`, `<`, `<=`, `>`, `>=` (repeat the parameter; several `=` on one name "
        "mean any of those values). `=` compares numbers by value and booleans as "
        "`true`/`false`; the order operators need a number.",
        examples=[["brand=Acme", "price<=100"]],
    )


_REPEATED = frozenset(
    name
    for name, field in RecommendationsQuery.model_fields.items()
    if get_origin(field.annotation) in (Union, UnionType)
    and any(get_origin(arg) is list for arg in get_args(field.annotation))
)
_SINGLE = tuple(name for name in RecommendationsQuery.model_fields if name not in _REPEATED)
_USER_ID: TypeAdapter[str] = TypeAdapter(UserIdPath)


def read_parameters(request: Request) -> tuple[str, RecommendationsQuery]:
    """The user and the query of a request, read as FastAPI reads declared parameters (the
    last value of a single one, every value of a repeated one, absent or empty ones taking
    their default) and rejected with the same errors."""
    errors: list[Any] = []
    user_id = ""
    try:
        user_id = _USER_ID.validate_python(request.path_params["user_id"])
    except ValidationError as exc:
        errors += [{**error, "loc": ("path", "user_id", *error["loc"])} for error in exc.errors()]
    params = request.query_params
    values: dict[str, Any] = {}
    for name in _SINGLE:
        value = params.get(name)
        if value is not None:
            values[name] = value
    for name in _REPEATED:
        repeated = params.getlist(name)
        if repeated:
            values[name] = repeated
    query = None
    try:
        query = RecommendationsQuery.model_validate(values)
    except ValidationError as exc:
        errors += [{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]
    if errors or query is None:
        raise RequestValidationError(errors)
    return user_id, query


def parse_filters(texts: Sequence[str]) -> list[AttributeFilter]:
    filters = []
    for text in texts:
        try:
            filters.append(AttributeFilter.parse(text))
        except FilterError as exc:
            raise InvalidInput(f"attribute: {exc}") from None
    return filters


class RecommendationsRoute(APIRoute):
    """The route documented from :func:`get_recommendations`'s declared parameters, and served
    by :func:`serve`, which reads them with :func:`read_parameters` instead of FastAPI's
    per-request dependency solving: a kept list is answered at 1.48 times the rate that way
    (``docs/serving.md``, *The route's parameters*). ``tests/serving/test_parameters.py`` holds
    the two to the same answers and errors. FastAPI's ``dependency_overrides`` do not reach it: a
    change of the declared dependencies needs the same change in :func:`serve`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return serve


async def serve(request: Request) -> Response:
    await check_read(request, request.headers.get("x-api-key") or None)
    user_id, query = read_parameters(request)
    return await answer(request, request.app.state.services, user_id, query)


router = APIRouter(prefix="/v1/users", tags=["recommendations"], route_class=RecommendationsRoute)


@router.get(
    "/{user_id}/recommendations",
    response_model=RecommendationsOut,
    dependencies=[RequireRead],
    responses={**AUTH_ERRORS, **UNKNOWN_LIST, **BAD_QUERY, **DEGRADED},
)
async def get_recommendations(
    request: Request,
    user_id: UserIdPath,
    services: ServicesDep,
    query: Annotated[RecommendationsQuery, Query()],
) -> Response:
    """The user's recommendations, reflecting their events up to this moment.

    Asked again with the same filters while nothing changed (no event of the user, the same
    model and catalogue), the answer is the list made before, under the same
    `recommendation_id`; the user's next event ends that at once.

    While an experiment runs, the user's variant decides how the list is made (model version,
    blend weights or strategy); the answer names the variant, as do the `X-Experiment` and
    `X-Variant` headers, and its exposure is logged for the experiment's results.

    While Redis is unreachable the answer is still 200: the model's popular items and then the
    catalogue, marked `degraded` (and by the `X-Recsys-Degraded` header).
    """
    return await answer(request, services, user_id, query)


async def answer(
    request: Request, services: Services, user_id: str, query: RecommendationsQuery
) -> Response:
    """The answer of the route for valid parameters."""
    started = time.perf_counter()
    k, offset = query.k, query.offset
    categories, exclude = query.categories or (), query.exclude or ()
    assignment: Assignment | None = getattr(request.state, "experiment", None)
    if assignment is not None and assignment.user_id != user_id:
        assignment = None  # an X-User-Id header naming someone else than the path
    variant = None if assignment is None else assignment.variant
    filters = parse_filters(query.attribute or ())
    recommender = services.recommender
    weights = None if variant is None else variant.weights
    model = None if assignment is None else services.experiments.model_for(assignment)
    strategy: Literal["hybrid", "popularity"] = "hybrid" if variant is None else variant.strategy
    result: RecommendationList | None = None
    field = None
    if query.recommendation_id is None:
        field = recommender.list_field(
            k, offset, query.exclude_seen, categories, exclude, filters, weights, strategy
        )
        if field is not None:
            result = await recommender.kept(user_id, k, offset, field, model)
    # Recorded for online quality: lists made anew and pages of them; a kept list answered
    # again was recorded when it was made (and costs an answer that little to serve).
    record = result is None
    if result is None:
        result = await run_in_threadpool(
            recommender.recommend,
            user_id,
            k=k,
            offset=offset,
            recommendation_id=query.recommendation_id,
            exclude_seen=query.exclude_seen,
            categories=categories,
            exclude=exclude,
            attributes=filters,
            weights=weights,
            model=model,
            strategy=strategy,
        )
        asked = query.recommendation_id
        if result.degraded and (asked is None or not asked.startswith(DEGRADED_PREFIX)):
            # Redis is away: a copy of the user's list kept in this process, if there is one,
            # rather than the popular items.
            result = recommender.last_known(user_id, k, offset, field, asked, model) or result
    items = [{"item_id": s.item_id, "score": s.score, "reason": s.reason} for s in result.items]
    body = {
        "recommendation_id": result.recommendation_id,
        "user_id": result.user_id,
        "model_version": result.model_version,
        "experiment": None,
        "variant": "control",
        "items": items,
        "degraded": result.degraded,
    }
    if assignment is not None:
        services.experiments.record(
            assignment,
            result.recommendation_id,
            result.model_version,
            [item.item_id for item in result.items],
        )
        body["experiment"] = assignment.experiment.name
        body["variant"] = assignment.variant.name
    if record and sampled(user_id, services.settings.served_lists_share):
        services.served_lists.record(
            served_row(
                result.recommendation_id,
                user_id,
                result.model_version,
                None if assignment is None else assignment.experiment.name,
                "control" if assignment is None else assignment.variant.name,
                [item.item_id for item in result.items],
                [item.score for item in result.items],
                (time.perf_counter() - started) * 1000,
                datetime.now(UTC),
            )
        )
    # The shape of RecommendationsOut (the documented response_model), serialised directly.
    response = Response(orjson.dumps(body), media_type="application/json")
    if result.degraded:
        response.headers[DEGRADED_HEADER] = "true"
        DEGRADED_ANSWERS.labels(endpoint="recommendations").inc()
    return response

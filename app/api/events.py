"""What users do."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep, read_batch, read_json
from app.api.responses import AUTH_ERRORS, BAD_JSON, INVALID, TOO_LARGE, json_body
from app.auth import RequireIngest
from app.errors import InvalidInput
from app.schemas import EventAck, EventBatchAck

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post(
    "",
    response_model=EventAck,
    status_code=201,
    dependencies=[RequireIngest],
    responses={
        200: {"model": EventAck, "description": "A duplicate: this event_id was stored before."},
        201: {"description": "Stored (committed) and applied to the live profile."},
        **AUTH_ERRORS,
        **BAD_JSON,
        **INVALID,
    },
    openapi_extra=json_body({"$ref": "#/components/schemas/EventIn"}),
)
async def post_event(request: Request, services: ServicesDep) -> Response:
    """Record one event; answered only after it is committed to the database."""
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be one event as a JSON object")
    # The same path as a batch of one: validation, storage, profile and metrics alike.
    outcome = await run_in_threadpool(services.ingestor.ingest_raw, [payload])
    result = outcome.results[0]
    if result.status == "rejected":
        raise InvalidInput(result.error or "the event was rejected")
    # EventAck, written as pydantic would write it.
    answer = {"event_id": result.event_id, "status": result.status, "profile": outcome.profile}
    status = 200 if result.status == "duplicate" else 201
    return Response(orjson.dumps(answer), status_code=status, media_type="application/json")


@router.post(
    "/batch",
    response_model=EventBatchAck,
    dependencies=[RequireIngest],
    responses={
        **AUTH_ERRORS,
        **BAD_JSON,
        **TOO_LARGE,
        **INVALID,
    },
    openapi_extra=json_body({"$ref": "#/components/schemas/EventBatchIn"}),
)
async def post_events(request: Request, services: ServicesDep) -> Response:
    """Record up to 10,000 events: valid ones are stored, every one is reported."""
    raw = await read_batch(request, "events", services.settings.max_batch_size)
    outcome = await run_in_threadpool(services.ingestor.ingest_raw, raw)
    # EventBatchAck as pydantic would write it, from the plain tuples: a model per event, then
    # the response model's validation of each, cost more than the rest of the answer.
    answer = {
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected,
        "profile": outcome.profile,
        "results": [
            {"index": index, "event_id": event_id, "status": status, "error": error}
            for index, event_id, status, error in outcome.statuses
        ],
    }
    return Response(orjson.dumps(answer), media_type="application/json")

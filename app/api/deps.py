"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from app.errors import InvalidInput, MalformedJSON, PayloadTooLarge
from app.services import Services


async def get_services(request: Request) -> Services:
    # async: a plain attribute read, not worth a trip through the threadpool.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def read_json(request: Request) -> Any:
    """The request body parsed as JSON; 400 with the parser's reason otherwise."""
    body = await request.body()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if b"NaN" in body or b"Infinity" in body or "infinity" in str(exc):
            hint = "; numbers must be finite: JSON has no NaN or Infinity"
        raise MalformedJSON(f"the request body is not valid JSON ({exc}){hint}") from None


async def read_batch(request: Request, field: str, limit: int) -> list[Any]:
    """The raw list under ``field`` of a JSON body, checked for shape and size only.

    Batch elements are validated one by one later, so one bad element never sinks the batch.
    """
    payload = await read_json(request)
    if not isinstance(payload, dict) or not isinstance(payload.get(field), list):
        raise InvalidInput(f'the body must be a JSON object {{"{field}": [...]}}')
    extra = sorted(set(payload) - {field})
    if extra:
        raise InvalidInput(f"unknown top-level fields {extra}; only {field!r} is allowed")
    values: list[Any] = payload[field]
    if len(values) > limit:
        raise PayloadTooLarge(
            f"{len(values)} {field} in one batch; at most {limit} are allowed, split the batch"
        )
    if not values:
        raise InvalidInput(f"{field} must not be empty")
    return values

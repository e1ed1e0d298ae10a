"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from app.errors import InvalidInput, MalformedJSON, PayloadTooLarge
from app.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def read_batch(request: Request, field: str, limit: int) -> list[Any]:
    """The raw list under ``field`` of a JSON body, checked for shape and size only.

    Batch elements are validated one by one later, so one bad element never sinks the batch.
    """
    body = await request.body()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the request body is not valid JSON ({exc})") from None
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

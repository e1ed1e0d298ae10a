"""Documented error answers shared by the routers."""

from __future__ import annotations

from typing import Any

from app.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]

AUTH_ERRORS: Responses = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key."},
    403: {"model": ErrorResponse, "description": "The API key lacks the endpoint's scope."},
}
BAD_JSON: Responses = {400: {"model": ErrorResponse, "description": "Malformed JSON."}}
INVALID: Responses = {
    422: {"model": ErrorResponse, "description": "Invalid input; `detail` says why."}
}
TOO_LARGE: Responses = {
    413: {"model": ErrorResponse, "description": "More entries than the batch limit, or too big."}
}
ITEM_NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "No item with this id."}}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the handler parses itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def error_response(description: str, error: str, detail: str) -> dict[str, Any]:
    """A documented error answer with an example body."""
    return {
        "model": ErrorResponse,
        "description": description,
        "content": {"application/json": {"example": {"error": error, "detail": detail}}},
    }


BAD_QUERY: Responses = {
    422: error_response(
        "A parameter breaks its rule; `detail` names it.",
        "ValidationError",
        "k: Input should be less than or equal to 100",
    )
}
DEGRADED_HEADER = "X-Recsys-Degraded"
DEGRADED: Responses = {
    200: {
        "headers": {
            DEGRADED_HEADER: {
                "description": "`true` when the answer was made without Redis (see `degraded`).",
                "schema": {"type": "string", "enum": ["true"]},
            }
        }
    }
}
PROFILES_DOWN: Responses = {
    503: error_response(
        "Redis (live profiles, stored lists, trending counters) is unreachable.",
        "ServiceUnavailable",
        "the profile store (Redis) is unreachable: Connection refused",
    )
}

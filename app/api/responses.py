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

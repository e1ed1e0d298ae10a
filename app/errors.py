"""One exception hierarchy, one JSON shape: ``{"error": "ItemNotFound", "detail": "..."}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class RecsysError(Exception):
    """Base of every error the API reports on purpose."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def name(self) -> str:
        return type(self).__name__


class BadRequest(RecsysError):
    status_code = 400


class MalformedJSON(BadRequest):
    pass


class InvalidInput(RecsysError):
    status_code = 422

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors


class NotFound(RecsysError):
    status_code = 404


class ItemNotFound(NotFound):
    pass


class Conflict(RecsysError):
    status_code = 409


class PayloadTooLarge(RecsysError):
    status_code = 413


class Unauthorized(RecsysError):
    status_code = 401


class Forbidden(RecsysError):
    status_code = 403


class ServiceUnavailable(RecsysError):
    status_code = 503


def _location(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in ("body", "query", "path", "header") and not parts:
            continue
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts)


def describe_errors(errors: Sequence[Any], prefix: str = "") -> tuple[str, list[dict[str, Any]]]:
    """Turn pydantic's error list into one readable sentence plus a structured list."""
    described: list[dict[str, Any]] = []
    for error in errors:
        where = _location(error.get("loc", ()))
        if prefix:
            where = f"{prefix}.{where}" if where and not where.startswith("[") else prefix + where
        message = str(error.get("msg", "invalid"))
        # pydantic prefixes messages of custom validators; the field name says enough.
        message = message.removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "extra_forbidden":
            message = "is not a known field"
        elif error.get("type") == "finite_number":
            message = "must be a finite number (NaN and infinity are not allowed)"
        described.append({"loc": where or "body", "msg": message, "type": error.get("type")})
    sentence = "; ".join(f"{d['loc']}: {d['msg']}" for d in described[:10])
    if len(described) > 10:
        sentence += f"; and {len(described) - 10} more"
    return sentence, described


def rejection(raw: object, id_field: str, exc: Any) -> tuple[str | None, str]:
    """For a batch entry that failed validation: its id (when it has a usable one) and why."""
    message, _ = describe_errors(exc.errors())
    found = raw.get(id_field) if isinstance(raw, dict) else None
    return (found if isinstance(found, str) else None), message


def _error_response(
    status: int, name: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": name, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    headers = {"WWW-Authenticate": "APIKey"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _first_line(exc: Exception) -> str:
    """The driver's own message without SQLAlchemy's statement and parameters."""
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__


def install_error_handlers(app: FastAPI) -> None:
    """Map every error, ours and the framework's, to the one JSON shape."""

    @app.exception_handler(RecsysError)
    async def _recsys_error(_request: Request, exc: RecsysError) -> JSONResponse:
        errors = exc.errors if isinstance(exc, InvalidInput) else None
        return _error_response(exc.status_code, exc.name, exc.detail, errors)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        if any(e.get("type") == "json_invalid" for e in raw):
            ctx = next(e for e in raw if e.get("type") == "json_invalid").get("ctx") or {}
            return _error_response(
                400,
                "MalformedJSON",
                f"the request body is not valid JSON ({ctx.get('error', 'parse error')})",
            )
        sentence, described = describe_errors(raw)
        return _error_response(422, "ValidationError", sentence, described)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}
        return _error_response(
            exc.status_code, names.get(exc.status_code, "HTTPError"), str(exc.detail)
        )

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
        # Nothing was acknowledged: the client may send the same request again.
        log.warning("the database did not answer: %s", exc)
        return _error_response(
            503, "ServiceUnavailable", f"the database is unreachable: {_first_line(exc)}"
        )

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis did not answer: %s", exc)
        return _error_response(
            503, "ServiceUnavailable", f"Redis is unreachable: {_first_line(exc)}"
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(500, "InternalError", "an unexpected error occurred; it was logged")

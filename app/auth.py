"""API keys with scopes, sent as ``X-API-Key``. Keys are compared in constant time and never
logged."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from app.config import Scope
from app.errors import Forbidden, Unauthorized

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key from RECSYS_API_KEYS with the scope the endpoint names.",
)


def scopes_for_key(keys: Mapping[str, frozenset[Scope]], presented: str) -> frozenset[Scope] | None:
    """The scopes of ``presented``, or ``None``; every configured key is compared, in constant
    time, so the answer's timing does not tell which keys exist."""
    presented_bytes = presented.encode()
    found: frozenset[Scope] | None = None
    for key, scopes in keys.items():
        if hmac.compare_digest(key.encode(), presented_bytes):
            found = scopes
    return found


def require_scope(scope: Scope) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with a key holding ``scope``."""

    async def check(
        request: Request, api_key: Annotated[str | None, Depends(api_key_header)]
    ) -> None:
        # async: pure computation, so no threadpool hand-off per request.
        settings = request.app.state.services.settings
        if not settings.auth_enabled:
            return
        if scope is Scope.READ and settings.public_read:
            return
        if not api_key:
            raise Unauthorized(
                f"this endpoint needs an API key with the '{scope}' scope in the X-API-Key header"
            )
        scopes = scopes_for_key(settings.api_keys, api_key)
        if scopes is None:
            raise Unauthorized("the X-API-Key header holds no valid API key")
        if scope not in scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")

    return check


check_read = require_scope(Scope.READ)
check_ingest = require_scope(Scope.INGEST)
RequireIngest = Depends(check_ingest)
RequireRead = Depends(check_read)
RequireAdmin = Depends(require_scope(Scope.ADMIN))

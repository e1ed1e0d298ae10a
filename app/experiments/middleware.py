"""Variant routing: pure ASGI middleware that puts each request naming a user into the running
experiment.

The user is taken from, in this order:

1. the path, ``/v1/users/{user_id}/...`` (recommendations, profiles);
2. the ``X-User-Id`` header;
3. the ``user_id`` query parameter.

A request that names a user gets ``request.state.experiment`` (an :class:`Assignment`) and the
response headers ``X-Experiment`` and ``X-Variant``. A request without a user, or while no
experiment runs, passes through untouched. The running experiment comes from the process's
cache (re-read every few seconds), never from the database on a request.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.experiments.runtime import Assignment, ExperimentRuntime

USERS_PREFIX = "/v1/users/"
USER_HEADER = b"x-user-id"
USER_QUERY = "user_id"
MAX_USER_ID = 128
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _clean(value: str) -> str | None:
    # The same rules as the API's ids, so the user hashed is the user the router sees.
    value = value.strip()
    if not 1 <= len(value) <= MAX_USER_ID or _CONTROL_CHARACTERS.search(value):
        return None
    return value


def user_of(scope: Scope) -> str | None:
    """The user a request names, or ``None``."""
    path: str = scope["path"]
    if path.startswith(USERS_PREFIX):
        found = _clean(path[len(USERS_PREFIX) :].split("/", 1)[0])
        if found is not None:
            return found
    for name, value in scope["headers"]:
        if name == USER_HEADER:
            try:
                found = _clean(value.decode())
            except UnicodeDecodeError:
                found = None
            if found is not None:
                return found
            break
    query: bytes = scope.get("query_string", b"")
    if b"user_id=" in query:
        for key, value in parse_qsl(query.decode("utf-8", "replace")):
            if key == USER_QUERY:
                return _clean(value)
    return None


class ExperimentMiddleware:
    """Assigns the variant of the running experiment and tags the response with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The app's services exist once its lifespan has started them.
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        runtime: ExperimentRuntime | None = getattr(services, "experiments", None)
        experiment = None if runtime is None else runtime.running
        user_id = None if experiment is None else user_of(scope)
        if experiment is None or user_id is None:
            await self.app(scope, receive, send)
            return
        variant = experiment.assign(user_id)
        scope.setdefault("state", {})["experiment"] = Assignment(experiment, variant, user_id)
        tags = [(b"x-experiment", experiment.header_value), (b"x-variant", variant.name.encode())]

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *tags]
            await send(message)

        await self.app(scope, receive, tagged_send)

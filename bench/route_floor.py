"""The service's app with a twin of the recommendations route that does no work.

The twin (``GET /v1/users/{user_id}/recommendations-floor``) is served as the real route is
(``RecommendationsRoute``: the key checked, the path and query read and validated by
``read_parameters``) and answers a fixed list of ten items, serialised as the real route
serialises its answer. Measured against ``/healthz`` by ``bench/serving.py --modes floor``,
it shows what the web framework and the route's parameters alone cost: the most the real route
could reach whatever it did.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response

from app.api.recommendations import (
    RecommendationsRoute,
    get_recommendations,
    read_parameters,
    router,
)
from app.auth import RequireRead, check_read
from app.main import create_app
from app.schemas import RecommendationsOut

ANSWER = orjson.dumps(
    {
        "recommendation_id": "rec-0123456789abcdef",
        "user_id": "user-1",
        "model_version": "20261127T065006Z-f85537",
        "experiment": None,
        "variant": "control",
        "items": [
            {"item_id": f"item-{i:05d}", "score": 1.5 - i / 10, "reason": "because you viewed X"}
            for i in range(10)
        ],
    }
)


async def no_work(request: Request) -> Response:
    await check_read(request, request.headers.get("x-api-key") or None)
    read_parameters(request)
    return Response(ANSWER, media_type="application/json")


class FloorRoute(RecommendationsRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return no_work


# On the real route's router, right after it: matched after as many patterns, under the same
# prefix and middleware.
router.add_api_route(
    "/{user_id}/recommendations-floor",
    get_recommendations,
    methods=["GET"],
    response_model=RecommendationsOut,
    dependencies=[RequireRead],
    route_class_override=FloorRoute,
)
app = create_app()

"""The service's app with a twin of the recommendations route that does no work.

The twin (``GET /v1/users/{user_id}/recommendations-floor``) has the very parameters,
dependencies (authentication included) and response model of the real route and answers a
fixed list of ten items, serialised as the real route serialises its answer. Measured against
``/healthz`` by ``bench/serving.py --modes floor``, it shows what the web framework alone
costs this route: the most the real route could reach whatever it did.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import Response

from app.api.recommendations import get_recommendations, router
from app.auth import RequireRead
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


@functools.wraps(get_recommendations)  # FastAPI reads the wrapped function's parameters
async def no_work(*args: Any, **kwargs: Any) -> Response:
    return Response(ANSWER, media_type="application/json")


# On the real route's router, right after it: matched after as many patterns, under the same
# prefix and middleware.
router.add_api_route(
    "/{user_id}/recommendations-floor",
    no_work,
    methods=["GET"],
    response_model=RecommendationsOut,
    dependencies=[RequireRead],
)
app = create_app()

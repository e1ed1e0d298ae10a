"""The service's app with its recommendations route served by FastAPI's own route handler
(dependency solving per request) instead of ``RecommendationsRoute``: the other side of
``bench/routes.py``'s comparison. The endpoint, its dependencies and its answer are the same;
only how a request reaches the endpoint differs."""

from __future__ import annotations

from fastapi.routing import APIRoute, request_response

from app.api import recommendations
from app.main import create_app

recommendations.RecommendationsRoute.get_route_handler = APIRoute.get_route_handler  # type: ignore[method-assign]
for route in recommendations.router.routes:
    if isinstance(route, APIRoute):
        route.app = request_response(route.get_route_handler())
app = create_app()

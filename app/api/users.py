"""Users' live profiles."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from app.api.deps import ServicesDep
from app.auth import RequireRead
from app.errors import ServiceUnavailable
from app.profiles import category_affinities
from app.schemas import ErrorResponse, RecentInteraction, UserIdPath, UserProfile

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get(
    "/{user_id}/profile",
    response_model=UserProfile,
    dependencies=[RequireRead],
    responses={
        503: {
            "model": ErrorResponse,
            "description": "The profile store, or the catalogue it is read with, is unreachable.",
        }
    },
)
def get_profile(
    user_id: UserIdPath,
    services: ServicesDep,
) -> UserProfile:
    """The user's live profile; empty for a user with no events."""
    try:
        snapshot = services.profiles.read(user_id, now=datetime.now(UTC))
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"the profile store (Redis) is unreachable: {exc}") from None
    try:
        categories = services.catalog.categories(list(snapshot.item_scores))
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(f"the catalogue (database) is unreachable: {exc}") from None
    return UserProfile(
        user_id=snapshot.user_id,
        recent=[
            RecentInteraction(
                event_id=r["event_id"],
                item_id=r["item_id"],
                type=r["type"],
                value=r["value"],
                timestamp=datetime.fromtimestamp(r["ts"], UTC),
            )
            for r in snapshot.recent
        ],
        item_scores=snapshot.item_scores,
        category_affinities=category_affinities(snapshot.item_scores, categories),
        counts=snapshot.counts,
        events=snapshot.events,
        last_event_at=snapshot.last_event_at,
        as_of=snapshot.as_of,
    )

"""Experiments stored directly, for tests of the parts below the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from app.db.engine import session_scope
from app.db.models import Experiment
from app.services import Services
from tests.serving.conftest import (  # noqa: F401  (fixtures used by the API tests)
    app_client,
    served,
    serving_settings,
    shop,
    train_model,
)

MakeExperiment = Callable[..., Experiment]


@pytest.fixture
def make_experiment(services: Services) -> MakeExperiment:
    """Store an experiment (running by default) and return it."""

    def make(
        name: str = "exp",
        variants: list[dict[str, Any]] | None = None,
        status: str = "running",
        window: int = 1800,
        clicks: tuple[str, ...] = ("click",),
        conversions: tuple[str, ...] = ("purchase",),
    ) -> Experiment:
        row = Experiment(
            name=name,
            status=status,
            salt=f"salt-{name}",
            variants=variants
            or [
                {"name": "control", "share_bp": 5000, "config": {}},
                {"name": "treatment", "share_bp": 5000, "config": {}},
            ],
            attribution_window_seconds=window,
            click_event_types=list(clicks),
            conversion_event_types=list(conversions),
            created_at=datetime.now(UTC),
            started_at=datetime.now(UTC) if status != "draft" else None,
        )
        with session_scope(services.sessions) as session:
            session.add(row)
        return row

    return make

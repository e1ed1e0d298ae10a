"""The serving fixtures (a demo shop, a model trained on it, the app) for monitoring tests."""

from __future__ import annotations

from tests.serving.conftest import (  # noqa: F401  (fixtures)
    app_client,
    served,
    serving_settings,
    shop,
    train_model,
)

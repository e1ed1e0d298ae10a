"""Alembic migrations are the schema's truth: they build it, and the models must agree."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db.engine import alembic_config, create_db_engine
from app.db.models import Base
from app.services import Services


def test_migrations_create_every_model_table(services: Services) -> None:
    tables = set(inspect(services.engine).get_table_names())
    assert {"items", "events", "pending_profile_updates", "alembic_version"} <= tables


def test_models_and_migrations_agree(services: Services) -> None:
    """A model change without a migration (or the reverse) fails here."""
    with services.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_downgrade_to_base_and_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every migration can be undone and replayed (on a scratch SQLite database)."""
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    engine = create_db_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert "events" in inspect(engine).get_table_names()
    engine.dispose()

"""Alembic migrations are the schema's truth: they build it, and the models must agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from app.db.engine import SCHEMA_HEAD, alembic_config, create_db_engine, schema_is_current
from app.db.models import Base, PendingProfileUpdate
from app.services import Services

ROOT = Path(__file__).resolve().parents[1]


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


def test_pending_marks_carry_over_to_one_row_per_batch_and_back(services: Services) -> None:
    """0005 groups the per-user pending marks of each batch into one row naming its users (the
    earliest time kept); its downgrade gives the per-user rows back."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    config = alembic_config(services.settings.database_url)
    early = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    late = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)

    def migrate(target: str, downgrade: bool = False) -> None:
        with services.engine.begin() as connection:
            config.attributes["connection"] = connection
            (command.downgrade if downgrade else command.upgrade)(config, target)

    migrate("0004_import_watermarks", downgrade=True)
    try:
        with services.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO pending_profile_updates (batch_id, user_id, created_at) "
                    "VALUES (:b, :u, :t)"
                ),
                [
                    {"b": "batch-1", "u": "u2", "t": late},
                    {"b": "batch-1", "u": "u1", "t": early},
                    {"b": "batch-2", "u": "u3", "t": late},
                ],
            )
        migrate("head")
        with services.sessions() as session:
            marks = {
                m.batch_id: (m.user_ids, m.created_at.replace(tzinfo=UTC))
                for m in session.scalars(select(PendingProfileUpdate))
            }
        assert marks == {"batch-1": (["u1", "u2"], early), "batch-2": (["u3"], late)}
        migrate("0004_import_watermarks", downgrade=True)
        with services.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT batch_id, user_id FROM pending_profile_updates ORDER BY user_id")
            ).all()
        assert [tuple(row) for row in rows] == [
            ("batch-1", "u1"),
            ("batch-1", "u2"),
            ("batch-2", "u3"),
        ]
    finally:
        migrate("head")


def test_one_pending_row_names_every_user_of_a_batch(services: Services) -> None:
    """The pending mark of a batch lists its users once each, sorted, on both databases."""
    events = [
        {"event_id": f"m{k}", "user_id": user, "item_id": "i1", "type": "view"}
        for k, user in enumerate(["b", "a", "b", "c"])
    ]
    outcome = services.ingestor.ingest_raw(events, update_profiles=False)
    assert outcome.accepted == 4
    with services.sessions() as session:
        marks = list(session.scalars(select(PendingProfileUpdate)))
    assert [(m.batch_id, m.user_ids) for m in marks] == [(outcome.batch_id, ["a", "b", "c"])]
    assert services.rebuilder.rebuild_batches([outcome.batch_id]) == 3
    assert services.profiles.read("b").events == 2


def test_schema_head_is_the_newest_migration(services: Services) -> None:
    """A new migration must move ``SCHEMA_HEAD`` too, or services would skip it."""
    url = services.engine.url.render_as_string(hide_password=False)
    assert ScriptDirectory.from_config(alembic_config(url)).get_current_head() == SCHEMA_HEAD
    assert schema_is_current(services.engine)


def test_a_current_schema_is_recognised_without_loading_alembic(services: Services) -> None:
    """A service process started on a migrated database does not keep Alembic in memory."""
    url = services.engine.url.render_as_string(hide_password=False)
    script = (
        "import sys\n"
        "from app.db.engine import create_db_engine, upgrade_schema\n"
        f"upgrade_schema(create_db_engine({url!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_a_database_without_a_schema_is_not_current(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert not schema_is_current(engine)

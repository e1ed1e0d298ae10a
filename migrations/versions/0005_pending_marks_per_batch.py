"""pending profile marks: one row per ingestion batch, with its users, instead of one per user

Revision ID: 0005_pending_marks_per_batch
Revises: 0004_import_watermarks
Create Date: 2026-11-27 05:40:00.000000
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005_pending_marks_per_batch"
down_revision: str | None = "0004_import_watermarks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "pending_profile_updates"
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _create(user_column: sa.Column[Any], batch_unique: bool) -> sa.Table:
    table = op.create_table(
        TABLE,
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        user_column,
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_profile_updates")),
    )
    op.create_index(
        op.f("ix_pending_profile_updates_batch_id"), TABLE, ["batch_id"], unique=batch_unique
    )
    op.create_index(op.f("ix_pending_profile_updates_created_at"), TABLE, ["created_at"])
    return table


def _drop() -> None:
    op.drop_index(op.f("ix_pending_profile_updates_created_at"), table_name=TABLE)
    op.drop_index(op.f("ix_pending_profile_updates_batch_id"), table_name=TABLE)
    op.drop_table(TABLE)


def _rows(users_column: str, users_type: sa.types.TypeEngine[Any]) -> list[sa.Row[Any]]:
    """Every mark as (batch_id, users column, created_at). Marks are transient (deleted once
    Redis applied their batch): the few left are carried over in memory."""
    marks = sa.table(
        TABLE,
        sa.column("batch_id", sa.String()),
        sa.column(users_column, users_type),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    return list(op.get_bind().execute(sa.select(*marks.c)))


def upgrade() -> None:
    users: dict[str, set[str]] = defaultdict(set)
    created: dict[str, datetime] = {}
    for batch_id, user_id, created_at in _rows("user_id", sa.String()):
        users[batch_id].add(user_id)
        created[batch_id] = min(created.get(batch_id, created_at), created_at)
    _drop()
    table = _create(sa.Column("user_ids", sa.JSON(), nullable=False), batch_unique=True)
    if users:
        op.bulk_insert(
            table,
            [
                {"batch_id": b, "user_ids": sorted(u), "created_at": created[b]}
                for b, u in users.items()
            ],
        )


def downgrade() -> None:
    rows = _rows("user_ids", sa.JSON())
    _drop()
    table = _create(sa.Column("user_id", sa.String(length=128), nullable=False), False)
    marks = [
        {"batch_id": batch_id, "user_id": user_id, "created_at": created_at}
        for batch_id, user_ids, created_at in rows
        for user_id in user_ids
    ]
    if marks:
        op.bulk_insert(table, marks)

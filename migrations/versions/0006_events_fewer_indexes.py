"""events: no index on item_id; the occurred_at index a BRIN on PostgreSQL

Every stored event paid for five indexes. Two served almost nothing: ``item_id`` only the
popularity count used while no model is loaded (a whole-table ``GROUP BY``, cached), and
``occurred_at`` only the rebuild of the trending counters (a range over the last week). On
PostgreSQL a BRIN index serves that range for next to nothing per insert (events arrive
roughly in time order); SQLite keeps its B-tree.

Revision ID: 0006_events_fewer_indexes
Revises: 0005_pending_marks_per_batch
Create Date: 2026-11-27 07:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_events_fewer_indexes"
down_revision: str | None = "0005_pending_marks_per_batch"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_events_item_id", table_name="events")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_events_occurred_at", table_name="events")
        op.create_index("ix_events_occurred_at", "events", ["occurred_at"], postgresql_using="brin")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_events_occurred_at", table_name="events")
        op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_index("ix_events_item_id", "events", ["item_id"])

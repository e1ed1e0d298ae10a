"""import watermarks

Revision ID: 0004_import_watermarks
Revises: 0003_experiments
Create Date: 2026-11-28 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_import_watermarks"
down_revision: str | None = "0003_experiments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_watermarks",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("column_name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("value_type", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_import_watermarks")),
    )


def downgrade() -> None:
    op.drop_table("import_watermarks")

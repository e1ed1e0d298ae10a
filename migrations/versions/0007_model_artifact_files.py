"""model artifacts kept in the database

Replicas on different hosts and a trainer running as a job share no folder: with
``RECSYS_ARTIFACT_STORE=database`` an artifact's files are kept here, in parts, beside the
registry row that names them.

Revision ID: 0007_model_artifact_files
Revises: 0006_events_fewer_indexes
Create Date: 2026-12-07 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_model_artifact_files"
down_revision: str | None = "0006_events_fewer_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_artifact_files",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version"],
            ["model_versions.version"],
            name=op.f("fk_model_artifact_files_version_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version", "name", "part", name=op.f("pk_model_artifact_files")),
    )


def downgrade() -> None:
    op.drop_table("model_artifact_files")

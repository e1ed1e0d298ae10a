"""monitoring: served lists, training runs, model canaries

``served_lists`` keeps each answer as shown, for online quality per model version and
variant; ``training_runs`` keeps each retraining decision, for freshness gauges;
``model_versions.canary`` keeps a version's canary and its decision.

Revision ID: 0008_monitoring
Revises: 0007_model_artifact_files
Create Date: 2026-12-07 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_monitoring"
down_revision: str | None = "0007_model_artifact_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "served_lists",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("recommendation_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("experiment", sa.String(length=64), nullable=True),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_served_lists")),
    )
    op.create_index(
        op.f("ix_served_lists_recommendation_id"), "served_lists", ["recommendation_id"]
    )
    op.create_index(op.f("ix_served_lists_shown_at"), "served_lists", ["shown_at"])
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("triggers", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    op.create_index(op.f("ix_training_runs_started_at"), "training_runs", ["started_at"])
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("canary", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("canary")
    op.drop_index(op.f("ix_training_runs_started_at"), table_name="training_runs")
    op.drop_table("training_runs")
    op.drop_index(op.f("ix_served_lists_shown_at"), table_name="served_lists")
    op.drop_index(op.f("ix_served_lists_recommendation_id"), table_name="served_lists")
    op.drop_table("served_lists")

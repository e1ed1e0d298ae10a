"""SQLAlchemy 2.0 tables. Alembic migrations in ``migrations/`` are the schema's truth;
a test fails when the two disagree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LENGTH = 128

# Constraint names that are stable across SQLite and PostgreSQL, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Item(Base):
    """An item of the catalogue. Deleting one hides it; its history stays."""

    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    title: Mapped[str | None] = mapped_column(String(1000))
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    available_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    available_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    # True while the item exists only because an event named it before the catalogue did.
    is_stub: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Event(Base):
    """One thing a user did to an item, stored exactly once per ``event_id``."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    item_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recommendation_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (
        Index("ix_events_user_id_occurred_at", "user_id", "occurred_at"),
        # For the trending counters' rebuild (a week's range): BRIN on PostgreSQL, cheap to
        # keep up as events arrive in time order (migration 0006).
        Index("ix_events_occurred_at", "occurred_at", postgresql_using="brin"),
    )


class PendingProfileUpdate(Base):
    """The users of one ingestion batch, whose live profiles may lag behind the database.

    One row per batch, written in the same transaction as the batch's events and deleted once
    Redis has applied them, so a crash or an unreachable Redis between the two leaves a trace
    that the reconciler turns into a rebuild from the database.
    """

    __tablename__ = "pending_profile_updates"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(36), index=True, unique=True)
    user_ids: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ModelVersion(Base):
    """One trained model: where its artifact is, what it was trained on, how good it was, and
    whether it serves. Exactly one version is ``active`` at a time (or none)."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    data_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    data_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    n_events: Mapped[int] = mapped_column(BigInteger)
    n_users: Mapped[int] = mapped_column(Integer)
    n_items: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact_path: Mapped[str] = mapped_column(String(1000))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The canary of this version, when it went out as one: experiment, share, state and the
    # decision with its figures (``app.monitoring.canary``).
    canary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (
        # At most one active version, enforced by the database itself.
        Index(
            "uq_model_versions_one_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )


class ModelArtifactFile(Base):
    """One part of one file of a model artifact kept in the database (``RECSYS_ARTIFACT_STORE=
    database``): the files of a version are its parts in order. Deleting the version deletes
    them."""

    __tablename__ = "model_artifact_files"

    version: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("model_versions.version", ondelete="CASCADE"),
        primary_key=True,
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Experiment(Base):
    """An A/B test: variants with traffic shares (basis points summing to 10,000) and a serving
    config each. At most one experiment is ``running`` at a time, enforced by the database."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    # [{"name": ..., "share_bp": ..., "config": {...}}, ...]; the first variant is the control.
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    attribution_window_seconds: Mapped[int] = mapped_column(Integer)
    click_event_types: Mapped[list[str]] = mapped_column(JSON)
    conversion_event_types: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "uq_experiments_one_running",
            "status",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
    )


class ExperimentExposure(Base):
    """One recommendation answer shown under an experiment: who saw which items in which variant.

    ``attributable_until`` is ``shown_at`` plus the experiment's attribution window, stored so
    attribution joins compare plain timestamps on every database."""

    __tablename__ = "experiment_exposures"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(Integer, ForeignKey("experiments.id"))
    recommendation_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    variant: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    model_version: Mapped[str | None] = mapped_column(String(64))
    items: Mapped[list[str]] = mapped_column(JSON)
    shown_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attributable_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_experiment_exposures_experiment_id_user_id_shown_at",
            "experiment_id",
            "user_id",
            "shown_at",
        ),
        Index("ix_experiment_exposures_recommendation_id", "recommendation_id"),
    )


class ImportWatermark(Base):
    """How far an incremental import has read its source: every row whose watermark column is
    at most ``value`` is committed, so the next run reads only larger ones."""

    __tablename__ = "import_watermarks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    target: Mapped[str] = mapped_column(String(16))
    column_name: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(Text)
    value_type: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ServedList(Base):
    """One answer of the recommendations route as shown: what the online-quality report
    attributes clicks and conversions to (by ``recommendation_id``), per model version and
    variant. Rows older than the longest monitoring window are deleted by the monitor."""

    __tablename__ = "served_lists"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    recommendation_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    model_version: Mapped[str | None] = mapped_column(String(64))
    experiment: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(String(64))
    items: Mapped[list[str]] = mapped_column(JSON)
    scores: Mapped[list[float]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    shown_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class TrainingRun(Base):
    """One decision of ``training retrain`` (or one ``training train``): why it ran or not,
    and how it ended. The service exports the latest of each outcome as freshness gauges."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # skipped, promoted, candidate (the gate kept the active one), canary, held, failed
    outcome: Mapped[str] = mapped_column(String(16))
    version: Mapped[str | None] = mapped_column(String(64))
    triggers: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)

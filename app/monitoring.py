"""Prometheus collectors of the service's own behaviour (HTTP metrics come from the
instrumentator)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter(
    "recsys_events_total",
    "Events received, by event type and outcome (accepted, duplicate, rejected).",
    ["type", "outcome"],
)
PROFILE_UPDATES = Counter(
    "recsys_profile_updates_total",
    "Profile updates after a database commit, by outcome (updated, pending).",
    ["outcome"],
)
PROFILE_REBUILDS = Counter(
    "recsys_profile_rebuilds_total", "User profiles rebuilt from the database."
)
PENDING_PROFILE_USERS = Gauge(
    "recsys_pending_profile_users",
    "Users whose live profile waits for a rebuild, as of the last reconciler pass.",
)
ITEMS_WRITTEN = Counter(
    "recsys_items_written_total", "Catalogue writes, by outcome (stored, rejected).", ["outcome"]
)
MODEL_RELOAD_FAILURES = Counter(
    "recsys_model_reload_failures_total",
    "Model versions that failed to load (corrupt, incompatible or missing artifact); the "
    "previous model kept serving.",
)
RECOMMENDATION_CACHE = Counter(
    "recsys_recommendation_cache_total",
    "Requests for a new list of recommendations, by whether a cached list answered them "
    "(hit), none was kept (miss), or the one kept was outdated (stale).",
    ["outcome"],
)
MODEL_RELOADS = Counter("recsys_model_reloads_total", "Model versions swapped in.")
MODEL_INFO = Gauge(
    "recsys_model_info",
    "1 for the model version this process serves; no sample while it serves none.",
    ["version"],
)
MODEL_LOADED = Gauge(
    "recsys_model_loaded", "1 while a model is served, 0 while trending/popular stand in."
)
EXPOSURES_WRITTEN = Counter(
    "recsys_exposures_written_total", "Experiment exposures written to the database."
)
EXPOSURES_DROPPED = Counter(
    "recsys_exposures_dropped_total",
    "Experiment exposures lost, by reason: queue_full (the writer could not keep up) or "
    "write_failed (the database refused a batch after retries).",
    ["reason"],
)
EXPOSURE_QUEUE_DEPTH = Gauge(
    "recsys_exposure_queue_depth", "Exposures waiting to be written, at the last batch."
)
VARIANT_MODEL_FAILURES = Counter(
    "recsys_variant_model_failures_total",
    "Model versions named by a running experiment's variant that could not be loaded; the "
    "active model served that variant instead.",
)
STREAM_MESSAGES = Counter(
    "recsys_stream_messages_total",
    "Stream messages handled by the consumer, by outcome (accepted, duplicate, dead_lettered).",
    ["stream", "outcome"],
)
STREAM_CLAIMED = Counter(
    "recsys_stream_claimed_total",
    "Messages claimed from consumers that stopped acknowledging them (crashed or stuck).",
    ["stream"],
)
STREAM_LAG = Gauge(
    "recsys_stream_consumer_lag",
    "Entries of the stream not yet delivered to the consumer group (Redis 7 and later).",
    ["stream", "group"],
)
STREAM_LAG_SECONDS = Gauge(
    "recsys_stream_consumer_lag_seconds",
    "Age of the oldest entry not yet delivered to the consumer group; 0 when it is caught up.",
    ["stream", "group"],
)
STREAM_PENDING = Gauge(
    "recsys_stream_pending_messages",
    "Entries delivered to the consumer group and not yet acknowledged.",
    ["stream", "group"],
)
TRACKED_INVALIDATIONS = Counter(
    "recsys_tracked_invalidations_total",
    "Kept lists copied into process memory that Redis said changed (client-side caching).",
)

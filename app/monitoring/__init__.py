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
DEGRADED_ANSWERS = Counter(
    "recsys_degraded_answers_total",
    "Answers made without what Redis holds (live profile, trending, stored lists) while it is "
    "unreachable, by endpoint (recommendations, trending).",
    ["endpoint"],
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
SERVED_LISTS_WRITTEN = Counter(
    "recsys_served_lists_written_total",
    "Answers of the recommendations route written to the database for online quality.",
)
SERVED_LISTS_DROPPED = Counter(
    "recsys_served_lists_dropped_total",
    "Answers not recorded for online quality, by reason: queue_full or write_failed.",
    ["reason"],
)
DEPENDENCY_UP = Gauge(
    "recsys_dependency_up",
    "1 when the dependency (database, redis) answered the last readiness check, else 0.",
    ["dependency"],
)
PROFILE_UPDATE_LAG = Gauge(
    "recsys_profile_update_lag_seconds",
    "Age of the oldest batch whose live profiles wait for Redis, as of the last reconciler "
    "pass; 0 when none waits.",
)

# -- The monitor's figures: computed by one process per interval, exported by every one. ------
DRIFT_PSI = Gauge(
    "recsys_drift_psi",
    "Population stability index of a feature of live events (window) against the served "
    "version's training data.",
    ["window", "feature"],
)
DRIFT_P_VALUE = Gauge(
    "recsys_drift_p_value",
    "p-value of the feature's chi-square (categorical) or Kolmogorov-Smirnov (numeric) test.",
    ["window", "feature"],
)
DRIFT_STATUS = Gauge(
    "recsys_drift_status",
    "Drift verdict of a feature: 0 ok, 1 warn, 2 drift; no sample while the window holds too "
    "few events to judge.",
    ["window", "feature"],
)
DRIFT_WINDOW_EVENTS = Gauge("recsys_drift_window_events", "Events in the drift window.", ["window"])
ONLINE_LISTS = Gauge(
    "recsys_online_lists",
    "Distinct lists served in the window, per model version and variant.",
    ["window", "model_version", "variant"],
)
ONLINE_CTR = Gauge(
    "recsys_online_ctr",
    "Share of the lists served in the window with a click on one of their items.",
    ["window", "model_version", "variant"],
)
ONLINE_CONVERSION = Gauge(
    "recsys_online_conversion_rate",
    "Share of the lists served in the window followed by a conversion on one of their items.",
    ["window", "model_version", "variant"],
)
ONLINE_COVERAGE = Gauge(
    "recsys_online_coverage",
    "Share of the eligible catalogue shown at least once in the window.",
    ["window", "model_version", "variant"],
)
ONLINE_NOVELTY = Gauge(
    "recsys_online_novelty_bits",
    "Mean self-information (-log2 of the training popularity share) of the items shown.",
    ["window", "model_version", "variant"],
)
ONLINE_POPULARITY = Gauge(
    "recsys_online_popularity_percentile",
    "Mean training-popularity percentile of the items shown (1 is the most popular item).",
    ["window", "model_version", "variant"],
)
ONLINE_LATENCY = Gauge(
    "recsys_online_latency_seconds",
    "Latency of the answers served in the window, by quantile.",
    ["window", "model_version", "variant", "quantile"],
)
ONLINE_CTR_REGRESSION = Gauge(
    "recsys_online_ctr_regression",
    "1 when the active version's CTR in the window is significantly below the previous "
    "version's (two-proportion z-test), else 0; no sample while either has too few lists.",
    ["window"],
)
MODEL_AGE = Gauge("recsys_model_age_seconds", "Seconds since the active model version was trained.")
MODEL_AGE_LIMIT = Gauge(
    "recsys_model_age_limit_seconds",
    "Model age past which `training retrain` trains again (RECSYS_RETRAIN_MAX_MODEL_AGE_HOURS).",
)
EVENTS_SINCE_TRAINING = Gauge(
    "recsys_events_since_training",
    "Events stored since the active model version was trained.",
)
TRAINING_LAST_RUN = Gauge(
    "recsys_training_last_run_timestamp_seconds",
    "When the last training run of each outcome finished (Unix time): skipped, promoted, "
    "candidate, canary, held, failed.",
    ["outcome"],
)
TRAINING_RUNS = Gauge(
    "recsys_training_runs",
    "Training runs recorded in the database, by outcome.",
    ["outcome"],
)
CANARY_ACTIVE = Gauge(
    "recsys_canary_active",
    "1 while a model version is served to a share of users as a canary.",
    ["version"],
)
CANARY_EXPOSURES = Gauge(
    "recsys_canary_exposures",
    "Lists served in the running canary so far, per arm (control, canary).",
    ["arm"],
)
CANARY_DECISIONS = Gauge(
    "recsys_canary_decisions",
    "Canary decisions recorded in the registry, by decision (promoted, rolled_back).",
    ["decision"],
)
MONITOR_LAST_RUN = Gauge(
    "recsys_monitor_last_run_timestamp_seconds",
    "When the figures of drift, online quality and freshness were last computed (Unix time).",
)
MONITOR_RUN_SECONDS = Gauge(
    "recsys_monitor_run_seconds", "How long the last computation of those figures took."
)

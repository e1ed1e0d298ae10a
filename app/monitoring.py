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

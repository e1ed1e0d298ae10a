"""Whether Redis is away, as the serving reads last found it.

A read that fails marks Redis unreachable for ``RETRY_SECONDS``: the requests in that time
answer without it (degraded) at once, instead of each waiting for its own connection attempt
to fail, which takes up to ``RECSYS_REDIS_TIMEOUT_SECONDS`` when the server hangs rather than
refuses. The first request after that tries again.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# While Redis stays away: one warning per interval, not one per request.
WARN_EVERY_SECONDS = 30.0


class Outage:
    def __init__(self, retry_seconds: float = RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self._until = float("-inf")
        self._warned_at = float("-inf")
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True while reads should not try Redis."""
        return time.monotonic() < self._until

    def failed(self, doing: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._until = now + self.retry_seconds
            self._failures += 1
            if now - self._warned_at < WARN_EVERY_SECONDS:
                return
            failures, self._failures, self._warned_at = self._failures, 0, now
        log.warning(
            "Redis is unreachable (%s: %s); %d read(s) answered without it since the last warning",
            doing,
            exc,
            failures,
        )

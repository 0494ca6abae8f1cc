"""A logger for repeated failures: at most one line per interval, with the suppressed count."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("decision_service")


class RateLimitedLog:
    """Logs a repeated failure at most once per interval, with how many were suppressed."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self._interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (0.0, 0))
        if now - last >= self._interval_s:
            extra = f" ({suppressed} more since last report)" if suppressed else ""
            log.warning("%s%s", message, extra)
            self._last[key] = (now, 0)
        else:
            self._last[key] = (last, suppressed + 1)

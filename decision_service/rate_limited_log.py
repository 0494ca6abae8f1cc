"""A logger for repeated failures: at most one line per interval, with the suppressed count."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("decision_service")


class RateLimitedLog:
    """Logs a repeated failure at most once per interval and key, with how many were suppressed.

    Keys must come from a bounded set (a failure kind, a method name), never from request data:
    one entry is kept per key.
    """

    def __init__(self, interval_s: float = 5.0, logger: logging.Logger | None = None) -> None:
        self._interval_s = interval_s
        self._log = logger or log
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str) -> None:
        self._emit(logging.WARNING, key, message, None)

    def error(self, key: str, message: str, exc_info: BaseException | None = None) -> None:
        """Like ``warning`` at ERROR; the reported line carries ``exc_info``'s traceback."""
        self._emit(logging.ERROR, key, message, exc_info)

    def _emit(self, level: int, key: str, message: str, exc_info: BaseException | None) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (float("-inf"), 0))
            report = now - last >= self._interval_s
            self._last[key] = (now, 0) if report else (last, suppressed + 1)
        if report:
            extra = f" ({suppressed} more since last report)" if suppressed else ""
            self._log.log(level, "%s%s", message, extra, exc_info=exc_info)

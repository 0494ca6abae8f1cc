"""What every executor does around its stages: timing, degraded flags, counting, logging.

One implementation for the recommendation and fraud executors, so both report timings,
degradations and side-effect failures the same way (and to the same telemetry).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from decision_service.domain.recommendation import Degradation
from decision_service.features import online_store
from decision_service.rate_limited_log import RateLimitedLog
from decision_service.telemetry import Telemetry


class StageBook:
    def __init__(self, use_case: str, telemetry: Telemetry | None = None) -> None:
        self.use_case = use_case
        self.telemetry = telemetry or Telemetry.disabled()
        self.degraded_counts: dict[tuple[str, str], int] = {}
        self._warn = RateLimitedLog()

    def degrade(
        self, degraded: list[Degradation], stage: str, reason: str, exc: BaseException | None = None
    ) -> None:
        """Flags the answer, counts it, and logs the cause (at most once per 5 s per kind)."""
        degraded.append(Degradation(stage, reason))
        key = (stage, reason)
        self.degraded_counts[key] = self.degraded_counts.get(key, 0) + 1
        self.telemetry.degraded(self.use_case, stage, reason)
        if exc is not None:
            self._warn.warning(
                f"{self.use_case}:{stage}:{reason}",
                f"degraded {self.use_case} {stage} ({reason}): {type(exc).__name__}: {exc} "
                f"[total {self.degraded_counts[key]}]",
            )

    @contextmanager
    def timed(self, stage_ms: dict[str, float], name: str) -> Iterator[None]:
        """Times a stage into ``stage_ms`` (and a span + histogram when telemetry is on)."""
        start = time.perf_counter()
        try:
            if self.telemetry.enabled:
                with self.telemetry.stage_span(self.use_case, name):
                    yield
            else:  # the hot path without telemetry: no span context manager at all
                yield
        finally:
            ms = (time.perf_counter() - start) * 1000.0
            stage_ms[name] = ms
            self.telemetry.stage_done(self.use_case, name, ms)

    async def run_side_effects(self, effects: Iterable[Any], state: Any, decision: Any) -> None:
        """Runs each side effect in order; a failing one is counted and logged, never raised.

        An effect's ``apply`` may return an awaitable (a write the answer's guarantees depend
        on, e.g. the decision index): it is awaited here, before the next effect and before
        the answer is sent; if it fails, the answer is flagged ``{effect name}:{store
        failure}`` in ``decision.degraded`` (so the decision log records it too)."""
        for effect in effects:
            try:
                pending = effect.apply(state, decision)
                if pending is not None:
                    try:
                        await pending
                    except Exception as exc:  # noqa: BLE001 - flagged, never raised
                        self.degrade(decision.degraded, effect.name, store_failure(exc.__cause__ or exc), exc)
                        continue
            except Exception as exc:  # noqa: BLE001 - a side effect never fails the answer
                key = ("side_effects", f"{effect.name}_failed")
                self.degraded_counts[key] = self.degraded_counts.get(key, 0) + 1
                self._warn.warning(key[1], f"side effect {effect.name} failed: {exc!r}")


def store_failure(exc: BaseException) -> str:
    """The degraded reason for a store error: too slow, or unreachable."""
    return "store_timeout" if isinstance(exc, online_store.STORE_TIMEOUTS) else "store_unavailable"

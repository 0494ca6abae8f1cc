"""What every executor does around its stages: timing, degraded flags, counting, logging.

One implementation for the recommendation and fraud executors, so both report timings,
degradations and side-effect failures the same way (and to the same telemetry).
"""

from __future__ import annotations

import asyncio
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

    async def run_side_effects(
        self, effects: Iterable[Any], state: Any, decision: Any, deadline: float
    ) -> None:
        """Runs each side effect in order; a failing one is counted and logged, never raised.

        An effect's ``apply`` may return an awaitable (a write the answer's guarantees depend
        on, e.g. the decision index): it is awaited here, before the next effect and before
        the answer is sent, until ``deadline`` (event-loop time: the request's budget); if it
        fails or is late, the answer is flagged ``{effect name}:{store failure}`` in
        ``decision.degraded`` (so the decision log records it too). The write itself is
        shielded: it still lands when the deadline passes or the caller goes away, and if
        the call is cancelled the remaining effects (e.g. the decision log) are still applied
        before the cancellation propagates: a decision is never left unlogged."""
        remaining = list(effects)
        while remaining:
            effect = remaining.pop(0)
            try:
                pending = effect.apply(state, decision)
            except Exception as exc:  # noqa: BLE001 - a side effect never fails the answer
                self._side_effect_failed(effect, exc)
                continue
            if pending is None:
                continue
            write = asyncio.ensure_future(pending)
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(write)
            except asyncio.CancelledError:
                for rest in remaining:  # the caller left: apply the rest without waiting
                    try:
                        later = rest.apply(state, decision)
                        if later is not None:
                            _background(asyncio.ensure_future(later))
                    except Exception as exc:  # noqa: BLE001
                        self._side_effect_failed(rest, exc)
                _background(write)
                raise
            except TimeoutError as exc:
                _background(write)
                self.degrade(decision.degraded, effect.name, "store_timeout", exc)
            except Exception as exc:  # noqa: BLE001 - flagged, never raised
                self.degrade(decision.degraded, effect.name, store_failure(exc.__cause__ or exc), exc)

    def _side_effect_failed(self, effect: Any, exc: Exception) -> None:
        key = ("side_effects", f"{effect.name}_failed")
        self.degraded_counts[key] = self.degraded_counts.get(key, 0) + 1
        self._warn.warning(key[1], f"side effect {effect.name} failed: {exc!r}")


_BACKGROUND: set[asyncio.Future[Any]] = set()


def _background(task: asyncio.Future[Any]) -> None:
    """Keeps a write that outlives its request referenced until it ends; its error (already
    counted by the store) is retrieved so asyncio does not report it as never retrieved."""
    if task.done():
        if not task.cancelled():
            task.exception()
        return
    _BACKGROUND.add(task)

    def done(t: asyncio.Future[Any]) -> None:
        _BACKGROUND.discard(t)
        if not t.cancelled():
            t.exception()

    task.add_done_callback(done)


def store_failure(exc: BaseException) -> str:
    """The degraded reason for a store error: too slow, or unreachable."""
    return "store_timeout" if isinstance(exc, online_store.STORE_TIMEOUTS) else "store_unavailable"

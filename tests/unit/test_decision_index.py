"""The decision index's shutdown: it must end even when a Redis call swallows a cancellation."""

from __future__ import annotations

import asyncio
import time

from decision_service.domain.outcomes import DecisionRef
from decision_service.outcomes.decision_index import DecisionIndex


class SwallowingPipeline:
    """A Redis pipeline whose execute turns a cancellation into an error, as a client library
    may do while it tears down a connection (fault injection)."""

    def __init__(self, client: SwallowingRedis) -> None:
        self._client = client

    def set(self, *args, **kwargs) -> None:
        self._client.sets += 1

    async def execute(self) -> None:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed while cancelling") from None


class SwallowingRedis:
    def __init__(self) -> None:
        self.sets = 0

    def pipeline(self, transaction: bool = False) -> SwallowingPipeline:
        return SwallowingPipeline(self)


def test_stop_ends_the_flush_loop_even_if_a_write_swallows_the_cancellation():
    async def body() -> tuple[float, int]:
        client = SwallowingRedis()
        index = DecisionIndex(client, ttl_s=60, local_capacity=100, flush_interval_ms=1)  # type: ignore[arg-type]
        index.start()
        for i in range(50):
            index.remember(DecisionRef(f"d{i}", "recommendation", "u1", 0, ()))
            await asyncio.sleep(0.002)  # a flush is in flight most of the time
        index.remember(DecisionRef("last", "recommendation", "u1", 0, ()))
        t0 = time.perf_counter()
        await asyncio.wait_for(index.stop(), timeout=10)
        return time.perf_counter() - t0, client.sets

    took, sets = asyncio.run(body())
    assert took < 1.0  # one interval plus one write, not the last-resort guard
    assert sets == 51  # everything remembered was written, the last one by stop()

"""Kind: an awaited side effect (the decision-index write) must neither outlive the request's
budget nor, when the caller goes away, keep the decision from being logged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from decision_service.engine import StageBook


@dataclass
class Decision:
    degraded: list = field(default_factory=list)


class SlowWrite:
    name = "remember_decision"

    def __init__(self) -> None:
        self.landed = asyncio.Event()

    def apply(self, state, decision):
        async def write() -> None:
            await asyncio.sleep(0.3)
            self.landed.set()

        return write()


class Log:
    name = "log_decision"

    def __init__(self) -> None:
        self.logged: list = []

    def apply(self, state, decision) -> None:
        self.logged.append(decision)


def test_kind_side_effect_outliving_the_budget_is_flagged_and_still_lands():
    async def scenario():
        write, log = SlowWrite(), Log()
        decision = Decision()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await StageBook("recommendation").run_side_effects([write, log], None, decision, start + 0.05)
        waited = loop.time() - start
        assert log.logged == [decision]
        assert [(d.stage, d.reason) for d in decision.degraded] == [("remember_decision", "store_timeout")]
        await asyncio.wait_for(write.landed.wait(), 5)  # shielded: the write still completes
        return waited

    waited = asyncio.run(scenario())
    assert waited < 0.25  # the 0.3 s write was not waited for past the 0.05 s deadline


def test_kind_side_effect_cancelled_caller_still_logs_the_decision():
    async def scenario():
        write, log = SlowWrite(), Log()
        decision = Decision()
        book = StageBook("fraud")
        deadline = asyncio.get_running_loop().time() + 10
        task = asyncio.create_task(book.run_side_effects([write, log], None, decision, deadline))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log.logged == [decision]  # applied although the call was cancelled mid-write
        await asyncio.wait_for(write.landed.wait(), 5)

    asyncio.run(scenario())

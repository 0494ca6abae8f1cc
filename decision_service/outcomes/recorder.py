"""RecordOutcome: attribute each outcome to its decision, update online state, log it.

Order matters for freshness: the online-state update (e.g. the clicked item joins the
user's seen set) is written to Redis before RecordOutcome returns, so the very next
decision already reflects it. The outcome log is the source of truth for training: an
outcome is logged even when its decision is unknown (flagged) or Redis is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.decision_log.writer import ParquetLogWriter
from decision_service.domain.outcomes import DecisionRef, Effect, Outcome
from decision_service.errors import Overloaded
from decision_service.features.online_store import now_ms, seen_key
from decision_service.outcomes.decision_index import DecisionIndex
from decision_service.rate_limited_log import RateLimitedLog

log = logging.getLogger(__name__)

EffectHandler = Callable[[aioredis.client.Pipeline, Outcome, DecisionRef], None]
"""Adds the Redis commands of one effect for one outcome to a pipeline."""


class OutcomeLogFull(Overloaded):
    """The outcome log cannot take more now; the caller should retry (RESOURCE_EXHAUSTED)."""


class OutcomeRecorder:
    def __init__(
        self,
        index: DecisionIndex,
        client: aioredis.Redis,
        writer: ParquetLogWriter[OutcomeLogRecord],
        max_seen_items: int,
    ) -> None:
        self._index = index
        self._redis = client
        self._writer = writer
        self._max_seen = max_seen_items
        self._warn = RateLimitedLog()
        self.handlers: dict[Effect, EffectHandler] = {Effect.SEEN: self._mark_seen}
        self.state_update_errors = 0

    def register(self, effect: Effect, handler: EffectHandler) -> None:
        """Lets a use case (e.g. fraud) own how its outcomes change online state."""
        self.handlers[effect] = handler

    async def record(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Returns, per outcome, whether its decision is known.

        On failure: Redis problems are counted and logged, and the outcome is still logged
        (flagged unknown if it could not be attributed); a full outcome log raises
        OutcomeLogFull before anything is logged, so a retry does not duplicate.
        """
        if self._writer.config.queue_size - self._writer.queue_depth < len(outcomes):
            raise OutcomeLogFull(f"outcome log is full ({self._writer.queue_depth} queued); retry later")
        refs = await self._index.lookup([o.decision_id for o in outcomes])
        await self._apply_effects(outcomes, refs)
        received = now_ms()
        known = []
        for outcome in outcomes:
            ref = refs.get(outcome.decision_id)
            known.append(ref is not None)
            self._writer.submit(OutcomeLogRecord(outcome, received, ref))
        return known

    async def _apply_effects(self, outcomes: Sequence[Outcome], refs: dict[str, DecisionRef | None]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for outcome in outcomes:
            ref = refs.get(outcome.decision_id)
            if ref is None:
                continue
            for effect in outcome.type.effects:
                handler = self.handlers.get(effect)
                if handler is not None:
                    handler(pipe, outcome, ref)
        if not len(pipe):
            return
        try:
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - freshness is best effort; the log is not
            self.state_update_errors += 1
            self._warn.warning("effects", f"outcomes: online state update failed: {exc!r}")

    def _mark_seen(self, pipe: aioredis.client.Pipeline, outcome: Outcome, ref: DecisionRef) -> None:
        key = seen_key(ref.user_id)
        pipe.zadd(key, {outcome.item_id: float(outcome.occurred_at_ms)})
        pipe.zremrangebyrank(key, 0, -self._max_seen - 1)

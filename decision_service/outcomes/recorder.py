"""RecordOutcome: attribute each outcome to its decision, update online state, log it.

Order matters, and each step either completes or the call fails with nothing logged:
  1. attribution: the decision index (local tier, then Redis). Redis unreachable for an id
     the local tier lacks -> DecisionIndexUnavailable (UNAVAILABLE, retryable).
  2. effects on online state (e.g. the clicked item joins the user's seen set, a chargeback
     blocks the card), written to Redis before RecordOutcome returns, so the very next
     decision already reflects them. The handlers are the use cases' (``UseCase.effects``);
     each returns one store change (features/store.py), idempotent per (decision, effect): a
     duplicate, a retry or a second fraud verdict for one payment changes nothing more
     (recommendation ``seen``: the item's time only moves forward; fraud
     ``fraud_confirmed``: a once-key applied atomically with the effect). All changes of a
     call go to the store in one round trip. The store failing here ->
     OutcomeEffectsUnavailable (UNAVAILABLE); what did commit stays, and the retry applies
     only the rest (once-keys), so nothing is applied twice or half.
  3. the outcome log (the source of truth for training), only after 1 and 2 succeeded: a
     call answered UNAVAILABLE logged nothing. The log is at least once: a client retrying a
     call whose OK it never received logs that outcome again; the offline joins aggregate
     per decision (earliest occurrence, latest verdict), so a duplicate row changes nothing.
An outcome whose decision is unknown (expired or never served) is logged, flagged, with no
effect. An outcome whose type belongs to another use case than its decision (a chargeback
sent for a recommendation) is a client error: the whole call is refused with
INVALID_ARGUMENT naming ``outcomes[i].type``, before any effect or log write (it would
otherwise apply one use case's effects to another's decision and pollute both training sets).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.decision_log.writer import ParquetLogWriter
from decision_service.domain.decision import now_ms
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.errors import InvalidArgument, NotReady, Overloaded
from decision_service.features.store import Change, StateWrites
from decision_service.outcomes.decision_index import DecisionIndex
from decision_service.rate_limited_log import RateLimitedLog

log = logging.getLogger(__name__)

EffectHandler = Callable[[Outcome, DecisionRef, int], Change]
"""The store change of one effect for one outcome. The last argument is how long (ms) the
change must stay idempotent (its once-key's TTL): the decision's attribution TTL."""


class OutcomeLogFull(Overloaded):
    """The outcome log cannot take more now; the caller should retry (RESOURCE_EXHAUSTED)."""


class OutcomeEffectsUnavailable(NotReady):
    """Online state could not be updated; nothing was logged; retry (UNAVAILABLE)."""


class OutcomeRecorder:
    def __init__(
        self,
        index: DecisionIndex,
        writes: StateWrites,
        writer: ParquetLogWriter[OutcomeLogRecord],
        handlers: Mapping[str, EffectHandler],
    ) -> None:
        """``handlers``: effect name -> handler, from every registered use case
        (``UseCase.effects``); an outcome type's effect without a handler is a start-up error."""
        self._index = index
        self._writes = writes
        self._writer = writer
        self._warn = RateLimitedLog()
        self.handlers: dict[str, EffectHandler] = dict(handlers)
        self.state_update_errors = 0

    async def record(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Returns, per outcome, whether its decision is known.

        On failure (nothing is logged, so a retry does not duplicate): InvalidArgument when an
        outcome's type belongs to another use case than its decision; OutcomeLogFull when
        the outcome log cannot take them; DecisionIndexUnavailable / OutcomeEffectsUnavailable
        when Redis is needed and unreachable (counted in ``state_update_errors``).
        """
        if self._writer.config.queue_size - self._writer.queue_depth < len(outcomes):
            raise OutcomeLogFull(f"outcome log is full ({self._writer.queue_depth} queued); retry later")
        refs = await self._index.lookup([o.decision_id for o in outcomes])
        for i, outcome in enumerate(outcomes):
            ref = refs.get(outcome.decision_id)
            if ref is None:
                continue
            if ref.use_case != outcome.type.use_case:
                raise InvalidArgument(
                    f"outcomes[{i}].type",
                    f"{outcome.type.name!r} is a {outcome.type.use_case} outcome, but decision "
                    f"{outcome.decision_id} is a {ref.use_case} decision",
                )

        await self._apply_effects(outcomes, refs)
        received = now_ms()
        known = []
        for outcome in outcomes:
            ref = refs.get(outcome.decision_id)
            known.append(ref is not None)
            self._writer.submit(OutcomeLogRecord(outcome, received, ref))
        return known

    async def _apply_effects(self, outcomes: Sequence[Outcome], refs: dict[str, DecisionRef | None]) -> None:
        changes: list[Change] = []
        for outcome in outcomes:
            ref = refs.get(outcome.decision_id)
            if ref is None:
                continue
            once_ttl_ms = self._index.ttl_s(ref.use_case) * 1000
            for effect in outcome.type.effects:
                changes.append(self.handlers[effect](outcome, ref, once_ttl_ms))
        if not changes:
            return
        try:
            await self._writes.write_many(changes)
        except Exception as exc:  # noqa: BLE001 - told to the caller, who retries
            self.state_update_errors += 1
            self._warn.warning("effects", f"outcomes: online state update failed: {exc!r}")
            raise OutcomeEffectsUnavailable(
                "online state (Redis) could not be updated; no outcome of this call was recorded, retry"
            ) from exc

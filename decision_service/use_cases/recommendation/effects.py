"""How recommendation outcomes change online state: an interacted item joins the user's seen set."""

from __future__ import annotations

import redis.asyncio as aioredis

from decision_service.domain.decision import now_ms
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features.online_store import seen_key
from decision_service.outcomes.recorder import EffectHandler

SEEN = "seen"
"""The effect name: the item joins the user's seen set (and is filtered out from then on)."""


def mark_seen(max_seen_items: int) -> EffectHandler:
    """The SEEN handler keeping the newest ``max_seen_items`` per user.

    Idempotent without a marker: the item's score only ever moves forward (GT), and trimming
    to the newest ``max_seen_items`` gives the same set however often it runs. The score is
    the client's ``occurred_at`` clamped to [decision time, now]: a client clock cannot push
    the item out of the set at once (1970) or keep it there (future)."""

    def handle(pipe: aioredis.client.Pipeline, outcome: Outcome, ref: DecisionRef, once_ttl_ms: int) -> None:
        key = seen_key(ref.user_id)
        score = min(max(outcome.occurred_at_ms, ref.decided_at_ms), now_ms())
        pipe.zadd(key, {outcome.item_id: float(score)}, gt=True)
        pipe.zremrangebyrank(key, 0, -max_seen_items - 1)

    return handle

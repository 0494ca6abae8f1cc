"""How recommendation outcomes change online state: an interacted item joins the user's seen set."""

from __future__ import annotations

from decision_service.domain.decision import now_ms
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features.store import AddSeen, Change

SEEN = "seen"
"""The effect name: the item joins the user's seen set (and is filtered out from then on)."""


def mark_seen(outcome: Outcome, ref: DecisionRef, once_ttl_ms: int) -> Change:
    """The SEEN handler (see outcomes/recorder.py); the store keeps the newest
    ``max_seen_items`` per user.

    Idempotent without a once-key: the item's time only ever moves forward, and keeping the
    newest ``max_seen_items`` gives the same set however often it runs. The time is the
    client's ``occurred_at`` clamped to [decision time, now]: a client clock cannot push the
    item out of the set at once (1970) or keep it there (future)."""
    at = min(max(outcome.occurred_at_ms, ref.decided_at_ms), now_ms())
    return Change((AddSeen(ref.user_id, outcome.item_id, at),))

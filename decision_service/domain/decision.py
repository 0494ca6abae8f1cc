"""What every decision shares, whatever its use case: the envelope, degradations, ids, the clock.

Pure data and two tiny functions; no I/O beyond reading the wall clock.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


def now_ms() -> int:
    """Wall-clock time in ms since the epoch (UTC): decision times, event times, TTL math."""
    return time.time_ns() // 1_000_000


def new_decision_id(at_ms: int) -> str:
    """32 lower-case hex chars, time-ordered (48-bit ms) then 80 random bits."""
    return f"{at_ms:012x}{os.urandom(10).hex()}"


@dataclass(frozen=True)
class RequestContext:
    """Where and how a decision will be shown or used; logged with it (every use case)."""

    surface: str = ""
    device: str = ""
    locale: str = ""
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReasonCode:
    """Why a score is what it is: a feature's signed log-odds contribution, with its stable code
    (``ReasonCode`` in the API). Fraud and conversion answer these."""

    code: str  # stable, e.g. "CART_EMPTY", "AMOUNT_HIGH_FOR_USER"
    feature: str  # the model column
    contribution: float  # log-odds
    description: str


@dataclass(frozen=True)
class Degradation:
    """A part of the pipeline that could not run normally, as the answer reports it."""

    stage: str  # e.g. "user_context", "features", "scoring"
    reason: str  # e.g. "unknown_user", "store_unavailable", "deadline_exceeded"


@dataclass
class Decision:
    """The envelope of every decision: who decided what, when, with which model, how healthy.

    Use cases extend it with their payload (keyword-only fields).
    """

    decision_id: str
    request_id: str
    model_version: str
    decided_at_ms: int
    degraded: list[Degradation] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)
    arm: str = "live"  # the rollout arm that served it: "live" (CURRENT) or "canary"

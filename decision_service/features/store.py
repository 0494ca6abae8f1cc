"""The online store's interface: a read half for the request path, a write half for the
state decisions and outcomes change, and a bulk half for offline materialization.

Stages, use cases and the outcome recorder depend on these protocols and the write types
below, never on a backend; the one backend today is Redis (features/redis_store.py, which
holds the key layout). The packed value format is features/packed.py.

Idempotency is ONE store operation: ``StateWrites.write(Change(writes, once))`` applies
``writes`` atomically and at most once per ``once`` key; the key then holds ``once.record`` for
``once.ttl_ms``. A retry, a duplicate or a concurrent twin finds the key and gets the first
record back, with nothing applied twice. The fraud commit (the verdict recorded under the
transaction id, the payment counted) and the outcome effects (a chargeback marks the user,
the device and the card once per payment) are both this operation; the seen-item effect
needs no key (adding an item with a later-or-equal time is idempotent by itself). Every
write but ``IncrementFeature`` is idempotent by itself; an ``IncrementFeature`` is refused
without a once-key, so no retry can ever count twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from decision_service.domain.features import GroupValues
from decision_service.features.registry import FeatureGroup

VELOCITY_RETENTION_MS = 86_400_000
"""How far back a store keeps a party's payment events for velocity reads (24 h): a project's
velocity windows must fit in it (checked by the fraud use case at import)."""

PAYMENT_RECORD = "fraud:txn"
"""The once-kind of a payment's decision record: the fraud commit writes it under the
transaction id, ``read_payment_context`` returns it (``previous_record``)."""

# --- what the read half returns ----------------------------------------------------------


@dataclass(frozen=True)
class StoredContext:
    """What the store knows about a payment's parties, read in one round trip."""

    user: GroupValues
    merchant: GroupValues
    device: GroupValues | None  # None: the project has no device profiles
    user_events: tuple[np.ndarray, np.ndarray]  # (times ms int64, amounts EUR float64)
    device_events: tuple[np.ndarray, np.ndarray]
    device_known: bool  # the user paid from this device before
    blocked: frozenset[str]  # block-list kinds whose list holds this payment's value
    previous_record: bytes | None  # the once-record of this transaction id (idempotency)


# --- what the write half applies -----------------------------------------------------------


@dataclass(frozen=True)
class Once:
    """The idempotency key of a write: ``kind`` names what is done once (``fraud:txn``,
    ``fx:fraud_confirmed``), ``subject`` for what (a transaction or decision id). The key holds
    ``record`` for ``ttl_ms`` after the writes were applied."""

    kind: str
    subject: str
    ttl_ms: int
    record: bytes = b"1"

    def __post_init__(self) -> None:
        if self.ttl_ms <= 0:
            raise ValueError(f"once {self.kind}: ttl_ms must be > 0, got {self.ttl_ms}")
        if not self.record:
            raise ValueError(f"once {self.kind}: the record must not be empty")


@dataclass(frozen=True)
class CountPayment:
    """A payment joins the velocity windows of its user and device (at ``at_ms``, the
    server's receive time) and the user's known devices."""

    transaction_id: str
    user_id: str
    device_id: str  # "" = no device
    amount_eur: float
    at_ms: int


@dataclass(frozen=True)
class AddSeen:
    """An item joins the user's seen set at ``at_ms`` (a later time only moves it forward);
    the set keeps the newest ``max_seen_items`` (the store's setting)."""

    user_id: str
    item_id: str
    at_ms: int


@dataclass(frozen=True)
class IncrementFeature:
    """Adds ``by`` to one stored value in place (an entity without a stored value starts
    from the group's declared defaults)."""

    group: FeatureGroup
    entity_id: str
    column: str
    by: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.by):  # a non-finite value would poison the whole stored row
            raise ValueError(f"IncrementFeature {self.column}: by must be finite, got {self.by!r}")
        self.group.slot(self.column)  # ValueError for a column the group does not have


@dataclass(frozen=True)
class AddToBlockList:
    """``value`` joins the ``kind`` block list, in its canonical form (domain/identifiers.py,
    the form the online check compares)."""

    kind: str
    value: str


Write = CountPayment | AddSeen | IncrementFeature | AddToBlockList


@dataclass(frozen=True)
class Change:
    """Writes applied together, atomically; at most once per ``once`` when it is set."""

    writes: tuple[Write, ...]
    once: Once | None = None

    def __post_init__(self) -> None:
        if self.once is None:
            if not self.writes:
                raise ValueError("a change without writes and without a once-key does nothing")
            if any(isinstance(w, IncrementFeature) for w in self.writes):
                raise ValueError("an IncrementFeature is not idempotent: its change needs a once-key")


# --- the halves ----------------------------------------------------------------------------


class FeatureReads(Protocol):
    """The request path's reads. Contract: one network round trip per call; on store errors
    the call raises (the stage's declared failure policy degrades the answer)."""

    async def read_groups(self, requests: Sequence[tuple[FeatureGroup, Sequence[str]]]) -> list[GroupValues]:
        """One GroupValues per (group, entity ids), one row per id, in order."""
        ...

    async def read_user_state(
        self, embedding_group: FeatureGroup, user_id: str
    ) -> tuple[GroupValues, list[bytes]]:
        """The user's embedding and recently seen item ids (newest first)."""
        ...

    async def read_payment_context(
        self,
        transaction_id: str,
        user_id: str,
        merchant_id: str,
        device_id: str,
        ip_address: str,
        instrument_id: str,
        at_ms: int,
    ) -> StoredContext:
        """Profiles, velocity events up to ``at_ms``, block-list hits and the once-record."""
        ...

    async def ping(self) -> bool: ...


class StateWrites(Protocol):
    """The writes of decisions and outcomes."""

    async def write(self, change: Change) -> bytes | None:
        """Applies ``change``; returns None when applied, else the record its once-key
        already held (nothing applied). Raises on store errors: nothing applied when the store
        refused it; possibly applied when the answer was lost (timeout, connection), and then
        a retry is safe (the once-key, or the writes' own idempotency)."""
        ...

    async def write_many(self, changes: Sequence[Change]) -> list[bytes | None]:
        """``write`` of each, in one round trip. On error: raises; each change is then either
        applied whole or not at all, and a retry of all of them applies only the rest."""
        ...


class BulkWrites(Protocol):
    """Offline materialization (synchronous, batched)."""

    def write_group(
        self, group: FeatureGroup, entity_ids: Sequence[str], values: np.ndarray, event_ms: int | None = None
    ) -> int: ...

    def write_seen(self, history: dict[str, Sequence[tuple[str, int]]]) -> int: ...

    def write_velocity_events(
        self,
        kind: str,
        entity_ids: Sequence[str],
        transaction_ids: Sequence[str],
        amounts_eur: np.ndarray,
        occurred_ms: np.ndarray,
    ) -> int: ...

    def write_user_devices(
        self, user_ids: Sequence[str], device_ids: Sequence[str], last_ms: np.ndarray
    ) -> int: ...

    def add_to_block_list(self, kind: str, *values: str) -> list[str]: ...

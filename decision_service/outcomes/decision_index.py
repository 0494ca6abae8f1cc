"""Remembers served decisions so outcomes can be attributed to a user, on any replica.

Two tiers: a bounded in-process LRU (this replica's latest decisions, no I/O) and Redis
(``dec:{decision id}`` -> small JSON, with a TTL), so an outcome that reaches another replica
is still attributed.

Contract:
  * ``remember`` completes the Redis write before it returns, and the executors await it
    before the answer is sent: from the moment GetDecision has answered, every replica can
    attribute the decision (no write-behind batch that a fast outcome can overtake).
  * the Redis TTL of an entry is its use case's longest label window
    (``domain.outcomes.attribution_window_s``) plus ``grace_s`` for late delivery, so an
    outcome is attributable for at least as long as training can count it.
  * ``lookup`` raises DecisionIndexUnavailable (UNAVAILABLE, retryable) when Redis must be
    read and cannot be: "unknown" is only answered when Redis said so.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping, Sequence

import redis.asyncio as aioredis

from decision_service.domain.outcomes import DecisionRef, OutcomeType, attribution_window_s
from decision_service.errors import NotReady
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.rate_limited_log import RateLimitedLog

log = logging.getLogger(__name__)


class DecisionIndexUnavailable(NotReady):
    """Redis could not be read or written for the decision index (UNAVAILABLE: retry)."""


def _key(decision_id: str) -> str:
    return f"dec:{decision_id}"


def ttls_from_label_windows(grace_s: int, outcome_types: Iterable[OutcomeType]) -> dict[str, int]:
    """Per use case of ``outcome_types`` (the registered use cases' outcome types,
    ``decision_service.use_cases.OUTCOME_TYPES.values()``): its longest label window plus
    ``grace_s`` (seconds)."""
    types = list(outcome_types)
    return {u: attribution_window_s(types, u) + grace_s for u in dict.fromkeys(t.use_case for t in types)}


class DecisionIndex:
    def __init__(
        self,
        client: aioredis.Redis,
        ttl_s: Mapping[str, int],
        local_capacity: int,
        writes: MultiplexedRedis | None = None,
        *,
        outcome_types: Iterable[OutcomeType],
    ) -> None:
        """``ttl_s``: Redis TTL per use case (see ttls_from_label_windows); ``writes``: the
        multiplexed connection used on the request path (redis-py ``client`` when None);
        ``outcome_types``: the registered use cases' outcome types; every use case of theirs
        needs a TTL at least its longest label window (ValueError otherwise). Entries of a
        use case without a TTL here (written by a version serving another use case) read as unknown."""
        types = list(outcome_types)
        use_cases = list(dict.fromkeys(t.use_case for t in types))
        missing = [u for u in use_cases if u not in ttl_s]
        if missing:
            raise ValueError(f"decision index: no TTL for use case(s) {', '.join(missing)}")
        windows = {u: attribution_window_s(types, u) for u in use_cases}
        short = [f"{u} {ttl_s[u]} s < {windows[u]} s" for u in use_cases if ttl_s[u] < windows[u]]
        if short:
            raise ValueError("decision index TTL shorter than the label window: " + "; ".join(short))
        self._redis = client
        self._writes = writes
        self._ttl_s = dict(ttl_s)
        self._capacity = local_capacity
        self._local: OrderedDict[str, DecisionRef] = OrderedDict()
        self.write_errors = 0
        self.lookup_errors = 0
        self._warn = RateLimitedLog()

    def ttl_s(self, use_case: str) -> int:
        return self._ttl_s[use_case]

    async def remember(self, ref: DecisionRef) -> None:
        """Local LRU now, then one SET with a TTL, awaited.

        On failure: the local tier still has it (outcomes reaching this replica are
        attributed); ``write_errors`` counts it and DecisionIndexUnavailable is raised, so
        the caller can flag the answer."""
        self._local[ref.decision_id] = ref
        if len(self._local) > self._capacity:
            self._local.popitem(last=False)
        args = ("SET", _key(ref.decision_id), _encode(ref), "EX", self._ttl_s[ref.use_case])
        try:
            if self._writes is not None:
                await self._writes.execute(*args)
            else:
                await self._redis.execute_command(*args)
        except Exception as exc:  # noqa: BLE001 - reported to the caller as one error type
            self.write_errors += 1
            self._warn.warning(
                "write", f"decision index: Redis write failed ({self.write_errors} times): {exc!r}"
            )
            raise DecisionIndexUnavailable("decision index: Redis write failed") from exc

    async def lookup(self, decision_ids: Sequence[str]) -> dict[str, DecisionRef | None]:
        """Every id mapped to its ref, or None when neither tier knows it.

        On failure: DecisionIndexUnavailable when an id is not in the local tier and Redis
        cannot be read (``lookup_errors`` counts it); nothing is guessed."""
        found: dict[str, DecisionRef | None] = {}
        missing = []
        for decision_id in dict.fromkeys(decision_ids):
            ref = self._local.get(decision_id)
            found[decision_id] = ref
            if ref is None:
                missing.append(decision_id)
        if missing:
            try:
                raw = await self._redis.mget([_key(d) for d in missing])
            except Exception as exc:  # noqa: BLE001 - the caller answers UNAVAILABLE
                self.lookup_errors += 1
                self._warn.warning("lookup", f"decision index: Redis lookup failed: {exc!r}")
                raise DecisionIndexUnavailable(
                    "the decision index (Redis) is unavailable; nothing was recorded, retry"
                ) from exc
            for decision_id, value in zip(missing, raw, strict=True):
                found[decision_id] = _decode(decision_id, value, self._ttl_s) if value else None
        return found


def _encode(ref: DecisionRef) -> str:
    return json.dumps(
        [ref.use_case, ref.user_id, ref.decided_at_ms, [list(e) for e in ref.entities if e[1]]],
        separators=(",", ":"),
    )


def _decode(decision_id: str, raw: bytes, use_cases: Container[str]) -> DecisionRef | None:
    try:
        use_case, user_id, decided_at_ms, entities = json.loads(raw)
        if use_case not in use_cases:  # written by a version with another use case: unknown here
            return None
        return DecisionRef(decision_id, use_case, user_id, int(decided_at_ms), tuple(map(tuple, entities)))
    except (ValueError, TypeError):
        return None

"""Remembers recently served decisions so outcomes can be attributed to a user.

Two tiers: a bounded in-process LRU (this replica's latest decisions, no I/O) and Redis
(``dec:{decision id}`` -> small JSON, with a TTL), so an outcome that reaches another replica
is still attributed. Redis writes are batched by a background task: the request path only
appends to a deque.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Sequence

import redis.asyncio as aioredis

from decision_service.domain.outcomes import DecisionRef
from decision_service.rate_limited_log import RateLimitedLog

log = logging.getLogger(__name__)


def _key(decision_id: str) -> str:
    return f"dec:{decision_id}"


class DecisionIndex:
    def __init__(
        self,
        client: aioredis.Redis,
        ttl_s: int,
        local_capacity: int,
        flush_interval_ms: int = 20,
        max_pending: int = 50_000,
    ) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._capacity = local_capacity
        self._flush_s = flush_interval_ms / 1000.0
        self._local: OrderedDict[str, DecisionRef] = OrderedDict()
        self._pending: deque[DecisionRef] = deque(maxlen=max_pending)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.write_errors = 0
        self.lookup_errors = 0
        self.dropped = 0
        self._warn = RateLimitedLog()

    def remember(self, ref: DecisionRef) -> None:
        """Non-blocking: local LRU now, Redis on the next batch."""
        self._local[ref.decision_id] = ref
        if len(self._local) > self._capacity:
            self._local.popitem(last=False)
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # deque drops the oldest; the local tier still has it
        self._pending.append(ref)

    async def lookup(self, decision_ids: Sequence[str]) -> dict[str, DecisionRef | None]:
        """Every id mapped to its ref, or None when neither tier knows it.

        On failure: when Redis cannot be read, the in-process hits are still returned, the
        rest are None, and ``lookup_errors`` counts it.
        """
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
            except Exception as exc:  # noqa: BLE001 - unattributed outcomes are still logged
                self.lookup_errors += 1
                self._warn.warning("lookup", f"decision index: Redis lookup failed: {exc!r}")
                return found
            for decision_id, value in zip(missing, raw, strict=True):
                found[decision_id] = _decode(decision_id, value) if value else None
        return found

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ends the flush loop, then writes what is pending.

        The loop is asked to stop, not cancelled: a cancellation that lands inside redis-py's
        pipeline can be swallowed there, and awaiting the task then hung shutdown for good
        (seen under load in the SIGTERM test). It ends within one interval plus one write,
        which the Redis socket timeout bounds; ``timeout_s`` is a last guard."""
        if self._task is not None:
            self._stopping = True
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:
                self._task.cancel()
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch = list(self._pending)
        self._pending.clear()
        pipe = self._redis.pipeline(transaction=False)
        for ref in batch:
            pipe.set(_key(ref.decision_id), _encode(ref), ex=self._ttl_s)
        try:
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - outcomes still work on this replica (LRU)
            self.write_errors += 1
            self._warn.warning(
                "write", f"decision index: Redis write failed ({self.write_errors} times): {exc!r}"
            )

    async def _flush_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._flush_s)
            await self.flush()


def _encode(ref: DecisionRef) -> str:
    return json.dumps([ref.use_case, ref.user_id, ref.decided_at_ms, list(ref.entities)])


def _decode(decision_id: str, raw: bytes) -> DecisionRef | None:
    try:
        use_case, user_id, decided_at_ms, entities = json.loads(raw)
        return DecisionRef(decision_id, use_case, user_id, int(decided_at_ms), tuple(map(tuple, entities)))
    except (ValueError, TypeError):
        return None

"""Redis layout and round trips of the fraud use case.

Keys (besides the packed profile vectors of features/online_store.py):
  ``vel:{user|device}:{id}``  sorted set of the party's recent payments, member
                              ``{transaction id}|{amount EUR}``, score = the SERVER's receive
                              time ms (never the client's ``occurred_at``: a client clock that is
                              off, within the allowed skew, must not move a window; offline
                              materialization writes historical payments at their own times)
  ``udev:{user id}``          sorted set of devices the user has paid from, score = last use ms
                              (server receive time)
  ``block:{device|ip|instrument}``  block-list sets (operators add entries live)
  ``fraud:txn:{transaction id}``    the decision record (idempotency), JSON, with a TTL

Reads: ONE pipelined round trip per request (MGET of three profiles + two velocity ranges (newest first) +
the user-device check + three block-list checks + the idempotency record).
Write: ONE Lua script, atomic: if a record exists it is returned untouched; otherwise the
record is stored and the payment is added to the velocity sets and the user's devices. A
retry or a concurrent duplicate therefore never counts twice, and all callers of one
transaction id end up with the first decision. (The script touches several keys: under
Redis Cluster they would need a common hash tag.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis

from decision_service.domain.features import GroupValues
from decision_service.domain.identifiers import canonical_block_value
from decision_service.features.definitions import DEVICE, FRAUD_USER, MERCHANT, VELOCITY_WINDOWS
from decision_service.features.online_store import decode, feature_keys, now_ms
from decision_service.features.redis_mux import MultiplexedRedis

MAX_WINDOW_MS = max(s for _, s in VELOCITY_WINDOWS) * 1000
BLOCK_KINDS = ("device", "ip", "instrument")
USER_DEVICES_TTL_MS = 400 * 86_400_000

_COMMIT = """
local prev = redis.call('GET', KEYS[1])
if prev then return prev end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local score, trim, ttl = ARGV[4], '(' .. ARGV[5], ARGV[6]
redis.call('ZADD', KEYS[2], score, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', trim)
redis.call('PEXPIRE', KEYS[2], ttl)
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[3], score, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', trim)
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('ZADD', KEYS[4], 'GT', score, ARGV[7])
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
end
return false
"""
_COMMIT_SHA = hashlib.sha1(_COMMIT.encode()).hexdigest()


def velocity_key(kind: str, entity_id: str) -> bytes:
    return f"vel:{kind}:{entity_id}".encode()


def user_devices_key(user_id: str) -> bytes:
    return f"udev:{user_id}".encode()


def block_key(kind: str) -> bytes:
    return f"block:{kind}".encode()


def record_key(transaction_id: str) -> bytes:
    return f"fraud:txn:{transaction_id}".encode()


def velocity_member(transaction_id: str, amount_eur: float) -> bytes:
    return f"{transaction_id}|{amount_eur:.4f}".encode()


@dataclass(frozen=True)
class StoredContext:
    """What the store knows about a payment's parties, read in one round trip."""

    user: GroupValues
    merchant: GroupValues
    device: GroupValues
    user_events: tuple[np.ndarray, np.ndarray]  # (times ms int64, amounts EUR float64)
    device_events: tuple[np.ndarray, np.ndarray]
    device_known: bool  # the user paid from this device before
    blocked: frozenset[str]  # BLOCK_KINDS whose list holds this payment's value
    previous_record: bytes | None  # idempotency record of this transaction id


def _events(raw: Sequence[bytes], exclude: bytes, at_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Parses a WITHSCORES reply (member, score, member, score, ...), dropping this
    transaction itself and anything after it."""
    times, amounts = [], []
    for member, raw_score in zip(raw[::2], raw[1::2], strict=True):
        score = float(raw_score)
        txn, _, amount = member.rpartition(b"|")
        if txn == exclude or score > at_ms:
            continue
        times.append(int(score))
        amounts.append(float(amount))
    return np.asarray(times, np.int64), np.asarray(amounts, np.float64)


class FraudStore:
    """Fraud reads and the commit. Contract: one network round trip per call."""

    def __init__(self, client: MultiplexedRedis, max_velocity_events: int, record_ttl_s: int) -> None:
        self._redis = client
        self._max_events = max_velocity_events
        self._record_ttl_ms = record_ttl_s * 1000

    async def read(
        self,
        transaction_id: str,
        user_id: str,
        merchant_id: str,
        device_id: str,
        ip_address: str,
        instrument_id: str,
        at_ms: int,
    ) -> StoredContext:
        """Everything about the payment's parties; velocity events within MAX_WINDOW_MS up to
        ``at_ms`` (the server's receive time of the request)."""
        keys = (
            feature_keys(FRAUD_USER, [user_id])
            + feature_keys(MERCHANT, [merchant_id])
            + feature_keys(DEVICE, [device_id or "-"])
        )
        since = at_ms - MAX_WINDOW_MS
        # Newest first: when a party has more events than we read, the oldest are dropped,
        # never the recent ones the short-window limits depend on.
        window = (at_ms, since, "WITHSCORES", "LIMIT", 0, self._max_events)
        commands: list[tuple] = [
            ("MGET", *keys),
            ("ZREVRANGEBYSCORE", velocity_key("user", user_id), *window),
        ]
        if device_id:
            commands.append(("ZREVRANGEBYSCORE", velocity_key("device", device_id), *window))
            commands.append(("ZSCORE", user_devices_key(user_id), device_id))
        checks = [
            (k, v) for k, v in zip(BLOCK_KINDS, (device_id, ip_address, instrument_id), strict=True) if v
        ]
        commands += [("SISMEMBER", block_key(kind), value) for kind, value in checks]
        commands.append(("GET", record_key(transaction_id)))
        replies = await self._redis.pipeline(commands)
        at = now_ms()
        profiles = replies[0]
        own = transaction_id.encode()
        user_events = _events(replies[1], own, at_ms)
        i = 2
        device_events = (np.empty(0, np.int64), np.empty(0, np.float64))
        device_known = False
        if device_id:
            device_events = _events(replies[2], own, at_ms)
            device_known = replies[3] is not None
            i = 4
        blocked = frozenset(
            kind for (kind, _), hit in zip(checks, replies[i : i + len(checks)], strict=True) if hit
        )
        return StoredContext(
            user=decode(FRAUD_USER, profiles[0:1], at),
            merchant=decode(MERCHANT, profiles[1:2], at),
            device=decode(DEVICE, profiles[2:3], at),
            user_events=user_events,
            device_events=device_events,
            device_known=device_known,
            blocked=blocked,
            previous_record=replies[i + len(checks)],
        )

    async def commit(
        self,
        transaction_id: str,
        user_id: str,
        device_id: str,
        amount_eur: float,
        at_ms: int,
        record: bytes,
    ) -> bytes | None:
        """Stores ``record`` and counts the payment at ``at_ms`` (the server's receive time,
        the instant its windows were read at), unless the id has a record already.

        Contract: returns None when this call stored it, else the existing record (the
        caller answers with that one). Atomic (a Lua script).
        """
        keys = [
            record_key(transaction_id),
            velocity_key("user", user_id),
            velocity_key("device", device_id or "-"),
            user_devices_key(user_id),
        ]
        args = [
            record,
            self._record_ttl_ms,
            velocity_member(transaction_id, amount_eur),
            at_ms,
            at_ms - MAX_WINDOW_MS,
            MAX_WINDOW_MS + 3_600_000,
            device_id,
            USER_DEVICES_TTL_MS,
        ]
        try:
            previous = await self._redis.execute("EVALSHA", _COMMIT_SHA, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # first use on this Redis (or after SCRIPT FLUSH / a restart): EVAL loads it
            previous = await self._redis.execute("EVAL", _COMMIT, len(keys), *keys, *args)
        return previous if previous else None


def write_velocity_events(
    client: redis.Redis,
    kind: str,
    entity_ids: Sequence[str],
    transaction_ids: Sequence[str],
    amounts_eur: np.ndarray,
    occurred_ms: np.ndarray,
    chunk: int = 5_000,
) -> int:
    """Bulk-loads recent payments into the velocity sets (materialization)."""
    pipe = client.pipeline(transaction=False)
    for i, (entity, txn, amount, ts) in enumerate(
        zip(entity_ids, transaction_ids, amounts_eur.tolist(), occurred_ms.tolist(), strict=True)
    ):
        key = velocity_key(kind, entity)
        pipe.zadd(key, {velocity_member(txn, amount): ts})
        pipe.pexpire(key, MAX_WINDOW_MS + 3_600_000)
        if i % chunk == chunk - 1:
            pipe.execute()
    pipe.execute()
    return len(entity_ids)


def write_user_devices(
    client: redis.Redis,
    user_ids: Sequence[str],
    device_ids: Sequence[str],
    last_ms: np.ndarray,
    chunk: int = 5_000,
) -> int:
    pipe = client.pipeline(transaction=False)
    for i, (user, device, ts) in enumerate(zip(user_ids, device_ids, last_ms.tolist(), strict=True)):
        pipe.zadd(user_devices_key(user), {device: ts})
        if i % chunk == chunk - 1:
            pipe.execute()
    pipe.execute()
    return len(user_ids)


def add_to_block_list(client: redis.Redis, kind: str, *values: str) -> list[str]:
    """Adds values to a block list in their canonical form (domain/identifiers.py), the form
    request validation gives the value the online check compares: ``::ffff:203.0.113.9`` is
    stored as ``203.0.113.9``. Returns the stored values. Writers must go through here (a raw
    ``SADD`` of another spelling would never match).

    On failure: ValueError (unknown list; IdentifierError for a value that cannot be one),
    before anything is written.
    """
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown block list {kind!r}; known: {', '.join(BLOCK_KINDS)}")
    canonical = [canonical_block_value(kind, v) for v in values]
    if canonical:
        client.sadd(block_key(kind), *canonical)
    return canonical

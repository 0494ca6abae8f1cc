"""The Redis backend of the online store (features/store.py): its key layout, the read half
on the request path's multiplexed connection, the write half, and bulk materialization.

Keys (values of feature groups are packed, features/packed.py):
  ``fv:{group}:{group fingerprint}:{entity id}``  one packed vector
  ``seen:{user id}``          sorted set of item ids the user interacted with, score = time ms
  ``vel:{user|device}:{id}``  sorted set of the party's recent payments, member
                              ``{transaction id}|{amount EUR}``, score = the SERVER's receive
                              time ms (never the client's ``occurred_at``: a client clock that
                              is off, within the allowed skew, must not move a window; offline
                              materialization writes historical payments at their own times)
  ``udev:{user id}``          sorted set of devices the user has paid from, score = last use ms
  ``block:{device|ip|instrument}``  block-list sets (operators add entries live)
  ``{once kind}:{subject}``   once-keys (store.Once): ``fraud:txn:{transaction id}`` holds the
                              fraud decision record, ``fx:{effect}:{subject}`` an effect's marker

Reads: one round trip per call (an MGET, or one pipeline).
Writes: every ``store.Change`` is ONE Lua script, atomic: if its once-key exists the script
returns the record and writes nothing; otherwise it checks the type of every key it will
write BEFORE the first write (Redis does not roll a script back when it errors part-way),
applies the writes, and sets the once-key last. So a retry, a duplicate or a concurrent twin
never counts twice, and an error leaves nothing half-applied. (A script touches several
keys: under Redis Cluster they would need a common hash tag.)
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np
import redis

from decision_service.config import ServiceConfig
from decision_service.domain.decision import now_ms
from decision_service.domain.features import GroupValues
from decision_service.domain.identifiers import canonical_block_value
from decision_service.features import packed
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.registry import FeatureGroup
from decision_service.features.store import (
    PAYMENT_RECORD,
    VELOCITY_RETENTION_MS,
    AddSeen,
    AddToBlockList,
    Change,
    CountPayment,
    IncrementFeature,
    StoredContext,
    Write,
)

MAX_WINDOW_MS = VELOCITY_RETENTION_MS
"""What a velocity set keeps (features/store.py)."""
VELOCITY_TTL_MS = MAX_WINDOW_MS + 3_600_000
USER_DEVICES_TTL_MS = 400 * 86_400_000
BLOCK_KINDS = ("device", "ip", "instrument")


@functools.cache
def _payment_groups() -> tuple[FeatureGroup, FeatureGroup, FeatureGroup | None]:
    """The project's (FRAUD_USER, MERCHANT, DEVICE): imported on first use, so a project that
    does not serve fraud need not declare them. DEVICE is None when its payments have no
    device column (features/payments.py)."""
    from decision_service.features.definitions import DEVICE, FRAUD_USER, MERCHANT

    return FRAUD_USER, MERCHANT, DEVICE


CLUSTER_UNSUPPORTED = (
    "is a Redis Cluster node (INFO cluster: cluster_enabled:1); this release's online store is one "
    "standalone Redis (or a primary with replicas): its multi-key reads, scripts and pipelines "
    "span hash slots, which a cluster refuses (CROSSSLOT / MOVED)"
)
"""Why a cluster node is refused as the online store (server readiness, offline jobs)."""


def is_cluster_node(info_cluster: bytes | str | dict) -> bool:
    """True when an ``INFO cluster`` reply (raw, or redis-py's parsed dict) says cluster_enabled:1."""
    if isinstance(info_cluster, dict):
        return int(info_cluster.get("cluster_enabled", 0) or 0) == 1
    text = info_cluster.decode() if isinstance(info_cluster, bytes) else str(info_cluster)
    return "cluster_enabled:1" in text


# --- key layout ----------------------------------------------------------------------------


def feature_key(group: FeatureGroup, entity_id: str) -> bytes:
    return f"fv:{group.name}:{group.fingerprint}:{entity_id}".encode()


def feature_keys(group: FeatureGroup, entity_ids: Sequence[str]) -> list[bytes]:
    prefix = f"fv:{group.name}:{group.fingerprint}:"
    return [(prefix + e).encode() for e in entity_ids]


def seen_key(user_id: str) -> bytes:
    return f"seen:{user_id}".encode()


def velocity_key(kind: str, entity_id: str) -> bytes:
    return f"vel:{kind}:{entity_id}".encode()


def user_devices_key(user_id: str) -> bytes:
    return f"udev:{user_id}".encode()


def block_key(kind: str) -> bytes:
    """On failure: ValueError for a list that is not one of BLOCK_KINDS."""
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown block list {kind!r}; known: {', '.join(BLOCK_KINDS)}")
    return f"block:{kind}".encode()


def once_key(kind: str, subject: str) -> bytes:
    return f"{kind}:{subject}".encode()


def record_key(transaction_id: str) -> bytes:
    """The once-key of a payment's decision record."""
    return once_key(PAYMENT_RECORD, transaction_id)


def block_entry(kind: str, value: str) -> str:
    """``value`` in the canonical form the online check compares (domain/identifiers.py).

    On failure: ValueError for an unknown list (IdentifierError for a value that cannot be one)."""
    block_key(kind)
    return canonical_block_value(kind, value)


def velocity_member(transaction_id: str, amount_eur: float) -> bytes:
    return f"{transaction_id}|{amount_eur:.4f}".encode()


# --- the read half -------------------------------------------------------------------------


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


class RedisFeatureReads:
    """store.FeatureReads on the request path's multiplexed connection (features/redis_mux.py).

    Contract: each call is one network round trip; each read returns one row per requested
    entity, in order; store errors raise (redis.exceptions.RedisError)."""

    def __init__(self, client: MultiplexedRedis, max_seen_items: int, max_velocity_events: int) -> None:
        self._redis = client
        self._max_seen = max_seen_items
        self._max_events = max_velocity_events

    async def read_groups(self, requests: Sequence[tuple[FeatureGroup, Sequence[str]]]) -> list[GroupValues]:
        """Reads several groups for several entities in ONE round trip (a single MGET)."""
        keys: list[bytes] = []
        for group, ids in requests:
            keys.extend(feature_keys(group, ids))
        raw = await self._redis.execute("MGET", *keys)
        at = now_ms()
        out, start = [], 0
        for group, ids in requests:
            out.append(packed.decode(group, raw[start : start + len(ids)], at))
            start += len(ids)
        return out

    async def read_user_state(
        self, embedding_group: FeatureGroup, user_id: str
    ) -> tuple[GroupValues, list[bytes]]:
        """The user's embedding and recently seen item ids (newest first), in one round trip."""
        emb_raw, seen = await self._redis.pipeline(
            [
                ("GET", feature_key(embedding_group, user_id)),
                ("ZREVRANGE", seen_key(user_id), 0, self._max_seen - 1),
            ]
        )
        return packed.decode(embedding_group, [emb_raw]), seen

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
        """Everything about the payment's parties (MGET of three profiles + two velocity
        ranges, newest first + the user-device check + three block-list checks + the
        payment's once-record), in one pipeline; velocity events within MAX_WINDOW_MS up to
        ``at_ms`` (the server's receive time of the request)."""
        user_g, merchant_g, device_g = _payment_groups()
        keys = feature_keys(user_g, [user_id]) + feature_keys(merchant_g, [merchant_id])
        if device_g is not None:
            keys += feature_keys(device_g, [device_id or "-"])
        since = at_ms - MAX_WINDOW_MS
        # Newest first: when a party has more events than we read, the oldest are dropped,
        # never the recent ones the short-window limits depend on.
        window = (at_ms, since, "WITHSCORES", "LIMIT", 0, self._max_events)
        commands: list[tuple] = [
            ("MGET", *keys),
            ("ZREVRANGEBYSCORE", velocity_key("user", user_id), *window),
        ]
        track_device = bool(device_id) and device_g is not None  # None: no device features
        if track_device:
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
        if track_device:
            device_events = _events(replies[2], own, at_ms)
            device_known = replies[3] is not None
            i = 4
        blocked = frozenset(
            kind for (kind, _), hit in zip(checks, replies[i : i + len(checks)], strict=True) if hit
        )
        return StoredContext(
            user=packed.decode(user_g, profiles[0:1], at),
            merchant=packed.decode(merchant_g, profiles[1:2], at),
            device=packed.decode(device_g, profiles[2:3], at) if device_g is not None else None,
            user_events=user_events,
            device_events=device_events,
            device_known=device_known,
            blocked=blocked,
            previous_record=replies[i + len(checks)],
        )

    async def ping(self) -> bool:
        return await self._redis.execute("PING") == b"PONG"


# --- the write half ------------------------------------------------------------------------

# KEYS[1]: the once-key (the first write's key when there is none); KEYS[1 + i]: write i's key
# ARGV[1]: the once record ('' = no once-key), ARGV[2]: its TTL ms, ARGV[3]: number of writes,
# then five per write, op a b c d:
#   W member score trim_below ttl_ms  sorted-set window: ZADD, drop scores < trim_below, PEXPIRE
#   R member score keep ttl_ms        ZADD GT (time only moves forward); keep the newest `keep`
#                                     (0 = all); PEXPIRE (0 = none)
#   I offset default by -             add `by` to the packed value's slot at byte `offset`
#                                     (SET `default` first when absent or malformed: a value
#                                     of another length is served as defaults anyway)
#   S member - - -                    SADD
_WRITE_ONCE = """
local once = ARGV[1] ~= ''
if once then
  local prev = redis.call('GET', KEYS[1])
  if prev then return prev end
end
local n = tonumber(ARGV[3])
local want = {W = 'zset', R = 'zset', I = 'string', S = 'set'}
for i = 1, n do
  local key, op = KEYS[1 + i], ARGV[4 + 5 * (i - 1)]
  local kind = want[op]
  if not kind then return redis.error_reply('ERR unknown write op ' .. tostring(op)) end
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= kind then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. kind)
  end
end
for i = 1, n do
  local key, j = KEYS[1 + i], 4 + 5 * (i - 1)
  local op, a, b, c, d = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  if op == 'W' then
    redis.call('ZADD', key, b, a)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. c)
    redis.call('PEXPIRE', key, d)
  elseif op == 'R' then
    redis.call('ZADD', key, 'GT', b, a)
    if tonumber(c) > 0 then redis.call('ZREMRANGEBYRANK', key, 0, -tonumber(c) - 1) end
    if tonumber(d) > 0 then redis.call('PEXPIRE', key, d) end
  elseif op == 'I' then
    if redis.call('EXISTS', key) == 0 or redis.call('STRLEN', key) ~= #b then redis.call('SET', key, b) end
    local off = tonumber(a)
    local raw = redis.call('GETRANGE', key, off, off + 3)
    redis.call('SETRANGE', key, off, struct.pack('SLOT', struct.unpack('SLOT', raw) + tonumber(c)))
  else
    redis.call('SADD', key, a)
  end
end
if once then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return false
""".replace("SLOT", packed.SLOT_STRUCT)
_WRITE_ONCE_SHA = hashlib.sha1(_WRITE_ONCE.encode()).hexdigest()

_Op = tuple[bytes, str, object, object, object, object]  # key, op, a, b, c, d


class RedisStateWrites:
    """store.StateWrites: each ``Change`` is one run of one Lua script (module docstring), on
    the request path's multiplexed connection.

    On failure: redis.exceptions.RedisError: an error reply (WRONGTYPE when a key holds
    another type) means nothing of that change was applied; a timeout or a lost connection
    may have applied it (a retry is safe: store.Change). The first error of a
    ``write_many`` is raised. NOSCRIPT (a Redis without the script cached) re-sends every
    change of the call with EVAL: safe, since each is at most once or idempotent by itself."""

    def __init__(self, client: MultiplexedRedis, max_seen_items: int) -> None:
        self._redis = client
        self._max_seen = max_seen_items

    async def write(self, change: Change) -> bytes | None:
        return (await self.write_many([change]))[0]

    async def write_many(self, changes: Sequence[Change]) -> list[bytes | None]:
        commands = [self._command("EVALSHA", _WRITE_ONCE_SHA, c) for c in changes]
        if not commands:
            return []
        try:
            replies = await self._redis.pipeline(commands)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # first use on this Redis (or after SCRIPT FLUSH / a restart): EVAL loads it; a
            # change that did run before the error is found by its once-key or is idempotent
            # by itself (store.Change refuses a non-idempotent write without a once-key)
            replies = await self._redis.pipeline([self._command("EVAL", _WRITE_ONCE, c) for c in changes])
        return [r if r else None for r in replies]

    def _command(self, verb: str, script: str, change: Change) -> tuple:
        ops = [op for w in change.writes for op in self._ops(w)]
        once = change.once
        first = once_key(once.kind, once.subject) if once is not None else ops[0][0]
        keys = [first, *(op[0] for op in ops)]
        args: list[object] = [once.record if once else b"", once.ttl_ms if once else 0, len(ops)]
        for _, *rest in ops:
            args.extend(rest)
        return (verb, script, len(keys), *keys, *args)

    def _ops(self, w: Write) -> list[_Op]:
        if isinstance(w, CountPayment):
            member = velocity_member(w.transaction_id, w.amount_eur)
            trim = w.at_ms - MAX_WINDOW_MS
            ops: list[_Op] = [(velocity_key("user", w.user_id), "W", member, w.at_ms, trim, VELOCITY_TTL_MS)]
            if w.device_id:
                ops.append((velocity_key("device", w.device_id), "W", member, w.at_ms, trim, VELOCITY_TTL_MS))
                ops.append((user_devices_key(w.user_id), "R", w.device_id, w.at_ms, 0, USER_DEVICES_TTL_MS))
            return ops
        if isinstance(w, AddSeen):
            return [(seen_key(w.user_id), "R", w.item_id, w.at_ms, self._max_seen, 0)]
        if isinstance(w, IncrementFeature):
            offset = packed.value_offset(w.group, w.column)
            default = packed.defaults_value(w.group)
            return [(feature_key(w.group, w.entity_id), "I", offset, default, float(w.by), "")]
        if isinstance(w, AddToBlockList):
            return [(block_key(w.kind), "S", block_entry(w.kind, w.value), "", "", "")]
        raise TypeError(f"not a store write: {w!r}")


# --- bulk materialization ------------------------------------------------------------------


class RedisBulkWrites:
    """store.BulkWrites: offline materialization with pipelined, chunked writes (redis-py)."""

    def __init__(
        self, client: redis.Redis, max_seen_items: int = ServiceConfig.max_seen_items, chunk: int = 5_000
    ) -> None:
        self._client = client
        self._max_seen = max_seen_items
        self._chunk = chunk

    def write_group(
        self, group: FeatureGroup, entity_ids: Sequence[str], values: np.ndarray, event_ms: int | None = None
    ) -> int:
        """Materializes rows (float32 [n, group.width]) with pipelined MSETs; returns the
        number of keys written. On failure: ValueError when ids and rows differ in number."""
        event_ms = now_ms() if event_ms is None else event_ms
        if len(entity_ids) != len(values):
            raise ValueError(f"{len(entity_ids)} ids but {len(values)} rows for {group.name!r}")
        written = 0
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(entity_ids), self._chunk):
            ids = entity_ids[start : start + self._chunk]
            values_of = packed.encode(group, values[start : start + self._chunk], event_ms)
            pipe.mset(dict(zip(feature_keys(group, ids), values_of, strict=True)))
            written += len(ids)
            if len(pipe) >= 8:
                pipe.execute()
        pipe.execute()
        return written

    def write_seen(self, history: dict[str, Sequence[tuple[str, int]]], chunk_users: int = 1_000) -> int:
        """Replaces each user's seen set with (item id, time ms) pairs, keeping the newest
        ``max_seen_items``; returns the number of users."""
        pipe = self._client.pipeline(transaction=False)
        n = 0
        for user_id, pairs in history.items():
            key = seen_key(user_id)
            pipe.delete(key)
            if pairs:
                pipe.zadd(key, {item: float(ts) for item, ts in pairs})
                pipe.zremrangebyrank(key, 0, -self._max_seen - 1)
            n += 1
            if n % chunk_users == 0:
                pipe.execute()
        pipe.execute()
        return n

    def write_velocity_events(
        self,
        kind: str,
        entity_ids: Sequence[str],
        transaction_ids: Sequence[str],
        amounts_eur: np.ndarray,
        occurred_ms: np.ndarray,
    ) -> int:
        """Bulk-loads recent payments (at their own times) into the velocity sets."""
        pipe = self._client.pipeline(transaction=False)
        for i, (entity, txn, amount, ts) in enumerate(
            zip(entity_ids, transaction_ids, amounts_eur.tolist(), occurred_ms.tolist(), strict=True)
        ):
            key = velocity_key(kind, entity)
            pipe.zadd(key, {velocity_member(txn, amount): ts})
            pipe.pexpire(key, VELOCITY_TTL_MS)
            if i % self._chunk == self._chunk - 1:
                pipe.execute()
        pipe.execute()
        return len(entity_ids)

    def write_user_devices(
        self, user_ids: Sequence[str], device_ids: Sequence[str], last_ms: np.ndarray
    ) -> int:
        pipe = self._client.pipeline(transaction=False)
        for i, (user, device, ts) in enumerate(zip(user_ids, device_ids, last_ms.tolist(), strict=True)):
            pipe.zadd(user_devices_key(user), {device: ts})
            if i % self._chunk == self._chunk - 1:
                pipe.execute()
        pipe.execute()
        return len(user_ids)

    def add_to_block_list(self, kind: str, *values: str) -> list[str]:
        """Adds values to a block list in their canonical form (domain/identifiers.py), the
        form request validation gives the value the online check compares:
        ``::ffff:203.0.113.9`` is stored as ``203.0.113.9``. Returns the stored values.
        Writers must go through here (a raw ``SADD`` of another spelling would never match).

        On failure: ValueError (unknown list; IdentifierError for a value that cannot be one),
        before anything is written.
        """
        block_key(kind)  # an unknown list is refused even with no value
        canonical = [block_entry(kind, v) for v in values]
        if canonical:
            self._client.sadd(block_key(kind), *canonical)
        return canonical


def add_to_block_list(client: redis.Redis, kind: str, *values: str) -> list[str]:
    """``RedisBulkWrites(client).add_to_block_list``: the operators' entry point."""
    return RedisBulkWrites(client).add_to_block_list(kind, *values)

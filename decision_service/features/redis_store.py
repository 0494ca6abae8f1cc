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
never counts twice, and an error leaves nothing half-applied.

Redis Cluster (``redis+cluster://`` URLs, features/redis_cluster.py) uses the same names with
a hash tag, ``KeyLayout(buckets=B)``: every key of one entity carries ``{bN}``, N = CRC-32 of
the entity id mod B, right after its kind (``fv:{b7}:item:3fa2c1:i42``, ``seen:{b7}:u9``,
``vel:user:{b7}:u9``, ``udev:{b7}:u9``). So an entity's keys share a slot (a user's state is one
round trip to one node) and a request's 250 item keys fall in at most B slots, read as one
MGET per bucket, one pipeline per primary, all primaries at once. B (8 x primaries when the
cluster is first materialized) is recorded in the cluster under ``ds:layout``; the server
takes it from there, so writer and reader cannot disagree. Global keys (block lists,
once-keys, the decision index) are single keys and need no tag.
A change's script may then touch several slots: in a cluster it is applied in two phases
(``RedisStateWrites``), one extra round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis
import redis.cluster
from redis.crc import key_slot

from decision_service.config import ServiceConfig
from decision_service.domain.decision import now_ms
from decision_service.domain.features import GroupValues
from decision_service.domain.identifiers import canonical_block_value
from decision_service.features import packed
from decision_service.features.redis_cluster import ClusterMultiplexedRedis
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
    Once,
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
    "is a Redis Cluster node (INFO cluster: cluster_enabled:1) given as a standalone Redis: its "
    "keys would span hash slots (CROSSSLOT / MOVED). Name the cluster with a redis+cluster:// URL "
    "(redis+cluster://host:port[,host:port...]) so keys carry hash tags and commands are routed by slot"
)
"""Why a cluster node given by a plain redis:// URL is refused (server readiness, offline jobs)."""


def is_cluster_node(info_cluster: bytes | str | dict) -> bool:
    """True when an ``INFO cluster`` reply (raw, or redis-py's parsed dict) says cluster_enabled:1."""
    if isinstance(info_cluster, dict):
        return int(info_cluster.get("cluster_enabled", 0) or 0) == 1
    text = info_cluster.decode() if isinstance(info_cluster, bytes) else str(info_cluster)
    return "cluster_enabled:1" in text


# --- key layout ----------------------------------------------------------------------------

LAYOUT_KEY = b"ds:layout"
"""Where a cluster records its key layout (``cluster:<buckets>``), written by materialization."""
BUCKETS_PER_PRIMARY = 8


class LayoutError(RuntimeError):
    """A cluster without a recorded key layout, or one this release cannot read."""


@dataclass(frozen=True)
class KeyLayout:
    """Key names of the online store. ``buckets=0``: one standalone Redis, the names in the
    module docstring. ``buckets=B > 0``: a Redis Cluster; every key of an entity carries the
    hash tag of its bucket (module docstring)."""

    buckets: int = 0

    def bucket(self, entity_id: str) -> int:
        return zlib.crc32(entity_id.encode()) % self.buckets

    def tag(self, entity_id: str) -> str:
        """``{bN}:`` (cluster) or empty (standalone)."""
        return f"{{b{zlib.crc32(entity_id.encode()) % self.buckets}}}:" if self.buckets else ""

    def feature_keys(self, group: FeatureGroup, entity_ids: Sequence[str]) -> list[bytes]:
        rest = f"{group.name}:{group.fingerprint}:"
        if not self.buckets:
            return [f"fv:{rest}{e}".encode() for e in entity_ids]
        b = self.buckets
        return [f"fv:{{b{zlib.crc32(e.encode()) % b}}}:{rest}{e}".encode() for e in entity_ids]

    def feature_key(self, group: FeatureGroup, entity_id: str) -> bytes:
        return self.feature_keys(group, [entity_id])[0]

    def seen_key(self, user_id: str) -> bytes:
        return f"seen:{self.tag(user_id)}{user_id}".encode()

    def velocity_key(self, kind: str, entity_id: str) -> bytes:
        return f"vel:{kind}:{self.tag(entity_id)}{entity_id}".encode()

    def user_devices_key(self, user_id: str) -> bytes:
        return f"udev:{self.tag(user_id)}{user_id}".encode()

    def prefixes(self, group: FeatureGroup) -> tuple[bytes, ...]:
        """``fv:{bN}:<group>:<fingerprint>:`` for every bucket N (memoised per group)."""
        return _prefixes(self.buckets, group.name, group.fingerprint)

    @functools.cached_property
    def slots(self) -> tuple[int, ...]:
        """The hash slot of each bucket's tag."""
        return tuple(key_slot(f"b{n}".encode()) for n in range(self.buckets))

    @property
    def record(self) -> bytes:
        """The value stored under LAYOUT_KEY."""
        return f"cluster:{self.buckets}".encode()

    @classmethod
    def parse(cls, raw: bytes | None) -> KeyLayout:
        """The layout a cluster recorded. On failure: LayoutError (none recorded, or unreadable)."""
        if raw is None:
            raise LayoutError(
                "the cluster has no key layout (ds:layout): materialize it first "
                "(decision-service bootstrap / materialize with the same redis+cluster:// URL)"
            )
        kind, _, n = raw.decode(errors="replace").partition(":")
        if kind != "cluster" or not n.isdigit() or int(n) < 1:
            raise LayoutError(f"unreadable key layout ds:layout={raw!r}; expected cluster:<buckets>")
        return cls(int(n))


STANDALONE = KeyLayout()


@functools.lru_cache(maxsize=256)
def _prefixes(buckets: int, name: str, fingerprint: str) -> tuple[bytes, ...]:
    return tuple(f"fv:{{b{n}}}:{name}:{fingerprint}:".encode() for n in range(buckets))


def _no_layout() -> redis.exceptions.ConnectionError:
    return redis.exceptions.ConnectionError(
        "the cluster's key layout is not loaded yet (the server loads it before reporting SERVING)"
    )


def feature_key(group: FeatureGroup, entity_id: str) -> bytes:
    """The standalone name (STANDALONE.feature_key); a cluster's: KeyLayout.feature_key."""
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


def connect(url: str, **kwargs: object) -> redis.Redis | redis.cluster.RedisCluster:
    """A redis-py client for offline jobs: ``redis+cluster://[user:password@]host:port[,host:port...]``
    gives a RedisCluster (seeds: the listed nodes; percent-encode special characters of the
    password, as in any redis:// URL), any other URL ``redis.Redis.from_url``.
    ``kwargs`` (socket timeouts, ...) go to the client. On failure: ValueError for a cluster URL
    without a host:port."""
    from urllib.parse import unquote

    from decision_service.features.redis_cluster import cluster_credentials, cluster_seeds

    if not url.startswith("redis+cluster://"):
        return redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster_seeds(url)]
    user, password = cluster_credentials(url)
    return redis.cluster.RedisCluster(  # type: ignore[arg-type]
        startup_nodes=nodes, username=unquote(user) or None, password=unquote(password) or None, **kwargs
    )


def layout_of(client: redis.Redis | redis.cluster.RedisCluster, create: bool = False) -> KeyLayout:
    """The key layout of the store behind a redis-py client: STANDALONE for one Redis; for a
    cluster the one it recorded, or (``create``: materialization) a new one with
    BUCKETS_PER_PRIMARY x primaries buckets, recorded first. On failure: LayoutError."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return STANDALONE
    raw = client.get(LAYOUT_KEY)
    if raw is None and create:
        layout = KeyLayout(BUCKETS_PER_PRIMARY * max(1, len(client.get_primaries())))
        client.set(LAYOUT_KEY, layout.record, nx=True)  # a concurrent first writer wins
        raw = client.get(LAYOUT_KEY)
    return KeyLayout.parse(raw)


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


def _record(raw: bytes | None) -> bytes | None:
    """A once-key's value as a record: a cluster write's claim (CLAIM_PREFIX: a change still
    being applied) is no record yet; that commit waits for it (RedisStateWrites._claim)."""
    return None if raw is None or raw.startswith(CLAIM_PREFIX) else raw


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

    def __init__(
        self,
        client: MultiplexedRedis | ClusterMultiplexedRedis,
        max_seen_items: int,
        max_velocity_events: int,
        layout: KeyLayout | None = STANDALONE,
    ) -> None:
        """``layout`` None: a cluster whose layout ``use_layout`` gives later (reads fail
        until then, as an unavailable store)."""
        self._redis = client
        self._max_seen = max_seen_items
        self._max_events = max_velocity_events
        self._layout = layout

    def use_layout(self, layout: KeyLayout) -> None:
        self._layout = layout

    async def read_groups(self, requests: Sequence[tuple[FeatureGroup, Sequence[str]]]) -> list[GroupValues]:
        """Reads several groups for several entities in ONE round trip (a single MGET; in a
        cluster one MGET per bucket, one pipeline per primary, all primaries at once)."""
        layout = self._layout
        if layout is None:
            raise _no_layout()
        if layout.buckets:
            raw = await self._mget_by_bucket(layout, requests)
        else:
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

    async def _mget_by_bucket(
        self, layout: KeyLayout, requests: Sequence[tuple[FeatureGroup, Sequence[str]]]
    ) -> list[bytes | None]:
        """Values in request order: one MGET per bucket, each sent to its slot's primary without
        hashing a key (the layout knows each bucket's slot). Per key: one CRC-32, one concat."""
        crc, b = zlib.crc32, layout.buckets
        keys_of: list[list[bytes]] = [[] for _ in range(b)]
        where: list[list[int]] = [[] for _ in range(b)]
        i = 0
        for group, ids in requests:
            prefixes = layout.prefixes(group)
            for e in ids:
                raw_id = e.encode()
                n = crc(raw_id) % b
                keys_of[n].append(prefixes[n] + raw_id)
                where[n].append(i)
                i += 1
        used = [n for n in range(b) if where[n]]
        slots = layout.slots
        replies = await self._redis.pipeline_in_slots(
            [("MGET", *keys_of[n]) for n in used], [slots[n] for n in used]
        )
        raw: list[bytes | None] = [None] * i
        for n, values in zip(used, replies, strict=True):
            for j, value in zip(where[n], values, strict=True):
                raw[j] = value
        return raw

    async def read_user_state(
        self, embedding_group: FeatureGroup, user_id: str
    ) -> tuple[GroupValues, list[bytes]]:
        """The user's embedding and recently seen item ids (newest first), in one round trip."""
        if self._layout is None:
            raise _no_layout()
        emb_raw, seen = await self._redis.pipeline(
            [
                ("GET", self._layout.feature_key(embedding_group, user_id)),
                ("ZREVRANGE", self._layout.seen_key(user_id), 0, self._max_seen - 1),
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
        layout = self._layout
        if layout is None:
            raise _no_layout()
        keys = layout.feature_keys(user_g, [user_id]) + layout.feature_keys(merchant_g, [merchant_id])
        if device_g is not None:
            keys += layout.feature_keys(device_g, [device_id or "-"])
        since = at_ms - MAX_WINDOW_MS
        # Newest first: when a party has more events than we read, the oldest are dropped,
        # never the recent ones the short-window limits depend on.
        window = (at_ms, since, "WITHSCORES", "LIMIT", 0, self._max_events)
        commands: list[tuple] = [
            ("MGET", *keys),
            ("ZREVRANGEBYSCORE", layout.velocity_key("user", user_id), *window),
        ]
        track_device = bool(device_id) and device_g is not None  # None: no device features
        if track_device:
            commands.append(("ZREVRANGEBYSCORE", layout.velocity_key("device", device_id), *window))
            commands.append(("ZSCORE", layout.user_devices_key(user_id), device_id))
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
            previous_record=_record(replies[i + len(checks)]),
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

# A change spanning slots in a cluster (RedisStateWrites): its once-key is first claimed with a
# token (SET NX, CLAIM_TTL_MS), the writes applied, then the claim replaced by the record.
CLAIM_PREFIX = b"\x00claim:"
CLAIM_TTL_MS = 2_000  # a claimer that dies mid-change blocks its subject this long at most
CLAIM_WAIT_S = 0.05  # a twin in flight is waited for this long (then: a timeout, retryable)
CLAIM_POLL_S = 0.002
# KEYS[1] the once-key; ARGV: the claim token, the record, its TTL ms
_FINISH = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return false
end
return v
"""
_FINISH_SHA = hashlib.sha1(_FINISH.encode()).hexdigest()
# KEYS[1] the once-key; ARGV[1] the claim token: released only if still ours
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return false
"""
_RELEASE_SHA = hashlib.sha1(_RELEASE.encode()).hexdigest()

_Op = tuple[bytes, str, object, object, object, object]  # key, op, a, b, c, d


def _script(ops: Sequence[_Op], once: tuple[bytes, bytes, int] | None) -> tuple:
    """_WRITE_ONCE's (numkeys, keys..., args...): ``ops`` under the once-key ``once`` =
    (key, record, ttl ms), or under none (KEYS[1] is then the first write's key)."""
    first = once[0] if once is not None else ops[0][0]
    keys = [first, *(op[0] for op in ops)]
    args: list[object] = [once[1] if once else b"", once[2] if once else 0, len(ops)]
    for _, *rest in ops:
        args.extend(rest)
    return (len(keys), *keys, *args)


class RedisStateWrites:
    """store.StateWrites: each ``Change`` is one run of one Lua script (module docstring), on
    the request path's multiplexed connection.

    In a cluster (``layout.buckets``) a change whose keys lie in one slot is that one script
    too. A change with a once-key whose keys span slots (a payment with a device: the user's,
    the device's and the record's slots) takes **two extra round trips**, sent for all changes
    of a call at once: (1) its once-key is claimed, ``SET NX GET`` with a random token and a
    short TTL (CLAIM_TTL_MS): a record found is returned and nothing is applied; another
    attempt's claim (a twin in flight) is polled until its record appears (CLAIM_WAIT_S, then
    TimeoutError: retryable); (2) the writes, one script per slot, a non-idempotent part
    (IncrementFeature) guarded by a marker once-key in its own slot (``{bN}:{kind}:{subject}``);
    (3) the record replaces the claim (the commit point), only while the claim is still this
    call's. So, as on one Redis, only one attempt applies a change, a duplicate or a twin with
    another payload applies nothing and gets the first record; a failure before (3) releases
    the claim (best effort; else it expires) and the retry re-applies (2) harmlessly: the same
    members at the same scores or newer, markers for the rest. A reader treats a claim as no
    record yet (``read_payment_context``). Changes without a once-key are idempotent: one
    script per slot, in round trip (1).

    On failure: redis.exceptions.RedisError: an error reply (WRONGTYPE when a key holds
    another type) means nothing of that change was applied (in a cluster: nothing of that slot
    part; the once-key is not set); a timeout or a lost connection may have applied it (a retry
    is safe: store.Change). The first error of a ``write_many`` is raised. NOSCRIPT (a Redis
    without the script cached) re-sends every change of the call with EVAL: safe, since each is
    at most once or idempotent by itself."""

    def __init__(
        self,
        client: MultiplexedRedis | ClusterMultiplexedRedis,
        max_seen_items: int,
        layout: KeyLayout | None = STANDALONE,
    ) -> None:
        """``layout`` None: a cluster whose layout ``use_layout`` gives later (writes fail
        until then, as an unavailable store; nothing is written under another layout's names)."""
        self._redis = client
        self._max_seen = max_seen_items
        self._layout = layout

    def use_layout(self, layout: KeyLayout) -> None:
        self._layout = layout

    async def write(self, change: Change) -> bytes | None:
        return (await self.write_many([change]))[0]

    async def write_many(self, changes: Sequence[Change]) -> list[bytes | None]:
        if not changes:
            return []
        if self._layout is None:
            raise _no_layout()
        if not self._layout.buckets:
            return await self._run([self._command(c) for c in changes])
        out: list[bytes | None] = [None] * len(changes)
        single: list[tuple[int, tuple]] = []  # one slot: the one atomic script, as standalone
        plain: list[tuple] = []  # no once-key: idempotent writes, one script per slot
        spanning: list[tuple[int, Once, list[list[_Op]]]] = []
        seen: dict[bytes, int] = {}  # once-key -> the first spanning change of this call with it
        repeats: list[tuple[int, int]] = []
        for i, change in enumerate(changes):
            ops = [op for w in change.writes for op in self._ops(w)]
            by_slot: dict[int, list[_Op]] = defaultdict(list)
            for op in ops:
                by_slot[key_slot(op[0])].append(op)
            once = change.once
            if once is None:
                plain.extend(_script(slot_ops, None) for slot_ops in by_slot.values())
            elif len(by_slot) <= 1 and (not ops or key_slot(once_key(once.kind, once.subject)) in by_slot):
                single.append((i, self._command(change)))
            elif once_key(once.kind, once.subject) in seen:  # the same subject twice in one call
                repeats.append((i, seen[once_key(once.kind, once.subject)]))
            else:
                seen[once_key(once.kind, once.subject)] = i
                spanning.append((i, once, list(by_slot.values())))
        # round trip 1: the one-slot scripts, the idempotent parts and the spanning changes' claims
        tokens = [CLAIM_PREFIX + os.urandom(8).hex().encode() for _ in spanning]
        claims = [
            ("SET", once_key(once.kind, once.subject), token, "NX", "PX", CLAIM_TTL_MS, "GET")
            for (_, once, _), token in zip(spanning, tokens, strict=True)
        ]
        first, claimed = await asyncio.gather(self._run([c for _, c in single] + plain), self._claim(claims))
        for (i, _), reply in zip(single, first[: len(single)], strict=True):
            out[i] = reply
        mine = []
        for (i, once, parts), token, previous in zip(spanning, tokens, claimed, strict=True):
            if previous is None:
                mine.append((i, once, parts, token))
            else:
                out[i] = previous  # written before: the earlier record, nothing applied
        if mine:
            await self._commit_claimed(mine, out)
        for j, i in repeats:  # as on one Redis: the later one finds the earlier one's record
            record = out[i] if out[i] is not None else changes[i].once.record  # type: ignore[union-attr]
            out[j] = record
        return out

    async def _commit_claimed(self, mine: list[tuple[int, Once, list[list[_Op]], bytes]], out: list) -> None:
        """Round trips 2 and 3 of the changes whose once-keys this call claimed (write_many)."""
        try:
            # round trip 2: the claimed changes' writes, one script per slot; a non-idempotent
            # part also takes a marker once-key in its own slot (a retry after a failure here
            # re-applies the rest harmlessly)
            parts: list[tuple] = []
            for _, once, slot_parts, _ in mine:
                for slot_ops in slot_parts:
                    marker = None
                    if any(op[1] == "I" for op in slot_ops):
                        key = slot_ops[0][0]
                        tag = key[key.index(b"{") : key.index(b"}") + 1]
                        marker = (tag + b":" + once_key(once.kind, once.subject), b"1", once.ttl_ms)
                    parts.append(_script(slot_ops, marker))
            await self._run(parts)
            # round trip 3: the record replaces the claim (the commit point)
            records = await self._run(
                [(1, once_key(o.kind, o.subject), token, o.record, o.ttl_ms) for _, o, _, token in mine],
                _FINISH,
                _FINISH_SHA,
            )
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: a retry need not wait the claim out
                releases = [(1, once_key(o.kind, o.subject), token) for _, o, _, token in mine]
                await self._run(releases, _RELEASE, _RELEASE_SHA)
            raise
        for (i, _, _, _), reply in zip(mine, records, strict=True):
            out[i] = reply  # None: ours; else the record of whoever took over after our claim expired

    async def _claim(self, claims: list[tuple]) -> list[bytes | None]:
        """``SET once-key claim NX PX GET`` for each: None when claimed here, else the value
        found. A record found is returned; another attempt's claim (a twin in flight) is
        polled until its record appears, at most CLAIM_WAIT_S, then TimeoutError."""
        if not claims:
            return []
        replies = await self._redis.pipeline(claims)
        deadline = asyncio.get_running_loop().time() + CLAIM_WAIT_S
        while True:
            waiting = [j for j, r in enumerate(replies) if r is not None and r.startswith(CLAIM_PREFIX)]
            if not waiting:
                return replies
            if asyncio.get_running_loop().time() > deadline:
                raise redis.exceptions.TimeoutError(
                    f"{len(waiting)} change(s) in flight on another attempt (once-key claimed, no record yet)"
                )
            await asyncio.sleep(CLAIM_POLL_S)
            again = await self._redis.pipeline([claims[j] for j in waiting])  # claims again if released
            for j, reply in zip(waiting, again, strict=True):
                replies[j] = reply

    async def _run(
        self, scripts: list[tuple], source: str = _WRITE_ONCE, sha: str = _WRITE_ONCE_SHA
    ) -> list[bytes | None]:
        """EVALSHA each (numkeys, keys..., args...) of ``source``; EVAL them all when the script
        is not cached."""
        if not scripts:
            return []
        try:
            replies = await self._redis.pipeline([("EVALSHA", sha, *c) for c in scripts])
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # first use on this Redis (or after SCRIPT FLUSH / a restart): EVAL loads it; a
            # change that did run before the error is found by its once-key or is idempotent
            # by itself (store.Change refuses a non-idempotent write without a once-key)
            replies = await self._redis.pipeline([("EVAL", source, *c) for c in scripts])
        return [r if r else None for r in replies]

    def _command(self, change: Change) -> tuple:
        """The script's (numkeys, keys..., args...) for one change, applied at once."""
        ops = [op for w in change.writes for op in self._ops(w)]
        once = change.once
        marker = (once_key(once.kind, once.subject), once.record, once.ttl_ms) if once is not None else None
        return _script(ops, marker)

    def _ops(self, w: Write) -> list[_Op]:
        layout = self._layout
        if isinstance(w, CountPayment):
            member = velocity_member(w.transaction_id, w.amount_eur)
            trim = w.at_ms - MAX_WINDOW_MS
            ops: list[_Op] = [
                (layout.velocity_key("user", w.user_id), "W", member, w.at_ms, trim, VELOCITY_TTL_MS)
            ]
            if w.device_id:
                ops.append(
                    (layout.velocity_key("device", w.device_id), "W", member, w.at_ms, trim, VELOCITY_TTL_MS)
                )
                ops.append(
                    (layout.user_devices_key(w.user_id), "R", w.device_id, w.at_ms, 0, USER_DEVICES_TTL_MS)
                )
            return ops
        if isinstance(w, AddSeen):
            return [(layout.seen_key(w.user_id), "R", w.item_id, w.at_ms, self._max_seen, 0)]
        if isinstance(w, IncrementFeature):
            offset = packed.value_offset(w.group, w.column)
            default = packed.defaults_value(w.group)
            return [(layout.feature_key(w.group, w.entity_id), "I", offset, default, float(w.by), "")]
        if isinstance(w, AddToBlockList):
            return [(block_key(w.kind), "S", block_entry(w.kind, w.value), "", "", "")]
        raise TypeError(f"not a store write: {w!r}")


# --- bulk materialization ------------------------------------------------------------------


class RedisBulkWrites:
    """store.BulkWrites: offline materialization with pipelined, chunked writes (redis-py).

    ``client``: ``connect(url)``'s client. On a RedisCluster the keys carry the cluster's hash
    tags (``layout_of(client, create=True)``: the layout is recorded before the first write),
    MSETs are one per bucket and redis-py's cluster pipeline sends each command to its slot's
    primary. On failure: LayoutError for a cluster whose recorded layout is unreadable."""

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        max_seen_items: int = ServiceConfig.max_seen_items,
        chunk: int = 5_000,
    ) -> None:
        self._client = client
        self._max_seen = max_seen_items
        self._chunk = chunk
        self._layout = layout_of(client, create=True)

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
        layout = self._layout
        for start in range(0, len(entity_ids), self._chunk):
            ids = entity_ids[start : start + self._chunk]
            values_of = packed.encode(group, values[start : start + self._chunk], event_ms)
            keys = layout.feature_keys(group, ids)
            if layout.buckets:  # a multi-key command stays within one slot: one MSET per bucket
                by_bucket: dict[int, dict[bytes, bytes]] = defaultdict(dict)
                for e, key, value in zip(ids, keys, values_of, strict=True):
                    by_bucket[layout.bucket(e)][key] = value
                for mapping in by_bucket.values():  # (redis-py's cluster pipeline blocks .mset())
                    pipe.execute_command("MSET", *(x for pair in mapping.items() for x in pair))
            else:
                pipe.mset(dict(zip(keys, values_of, strict=True)))
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
            key = self._layout.seen_key(user_id)
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
            key = self._layout.velocity_key(kind, entity)
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
            pipe.zadd(self._layout.user_devices_key(user), {device: ts})
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

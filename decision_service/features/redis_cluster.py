"""The multiplexed Redis client over a Redis Cluster: one MultiplexedRedis per primary.

Same interface as ``features/redis_mux.MultiplexedRedis`` (``execute``, ``pipeline``,
``aclose``, ``pending``), so the store's halves run on either; the server uses it when the
online store's URL is ``redis+cluster://host:port[,host:port...]`` (``from_url``), with the
cluster key layout (``redis_store.KeyLayout``).

Routing: the slot table comes from ``CLUSTER SHARDS`` (primaries that are online). A
command goes to the primary of its key's slot (its first key: GET, ZADD, EVALSHA's first key,
...; a keyless command such as PING or INFO to the first primary). An ``MGET`` whose keys span
slots is split into one MGET per slot and its replies put back in key order (so a read is
correct whatever the key layout; the layout decides how many MGETs that is). The commands of
one ``pipeline`` call are sent as one pipeline per primary, all primaries at once.

Redirections, within the caller's deadline: ``MOVED`` refreshes the slot table and resends
the command once to the new owner; ``ASK`` sends ``ASKING`` + the command to the named node
once (a slot being migrated); ``TRYAGAIN`` (a multi-key command during a migration) is
raised as a TimeoutError, like any answer that does not come in time. Other error replies
raise ResponseError (CROSSSLOT: a multi-key command other than MGET across slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
from redis.crc import key_slot

from decision_service.config import mask_url
from decision_service.features.redis_mux import Command, MultiplexedRedis

SLOTS = 16384
SCHEME = "redis+cluster://"
REFRESH_INTERVAL_S = 0.5


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """(host, port) of each node listed in ``redis+cluster://[user:password@]host:port[,host:port...][/0]``.

    On failure: ValueError naming what is wrong (another scheme, no node, a port that is not a
    number, a database other than 0: a cluster has only database 0)."""
    if not url.startswith(SCHEME):
        raise ValueError(f"not a {SCHEME} URL: {url.split('@')[-1]!r}")
    rest = url[len(SCHEME) :]
    rest = rest.rpartition("@")[2]
    hosts, _, db = rest.partition("/")
    if db not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not /{db}")
    seeds = []
    for part in filter(None, hosts.split(",")):
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node {part!r} is not host:port (port 1-65535; IPv6 as [addr]:port)")
        seeds.append((host.strip("[]"), int(port)))
    if not seeds:
        raise ValueError(f"{SCHEME} URL names no node (host:port[,host:port...])")
    return seeds


def node_url(host: str, port: int, credentials: str = "") -> str:
    """``redis://[credentials]host:port/0``; an IPv6 host in brackets."""
    return f"redis://{credentials}{f'[{host}]' if ':' in host else host}:{port}/0"


def cluster_credentials(url: str) -> tuple[str, str]:
    """(user, password) of a cluster URL, still percent-encoded; empty when absent."""
    userinfo = _credentials(url)[:-1]
    user, _, password = userinfo.partition(":")
    return user, password


def _credentials(url: str) -> str:
    """``user:password@`` of a cluster URL (or empty)."""
    rest = url[len(SCHEME) :]
    head, at, _ = rest.rpartition("@")
    return head + at


def _as_dict(reply: Any) -> dict[bytes, Any]:
    """A RESP2 flat [key, value, ...] list (or a RESP3 map) as a dict with bytes keys."""
    if isinstance(reply, dict):
        return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in reply.items()}
    return {reply[i] if isinstance(reply[i], bytes) else str(reply[i]).encode(): reply[i + 1]
            for i in range(0, len(reply), 2)}  # fmt: skip


def primaries_of(shards: Any) -> list[tuple[str, int, list[tuple[int, int]]]]:
    """(host, port, [(first slot, last slot), ...]) of every online primary in a ``CLUSTER
    SHARDS`` reply."""
    out = []
    for shard in shards:
        s = _as_dict(shard)
        ranges = [(int(a), int(b)) for a, b in zip(s[b"slots"][0::2], s[b"slots"][1::2], strict=True)]
        for node in s[b"nodes"]:
            n = _as_dict(node)
            if n.get(b"role") in (b"master", "master") and n.get(b"health") in (b"online", "online"):
                host = n.get(b"ip") or n.get(b"endpoint")
                host = host.decode() if isinstance(host, bytes) else str(host)
                out.append((host, int(n[b"port"]), ranges))
    return out


@functools.lru_cache(maxsize=1 << 18)
def _slot(key: str | bytes) -> int:
    """The hash slot of a key, memoised: a request reads the same item keys again and again,
    and CRC16 in Python was a third of the cluster client's CPU (loadtests/bench_cluster_read)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def _keys(command: Command) -> list[Any]:
    """The keys of a command this store sends (first key for single-key commands)."""
    name = str(command[0].decode() if isinstance(command[0], bytes) else command[0]).upper()
    if name in ("MGET", "DEL", "EXISTS", "UNLINK"):
        return list(command[1:])
    if name == "MSET":
        return list(command[1::2])
    if name in ("EVAL", "EVALSHA", "EVALSHA_RO", "EVAL_RO", "FCALL"):
        return list(command[3 : 3 + int(command[2])])
    if name in ("PING", "INFO", "SCRIPT", "CLUSTER", "ASKING", "DBSIZE", "TIME"):
        return []
    return [command[1]] if len(command) > 1 else []


class ClusterMultiplexedRedis:
    """A cluster-aware MultiplexedRedis (see the module docstring).

    ``seeds``: ``redis://host:port`` URLs of one or more nodes (any node serves the slot
    table). Contract: replies in command order, as MultiplexedRedis; errors as it raises them.
    """

    def __init__(
        self,
        seeds: Sequence[str],
        timeout_s: float = 0.05,
        connect_timeout_s: float = 0.5,
        credentials: str = "",
    ) -> None:
        if not seeds:
            raise ValueError("a cluster needs at least one seed node URL")
        self._seeds = list(seeds)
        self._credentials = credentials  # "user:password@" for every node
        self._timeout_s, self._connect_timeout_s = timeout_s, connect_timeout_s
        self._nodes: dict[tuple[str, int], MultiplexedRedis] = {}
        self._slots: list[tuple[str, int] | None] = [None] * SLOTS
        self._refreshing: asyncio.Task[None] | None = None
        self.refreshes = 0  # slot-table loads so far (a counter for operators and tests)
        self._loaded = False
        self.node_errors: dict[str, int] = defaultdict(int)  # "host:port" -> failed sends
        self._last_refresh_at = float("-inf")
        self._background: asyncio.Future[None] | None = None

    @classmethod
    def from_url(
        cls, url: str, timeout_s: float = 0.05, connect_timeout_s: float = 0.5
    ) -> ClusterMultiplexedRedis:
        """The client of ``redis+cluster://[user:password@]host:port[,host:port...]`` (cluster_seeds)."""
        creds = _credentials(url)
        seeds = [node_url(h, p, creds) for h, p in cluster_seeds(url)]
        return cls(seeds, timeout_s, connect_timeout_s, credentials=creds)

    # ------------------------------------------------------------------ public API

    async def execute(self, *args: Any) -> Any:
        reply = (await self.replies([args]))[0]
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        replies = await self.replies(commands)
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies

    async def pipeline_in_slots(self, commands: Sequence[Command], slots: Sequence[int]) -> list[Any]:
        """``pipeline`` for commands whose keys the caller knows to lie in ``slots[i]`` (its key
        layout's hash tags): no key is hashed here. Errors as ``pipeline``."""
        if not self._loaded:
            await self.refresh()
        got = await self._send_parts(
            [(i, 0, c, s) for i, (c, s) in enumerate(zip(commands, slots, strict=True))]
        )
        replies = [got[(i, 0)] for i in range(len(commands))]
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies

    async def replies(self, commands: Sequence[Command]) -> list[Any]:
        """Replies in order, error replies in place (redirections already followed)."""
        if not self._loaded:
            await self.refresh()
        # (command index, part, the part's command, its slot): an MGET across slots is parts
        parts: list[tuple[int, int, Command, int | None]] = []
        shape: list[list[list[int]] | None] = []  # per MGET: the key positions of each part
        for i, command in enumerate(commands):
            keys = _keys(command)
            slots = [_slot(k) for k in keys]
            name = (
                str(command[0]).upper() if not isinstance(command[0], bytes) else command[0].decode().upper()
            )
            if name == "MGET" and len(set(slots)) > 1:
                by_slot: dict[int, list[int]] = defaultdict(list)
                for pos, slot in enumerate(slots):
                    by_slot[slot].append(pos)
                positions = list(by_slot.values())
                for j, (slot, pos) in enumerate(by_slot.items()):
                    parts.append((i, j, ("MGET", *(keys[p] for p in pos)), slot))
                shape.append(positions)
            else:
                parts.append((i, 0, command, slots[0] if slots else None))
                shape.append(None)
        got = await self._send_parts(parts)
        out: list[Any] = []
        for i, positions in enumerate(shape):
            if positions is None:
                out.append(got[(i, 0)])
                continue
            merged: list[Any] = [None] * sum(len(p) for p in positions)
            error = None
            for j, pos in enumerate(positions):
                reply = got[(i, j)]
                if isinstance(reply, redis.exceptions.ResponseError):
                    error = reply
                    break
                for p, value in zip(pos, reply, strict=True):
                    merged[p] = value
            out.append(error if error is not None else merged)
        return out

    async def refresh(self) -> None:
        """Loads the slot table from the first node that answers (one load at a time)."""
        if self._refreshing is None:
            task = asyncio.ensure_future(self._load_slots())
            self._refreshing = task

            def done(t: asyncio.Future[None]) -> None:  # cleared even when every waiter was cancelled
                if self._refreshing is t:
                    self._refreshing = None
                if not t.cancelled():
                    t.exception()  # retrieved: the waiters (if any) raise it

            task.add_done_callback(done)
        await asyncio.shield(self._refreshing)

    async def ping_all(self) -> dict[str, bool]:
        """Every primary's PING ("host:port" -> answered PONG): readiness checks them all."""
        if not self._loaded:
            await self.refresh()

        async def one(node: MultiplexedRedis) -> bool:
            try:
                return await node.execute("PING") == b"PONG"
            except redis.exceptions.RedisError:
                return False

        addresses = sorted({a for a in self._slots if a is not None})
        answers = await asyncio.gather(*(one(self._node(a)) for a in addresses))
        return {f"{h}:{p}": ok for (h, p), ok in zip(addresses, answers, strict=True)}

    async def aclose(self) -> None:
        if self._background is not None and not self._background.done():
            self._background.cancel()
        for node in self._nodes.values():
            await node.aclose()

    @property
    def pending(self) -> int:
        """Commands sent, not answered, over every node. Safe from another thread (a metrics
        scrape): the node list is copied in one step before it is summed."""
        return sum(node.pending for node in list(self._nodes.values()))

    # ------------------------------------------------------------------ internals

    def _node(self, address: tuple[str, int]) -> MultiplexedRedis:
        node = self._nodes.get(address)
        if node is None:
            node = MultiplexedRedis(
                node_url(address[0], address[1], self._credentials),
                timeout_s=self._timeout_s,
                connect_timeout_s=self._connect_timeout_s,
            )
            self._nodes[address] = node
        return node

    async def _load_slots(self) -> None:
        errors = []
        candidates = [
            node_url(h, p, self._credentials) for h, p in {a for a in self._slots if a is not None}
        ] + self._seeds
        for url in candidates:
            probe = MultiplexedRedis(
                url, timeout_s=max(self._timeout_s, 1.0), connect_timeout_s=self._connect_timeout_s
            )
            try:
                shards = await probe.execute("CLUSTER", "SHARDS")
            except redis.exceptions.RedisError as exc:
                errors.append(f"{mask_url(url)}: {exc}")
                continue
            finally:
                await probe.aclose()
            table: list[tuple[str, int] | None] = [None] * SLOTS
            for host, port, ranges in primaries_of(shards):
                for first, last in ranges:
                    for slot in range(first, last + 1):
                        table[slot] = (host, port)
            self._slots = table
            self._loaded = True
            self.refreshes += 1
            return
        raise redis.exceptions.ConnectionError(
            "no cluster node answered CLUSTER SHARDS: " + "; ".join(errors)
        )

    async def _send_parts(
        self, parts: list[tuple[int, int, Command, int | None]]
    ) -> dict[tuple[int, int], Any]:
        by_node: dict[tuple[str, int], list[tuple[int, int, Command]]] = defaultdict(list)
        first = next((a for a in self._slots if a is not None), None)
        for i, j, command, slot in parts:
            address = self._slots[slot] if slot is not None else first
            if address is None:  # its primary failed and no replica was promoted (yet)
                self._refresh_soon()
                raise redis.exceptions.ConnectionError(f"slot {slot} has no online primary")
            by_node[address].append((i, j, command))
        got: dict[tuple[int, int], Any] = {}
        # every primary's batch goes out in the same loop turn (one write per connection), no
        # task per node: the futures are awaited after all were queued
        for address in by_node:
            node = self._node(address)
            try:
                await node.connected()
            except redis.exceptions.ConnectionError as exc:
                self._node_failed(address, exc)
                raise
        sent = [(a, b, self._nodes[a].submit([c for _, _, c in b])) for a, b in by_node.items()]
        error: BaseException | None = None
        for address, batch, future in sent:
            try:
                replies = await future
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self._node_failed(address, exc)
                error = error or exc
                continue
            for (i, j, _), reply in zip(batch, replies, strict=True):
                got[(i, j)] = reply
        if error is not None:
            raise error
        # redirections: each followed once
        moved = [(i, j, c) for i, j, c, _ in parts if _redirect(got[(i, j)]) == "MOVED"]
        if moved:
            await self.refresh()
            again = [(i, j, c, _slot_of(got[(i, j)])) for i, j, c in moved]
            got.update(await self._send_parts_once(again))
        for i, j, command, _ in parts:
            kind = _redirect(got[(i, j)])
            if kind == "ASK":
                host, port = _target(got[(i, j)])
                asked = await self._node((host, port)).replies([("ASKING",), command])
                got[(i, j)] = asked[1]
            elif kind == "CLUSTERDOWN":
                down = redis.exceptions.ConnectionError(str(got[(i, j)]))
                self._node_failed(self._slots[_keys_slot(command)] or ("?", 0), down)
            elif kind == "TRYAGAIN":
                raise redis.exceptions.TimeoutError(f"slot migration in progress: {got[(i, j)]}")
        return got

    async def _send_parts_once(
        self, parts: list[tuple[int, int, Command, int | None]]
    ) -> dict[tuple[int, int], Any]:
        """One resend after a refresh, no further redirection followed (a MOVED again stays an error)."""
        by_node: dict[tuple[str, int], list[tuple[int, int, Command]]] = defaultdict(list)
        for i, j, command, slot in parts:
            address = self._slots[slot] if slot is not None else None
            if address is None:
                self._refresh_soon()
                raise redis.exceptions.ConnectionError(f"slot {slot} has no online primary")
            by_node[address].append((i, j, command))
        got: dict[tuple[int, int], Any] = {}
        for address, batch in by_node.items():
            try:
                replies = await self._node(address).replies([c for _, _, c in batch])
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self._node_failed(address, exc)
                raise
            for (i, j, _), reply in zip(batch, replies, strict=True):
                got[(i, j)] = reply
        return got

    def _node_failed(self, address: tuple[str, int], exc: Exception) -> None:
        """Counts a primary that did not answer; a lost connection may be a failover (a replica
        promoted in its place): the slot table is reloaded in the background, at most every
        REFRESH_INTERVAL_S, so the next calls go to the new primary."""
        self.node_errors[f"{address[0]}:{address[1]}"] += 1
        if isinstance(exc, redis.exceptions.ConnectionError):
            self._refresh_soon()

    def _refresh_soon(self) -> None:
        """Reloads the slot table in the background (at most every REFRESH_INTERVAL_S)."""
        now = asyncio.get_running_loop().time()
        if self._refreshing is not None or now - self._last_refresh_at < REFRESH_INTERVAL_S:
            return
        self._last_refresh_at = now

        async def background() -> None:
            with contextlib.suppress(redis.exceptions.RedisError):  # the next failure tries again
                await self.refresh()

        self._background = asyncio.ensure_future(background())


def _redirect(reply: Any) -> str | None:
    if isinstance(reply, redis.exceptions.ResponseError):
        head = str(reply).split(" ", 1)[0]
        if head in ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"):
            return head
    return None


def _keys_slot(command: Command) -> int:
    keys = _keys(command)
    return _slot(keys[0]) if keys else 0


def _slot_of(reply: Any) -> int:
    return int(str(reply).split(" ")[1])


def _target(reply: Any) -> tuple[str, int]:
    host, port = str(reply).split(" ")[2].rsplit(":", 1)
    return host, int(port)

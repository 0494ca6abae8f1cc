"""Writes a serving snapshot into Redis with the online store's own writers.

Groups written: USER (every user), USER_EMBEDDING (users with history), ITEM (every listed
item), plus each user's seen items (newest ``max_seen_items`` distinct items, scored by
their latest interaction time in ms). Values carry ``event_ms`` = wall-clock now, so the
serving max-age checks pass.

The serving snapshot (features + embeddings) is saved by the bootstrap job into
``<world>/serving/``; ``materialize_world`` loads it from there, so the embeddings in Redis
are exactly the ones the published FAISS index was built from.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import redis

from decision_service.config import ServiceConfig
from decision_service.domain.decision import now_ms
from decision_service.features.definitions import ITEM, USER, USER_EMBEDDING
from decision_service.features.redis_store import RedisBulkWrites, connect
from offline.features import feature_history
from offline.features.embeddings import Embeddings
from offline.features.feature_history import HISTORY_DIR
from offline.features.snapshot import Snapshot

if TYPE_CHECKING:
    from offline.simulation.world import World

MAX_SEEN_ITEMS = ServiceConfig.max_seen_items  # what the service reads back
SERVING_DIR = "serving"
SNAPSHOT_FILE = "snapshot.npz"
EMBEDDINGS_FILE = "embeddings.npz"


def save_serving_state(world_dir: str | Path, snapshot: Snapshot, emb: Embeddings) -> Path:
    """Saves the serving snapshot and embeddings under ``<world_dir>/serving``."""
    d = Path(world_dir) / SERVING_DIR
    d.mkdir(parents=True, exist_ok=True)
    snapshot.save(d / SNAPSHOT_FILE)
    np.savez(d / EMBEDDINGS_FILE, users=emb.users, items=emb.items,
             singular_values=emb.singular_values, cutoff_ms=emb.cutoff_ms)
    return d


def load_serving_state(world_dir: str | Path) -> tuple[Snapshot, Embeddings]:
    """The state saved by ``save_serving_state``. On failure: FileNotFoundError (run bootstrap)."""
    d = Path(world_dir) / SERVING_DIR
    snap = Snapshot.load(d / SNAPSHOT_FILE)
    with np.load(d / EMBEDDINGS_FILE) as z:
        emb = Embeddings(z["users"], z["items"], z["singular_values"], int(z["cutoff_ms"]), 0.0)
    return snap, emb


def seen_history(
    world: World, before_ms: int, max_items: int = MAX_SEEN_ITEMS
) -> dict[str, list[tuple[str, int]]]:
    """Per user with history: newest ``max_items`` distinct (item id, last time ms), newest first."""
    sl = world.events_before(before_ms)
    keys = world.event_user[sl].astype(np.int64) * world.n_items + world.event_item[sl]
    ts = world.event_ms[sl]
    # Events are time-sorted: the last occurrence of a key is its latest time.
    rev_keys, rev_idx = np.unique(keys[::-1], return_index=True)
    last_ts = ts[::-1][rev_idx]
    user, item = rev_keys // world.n_items, rev_keys % world.n_items
    order = np.lexsort((-last_ts, user))
    user, item, last_ts = user[order], item[order], last_ts[order]
    start = np.searchsorted(user, user, side="left")
    keep = (np.arange(len(user)) - start) < max_items
    user, item, last_ts = user[keep], item[keep], last_ts[keep]
    bounds = np.flatnonzero(np.r_[True, user[1:] != user[:-1], True])
    item_ids, user_ids = world.item_ids, world.user_ids
    out: dict[str, list[tuple[str, int]]] = {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        out[user_ids[user[a]]] = list(zip(item_ids[item[a:b]].tolist(), last_ts[a:b].tolist(), strict=True))
    return out


def materialize_snapshot(
    client: redis.Redis,
    world: World | None,
    snapshot: Snapshot,
    emb: Embeddings,
    max_seen_items: int = MAX_SEEN_ITEMS,
    event_ms: int | None = None,
    history_root: str | Path | None = None,
    write_seen_items: bool = True,
) -> dict[str, float]:
    """Writes USER, USER_EMBEDDING, ITEM and seen items; returns counts and seconds.

    With ``history_root`` every group written is also appended to the feature history
    (offline/features/feature_history.py) stamped with ``event_ms``, the time it became servable.
    ``write_seen_items=False`` leaves the seen sets alone (a re-materialization while the
    service runs must not forget what users clicked since the last batch run); only the seen
    sets need ``world`` (its events), so it may then be None.
    """
    t0 = time.perf_counter()
    event_ms = now_ms() if event_ms is None else event_ms
    bulk = RedisBulkWrites(client, max_seen_items)
    users = [str(u) for u in snapshot.user_ids]
    n_users = bulk.write_group(USER, users, snapshot.users, event_ms)
    has_emb = np.flatnonzero(np.abs(emb.users).sum(axis=1) > 0)
    n_emb = bulk.write_group(USER_EMBEDDING, [users[r] for r in has_emb],
                        emb.users[has_emb], event_ms)
    listed = np.flatnonzero(snapshot.item_listed)
    n_items = bulk.write_group(ITEM, [str(snapshot.item_ids[r]) for r in listed],
                          snapshot.items[listed], event_ms)
    if history_root is not None:
        feature_history.append_snapshot(history_root, USER, users, snapshot.users, event_ms)
        feature_history.append_snapshot(history_root, USER_EMBEDDING, [users[r] for r in has_emb],
                                        emb.users[has_emb], event_ms)
        feature_history.append_snapshot(history_root, ITEM, [str(snapshot.item_ids[r]) for r in listed],
                                        snapshot.items[listed], event_ms)
    if not write_seen_items:
        return {"users": n_users, "user_embeddings": n_emb, "items": n_items,
                "seen_users": 0, "seconds": round(time.perf_counter() - t0, 2)}
    if world is None:
        raise ValueError("writing the seen items needs the world's events (world=None)")
    history = seen_history(world, snapshot.as_of_ms, max_seen_items)
    # Users without history get an empty entry, so a re-run clears any older seen set.
    history = {u: history.get(u, []) for u in users}
    n_seen = bulk.write_seen(history)
    return {"users": n_users, "user_embeddings": n_emb, "items": n_items,
            "seen_users": n_seen, "seconds": round(time.perf_counter() - t0, 2)}


def materialize(
    world_dir: str | Path, redis_url: str, max_seen_items: int = MAX_SEEN_ITEMS,
    history_root: str | Path | None = None, write_seen_items: bool = True,
) -> dict[str, float]:
    """Materializes the serving state that bootstrap saved for ``world_dir`` into ``redis_url``.

    Each run also appends the snapshot to the feature history, by default
    ``<world_dir>/feature_history``.

    ``write_seen_items=False`` reads only the saved serving state, not the world's events
    (what retrain does: the loop does not depend on the simulator).

    On failure: FileNotFoundError if the world was not bootstrapped (no ``serving/`` state).
    """
    world = None
    if write_seen_items:
        from offline.simulation.world import World

        world = World.load(world_dir)
    snapshot, emb = load_serving_state(world_dir)
    client = connect(redis_url)
    try:
        history = Path(world_dir) / HISTORY_DIR if history_root is None else history_root
        return materialize_snapshot(client, world, snapshot, emb, max_seen_items,
                                    history_root=history, write_seen_items=write_seen_items)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.features.materialize", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--world", default="data/world", help="world directory (after bootstrap)")
    ap.add_argument("--redis-url", required=True, help="e.g. redis://127.0.0.1:6380/0")
    ap.add_argument("--max-seen-items", type=int, default=MAX_SEEN_ITEMS)
    args = ap.parse_args(argv)
    stats = materialize_world(args.world, args.redis_url, args.max_seen_items)
    print("materialized " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


materialize_world = materialize
"""Alias of ``materialize`` (world directory + Redis URL)."""


if __name__ == "__main__":
    raise SystemExit(main())

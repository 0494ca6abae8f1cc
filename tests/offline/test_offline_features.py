"""Snapshots use only the past, follow the registry layout and compute what they say."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from decision_service.features.definitions import ITEM, USER
from offline.features.embeddings import train_embeddings
from offline.features.snapshot import compute_snapshot
from offline.simulation.world import DAY_MS, World
from tests.offline.shop_reference import group_percentile


def test_snapshot_layout(tiny_world_dir: Path) -> None:
    world = World.load(tiny_world_dir)
    snap = compute_snapshot(world, world.day_ms(30))
    assert snap.users.shape == (world.n_users, USER.width) and snap.users.dtype == np.float32
    assert snap.items.shape == (world.n_items, ITEM.width) and snap.items.dtype == np.float32
    assert np.isfinite(snap.users).all() and np.isfinite(snap.items).all()
    shares = snap.users[:, USER.slot("u_category_share_00") : USER.slot("u_category_share_19") + 1]
    active = snap.users[:, USER.slot("u_events_total")] > 0
    np.testing.assert_allclose(shares[active].sum(axis=1), 1.0, atol=1e-4)
    assert (shares[~active] == 0).all()
    # Users without history get the declared defaults.
    idle = ~active
    if idle.any():
        assert (snap.users[idle, USER.slot("u_days_since_last_event")] == 365.0).all()
        assert (snap.users[idle, USER.slot("u_avg_price")] == 30.0).all()


def test_counts_match_a_direct_computation(tiny_world_dir: Path) -> None:
    world = World.load(tiny_world_dir)
    as_of = world.day_ms(40)
    snap = compute_snapshot(world, as_of)
    u = 11
    mine = (world.event_user == u) & (world.event_ms < as_of)
    recent = mine & (world.event_ms >= as_of - 7 * DAY_MS)
    assert snap.users[u, USER.slot("u_events_total")] == mine.sum()
    assert snap.users[u, USER.slot("u_events_7d")] == recent.sum()
    assert snap.users[u, USER.slot("u_distinct_items")] == len(np.unique(world.event_item[mine]))
    top = np.argmax(snap.items[:, ITEM.slot("i_events_30d")])
    assert snap.items[top, ITEM.slot("i_popularity_pct")] == 1.0


def _with_extra_events(world: World, at_ms: int, out: Path) -> World:
    """A copy of the world's files plus events at and after ``at_ms`` by every user."""
    assert world.directory is not None
    out.mkdir(parents=True, exist_ok=True)
    for name in ("users.parquet", "items.parquet", "world.json"):
        shutil.copy(world.directory / name, out / name)
    n = world.n_users
    users = np.arange(n, dtype=np.int32)
    items = (users % world.n_items).astype(np.int32)
    ts = np.where(users % 2 == 0, at_ms, at_ms + 3 * DAY_MS).astype(np.int64)
    old = pq.read_table(world.directory / "interactions.parquet")
    extra = pa.table({
        "user_id": pa.array([str(world.user_ids[u]) for u in users]),
        "item_id": pa.array([str(world.item_ids[i]) for i in items]),
        "event": pa.array(["purchase"] * n),
        "ts_ms": pa.array(ts),
        "user_idx": pa.array(users),
        "item_idx": pa.array(items),
    })
    both = pa.concat_tables([old.cast(extra.schema), extra]).sort_by([("ts_ms", "ascending")])
    pq.write_table(both, out / "interactions.parquet")
    return World.load(out)


def test_no_leakage_from_events_at_or_after_as_of(tiny_world_dir: Path, tmp_path: Path) -> None:
    world = World.load(tiny_world_dir)
    as_of = world.day_ms(35)
    before = compute_snapshot(world, as_of)
    extended = _with_extra_events(world, as_of, tmp_path / "later")
    after = compute_snapshot(extended, as_of)
    np.testing.assert_array_equal(before.users, after.users)
    np.testing.assert_array_equal(before.items, after.items)
    e1 = train_embeddings(world, as_of)
    e2 = train_embeddings(extended, as_of)
    np.testing.assert_array_equal(e1.users, e2.users)
    np.testing.assert_array_equal(e1.items, e2.items)
    # ... while an event just before as_of does change them.
    moved = compute_snapshot(_with_extra_events(world, as_of - 1, tmp_path / "earlier"), as_of)
    assert not np.array_equal(before.users, moved.users)


def test_group_percentile() -> None:
    values = np.array([5.0, 1.0, 3.0, 3.0, 9.0, 2.0])
    groups = np.array([0, 0, 0, 0, 1, 1])
    mask = np.array([True, True, True, True, True, False])
    pct = group_percentile(values, groups, mask)
    np.testing.assert_allclose(pct, [1.0, 0.0, 1 / 3, 1 / 3, 1.0, 0.0])


def test_embeddings_are_deterministic_and_zero_without_history(tiny_world_dir: Path) -> None:
    world = World.load(tiny_world_dir)
    cutoff = world.day_ms(20)
    a, b = train_embeddings(world, cutoff), train_embeddings(world, cutoff)
    np.testing.assert_array_equal(a.items, b.items)
    assert a.users.shape == (world.n_users, 64) and a.items.dtype == np.float32
    no_hist = np.setdiff1d(np.arange(world.n_items), world.event_item[world.event_ms < cutoff])
    assert len(no_hist) and (a.items[no_hist] == 0).all()
    assert np.all(np.diff(a.singular_values[a.singular_values > 0]) <= 1e-9)

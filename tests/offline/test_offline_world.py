"""The synthetic world is deterministic, well-formed and follows its own choice model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from decision_service.features.definitions import CATEGORIES
from offline.simulation.world import (
    DAY_MS,
    WORLD_START_MS,
    World,
    click_probability,
    generate_world,
    load_truth,
    preset,
    simulate,
)


def test_same_seed_same_world() -> None:
    cfg = preset("tiny", n_users=300, n_items=400)
    a, b = simulate(cfg), simulate(cfg)
    for part_a, part_b in zip(a, b, strict=True):
        if isinstance(part_a, dict):
            for key in part_a:
                np.testing.assert_array_equal(part_a[key], part_b[key])
    np.testing.assert_array_equal(a[2].user_latent, b[2].user_latent)
    other = simulate(preset("tiny", n_users=300, n_items=400, seed=cfg.seed + 1))
    assert len(other[3]["ts_ms"]) != len(a[3]["ts_ms"]) or not np.array_equal(
        other[3]["item"], a[3]["item"]
    )


def test_chunking_does_not_change_the_data() -> None:
    a = simulate(preset("tiny", n_users=300, n_items=400, chunk_users=300))
    b = simulate(preset("tiny", n_users=300, n_items=400, chunk_users=300))
    np.testing.assert_array_equal(a[3]["item"], b[3]["item"])


def test_world_files_are_well_formed(tiny_world_dir: Path) -> None:
    world = World.load(tiny_world_dir)
    assert world.start_ms == WORLD_START_MS
    assert world.now_ms == WORLD_START_MS + world.config.days * DAY_MS
    assert world.user_ids[42] == "u0000042" and world.item_ids[42] == "i0000042"
    assert np.all(np.diff(world.event_ms) >= 0)
    assert world.event_ms.min() >= world.start_ms and world.event_ms.max() < world.now_ms
    assert world.item_category.min() >= 0 and world.item_category.max() < len(CATEGORIES)
    assert (world.item_stock == 0).any() and (world.item_price > 0).all()
    # No interaction before the item was listed or the user signed up.
    assert (world.event_ms >= world.item_listed_ms[world.event_item]).all()
    assert (world.event_ms >= world.user_signup_ms[world.event_user]).all()
    assert 0.02 < world.event_purchase.mean() < 0.4
    events = pq.read_table(tiny_world_dir / "interactions.parquet")
    assert set(events.column("event").to_pylist()) == {"click", "purchase"}
    assert events.column("user_id")[0].as_py() == world.user_ids[world.event_user[0]]


def test_click_probability_follows_tastes(tiny_world_dir: Path) -> None:
    world, truth = World.load(tiny_world_dir), load_truth(tiny_world_dir)
    items = np.arange(world.n_items)
    p = click_probability(truth, 7, items)
    assert p.shape == (world.n_items,) and ((p > 0) & (p < 1)).all()
    # Items the user interacted with were, on average, more clickable than the catalog.
    mine = np.unique(world.event_item[world.event_user == 7])
    assert p[mine].mean() > p.mean()


def test_generate_world_cli_writes_files(tmp_path: Path) -> None:
    from offline.simulation.world import main

    assert main(["--preset", "tiny", "--users", "200", "--items", "300", "--out", str(tmp_path)]) == 0
    for name in ("users.parquet", "items.parquet", "interactions.parquet", "truth.npz", "world.json"):
        assert (tmp_path / name).is_file()
    meta = generate_world(preset("tiny", n_users=200, n_items=300), tmp_path / "again")
    assert meta["n_events"] == World.load(tmp_path).n_events


def test_the_example_project_names_the_simulators_categories() -> None:
    """examples/synthetic declares the vocabulary the generator draws items over, in its order."""
    from decision_service.features.definitions import CATEGORIES
    from offline.simulation.world import CATEGORY_NAMES

    assert CATEGORIES == CATEGORY_NAMES

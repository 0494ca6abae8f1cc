"""Sources as a project declares them: derived columns in order (each over the ones before),
CSV with another delimiter, and a project's interactions loaded into the jobs' arrays exactly
as the generated world's own loader reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from decision_service.features.declarative import Count, Events, GroupSource, Mean, Time
from decision_service.features.registry import Feature, FeatureGroup
from offline.features import compiler

DAY_MS = 86_400_000


def test_derived_columns_chain_in_declared_order_over_a_tab_separated_file(tmp_path: Path) -> None:
    """A typed-header TSV (ml-100k style): ``user`` renames a column, ``stars`` casts one,
    ``liked`` uses ``stars`` (declared before it): the event type is itself derived."""
    rows = pa.table(
        {
            "user_id:token": ["a", "a", "a", "b"],
            "rating:float": ["5", "2", "4", "1"],
            "timestamp:float": [1_000, 2_000, 3_000, 1_500],
        }
    )
    pacsv.write_csv(rows, tmp_path / "r.inter", write_options=pacsv.WriteOptions(delimiter="\t"))
    events = Events(
        "ratings",
        "r.inter",
        Time("ts", "s"),
        keys={"user": "user"},
        event_type="kind",
        event_types=("like", "rating"),
        format="csv",
        delimiter="\t",
        derived={
            "user": '"user_id:token"',
            "ts": '"timestamp:float"',
            "stars": 'CAST("rating:float" AS DOUBLE)',
            "kind": "CASE WHEN stars >= 4 THEN 'like' ELSE 'rating' END",
        },
    )
    group = FeatureGroup(
        name="g",
        entity="user",
        max_age_s=1.0,
        description="",
        features=(
            Feature("likes", "", compute=Count(where=("like",))),
            Feature("mean_stars", "", compute=Mean(of="stars")),
        ),
        source=GroupSource(events=events),
    )
    ids, values = compiler.snapshot(group, 10_000_000, tmp_path)
    got = dict(zip(ids.tolist(), values.tolist(), strict=True))
    assert got == {"a": [2.0, pytest.approx(11 / 3)], "b": [0.0, 1.0]}


def test_kind_loader_skew_a_projects_interactions_load_as_the_world_loader_reads_them(
    tiny_world_dir: Path,
) -> None:
    """The synthetic project's INTERACTIONS declaration, loaded by the generic loader, gives
    the same users, items, categories, prices, stock, listing and sign-up times and the same
    events as World.load (so every recommendation job sees the same data either way)."""
    from decision_service.features.definitions import INTERACTIONS
    from offline.features.interactions import load_interactions
    from offline.simulation.world import World

    world = World.load(tiny_world_dir)
    loaded, report = load_interactions(INTERACTIONS, tiny_world_dir, "tiny")
    assert report.events_on_unknown_items == 0 and report.users_from_events == 0
    np.testing.assert_array_equal(loaded.user_ids, world.user_ids)
    np.testing.assert_array_equal(loaded.item_ids, world.item_ids)
    for name in ("user_signup_ms", "item_category", "item_price", "item_stock", "item_listed_ms"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(world, name), err_msg=name)
    ours = np.lexsort((loaded.event_item, loaded.event_user, loaded.event_ms))
    theirs = np.lexsort((world.event_item, world.event_user, world.event_ms))
    for name in ("event_user", "event_item", "event_ms", "event_purchase"):
        np.testing.assert_array_equal(getattr(loaded, name)[ours], getattr(world, name)[theirs], err_msg=name)
    assert loaded.start_ms <= world.event_ms[0] and loaded.now_ms == int(world.event_ms[-1]) + 1


def test_kind_offset_dropped_text_timestamps_keep_their_own_offset(tmp_path: Path) -> None:
    """Text timestamps in Parquet with a declared non-UTC timezone: an explicit offset or Z is
    kept (it used to be dropped: '05:00+05:00' read as 05:00 New York time); naive text is wall
    time in the declared timezone."""
    import pyarrow.parquet as pq

    from decision_service.features.declarative import TimeSinceLast

    pq.write_table(
        pa.table(
            {
                "user": ["z", "plus", "naive", "minus"],
                "ts": [
                    "2026-01-01T00:00:00Z",
                    "2026-01-01T05:00:00+05:00",
                    "2026-01-01 00:00:00",
                    "2026-01-01T00:00:00-0300",
                ],
            }
        ),
        tmp_path / "e.parquet",
    )
    events = Events(
        "e", "e.parquet", Time("ts", "timestamp", timezone="America/New_York"), keys={"user": "user"}
    )
    group = FeatureGroup(
        name="g",
        entity="user",
        max_age_s=1.0,
        description="",
        features=(Feature("hours_since", "", compute=TimeSinceLast(unit="h")),),
        source=GroupSource(events=events),
    )
    midnight_utc = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    ids, values = compiler.snapshot(group, midnight_utc + 10 * 3_600_000, tmp_path)
    hours = dict(zip(ids.tolist(), values[:, 0].tolist(), strict=True))
    assert hours == {"z": 10.0, "plus": 10.0, "naive": 5.0, "minus": 7.0}

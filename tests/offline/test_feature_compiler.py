"""The declarative feature compiler (offline/features/compiler.py): each aggregation x window
on tiny hand-checked tables, the window edges, entities without history, NULL values, and
point-in-time correctness (never a value from after the row's time)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.features.declarative import (
    Attribute,
    Count,
    DistinctCount,
    Entropy,
    Events,
    Expr,
    GroupSource,
    Last,
    Lookup,
    Max,
    Mean,
    Min,
    PercentileInGroup,
    Ratio,
    Share,
    Std,
    Sum,
    Table,
    Time,
    TimeSinceAttribute,
    TimeSinceFirst,
    TimeSinceLast,
    TopShare,
    seconds,
)
from decision_service.features.registry import Feature, FeatureGroup
from offline.features import compiler
from offline.features.compiler import CompileError, SourceError

H = 3_600_000  # ms
D = 24 * H
T = 100 * D  # the as-of time of most tests


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    """u1: 4 events (one exactly 1 day before T, one at T, one after T), u2: 1, u3: none."""
    pq.write_table(
        pa.table(
            {
                "user": ["u1", "u1", "u1", "u1", "u1", "u2"],
                "item": ["a", "b", "a", "c", "a", "b"],
                "kind": ["click", "buy", "click", "click", "buy", "buy"],
                "ts": [T - 10 * D, T - D, T - 2 * H, T, T + H, T - 5 * D],
                "amount": [10.0, None, 30.0, 99.0, 50.0, 7.0],
            }
        ),
        tmp_path / "events.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item": ["a", "b", "c", "d"],
                "category": ["books", "music", "books", "toys"],
                "price": [5.0, 20.0, 8.0, 1.0],
                "listed": [0, 0, 0, T + D],
            }
        ),
        tmp_path / "items.parquet",
    )
    pq.write_table(
        pa.table({"user": ["u1", "u2", "u3"], "signup": [T - 50 * D, T - D // 2, T + D]}),
        tmp_path / "users.parquet",
    )
    return tmp_path


ITEMS = Table("items", "items.parquet", key="item")
USERS = Table("users", "users.parquet", key="user")
EVENTS = Events(
    "events",
    "events.parquet",
    Time("ts", "ms"),
    keys={"user_id": "user", "item_id": "item"},
    event_type="kind",
    lookups=(Lookup(ITEMS, on="item", columns=("category", "price")),),
)


def group(*features: Feature, entity: str = "user_id", table: Table | None = USERS) -> FeatureGroup:
    return FeatureGroup("g", entity, tuple(features), 86_400.0, source=GroupSource(EVENTS, table))


def values(g: FeatureGroup, base: Path, as_of: int = T) -> dict[str, dict[str, float]]:
    ids, rows = compiler.snapshot(g, as_of, base)
    return {col: dict(zip(ids, rows[:, j].tolist(), strict=True)) for j, col in enumerate(g.columns)}


def test_counts_per_window_include_the_start_edge_exclusive_and_never_the_as_of_time(shop):
    g = group(
        Feature("n_all", "", compute=Count()),
        Feature("n_1d", "", compute=Count("1d")),  # the event exactly 1 day old has left it
        Feature("n_2d", "", compute=Count("2d")),
        Feature("n_buy", "", compute=Count(where="buy")),
        Feature("n_buy_2d", "", compute=Count("2d", ("buy",))),
    )
    v = values(g, shop)
    # u1's events before T: T-10d click, T-1d buy, T-2h click (T itself and T+1h not yet)
    assert v["n_all"] == {"u1": 3, "u2": 1, "u3": 0}
    assert v["n_1d"] == {"u1": 1, "u2": 0, "u3": 0}
    assert v["n_2d"] == {"u1": 2, "u2": 0, "u3": 0}
    assert v["n_buy"] == {"u1": 1, "u2": 1, "u3": 0}
    assert v["n_buy_2d"]["u1"] == 1


def test_value_aggregations_skip_nulls_and_give_the_default_without_history(shop):
    g = group(
        Feature("sum", "", compute=Sum(of="amount")),
        Feature("mean", "", default=-1.0, compute=Mean(of="amount")),
        Feature("std", "", default=-2.0, compute=Std(of="amount")),
        Feature("min", "", default=-3.0, compute=Min(of="amount")),
        Feature("max", "", compute=Max("30d", of="amount")),
        Feature("last", "", default=-4.0, compute=Last(of="amount")),
        Feature("mean_price", "", default=9.0, compute=Mean(of="price")),  # looked up per event
    )
    v = values(g, shop)
    # u1 amounts before T: 10 (T-10d), NULL (T-1d), 30 (T-2h)
    assert v["sum"] == {"u1": 40.0, "u2": 7.0, "u3": 0.0}  # no history: default 0
    assert v["mean"]["u1"] == 20.0 and v["mean"]["u3"] == -1.0
    assert v["std"]["u1"] == pytest.approx(10.0) and v["std"]["u2"] == 0.0 and v["std"]["u3"] == -2.0
    assert v["min"]["u1"] == 10.0 and v["min"]["u3"] == -3.0
    assert v["max"]["u1"] == 30.0
    assert v["last"]["u1"] == 30.0 and v["last"]["u3"] == -4.0
    assert v["mean_price"]["u1"] == pytest.approx((5 + 20 + 5) / 3) and v["mean_price"]["u3"] == 9.0


def test_distinct_times_shares_entropy(shop):
    g = group(
        Feature("items", "", compute=DistinctCount(of="item")),
        Feature("cats_2d", "", compute=DistinctCount("2d", of="category")),
        Feature("since_last", "", default=365.0, compute=TimeSinceLast(unit="h")),
        Feature("since_first", "", default=365.0, compute=TimeSinceFirst()),
        Feature("share", "", size=3, compute=Share(of="category", vocabulary=("books", "music", "toys"))),
        Feature("entropy", "", compute=Entropy(of="category")),
        Feature("top", "", compute=TopShare(of="category")),
        Feature("rate", "", compute=Ratio(Count(where="buy"), Count())),
    )
    v = values(g, shop)
    assert v["items"] == {"u1": 2, "u2": 1, "u3": 0}
    assert v["cats_2d"]["u1"] == 2  # b (music) at T-1d, a (books) at T-2h
    assert v["since_last"]["u1"] == 2.0 and v["since_last"]["u3"] == 365.0
    assert v["since_first"]["u1"] == 10.0
    assert (v["share_0"]["u1"], v["share_1"]["u1"], v["share_2"]["u1"]) == pytest.approx((2 / 3, 1 / 3, 0))
    assert (v["share_0"]["u3"], v["share_1"]["u3"]) == (0.0, 0.0)
    assert v["entropy"]["u1"] == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert v["entropy"]["u2"] == 0.0 and v["entropy"]["u3"] == 0.0
    assert v["top"]["u1"] == pytest.approx(2 / 3) and v["top"]["u3"] == 0.0
    assert v["rate"]["u1"] == pytest.approx(1 / 3) and v["rate"]["u3"] == 0.0


def test_recency_weighted_share(shop):
    g = group(
        Feature("w", "", size=2, compute=Share(of="category", vocabulary=("books", "music"), half_life="1d"))
    )
    v = values(g, shop)
    books = 0.5**10 + 0.5 ** (2 / 24)  # T-10d and T-2h
    music = 0.5**1  # T-1d
    assert v["w_0"]["u1"] == pytest.approx(books / (books + music), rel=1e-6)


def test_attributes_time_since_and_derived_features(shop):
    g = FeatureGroup(
        "items",
        "item_id",
        (
            Feature("price", "", default=30.0, compute=Attribute("price")),
            Feature("log_price", "", compute=Expr("ln(1 + price)")),
            Feature("clicks", "", compute=Count(where="click")),
            Feature("age", "", compute=TimeSinceAttribute("listed")),
            Feature("pop", "", compute=PercentileInGroup("clicks", among="listed < t", otherwise=0.0)),
            Feature(
                "price_pct",
                "",
                default=0.5,
                compute=PercentileInGroup("price", by="category", among="listed < t"),
            ),
            Feature("ratio", "", default=7.0, compute=Expr("clicks / (price - 5)")),  # inf for a -> default
        ),
        86_400.0,
        source=GroupSource(EVENTS, ITEMS),
    )
    v = values(g, shop)
    assert v["price"] == {"a": 5.0, "b": 20.0, "c": 8.0, "d": 1.0}
    assert v["log_price"]["b"] == pytest.approx(math.log1p(20.0))
    assert v["clicks"] == {"a": 2.0, "b": 0.0, "c": 0.0, "d": 0.0}  # c's click is at T: not yet
    assert v["age"]["a"] == 100.0 and v["age"]["d"] == 0.0  # listed in the future: 0, not negative
    # d is not listed yet: outside the population; among a, b, c: ties share the lowest rank
    assert v["pop"] == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    # books: a 5, c 8 -> 0, 1; music: b alone -> 1; toys: d unlisted -> default 0.5
    assert v["price_pct"] == {"a": 0.0, "c": 1.0, "b": 1.0, "d": 0.5}
    assert v["ratio"]["a"] == 7.0 and v["ratio"]["b"] == 0.0


def test_kind_leak_point_in_time_never_reads_a_later_event(shop):
    g = group(
        Feature("n", "", compute=Count()),
        Feature("last", "", default=-1.0, compute=Last(of="amount")),
        Feature("age", "", compute=TimeSinceAttribute("signup")),
    )
    ids = ["u1", "u1", "u1", "u1", "u2", "u3", "nobody"]
    times = [T - 10 * D, T - 10 * D + 1, T, T + 2 * H, T, T, T]
    rows = compiler.point_in_time(g, ids, times, shop)
    assert rows[:, 0].tolist() == [0, 1, 3, 5, 1, 0, 0]  # an event at the row's time is not yet known
    assert rows[:, 1].tolist() == [-1.0, 10.0, 30.0, 50.0, 7.0, -1.0, -1.0]
    assert rows[5, 2] == 0.0 and rows[6, 2] == 0.0  # signed up after T; unknown entity: default
    # the snapshot is the same query at one time: equal to the point-in-time rows at T
    snap_ids, snap = compiler.snapshot(g, T, shop, entity_ids=["u1", "u2", "u3"])
    assert np.array_equal(snap, rows[[2, 4, 5]])


def test_time_units_of_the_source(tmp_path):
    ts = np.array([T - 2 * H, T - 30 * D], dtype=np.int64)
    for unit, col in (
        ("s", pa.array(ts / 1000.0)),
        ("us", pa.array(ts * 1000)),
        ("timestamp", pa.array(ts.astype("datetime64[ms]"))),
        ("timestamp", pa.array(ts.astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC"))),
    ):
        pq.write_table(pa.table({"user": ["u", "u"], "ts": col}), tmp_path / "e.parquet")
        ev = Events("e", "e.parquet", Time("ts", unit), keys={"user_id": "user"})
        g = FeatureGroup(
            "g", "user_id", (Feature("n", "", compute=Count("1d")),), 1.0, source=GroupSource(ev)
        )
        _, rows = compiler.snapshot(g, T, tmp_path)
        assert rows[:, 0].tolist() == [1.0], unit


def test_csv_sources_and_folders(tmp_path):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "part-1.csv").write_text("user,ts\nu,1000\nu,2000\n")
    (tmp_path / "ev" / "part-2.csv").write_text("user,ts\nv,1500\n")
    ev = Events("e", "ev", Time("ts", "ms"), keys={"user_id": "user"}, format="csv")
    g = FeatureGroup("g", "user_id", (Feature("n", "", compute=Count()),), 1.0, source=GroupSource(ev))
    ids, rows = compiler.snapshot(g, 1_800, tmp_path)
    assert dict(zip(ids, rows[:, 0].tolist(), strict=True)) == {"u": 1.0, "v": 1.0}


def test_declaration_errors_name_the_group_feature_file_and_column(shop):
    with pytest.raises(SourceError, match=r"events.parquet.*lacks column\(s\) nope"):
        compiler.snapshot(group(Feature("x", "", compute=Sum(of="nope"))), T, shop)
    with pytest.raises(SourceError, match="items.parquet.*lacks column weight"):
        compiler.snapshot(
            group(Feature("x", "", compute=Attribute("weight")), entity="item_id", table=ITEMS), T, shop
        )
    with pytest.raises(SourceError, match="no parquet file"):
        compiler.snapshot(
            FeatureGroup(
                "g",
                "user_id",
                (Feature("x", "", compute=Count()),),
                1.0,
                source=GroupSource(Events("e", "missing/*.parquet", Time("ts"), {"user_id": "u"})),
            ),
            T,
            shop,
        )
    with pytest.raises(CompileError, match="feature 'x': no compute"):
        compiler.snapshot(group(Feature("x", "")), T, shop)
    with pytest.raises(CompileError, match="size 2 but the Share has 3"):
        compiler.snapshot(
            group(Feature("x", "", size=2, compute=Share(of="category", vocabulary=("a", "b", "c")))), T, shop
        )
    with pytest.raises(CompileError, match="no id column for entity 'merchant_id'"):
        compiler.snapshot(group(Feature("x", "", compute=Count()), entity="merchant_id", table=None), T, shop)
    with pytest.raises(ValueError, match="not a duration"):
        Count("7 days")
    with pytest.raises(ValueError, match="not a plain name"):
        Sum(of="amount; DROP TABLE x")
    assert seconds("30m") == 1800.0 and seconds(90) == 90.0

"""The compiler's building blocks for payments features (offline/features/compiler.py), on
tiny hand-checked tables: per-aggregation time columns (chargebacks by arrival), windows
closed on the left, values new in a window (FirstSeenCount), min_count, ratios smoothed
towards a prior, attributes as vocabulary indices, and derived event columns over looked-up
ones. Each with the window edge, an entity without history and NULL values."""

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
    Events,
    FirstSeenCount,
    GroupSource,
    Lookup,
    Mean,
    Ratio,
    Std,
    Sum,
    Table,
    Time,
    TimeSinceLast,
)
from decision_service.features.registry import Feature, FeatureGroup
from offline.features import compiler
from offline.features.compiler import SourceError

H = 3_600_000  # ms
D = 24 * H
T = 100 * D  # the as-of time of most tests


@pytest.fixture()
def pay(tmp_path: Path) -> Path:
    """Payments of u1 (5, one exactly 30 days before T, one at T), u2 (1, with a NULL amount
    and an unknown currency), u3 (none); chargebacks arrive days after their payment (-1 none)."""
    pq.write_table(
        pa.table(
            {
                "user": ["u1", "u1", "u1", "u1", "u1", "u2"],
                "device": ["d1", "d2", "d1", "d3", None, "d1"],
                "amount_minor": [1000, 250, 5000, 999, 100, None],
                "currency": ["EUR", "GBP", "EUR", "JPY", "EUR", "XXX"],
                "country": ["DE", "FR", "DE", "JP", "DE", "GB"],
                "ts": [T - 40 * D, T - 30 * D, T - 10 * D, T - 2 * H, T, T - 5 * D],
                # u1: the T-40d payment charged back at T-30d (exactly on the 30d edge), the
                # T-10d one at T-1d, the T-2h one only after T; u2's at T-4d
                "chargeback_ms": [T - 30 * D, -1, T - D, T + D, -1, T - 4 * D],
                "kind": ["pay", "pay", "pay", "refund", "pay", "pay"],
            }
        ),
        tmp_path / "payments.parquet",
    )
    pq.write_table(
        pa.table({"user": ["u1", "u2", "u3", "u4"], "home": ["DE", "gb", None, "Z9"]}),
        tmp_path / "users.parquet",
    )
    pq.write_table(
        pa.table({"code": ["EUR", "GBP", "JPY"], "exponent": [2, 2, 0], "rate": [1.0, 1.17, 0.0062]}),
        tmp_path / "rates.parquet",
    )
    return tmp_path


USERS = Table("users", "users.parquet", key="user", derived={"home_upper": "upper(home)"})
RATES = Table("rates", "rates.parquet", key="code")
PAYMENTS = Events(
    "payments",
    "payments.parquet",
    Time("ts", "ms"),
    keys={"user_id": "user", "device_id": "device"},
    event_type="kind",
    lookups=(
        Lookup(RATES, on="currency", columns=("exponent", "rate")),
        Lookup(USERS, on="user", columns=("home",)),
    ),
    derived={
        "eur": "amount_minor / pow(10, exponent) * rate",  # over looked-up columns
        "log_eur": "ln(1 + eur)",  # over a derived column declared before it
        "abroad": "CAST(country <> home AS DOUBLE)",
        "chargeback_at": "CASE WHEN chargeback_ms >= 0 THEN chargeback_ms END",
    },
)


def group(*features: Feature, entity: str = "user_id", table: Table | None = USERS) -> FeatureGroup:
    return FeatureGroup("g", entity, tuple(features), 86_400.0, source=GroupSource(PAYMENTS, table))


def values(g: FeatureGroup, base: Path, as_of: int = T) -> dict[str, dict[str, float]]:
    ids, rows = compiler.snapshot(g, as_of, base)
    return {col: dict(zip(ids, rows[:, j].tolist(), strict=True)) for j, col in enumerate(g.columns)}


def test_a_left_closed_window_keeps_the_event_exactly_at_its_start(pay):
    g = group(
        Feature("open", "", compute=Count("30d")),
        Feature("closed", "", compute=Count("30d", closed="left")),
        Feature("sum_closed", "", compute=Sum("30d", of="amount_minor", closed="left")),
    )
    v = values(g, pay)
    # u1 before T: T-40d, T-30d (exactly on the edge), T-10d, T-2h; T itself not yet
    assert v["open"] == {"u1": 2.0, "u2": 1.0, "u3": 0.0, "u4": 0.0}
    assert v["closed"] == {"u1": 3.0, "u2": 1.0, "u3": 0.0, "u4": 0.0}
    assert v["sum_closed"]["u1"] == 250 + 5000 + 999 and v["sum_closed"]["u3"] == 0.0
    with pytest.raises(ValueError, match="closed='right'"):
        Count("30d", closed="right")  # type: ignore[arg-type]


def test_chargebacks_count_by_their_arrival_not_by_the_payment_time(pay):
    g = group(
        Feature("cb_all", "", compute=Count(time="chargeback_at")),
        Feature("cb_30d", "", compute=Count("30d", time="chargeback_at")),
        Feature("cb_30d_closed", "", compute=Count("30d", time="chargeback_at", closed="left")),
        Feature("cb_since", "", default=-1.0, compute=TimeSinceLast(time="chargeback_at")),
        Feature("payments_30d", "", compute=Count("30d", closed="left")),  # the source's time
        Feature("raw_time", "", compute=Count(time=Time("chargeback_ms", "ms"))),  # -1 is "before t"
    )
    v = values(g, pay)
    # u1's chargebacks arrived at T-30d (edge) and T-1d; the T-2h payment's arrives after T
    # and the NULL (no chargeback) never counts
    assert v["cb_all"] == {"u1": 2.0, "u2": 1.0, "u3": 0.0, "u4": 0.0}
    assert v["cb_30d"]["u1"] == 1.0 and v["cb_30d_closed"]["u1"] == 2.0
    assert v["cb_since"]["u1"] == 1.0 and v["cb_since"]["u3"] == -1.0  # days; none: default
    assert v["payments_30d"]["u1"] == 3.0
    assert v["raw_time"]["u1"] == 4.0  # -1 sentinels count as long ago: hence the derived NULL
    # point in time: a chargeback of an earlier payment is unknown until it arrives
    rows = compiler.point_in_time(g, ["u1", "u1", "u1"], [T - 30 * D, T - 30 * D + 1, T + 2 * D], pay)
    assert rows[:, 0].tolist() == [0.0, 1.0, 3.0]


def test_first_seen_count_counts_values_new_in_the_window(pay):
    g = group(
        Feature("new_30d", "", compute=FirstSeenCount("30d", of="device")),
        Feature("new_30d_closed", "", compute=FirstSeenCount("30d", of="device", closed="left")),
        Feature("new_paying", "", compute=FirstSeenCount("30d", of="device", where="pay", closed="left")),
        Feature("new_ever", "", compute=FirstSeenCount(of="device")),
        Feature("distinct", "", compute=DistinctCount(of="device")),
    )
    v = values(g, pay)
    # u1's devices before T: d1 first at T-40d (used again at T-10d: not new), d2 first at
    # T-30d (the edge), d3 at T-2h (a refund); the NULL device at T does not count (nor is known)
    assert v["new_30d"] == {"u1": 1.0, "u2": 1.0, "u3": 0.0, "u4": 0.0}
    assert v["new_30d_closed"]["u1"] == 2.0
    assert v["new_paying"]["u1"] == 1.0  # only payments: d2
    assert v["new_ever"] == v["distinct"]
    # per device: users first seen on it in the window (d1: u1 at T-40d, u2 at T-5d; d2: u1
    # exactly 30 days ago; d3: u1 at T-2h); the NULL device is no entity
    dev_group = group(
        Feature("new_users", "", compute=FirstSeenCount("30d", of="user")), entity="device_id", table=None
    )
    assert values(dev_group, pay)["new_users"] == {"d1": 1.0, "d2": 0.0, "d3": 1.0}
    # point in time, just before and just after d3's first use (d2, first used 30 days
    # before T, is inside the window of T - 2h)
    rows = compiler.point_in_time(g, ["u1", "u1"], [T - 2 * H, T - 2 * H + 1], pay)
    assert rows[:, 0].tolist() == [1.0, 2.0]


def test_min_count_gives_the_default_below_it_and_nulls_do_not_count(pay):
    g = group(
        Feature("std", "", default=0.6, compute=Std(of="amount_minor", min_count=2)),
        Feature("std_any", "", default=0.6, compute=Std(of="amount_minor")),
        Feature("mean3", "", default=-1.0, compute=Mean("30d", of="amount_minor", min_count=3)),
    )
    v = values(g, pay)
    amounts = [1000, 250, 5000, 999]
    assert v["std"]["u1"] == pytest.approx(float(np.std(amounts)), rel=1e-6)
    assert v["std"]["u2"] == pytest.approx(0.6)  # one payment, and its amount is NULL: 0 values
    assert v["std"]["u3"] == pytest.approx(0.6)  # no history
    assert v["std_any"]["u3"] == pytest.approx(0.6)
    # in the open 30d window u1 has 2 values (T-10d, T-2h): below 3 -> default
    assert v["mean3"]["u1"] == -1.0
    with pytest.raises(ValueError, match="min_count"):
        Std(of="x", min_count=-1)


def test_a_ratio_smoothed_towards_a_prior(pay):
    cb = Count("90d", time="chargeback_at")
    n = Count("90d")
    g = group(
        Feature("rate", "", default=0.01, compute=Ratio(cb, n, prior=0.01, prior_weight=20)),
        Feature("raw", "", default=-1.0, compute=Ratio(cb, n)),
        Feature("odd_prior", "", default=-1.0, compute=Ratio(cb, n, prior=0.5, prior_weight=2)),
    )
    v = values(g, pay)
    assert v["rate"]["u1"] == pytest.approx((2 + 20 * 0.01) / (4 + 20))
    assert v["rate"]["u2"] == pytest.approx((1 + 0.2) / (1 + 20))
    assert v["raw"]["u1"] == pytest.approx(2 / 4) and v["raw"]["u3"] == -1.0
    # no history: the prior itself, not the default
    assert v["odd_prior"]["u3"] == 0.5 and v["rate"]["u3"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="prior_weight"):
        Ratio(cb, n, prior_weight=-1)


def test_an_attribute_as_an_index_into_a_vocabulary(pay):
    alpha2 = tuple(chr(65 + i // 26) + chr(65 + i % 26) for i in range(26 * 26))
    g = group(
        Feature("home", "", default=-1.0, compute=Attribute("home_upper", vocabulary=alpha2)),
        Feature("home_raw", "", default=-1.0, compute=Attribute("home", vocabulary=("DE", "GB"))),
        Feature("n", "", default=-1.0, compute=Attribute("home", vocabulary=(1, 2))),  # no match
    )
    v = values(g, pay)
    # DE = 3 * 26 + 4, gb upper-cased = 6 * 26 + 1; NULL and "Z9" are outside: the default
    assert v["home"] == {"u1": 82.0, "u2": 157.0, "u3": -1.0, "u4": -1.0}
    assert v["home_raw"] == {"u1": 0.0, "u2": -1.0, "u3": -1.0, "u4": -1.0}  # case matters
    assert set(v["n"].values()) == {-1.0}
    with pytest.raises(ValueError, match="all strings or all numbers"):
        Attribute("home", vocabulary=("DE", 1))


def test_derived_event_columns_over_looked_up_ones(pay):
    g = group(
        Feature("eur", "", compute=Sum(of="eur")),
        Feature("log", "", default=3.4, compute=Mean(of="log_eur")),
        Feature("abroad", "", compute=Mean(of="abroad")),
    )
    v = values(g, pay)
    eur = [10.0, 2.5 * 1.17, 50.0, 999 * 0.0062]
    assert v["eur"]["u1"] == pytest.approx(sum(eur), rel=1e-6)
    assert v["log"]["u1"] == pytest.approx(np.mean(np.log1p(eur)), rel=1e-6)
    assert v["abroad"]["u1"] == pytest.approx(2 / 4)  # FR and JP, home DE
    # u2: a NULL amount and an unknown currency -> NULL value, skipped; "GB" vs home "gb"
    assert v["eur"]["u2"] == 0.0 and v["log"]["u2"] == pytest.approx(3.4) and v["abroad"]["u2"] == 1.0
    assert v["log"]["u3"] == pytest.approx(3.4) and math.isfinite(v["abroad"]["u3"])


def test_a_lookup_keyed_on_a_derived_column_and_declaration_errors(pay):
    ev = Events(
        "payments",
        "payments.parquet",
        Time("ts"),
        keys={"user_id": "user"},
        lookups=(Lookup(RATES, on="cur", columns=("rate",)),),
        derived={"cur": "upper(currency)", "scaled": "amount_minor * rate"},
    )
    g = FeatureGroup(
        "g", "user_id", (Feature("s", "", compute=Sum(of="scaled")),), 1.0, source=GroupSource(ev)
    )
    ids, rows = compiler.snapshot(g, T, pay)
    assert dict(zip(ids, rows[:, 0].tolist(), strict=True))["u1"] == pytest.approx(
        1000 + 250 * 1.17 + 5000 + 999 * 0.0062
    )
    with pytest.raises(SourceError, match=r"payments.parquet.*lacks column\(s\) arrived"):
        compiler.snapshot(group(Feature("x", "", compute=Count(time="arrived"))), T, pay)
    bad = Events(
        "p", "payments.parquet", Time("ts"), {"user_id": "user"}, lookups=(Lookup(RATES, "nope", ("rate",)),)
    )
    with pytest.raises(SourceError, match="lookup.*on nope"):
        compiler.snapshot(
            FeatureGroup("g", "user_id", (Feature("x", "", compute=Count()),), 1.0, source=GroupSource(bad)),
            T,
            pay,
        )
    broken = Events(
        "p", "payments.parquet", Time("ts"), {"user_id": "user"}, derived={"x": "no_such_column + 1"}
    )
    with pytest.raises(SourceError, match="no_such_column"):
        compiler.snapshot(
            FeatureGroup(
                "g", "user_id", (Feature("x", "", compute=Sum(of="x")),), 1.0, source=GroupSource(broken)
            ),
            T,
            pay,
        )

"""Source validation (offline/features/validate.py): one tiny Parquet / CSV source per fault
kind, each error naming the file, the column and an example row; clean sources and the
synthetic shop and payments worlds pass."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.features.declarative import (
    Attribute,
    Count,
    Events,
    FirstSeenCount,
    GroupSource,
    Lookup,
    Mean,
    Sum,
    Table,
    Time,
    TimeSinceAttribute,
    TimeSinceLast,
)
from decision_service.features.registry import Feature, FeatureGroup
from offline.features.compiler import SourceError
from offline.features.validate import (
    Problem,
    SourceValidationError,
    ValidationReport,
    validate_sources,
)

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01
NOW = T0 + 10 * DAY_MS


def _parquet(path: Path, **columns: list) -> None:
    pq.write_table(pa.table(columns), path)


def _csv(path: Path, text: str) -> None:
    path.write_text(text.strip() + "\n")


def _world(d: Path, *, events: dict | None = None, items: dict | None = None) -> None:
    """users / items / events Parquet files; ``events`` / ``items`` override columns."""
    _parquet(d / "users.parquet", user_id=["u1", "u2", "u3"], signup_ms=[T0 - 5 * DAY_MS, T0 - DAY_MS, T0])
    it = {
        "item_id": ["i1", "i2", "i3", "i4"],
        "price": [10.0, 20.0, 30.0, 40.0],
        "listed_ms": [T0 - DAY_MS] * 4,
    }
    it.update(items or {})
    _parquet(d / "items.parquet", **it)
    ev = {
        "user_id": ["u1", "u1", "u2", "u3", "u3", "u2"],
        "item_id": ["i1", "i2", "i3", "i4", "i1", "i2"],
        "event": ["click", "buy", "click", "click", "buy", "click"],
        "ts_ms": [T0 + i * DAY_MS for i in range(6)],
        "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    }
    ev.update(events or {})
    _parquet(d / "events.parquet", **ev)


USERS = Table("users", "users.parquet", key="user_id")
ITEMS = Table("items", "items.parquet", key="item_id")


def _events(**kw) -> Events:
    args = {
        "name": "events",
        "path": "events.parquet",
        "time": Time("ts_ms", "ms"),
        "keys": {"user_id": "user_id", "item_id": "item_id"},
        "event_type": "event",
        "event_types": ("click", "buy"),
        "lookups": (Lookup(ITEMS, on="item_id", columns=("price",)),),
    }
    args.update(kw)
    return Events(**args)


def _groups(
    events: Events, *extra: Feature, users: Table = USERS, items: Table = ITEMS
) -> list[FeatureGroup]:
    user = FeatureGroup(
        "user",
        "user_id",
        (
            Feature("u_events", "events", compute=Count()),
            Feature("u_buys_7d", "buys", compute=Count("7d", where=("buy",))),
            Feature("u_avg_price", "mean looked-up price", compute=Mean(of="price")),
            Feature("u_spent", "amount", compute=Sum(of="amount")),
            Feature("u_age", "days since sign-up", compute=TimeSinceAttribute("signup_ms")),
            *extra,
        ),
        max_age_s=86_400,
        source=GroupSource(events=events, table=users),
    )
    item = FeatureGroup(
        "item",
        "item_id",
        (
            Feature("i_price", "price", compute=Attribute("price")),
            Feature("i_events", "events", compute=Count()),
        ),
        max_age_s=86_400,
        source=GroupSource(events=events, table=items),
    )
    return [user, item]


def _error(report: ValidationReport, file: str, column: str | None, text: str) -> Problem:
    """The one error on ``file`` / ``column`` whose message contains ``text``; it shows an
    example row when it names a column."""
    found = [p for p in report.errors if p.column == column and text in p.message]
    assert len(found) == 1, f"no single error on {column!r} with {text!r}:\n{report.summary()}"
    p = found[0]
    assert Path(p.file).name == file, p
    assert file in str(p)
    if column is not None:
        assert f"column {column!r}" in str(p)
        assert p.example is not None and p.row is not None, p
        assert f"e.g. row {p.row} " in str(p)
    assert not report.ok
    return p


# --- clean ---------------------------------------------------------------------------------------


def test_clean_sources_pass(tmp_path: Path) -> None:
    _world(tmp_path)
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    assert report.ok, report.summary()
    assert report.problems == []
    assert report.rows == {"users": 3, "items": 4, "events": 6}
    report.raise_for_errors()  # no error: returns
    ev = next(s for s in report.sources if s.name == "events")
    assert ev.distinct == {"user_id": 3, "item_id": 4}
    assert (ev.time_min_ms, ev.time_max_ms) == (T0, T0 + 5 * DAY_MS)
    text = report.summary()
    assert "events (events, events.parquet): 1 file(s), 6 rows" in text
    assert "2026-01-01 .. 2026-01-06" in text


def test_clean_csv_with_timestamps_and_derived_event_type(tmp_path: Path) -> None:
    _csv(
        tmp_path / "ratings.csv",
        """
user_id;rated_at;rating
1;2026-01-01 10:00:00;5
2;2026-01-02 11:00:00;2
""",
    )
    ev = Events(
        "ratings",
        "ratings.csv",
        Time("rated_at", "timestamp", timezone="Europe/Paris"),
        keys={"user_id": "user_id"},
        event_type="kind",
        event_types=("like", "rating"),
        format="csv",
        delimiter=";",
        derived={"kind": "CASE WHEN rating >= 4 THEN 'like' ELSE 'rating' END"},
    )
    g = FeatureGroup(
        "u",
        "user_id",
        (Feature("likes", "", compute=Count(where=("like",))), Feature("m", "", compute=Mean(of="rating"))),
        max_age_s=1,
        source=GroupSource(events=ev),
    )
    report = validate_sources([g], tmp_path, NOW)
    assert report.ok and not report.warnings, report.summary()
    assert report.sources[0].time_min_ms == T0 + 9 * 3_600_000  # 10:00 in Paris is 09:00 UTC


# --- fault kinds ---------------------------------------------------------------------------------


def test_kind_missing_column_names_the_feature_and_the_columns_there(tmp_path: Path) -> None:
    _world(tmp_path)
    pq.write_table(pq.read_table(tmp_path / "events.parquet").drop(["amount"]), tmp_path / "events.parquet")
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    p = _error(report, "events.parquet", "amount", "missing column")
    assert "u_spent" in p.message and "the file has: user_id, item_id, event, ts_ms" in p.message
    assert p.row == 1 and p.example["user_id"] == "u1"
    with pytest.raises(SourceValidationError, match="amount"):
        report.raise_for_errors()


def test_kind_missing_lookup_column(tmp_path: Path) -> None:
    _world(tmp_path)
    ev = _events(lookups=(Lookup(ITEMS, on="item_id", columns=("price", "brand")),))
    report = validate_sources(_groups(ev), tmp_path, NOW)
    p = _error(report, "items.parquet", "brand", "missing column")
    assert "looked up by 'events'" in p.message


def test_kind_mistyped_value_column_csv(tmp_path: Path) -> None:
    _world(tmp_path)
    _csv(tmp_path / "items.csv", "item_id,price,listed_ms\ni1,10.5,0\ni2,cheap,0\ni3,30,0\ni4,40,0")
    items = Table("items", "items.csv", key="item_id", format="csv")
    ev = _events(lookups=(Lookup(items, on="item_id", columns=("price",)),))
    report = validate_sources(_groups(ev, items=items), tmp_path, NOW)
    p = _error(report, "items.csv", "price", "has type VARCHAR")
    assert "Mean" in p.message and "u_avg_price" in p.message and "1 values are not numbers" in p.message
    assert p.row == 2 and p.example == {"item_id": "i2", "price": "cheap"}
    assert "items.csv: column 'price': has type VARCHAR" in str(p)
    assert "e.g. row 2 {'item_id': 'i2', 'price': 'cheap'}" in str(p)


def test_kind_null_id_in_events_and_table(tmp_path: Path) -> None:
    _world(
        tmp_path,
        events={"user_id": ["u1", "u1", None, "u3", "u3", "u2"]},
        items={"item_id": ["i1", "i2", None, "i4"]},
    )
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    p = _error(report, "events.parquet", "user_id", "NULL ids")
    assert p.message.startswith("1 NULL ids (of 6 rows)")
    assert p.row == 3 and p.example["user_id"] is None and p.example["item_id"] == "i3"
    q = _error(report, "items.parquet", "item_id", "NULL ids")
    assert q.row == 3 and q.example == {"item_id": None}


def test_kind_null_event_time(tmp_path: Path) -> None:
    _world(tmp_path, events={"ts_ms": [T0, None, T0, T0, T0, T0]})
    p = _error(
        validate_sources(_groups(_events()), tmp_path, NOW), "events.parquet", "ts_ms", "NULL event times"
    )
    assert p.row == 2


def test_kind_duplicate_table_id(tmp_path: Path) -> None:
    _world(tmp_path, items={"item_id": ["i1", "i2", "i3", "i2"]})
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    p = _error(report, "items.parquet", "item_id", "duplicate ids")
    assert "1 duplicate ids (1 ids appear more than once): 'i2' appears 2 times (also row 4)" in p.message
    assert p.row == 2 and p.example == {"item_id": "i2"}


@pytest.mark.parametrize(
    ("factor", "declared", "looks"),
    [(1 / 1000, "ms", "look like seconds, declared ms"), (1, "s", "look like milliseconds, declared s")],
)
def test_kind_time_unit_off_by_1000(tmp_path: Path, factor: float, declared: str, looks: str) -> None:
    _world(tmp_path, events={"ts_ms": [int((T0 + i * DAY_MS) * factor) for i in range(6)]})
    report = validate_sources(_groups(_events(time=Time("ts_ms", declared))), tmp_path, NOW)
    p = _error(report, "events.parquet", "ts_ms", looks)
    assert "6 of 6 values" in p.message and p.row == 1
    assert not [e for e in report.errors if "future" in e.message]  # one error, not two


def test_kind_time_attribute_in_wrong_unit(tmp_path: Path) -> None:
    _world(tmp_path)
    _parquet(tmp_path / "users.parquet", user_id=["u1", "u2", "u3"], signup_ms=[T0 // 1000] * 3)
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    _error(report, "users.parquet", "signup_ms", "look like seconds, declared ms")


def test_kind_future_rows(tmp_path: Path) -> None:
    ts = [T0, T0, NOW + 60_000, NOW + 3_600_000, NOW + 7_200_000, T0]
    _world(tmp_path, events={"ts_ms": ts})
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    p = _error(report, "events.parquet", "ts_ms", "rows in the future")
    assert p.message.startswith("2 rows in the future")  # + 1 min is within the tolerance
    assert p.row == 5 and p.example["ts_ms"] == NOW + 7_200_000  # the latest


def test_kind_unknown_event_type(tmp_path: Path) -> None:
    _world(tmp_path, events={"event": ["click", "view", "view", "Buy", "buy", "click"]})
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    p = _error(report, "events.parquet", "event", "unknown types")
    assert "3 events of unknown types: 'view' (2), 'Buy' (1); declared event_types: click, buy" in p.message
    assert p.row == 2 and p.example["event"] == "view"


def test_kind_unknown_where_name(tmp_path: Path) -> None:
    _world(tmp_path)
    extra = Feature("u_orders", "orders", compute=Count(where=("purchase",)))
    report = validate_sources(_groups(_events(), extra), tmp_path, NOW)
    p = next(e for e in report.errors if "where='purchase'" in e.message)
    assert p.file == "events.parquet" and p.column == "event"
    assert "feature 'u_orders' of group 'user'" in p.message and "not a declared event type" in p.message
    # without a vocabulary, a where name that matches nothing is a warning
    report = validate_sources(_groups(_events(event_types=()), extra), tmp_path, NOW)
    assert report.ok
    assert [w.message for w in report.warnings] == [
        "feature 'u_orders' of group 'user': where='purchase' matches no event"
    ]


def test_kind_empty_file(tmp_path: Path) -> None:
    _world(tmp_path)
    (tmp_path / "users.csv").write_text("")
    pq.write_table(pq.read_table(tmp_path / "items.parquet").slice(0, 0), tmp_path / "items.parquet")
    users = Table("users", "users.csv", key="user_id", format="csv")
    report = validate_sources(_groups(_events(), users=users), tmp_path, NOW)
    _error(report, "users.csv", None, "empty file (0 bytes)")
    _error(report, "items.parquet", None, "empty file (no rows)")
    assert len(report.errors) == 2
    _world(tmp_path)
    _csv(tmp_path / "users.csv", "user_id,signup_ms")  # a header, no rows
    report = validate_sources(_groups(_events(), users=users), tmp_path, NOW)
    _error(report, "users.csv", None, "no rows")
    assert len(report.errors) == 1


def test_kind_glob_matching_nothing(tmp_path: Path) -> None:
    _world(tmp_path)
    report = validate_sources(_groups(_events(path="clicks/*.parquet")), tmp_path, NOW)
    p = _error(report, "*.parquet", None, "no parquet file matches")
    assert str(tmp_path / "clicks" / "*.parquet") in p.message
    assert report.rows["events"] is None


def test_kind_derived_expression_error(tmp_path: Path) -> None:
    _world(tmp_path)
    ev = _events(derived={"net": "amount - fee", "ok": "amount * 2"})
    report = validate_sources(_groups(ev, Feature("n", "", compute=Sum(of="ok"))), tmp_path, NOW)
    p = _error(report, "events.parquet", "net", "derived column 'net' = `amount - fee` fails")
    assert "fee" in p.message and p.row == 1
    assert len(report.errors) == 1  # the good derived column is there


def test_kind_derived_expression_failing_at_run_time(tmp_path: Path) -> None:
    _world(tmp_path)
    ev = _events(derived={"n": "CAST(event AS INTEGER)"})
    report = validate_sources(_groups(ev, Feature("x", "", compute=Sum(of="n"))), tmp_path, NOW)
    p = _error(report, "events.parquet", "n", "derived column 'n' = `CAST(event AS INTEGER)` fails")
    assert "'click'" in p.message and p.row == 1 and p.example["event"] == "click"


def test_kind_lookup_misses_are_a_warning(tmp_path: Path) -> None:
    _world(tmp_path, events={"item_id": ["i1", "i9", "i3", "i9", "i1", "i2"]})
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    assert report.ok, report.summary()
    (w,) = report.warnings
    assert w.severity == "warning" and w.file == "events.parquet" and w.column == "item_id"
    assert w.message.startswith("2 events (33.3%) have no item_id in table 'items'")
    assert w.row == 2 and w.example["item_id"] == "i9"


def test_kind_ids_a_request_can_never_name(tmp_path: Path) -> None:
    """The edge canonicalises the ids it is asked for (trimmed, NFC, no control characters,
    at most 256 characters): a stored id in another form is never found, so it is an error."""
    decomposed = "e\u0301"  # é as e + combining accent: NFC makes it one character
    _world(
        tmp_path,
        events={"user_id": ["u1", "u1 ", "u3", "u3", decomposed, "u2"]},
        items={"item_id": ["i1", "i2", "i3", "x" * 300]},
    )
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    p = _error(report, "events.parquet", "user_id", "ids a request can never name")
    assert p.message.startswith("2 ids") and p.row == 2 and p.example["user_id"] == "u1 "
    q = _error(report, "items.parquet", "item_id", "ids a request can never name")
    assert q.message.startswith("1 ids") and q.row == 4


def test_kind_time_column_of_the_wrong_type(tmp_path: Path) -> None:
    _world(tmp_path, events={"ts_ms": [str(T0), "x", str(T0), str(T0), str(T0), str(T0)]})
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    p = _error(report, "events.parquet", "ts_ms", "has type VARCHAR; unit 'ms' needs epoch numbers")
    assert p.row == 2 and p.example["ts_ms"] == "x"
    _world(
        tmp_path,
        events={"ts_ms": ["2026-01-01", "x", "2026-01-02", "2026-01-02", "2026-01-02", "2026-01-02"]},
    )
    report = validate_sources(_groups(_events(time=Time("ts_ms", "timestamp"))), tmp_path, NOW)
    p = _error(report, "events.parquet", "ts_ms", "1 values are not timestamps")
    assert p.row == 2


def test_multi_file_csv_rows_are_counted_per_file(tmp_path: Path) -> None:
    (tmp_path / "ev").mkdir()
    _csv(tmp_path / "ev" / "a.csv", f"user_id,ts\nu1,{T0}\nu2,{T0}")
    _csv(tmp_path / "ev" / "b.csv", f"user_id,ts\nu1,{T0}\n,{T0}\nu3,{T0}")
    ev = Events("ev", "ev", Time("ts", "ms"), keys={"user_id": "user_id"}, format="csv")
    report = validate_sources([], tmp_path, NOW, events=[ev])
    p = _error(report, "b.csv", "user_id", "NULL ids")
    assert p.file == "ev/b.csv" and p.row == 2
    assert report.rows == {"ev": 5} and report.sources[0].files == 2


def test_raise_for_errors_lists_every_error(tmp_path: Path) -> None:
    _world(
        tmp_path, events={"user_id": ["u1", None, "u2", "u3", "u3", "u2"], "event": ["click"] * 5 + ["view"]}
    )
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    assert len(report.errors) == 2
    with pytest.raises(SourceValidationError) as info:
        report.raise_for_errors()
    assert isinstance(info.value, ValueError) and isinstance(info.value, SourceError)
    assert info.value.report is report
    msg = str(info.value)
    assert msg.startswith("2 source error(s):")
    assert all(str(e) in msg for e in report.errors)


def test_problem_str() -> None:
    p = Problem("error", "items.parquet", "price", "3 NULL values", {"item_id": "i17", "price": None}, 17)
    assert (
        str(p)
        == "items.parquet: column 'price': 3 NULL values, e.g. row 17 {'item_id': 'i17', 'price': None}"
    )
    assert str(Problem("error", "x.csv", None, "empty file (0 bytes)")) == "x.csv: empty file (0 bytes)"


# --- the shop world ------------------------------------------------------------------------------


def test_the_tiny_shop_world_passes(tiny_world_dir: Path) -> None:
    from decision_service.features import definitions

    now = json.loads((tiny_world_dir / "world.json").read_text())["now_ms"]
    report = validate_sources([definitions.USER, definitions.ITEM], tiny_world_dir, now)
    assert report.ok, report.summary()
    assert report.errors == []
    assert set(report.rows) == {"users", "items", "interactions"}
    assert report.rows["interactions"] > 10_000


def test_kind_attribute_that_is_not_a_number(tmp_path: Path) -> None:
    _world(tmp_path, items={"price": ["10", "20", "n/a", "40"]})  # text: Attribute CASTs it
    ev = _events(lookups=())
    user, item = _groups(ev)
    user = FeatureGroup("user", "user_id", user.features[:2], max_age_s=1, source=user.source)
    report = validate_sources([user, item], tmp_path, NOW)
    p = _error(
        report, "items.parquet", "price", "has type VARCHAR, feature 'i_price' of group 'item' needs numbers"
    )
    assert "1 values are not numbers" in p.message and p.row == 3 and p.example["price"] == "n/a"
    _world(tmp_path, items={"price": ["10", "20", "30.5", "40"]})  # castable text: fine
    assert validate_sources([user, item], tmp_path, NOW).ok


def test_null_values_are_a_warning(tmp_path: Path) -> None:
    _world(tmp_path, events={"amount": [1.0, None, 3.0, None, 5.0, 6.0]})
    report = validate_sources(_groups(_events()), tmp_path, NOW)
    assert report.ok
    (w,) = report.warnings
    assert str(w) == (
        "events.parquet: column 'amount': 2 NULL values (of 6 rows), e.g. row 2 "
        f"{{'user_id': 'u1', 'item_id': 'i2', 'ts_ms': {T0 + DAY_MS}, 'amount': None}}"
    )
    assert "  warning: events.parquet: column 'amount': 2 NULL values" in report.summary()


# --- lookups, derived columns and the newer options ------------------------------------------------

CATS = Table("cats", "cats.parquet", key="cat")


def _looked_up(tmp_path: Path, derived: dict[str, str], **events: list) -> Events:
    """The world plus a category table keyed by a derived column of the events."""
    _world(tmp_path, events=events or None)
    _parquet(tmp_path / "cats.parquet", cat=["hi", "lo"], cat_name=["expensive", "cheap"])
    return _events(
        lookups=(
            Lookup(ITEMS, on="item_id", columns=("price",)),
            Lookup(CATS, on="cat", columns=("cat_name",)),  # keyed by a derived column
        ),
        derived=derived,
    )


CHAIN = {
    "double_price": "price * 2",  # a looked-up column
    "cat": "CASE WHEN double_price > 50 THEN 'hi' ELSE 'lo' END",  # an earlier derived one
    "label": "cat_name || ':' || event",  # a column looked up by the derived key
}


def test_derived_columns_over_looked_up_columns_pass(tmp_path: Path) -> None:
    ev = _looked_up(tmp_path, CHAIN)
    extra = (
        Feature("u_double", "", compute=Sum(of="double_price")),
        Feature("u_labels", "", compute=FirstSeenCount("7d", of="label")),
    )
    report = validate_sources(_groups(ev, *extra), tmp_path, NOW)
    assert report.ok and report.problems == [], report.summary()
    assert report.rows == {"users": 3, "items": 4, "cats": 2, "events": 6}
    # an event whose item is missing: its looked-up and derived values are NULL, and the
    # examples still point at the event's row in the file
    ev = _looked_up(tmp_path, CHAIN, item_id=["i1", "i9", "i3", "i4", "i1", "i2"])
    report = validate_sources(_groups(ev, *extra), tmp_path, NOW)
    assert report.ok, report.summary()
    by_column = {w.column: w for w in report.warnings}
    assert set(by_column) == {"item_id", "double_price"}, report.summary()  # its cat: 'lo'
    assert by_column["item_id"].message.startswith("1 events (16.7%) have no item_id in table 'items'")
    for w in report.warnings:
        assert w.file == "events.parquet" and w.row == 2 and w.example["item_id"] == "i9", w
    assert by_column["double_price"].example["double_price"] is None


def test_kind_derived_column_over_a_missing_looked_up_column(tmp_path: Path) -> None:
    ev = _looked_up(tmp_path, {**CHAIN, "double_price": "price2 * 2"})
    report = validate_sources(_groups(ev, Feature("d", "", compute=Sum(of="double_price"))), tmp_path, NOW)
    p = _error(report, "events.parquet", "double_price", "derived column 'double_price' = `price2 * 2` fails")
    assert "price2" in p.message and p.row == 1 and p.example["user_id"] == "u1"
    # a derived column failing at run time over a looked-up column
    ev = _looked_up(tmp_path, {**CHAIN, "n": "CAST(cat_name AS INTEGER)"})
    report = validate_sources(_groups(ev, Feature("n", "", compute=Sum(of="n"))), tmp_path, NOW)
    p = _error(report, "events.parquet", "n", "derived column 'n' = `CAST(cat_name AS INTEGER)` fails")
    assert "'cheap'" in p.message and p.row == 1 and len(report.errors) == 1


def test_kind_time_column_of_an_aggregation(tmp_path: Path) -> None:
    refunds = Feature("u_refunds", "refunds by arrival", compute=Count("7d", time="refund_ms"))
    _world(tmp_path)
    report = validate_sources(_groups(_events(), refunds), tmp_path, NOW)
    p = _error(report, "events.parquet", "refund_ms", "missing column")
    assert "the time= of feature 'u_refunds' of group 'user' (Count, ms)" in p.message
    # NULL: never refunded, not a problem
    refund = [None, T0 + 2 * DAY_MS, None, None, T0 + 6 * DAY_MS, None]
    _world(tmp_path, events={"refund_ms": refund})
    report = validate_sources(_groups(_events(), refunds), tmp_path, NOW)
    assert report.ok and report.problems == [], report.summary()
    # in another unit than the source's time: an error; a Time of its own says so
    _world(tmp_path, events={"refund_ms": [None if r is None else r // 1000 for r in refund]})
    report = validate_sources(_groups(_events(), refunds), tmp_path, NOW)
    p = _error(report, "events.parquet", "refund_ms", "look like seconds, declared ms")
    assert p.row == 2
    in_s = Feature("u_refunds", "", compute=TimeSinceLast(time=Time("refund_ms", "s")))
    assert validate_sources(_groups(_events(), in_s), tmp_path, NOW).ok
    # not known yet at now: a warning
    _world(tmp_path, events={"refund_ms": [None, T0, None, None, NOW + DAY_MS, None]})
    report = validate_sources(_groups(_events(), refunds), tmp_path, NOW)
    assert report.ok, report.summary()
    (w,) = report.warnings
    assert w.column == "refund_ms" and w.row == 5 and "1 time= values in the future" in w.message


def test_kind_missing_first_seen_column(tmp_path: Path) -> None:
    _world(tmp_path)
    feat = Feature("u_new_devices", "", compute=FirstSeenCount("7d", of="device_id"))
    report = validate_sources(_groups(_events(), feat), tmp_path, NOW)
    p = _error(report, "events.parquet", "device_id", "missing column")
    assert "feature 'u_new_devices' of group 'user' (FirstSeenCount)" in p.message


def test_string_attribute_with_vocabulary(tmp_path: Path) -> None:
    _world(tmp_path)
    _parquet(
        tmp_path / "users.parquet",
        user_id=["u1", "u2", "u3"],
        signup_ms=[T0] * 3,
        country=["DE", "FR", "XX"],
    )
    home = Feature("u_home", "", compute=Attribute("country", vocabulary=("DE", "FR", "IT")))
    report = validate_sources(_groups(_events(), home), tmp_path, NOW)
    assert report.ok, report.summary()
    (w,) = report.warnings
    assert w.file == "users.parquet" and w.column == "country" and w.row == 3
    assert w.example == {"user_id": "u3", "country": "XX"}
    assert w.message.startswith("1 values outside the vocabulary of feature 'u_home' of group 'user'")
    assert "'XX' (1)" in w.message
    # without a vocabulary, text is still not a number
    text = Feature("u_home", "", compute=Attribute("country"))
    _error(
        validate_sources(_groups(_events(), text), tmp_path, NOW), "users.parquet", "country", "needs numbers"
    )


def test_the_tiny_payments_world_passes(tmp_path: Path) -> None:
    from decision_service.features import definitions
    from offline.simulation.fraud_world import fraud_preset, generate_fraud_world

    world = generate_fraud_world(fraud_preset("tiny"), tmp_path)
    groups = [definitions.FRAUD_USER, definitions.MERCHANT, definitions.DEVICE]
    report = validate_sources(groups, tmp_path, world.now_ms)
    assert report.ok, report.summary()
    assert report.errors == []
    # (amounts are converted to EUR by SQL the payments contract generates: no currency table)
    assert set(report.rows) == {"transactions", "users", "merchants", "devices"}
    assert report.rows["transactions"] == world.n
    # chargebacks arriving after the world's end are the only remark
    assert {w.column for w in report.warnings} <= {"chargeback_at"}, report.summary()


def test_kind_empty_part_an_empty_file_among_partitions_is_a_warning(tmp_path: Path) -> None:
    """Partitioned writers (Spark, Hive) leave empty parts: one among others is a warning;
    the source still has rows and validates."""
    _world(tmp_path)
    parts = tmp_path / "events"
    parts.mkdir()
    table = pq.read_table(tmp_path / "events.parquet")
    pq.write_table(table, parts / "part-0.parquet")
    pq.write_table(table.slice(0, 0), parts / "part-1.parquet")
    report = validate_sources(_groups(_events(path="events")), tmp_path, NOW)
    assert report.ok, report.summary()
    assert [Path(p.file).name for p in report.warnings if "empty file" in p.message] == ["part-1.parquet"]


def test_kind_row_of_another_file_a_duplicate_across_parts_names_both_files(tmp_path: Path) -> None:
    """Row numbers count per file: a duplicate id in another part names that part (it used to
    print the other part's row number as if it were in the first file)."""
    _world(tmp_path)
    parts = tmp_path / "items"
    parts.mkdir()
    table = pq.read_table(tmp_path / "items.parquet")
    pq.write_table(table.slice(0, 2), parts / "part-0.parquet")
    pq.write_table(table.slice(1, 3), parts / "part-1.parquet")  # repeats the second item
    items = Table("items", "items", key="item_id")
    report = validate_sources(_groups(_events(), items=items), tmp_path, NOW)
    p = _error(report, "part-0.parquet", "item_id", "duplicate ids")
    assert "'i2' appears 2 times (also row 1 of items/part-1.parquet)" in p.message, p.message


def test_kind_offset_dropped_validation_reads_text_offsets_as_the_compiler_does(tmp_path: Path) -> None:
    """Text with its own offset under a declared non-UTC timezone: validation used to read it as
    wall time in that timezone (5 h late here) and called a past row "in the future"."""
    _parquet(tmp_path / "e.parquet", user_id=["u1"], ts=["2026-01-02T04:00:00+05:00"])  # 23:00Z
    ev = Events("e", "e.parquet", Time("ts", "timestamp", timezone="America/New_York"), keys={"user_id": "user_id"})
    group = FeatureGroup(
        name="g", entity="user_id", max_age_s=1.0, description="",
        features=(Feature("n", "", compute=Count()),), source=GroupSource(events=ev),
    )
    report = validate_sources([group], tmp_path, now_ms=1_767_312_000_000)  # 2026-01-02T00:00Z
    assert report.ok and not report.problems, report.summary()

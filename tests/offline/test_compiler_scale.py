"""Point in time for a heavy entity (offline/features/compiler.py, the running path): one
entity with 50,000 events queried at 20,000 times (plus a few small entities and one without
history), every decomposable aggregation against a brute-force numpy oracle, with ties at
the query's time and on the window's edge, NULL values, ``where``, ``closed="left"``,
``time=`` (NULL: never counts), ``min_count`` and ratios.

The regression guard is the size: joining every query row to every earlier event of its
entity is 20,000 x ~25,000 pairs per aggregate, minutes (past the suite's timeout); running
aggregates take seconds. The join path ("join") and the running path ("running") must give
the same values, snapshots included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.features.declarative import (
    Count,
    DistinctCount,
    Entropy,
    Events,
    FirstSeenCount,
    GroupSource,
    Last,
    Max,
    Mean,
    Min,
    Ratio,
    Share,
    Std,
    Sum,
    Time,
    TimeSinceFirst,
    TimeSinceLast,
    TopShare,
)
from decision_service.features.registry import Feature, FeatureGroup
from offline.features import compiler

S = 1_000  # ms
H = 3_600 * S
T0 = 1_700_000_000_000
BIG = "big"
NULL_TIME = -1


def _events(rng: np.random.Generator, entity: str, n: int, span_s: int) -> dict[str, np.ndarray]:
    """``n`` events on whole seconds of ``span_s`` (many share a time): a kind, an amount far
    from 0 with a small spread (NULL 10%), a device (NULL 5%), a chargeback arrival (10%)."""
    ts = T0 + rng.integers(0, span_s, n) * S
    amount = 1e6 + rng.normal(0.0, 1.0, n)
    amount[rng.random(n) < 0.1] = np.nan
    device = rng.integers(0, max(n // 25, 3), n)
    device[rng.random(n) < 0.05] = -1
    cb = np.where(rng.random(n) < 0.1, ts + rng.integers(1, 7_200, n) * S, NULL_TIME)
    kind = np.where(rng.random(n) < 0.8, "pay", "refund")
    return {
        "entity": np.full(n, entity, object),
        "ts": ts,
        "kind": kind,
        "amount": amount,
        "device": device,
        "cb": cb,
    }


def _world(tmp_path: Path, n_big: int, n_queries: int, seed: int) -> tuple[dict[str, np.ndarray], pa.Table]:
    """(the events, the queries); events written to ``tmp_path / "events.parquet"``."""
    rng = np.random.default_rng(seed)
    parts = [_events(rng, BIG, n_big, n_big)]
    for i, n in enumerate((1, 2, 7, 30)):
        parts.append(_events(rng, f"s{i}", n, 4 * 3_600))
    ev = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    # one small entity's values are all NULL and it only refunds: NULL sums, no "pay" events
    only = ev["entity"] == "s1"
    ev["amount"][only], ev["kind"][only] = np.nan, "refund"
    pq.write_table(
        pa.table(
            {
                "user": pa.array(ev["entity"].astype(str)),
                "ts": pa.array(ev["ts"]),
                "kind": pa.array(ev["kind"].astype(str)),
                "amount": pa.array(ev["amount"], mask=np.isnan(ev["amount"])),
                "device": pa.array([f"d{d}" for d in ev["device"]], mask=ev["device"] < 0),
                "cb_at": pa.array(ev["cb"], mask=ev["cb"] == NULL_TIME),
            }
        ),
        tmp_path / "events.parquet",
    )
    # the heavy entity at its own event times (ties at t), exactly 1h and 2h after them (an
    # event on the window's edge) and anywhere; the small ones and an unknown one around theirs
    big_t = rng.choice(ev["ts"][ev["entity"] == BIG], n_queries)
    shift = rng.choice([0, H, 2 * H, -1], n_queries)
    big_t = np.where(shift >= 0, big_t + shift, T0 + rng.integers(0, n_big * S + 3 * H, n_queries))
    small = [e for e in ("s0", "s1", "s2", "s3", "nobody")]
    small_t = T0 + rng.integers(-H // S, 6 * 3_600, 40 * len(small)) * S
    small_t[::3] = T0 + 30 * S  # ties with nothing in particular, but repeated
    queries = pa.table(
        {
            "entity_id": pa.array([BIG] * n_queries + [e for e in small for _ in range(40)]),
            "t": pa.array(np.r_[big_t, small_t].astype(np.int64)),
        }
    )
    return ev, queries


EVENTS = Events(
    "events",
    "events.parquet",
    Time("ts", "ms"),
    keys={"user_id": "user"},
    event_type="kind",
    derived={"device_id": "device"},
)
CB = Count("1h", time="cb_at", closed="left")

DECOMPOSABLE = (
    Feature("n", "", default=-1.0, compute=Count()),
    Feature("n_1h", "", default=-1.0, compute=Count("1h")),
    Feature("n_1h_left", "", default=-1.0, compute=Count("1h", closed="left")),
    Feature("n_pay_1h", "", default=-1.0, compute=Count("1h", where="pay")),
    Feature("sum_1h", "", default=-1.0, compute=Sum("1h", of="amount")),
    Feature("sum_pay_left", "", default=-1.0, compute=Sum("2h", where="pay", of="amount", closed="left")),
    Feature("mean", "", default=-1.0, compute=Mean(of="amount")),
    Feature("mean_1h_min3", "", default=-1.0, compute=Mean("1h", of="amount", closed="left", min_count=3)),
    Feature("std", "", default=-1.0, compute=Std(of="amount", min_count=2)),
    Feature("std_1h", "", default=-1.0, compute=Std("1h", of="amount")),
    Feature("std_refund_1h", "", default=-1.0, compute=Std("1h", where="refund", of="amount", closed="left")),
    Feature("last", "", default=-1.0, compute=Last(of="amount")),
    Feature("last_1h_pay", "", default=-1.0, compute=Last("1h", where="pay", of="amount")),
    Feature("since_last", "", default=-1.0, compute=TimeSinceLast(unit="s")),
    Feature("since_refund_1h", "", default=-1.0, compute=TimeSinceLast("1h", where="refund", unit="s")),
    Feature("since_first", "", default=-1.0, compute=TimeSinceFirst(unit="s")),
    Feature("since_first_1h", "", default=-1.0, compute=TimeSinceFirst("1h", unit="s", closed="left")),
    Feature("new_dev_1h", "", default=-1.0, compute=FirstSeenCount("1h", of="device_id", closed="left")),
    Feature("new_dev_pay", "", default=-1.0, compute=FirstSeenCount("2h", where="pay", of="device_id")),
    Feature("distinct_dev", "", default=-1.0, compute=DistinctCount(of="device_id")),
    Feature("cb_1h", "", default=-1.0, compute=CB),
    Feature("cb_since", "", default=-1.0, compute=TimeSinceLast(time="cb_at", unit="s")),
    Feature(
        "cb_rate",
        "",
        default=-1.0,
        compute=Ratio(CB, Count("1h", closed="left"), prior=0.01, prior_weight=20),
    ),
    Feature("pay_rate", "", default=-1.0, compute=Ratio(Count(where="pay"), Count())),
    Feature("min", "", default=-1.0, compute=Min(of="amount")),
    Feature("max", "", default=-1.0, compute=Max(of="amount")),
    Feature("share", "", size=2, default=-1.0, compute=Share(of="kind", vocabulary=("pay", "refund"))),
)


def group(*features: Feature) -> FeatureGroup:
    return FeatureGroup("scale", "user_id", features, 1.0, source=GroupSource(EVENTS))


_BY_ENTITY: dict[tuple[int, str], dict[str, np.ndarray]] = {}


def _of_entity(ev: dict[str, np.ndarray], entity: str) -> dict[str, np.ndarray]:
    key = (id(ev), entity)
    if key not in _BY_ENTITY:
        mine = ev["entity"] == entity
        _BY_ENTITY[key] = {c: v[mine] for c, v in ev.items()}
    return _BY_ENTITY[key]


class Oracle:
    """Each value by its definition, from the masks of one (entity, t): no sorting, no sums."""

    def __init__(self, ev: dict[str, np.ndarray], entity: str, t: int) -> None:
        mine = _of_entity(ev, entity)
        self.ts, self.kind, self.x, self.dev, self.cb = (
            mine[c] for c in ("ts", "kind", "amount", "device", "cb")
        )
        self.t = t

    def sel(self, window_ms=None, closed="neither", where=None, cb=False) -> np.ndarray:
        ts = self.cb if cb else self.ts
        m = (ts != NULL_TIME) & (ts < self.t)
        if window_ms is not None:
            m &= ts >= self.t - window_ms if closed == "left" else ts > self.t - window_ms
        if where is not None:
            m &= self.kind == where
        return m

    def any(self, cb=False) -> bool:  # the query has events (of this time column) at all
        return bool(self.sel(cb=cb).any())

    def count(self, cb=False, **kw) -> float | None:
        return float(self.sel(cb=cb, **kw).sum()) if self.any(cb) else None

    def values(self, **kw) -> np.ndarray:
        v = self.x[self.sel(**kw)]
        return v[~np.isnan(v)]

    def agg(self, fn, min_count=0, **kw) -> float | None:
        v = self.values(**kw)
        return float(fn(v)) if len(v) and len(v) >= min_count else None

    def last(self, **kw) -> float | None:
        m = self.sel(**kw) & ~np.isnan(self.x)
        if not m.any():
            return None
        at = self.ts[m].max()
        return float(self.x[m & (self.ts == at)].max())

    def since(self, fn, window_ms=None, closed="neither", **kw) -> float | None:
        m = self.sel(window_ms, closed, **kw)
        ts = (self.cb if kw.get("cb") else self.ts)[m]
        return (self.t - float(fn(ts))) / S if len(ts) else None

    def first_seen(self, window_ms=None, closed="neither", where=None) -> float | None:
        m = self.sel(where=where) & (self.dev >= 0)
        if not m.any():
            return None
        first = np.full(int(self.dev.max()) + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, self.dev[m], self.ts[m])  # each device's first time before t
        first = first[first < np.iinfo(np.int64).max]
        if window_ms is None:
            return float(len(first))
        new = first >= self.t - window_ms if closed == "left" else first > self.t - window_ms
        return float(new.sum())

    def row(self) -> list[float | None]:
        c1 = self.count(cb=True, window_ms=H, closed="left")
        n1 = self.count(window_ms=H, closed="left")
        n_pay, n = self.count(where="pay"), self.count()
        shares = [self.count(where=k) for k in ("pay", "refund")]
        return [
            n,
            self.count(window_ms=H),
            n1,
            self.count(window_ms=H, where="pay"),
            self.agg(np.sum, window_ms=H),
            self.agg(np.sum, window_ms=2 * H, where="pay", closed="left"),
            self.agg(np.mean),
            self.agg(np.mean, min_count=3, window_ms=H, closed="left"),
            self.agg(np.std, min_count=2),
            self.agg(np.std, window_ms=H),
            self.agg(np.std, window_ms=H, where="refund", closed="left"),
            self.last(),
            self.last(window_ms=H, where="pay"),
            self.since(np.max),
            self.since(np.max, H, where="refund"),
            self.since(np.min),
            self.since(np.min, H, "left"),
            self.first_seen(H, "left"),
            self.first_seen(2 * H, where="pay"),
            self.first_seen() if self.any() else None,
            c1,
            self.since(np.max, cb=True),
            ((c1 or 0.0) + 0.2) / max((n1 or 0.0) + 20, 1.0),
            None if n_pay is None else n_pay / max(n or 0.0, 1.0),
            self.agg(np.min),
            self.agg(np.max),
            *[(s or 0.0) / max(n or 0.0, 1.0) for s in shares],
        ]


def test_a_heavy_entity_point_in_time_equals_the_brute_force_oracle(tmp_path):
    ev, queries = _world(tmp_path, n_big=50_000, n_queries=20_000, seed=7)
    g = group(*DECOMPOSABLE)
    ids, t = queries.column("entity_id").to_pylist(), queries.column("t").to_numpy()
    rows = compiler.point_in_time(g, ids, t, tmp_path)  # "auto": the running path here
    assert rows.shape == (len(ids), g.width)
    rng = np.random.default_rng(1)
    big = np.flatnonzero(np.array(ids) == BIG)
    check = np.r_[rng.choice(big, 200, replace=False), np.flatnonzero(np.array(ids) != BIG)]
    expected = np.array(
        [[-1.0 if v is None else v for v in Oracle(ev, ids[i], int(t[i])).row()] for i in check], np.float32
    )
    got = rows[check]
    wrong = [
        f"{col}: {int((~ok).sum())} rows, e.g. t={t[check][~ok][0]} {got[~ok, j][0]!r} != {expected[~ok, j][0]!r}"
        for j, col in enumerate(g.columns)
        if not (ok := np.isclose(got[:, j], expected[:, j], rtol=1e-5, atol=1e-5)).all()
    ]
    assert not wrong, "; ".join(wrong)
    # the scenarios are there: events at a query's own time and on its window's edge
    at_t = [int(np.sum(ev["ts"][ev["entity"] == BIG] == t[i])) for i in check[:200]]
    on_edge = [int(np.sum(ev["ts"][ev["entity"] == BIG] == t[i] - H)) for i in check[:200]]
    assert sum(n > 0 for n in at_t) > 30 and sum(n > 0 for n in on_edge) > 30


NOT_DECOMPOSABLE = (
    Feature("distinct_1h", "", default=-1.0, compute=DistinctCount("1h", of="device_id")),
    Feature("min_1h", "", default=-1.0, compute=Min("1h", of="amount")),
    Feature("share_hl", "", size=2, compute=Share(of="kind", vocabulary=("pay", "refund"), half_life="1h")),
    Feature("entropy", "", default=-1.0, compute=Entropy(of="device_id")),
    Feature("top", "", default=-1.0, compute=TopShare("1h", of="device_id")),
)


@pytest.mark.parametrize("when", ["point_in_time", "snapshot"])
def test_the_running_and_the_join_paths_give_the_same_values(tmp_path, when):
    _, queries = _world(tmp_path, n_big=3_000, n_queries=1_500, seed=11)
    g = group(*DECOMPOSABLE, *NOT_DECOMPOSABLE)  # one query: running and joined aggregates
    out = {}
    for strategy in ("running", "join"):
        if when == "snapshot":
            ids = [BIG, "s0", "s1", "s2", "s3", "nobody"]
            for as_of in (T0 + 2 * H, T0 + 2 * H + 1, T0 + 40 * H):
                _, out[strategy, as_of] = compiler.snapshot(g, as_of, tmp_path, ids, strategy=strategy)
        else:
            ids, t = queries.column("entity_id").to_pylist(), queries.column("t").to_numpy()
            out[strategy] = compiler.point_in_time(g, ids, t, tmp_path, strategy=strategy)
    for key in [k for k in out if k == "running" or (isinstance(k, tuple) and k[0] == "running")]:
        other = ("join", *key[1:]) if isinstance(key, tuple) else "join"
        close = np.isclose(out[key], out[other], rtol=1e-6, atol=1e-6)
        wrong = [c for j, c in enumerate(g.columns) if not close[:, j].all()]
        assert not wrong, f"{key}: {wrong}"


def test_auto_takes_the_join_path_for_a_snapshot_and_running_sums_for_a_heavy_entity(tmp_path):
    _world(tmp_path, n_big=3_000, n_queries=10, seed=3)
    con = compiler.connect()
    c = compiler.compile_group(group(*DECOMPOSABLE), tmp_path, con)
    assert c.join_sql and "ASOF" in c.sql and "ASOF" not in c.join_sql

    def picked(ids: list[str]) -> str:
        q = pa.table({"qid": np.arange(len(ids)), "entity_id": ids, "t": np.full(len(ids), T0 + 9 * H)})
        con.register("queries", q)
        try:
            return "join" if compiler._pick(c, q, con) == c.join_sql else "running"
        finally:
            con.unregister("queries")

    assert picked([BIG, "s0", "s1", "nobody"]) == "join"  # a snapshot: each entity once
    assert picked(["s3"] * 5 + ["s2"] * 5) == "join"  # few pairs
    assert picked([BIG] * 500) == "running"  # 500 x 3,000 pairs
    with pytest.raises(ValueError, match="strategy"):
        compiler.compile_group(group(*DECOMPOSABLE), tmp_path, con, strategy="fast")

"""The declared feature groups computed on Spark equal those computed on DuckDB.

One compiled query (offline/features/compiler.py), two engines: DuckDB runs it verbatim,
Spark its sqlglot translation (offline/engines/dialect.py), with the running path's ASOF
lookups as the engine's portable sort + fill (``Engine.asof_left_join``). Compared after
the compiler's own cast to float32 (the declared value type), within 1e-6 relative: sums
are added in another order on Spark.

Covered: every aggregation of the heavy-entity world (window edges, ties at t, NULL values,
``where``, ``closed="left"``, ``time=`` columns, min_count, ratios, shares, entropy) on both
aggregation paths; the synthetic project's five declared groups (lookups, derived columns,
attributes, Expr, PercentileInGroup) as snapshots and point in time; the payments example's
groups over its CSV (timestamps with an offset). The portable lookup itself is also checked
on DuckDB against DuckDB's ASOF JOIN (no Spark needed), and the refusal of a construct Spark
cannot carry.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from decision_service.features.declarative import Count, Events, Expr, GroupSource, Time
from decision_service.features.registry import Feature, FeatureGroup
from offline.engines import Engine
from offline.engines.base import Engine as BaseEngine
from offline.engines.duckdb_engine import DuckDBEngine
from offline.features import compiler
from tests.offline.test_compiler_scale import BIG, DECOMPOSABLE, NOT_DECOMPOSABLE, _world, group

REPO = Path(__file__).resolve().parents[2]


def assert_same_values(duck: np.ndarray, spark: np.ndarray, columns: tuple[str, ...]) -> None:
    assert duck.shape == spark.shape and duck.shape[0] > 0
    close = np.isclose(duck, spark, rtol=1e-6, atol=1e-7)
    wrong = {c: int((~close[:, j]).sum()) for j, c in enumerate(columns) if not close[:, j].all()}
    assert not wrong, f"columns differing (rows): {wrong}"


class PortableDuckDB(DuckDBEngine):
    """DuckDB running the portable ASOF form that Spark runs (Engine's default)."""

    asof_left_join = BaseEngine.asof_left_join


def test_the_portable_asof_lookup_equals_duckdbs_asof_join(tmp_path: Path) -> None:
    """Every window edge of the running path (>, >=, <, <=; ties at t and on the window's
    edge) looked up by sort + fill gives exactly what DuckDB's ASOF JOIN gives."""
    _, queries = _world(tmp_path, n_big=3_000, n_queries=800, seed=13)
    g = group(*DECOMPOSABLE)
    ids, t = queries.column("entity_id").to_pylist(), queries.column("t").to_numpy()
    asof = compiler.point_in_time(g, ids, t, tmp_path, strategy="running")
    with PortableDuckDB(compiler.connect()) as portable:
        c = compiler.compile_group(g, tmp_path, portable, strategy="running")
        assert "ASOF" not in c.sql and "UNBOUNDED FOLLOWING" in c.sql  # both directions used
        filled = compiler.run(c, queries, portable)
    np.testing.assert_array_equal(asof, filled)
    assert (asof[:, g.columns.index("n_1h")] > 0).sum() > 100  # windows with events


def test_using_an_engine_routes_the_calls_made_without_one(tmp_path: Path) -> None:
    """``compiler.using(engine)`` (the CLI's --engine for bootstrap / materialize): calls deep
    inside a job that pass no engine run on it, and only inside the block."""

    class Counting(DuckDBEngine):
        queries = 0

        def sql(self, query: str) -> pa.Table:
            self.queries += 1
            return super().sql(query)

    _, queries = _world(tmp_path, n_big=50, n_queries=5, seed=1)
    g = group(*DECOMPOSABLE[:3])
    ids, t = queries.column("entity_id").to_pylist(), queries.column("t").to_numpy()
    plain = compiler.point_in_time(g, ids, t, tmp_path)
    with Counting(compiler.connect()) as counting:
        with compiler.using(counting):
            routed = compiler.point_in_time(g, ids, t, tmp_path)
            _, snap = compiler.snapshot(g, int(t.max()), tmp_path, entity_ids=["big"])
        assert counting.queries >= 2
        seen = counting.queries
        compiler.point_in_time(g, ids, t, tmp_path)  # outside the block: its own connection
        assert counting.queries == seen
    np.testing.assert_array_equal(plain, routed)
    assert snap.shape == (1, g.width)


def test_an_expression_spark_cannot_carry_is_refused_by_name(tmp_path: Path) -> None:
    """A non-UTC wall-time column needs DuckDB's typeof / timezone; a user's Expr may too."""
    pytest.importorskip("sqlglot")
    (tmp_path / "e.csv").write_text("u,at\na,2026-01-01 10:00:00\n")
    local = Events(
        "e", "e.csv", Time("at", "timestamp", timezone="Europe/Paris"), {"user_id": "u"}, format="csv"
    )
    g = FeatureGroup("g", "user_id", (Feature("n", "", compute=Count()),), 1.0, source=GroupSource(local))
    with pytest.raises(
        compiler.CompileError, match=r"group 'g', source 'e', time column 'at'.*cannot run on spark"
    ):
        compiler.check_translatable(g)
    utc = Events("e", "e.csv", Time("at", "timestamp"), {"user_id": "u"}, format="csv")
    typed = (Feature("n", "", compute=Count()), Feature("x", "", compute=Expr("length(typeof(n))")))
    g = FeatureGroup("g", "user_id", typed, 1.0, source=GroupSource(utc))
    with pytest.raises(compiler.CompileError, match=r"feature 'x' \(Expr\): cannot run on spark.*typeof"):
        compiler.check_translatable(g)
    assert compiler.point_in_time(g, ["a"], [1_900_000_000_000], tmp_path)[0, 0] == 1.0  # DuckDB runs it


# --- on Spark ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[Engine]:
    """The local Spark engine (the session is shared with the other Spark tests)."""
    from offline.engines.spark_engine import SparkEngine, spark_missing_reason, spark_session

    if reason := spark_missing_reason():
        pytest.skip(reason)
    engine = SparkEngine(spark_session())
    yield engine
    engine.close()


def _no_views_left(spark: Engine) -> set[str]:
    return {t.name for t in spark.spark.catalog.listTables()}  # type: ignore[attr-defined]


@pytest.mark.spark
@pytest.mark.parametrize("strategy", ["running", "join"])
def test_every_aggregation_is_the_same_on_spark(tmp_path: Path, spark: Engine, strategy: str) -> None:
    _, queries = _world(tmp_path, n_big=400, n_queries=120, seed=5)
    g = group(*DECOMPOSABLE, *NOT_DECOMPOSABLE)
    ids, t = queries.column("entity_id").to_pylist(), queries.column("t").to_numpy()
    views = _no_views_left(spark)
    duck = compiler.point_in_time(g, ids, t, tmp_path, strategy=strategy)
    sp = compiler.point_in_time(g, ids, t, tmp_path, strategy=strategy, engine=spark)
    assert _no_views_left(spark) == views  # sources, queries and cached CTEs dropped
    assert_same_values(duck, sp, g.columns)
    big = np.array(ids) == BIG
    assert (duck[big][:, g.columns.index("std_1h")] != -1.0).any()  # windows with several events
    assert (duck[:, g.columns.index("n")] == -1.0).any()  # queries without history: defaults


@pytest.fixture(scope="module")
def fraud_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from offline.simulation.fraud_world import fraud_preset, generate_fraud_world

    out = tmp_path_factory.mktemp("spark_fraud") / "world"
    generate_fraud_world(fraud_preset("tiny", n_users=150, days=20), out)
    return out


@pytest.mark.spark
def test_the_synthetic_projects_groups_are_the_same_on_spark(
    tiny_world_dir: Path, fraud_world: Path, spark: Engine
) -> None:
    """USER and ITEM over the shop world, FRAUD_USER, MERCHANT and DEVICE over the payments
    world: a snapshot of every entity, and point in time at sampled rows with repeated
    entities (the running path for "auto" when an entity is queried often)."""
    import pyarrow.parquet as pq

    from decision_service.features.definitions import DEVICE, FRAUD_USER, ITEM, MERCHANT, USER

    rng = np.random.default_rng(2)
    for g, base, events, key, ts in (
        (USER, tiny_world_dir, "interactions.parquet", "user_id", "ts_ms"),
        (ITEM, tiny_world_dir, "interactions.parquet", "item_id", "ts_ms"),
        (FRAUD_USER, fraud_world, "transactions.parquet", "user_id", "occurred_ms"),
        (MERCHANT, fraud_world, "transactions.parquet", "merchant_id", "occurred_ms"),
        (DEVICE, fraud_world, "transactions.parquet", "device_id", "occurred_ms"),
    ):
        ev = pq.read_table(base / events, columns=[key, ts])
        times = ev.column(ts).to_numpy()
        as_of = int(np.quantile(times, 0.8))
        ids_d, duck = compiler.snapshot(g, as_of, base)
        ids_s, sp = compiler.snapshot(g, as_of, base, engine=spark)
        assert list(ids_d) == list(ids_s), g.name
        assert_same_values(duck, sp, g.columns)
        assert len({tuple(r) for r in duck[:50]}) > 1, g.name  # not every entity at its defaults
        rows = rng.choice(ev.num_rows, 300)
        who = [str(x) for x in ev.column(key).take(pa.array(rows)).to_pylist()]
        who[:40] = [who[0]] * 40  # one entity queried often
        at = times[rows] + rng.integers(-1, 2, 300)  # at, just before and just after an event
        duck = compiler.point_in_time(g, who, at, base)
        sp = compiler.point_in_time(g, who, at, base, engine=spark)
        assert_same_values(duck, sp, g.columns)


@pytest.mark.spark
def test_a_looked_up_column_and_a_derived_column_replacing_one_are_the_same_on_spark(
    tmp_path: Path, spark: Engine
) -> None:
    """A lookup whose column the events also have (the looked-up one wins) and a derived
    column replacing a file column (``amount`` in cents -> units), over CSV files."""
    (tmp_path / "ev.csv").write_text(
        "u,item,ts,amount,cat\n"
        + "".join(f"u{k % 3},i{k % 4},{1_000 * k},{100 * k},stale\n" for k in range(40))
        + "u1,i9,41000,5,stale\n"  # an item the table lacks: NULL category
    )
    (tmp_path / "items.csv").write_text("item_id,cat\ni0,a\ni1,b\ni2,a\ni3,c\n")
    from decision_service.features.declarative import DistinctCount, Lookup, Share, Sum, Table

    items = Table("items", "items.csv", key="item_id", format="csv")
    ev = Events(
        "ev",
        "ev.csv",
        Time("ts", "ms"),
        {"user_id": "u"},
        format="csv",
        lookups=(Lookup(items, "item", ("cat",)),),
        derived={"amount": "amount / 100"},
    )
    feats = (
        Feature("spent", "", compute=Sum(of="amount")),
        Feature("cats", "", compute=DistinctCount(of="cat")),
        Feature("share", "", size=2, compute=Share(of="cat", vocabulary=("a", "stale"))),
    )
    g = FeatureGroup("g", "user_id", feats, 1.0, source=GroupSource(ev))
    who, at = ["u0", "u1", "u2", "u1", "nobody"], [5_000, 20_000, 39_000, 50_000, 50_000]
    duck = compiler.point_in_time(g, who, at, tmp_path)
    sp = compiler.point_in_time(g, who, at, tmp_path, engine=spark)
    assert_same_values(duck, sp, g.columns)
    assert duck[3, 0] == sum(k for k in range(40) if k % 3 == 1) + 0.05  # units, not cents
    assert duck[3, 2 + 1] == 0.0  # no event keeps its own "stale" category
    assert duck[3, 1] == 3.0  # b, a, c... and NULL (i9) not counted


def _payments_groups() -> tuple[FeatureGroup, ...]:
    """The payments example's declared groups, imported beside the active project's."""
    spec = importlib.util.spec_from_file_location(
        "_payments_features", REPO / "examples/payments/features.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(g for g in module.REGISTRY.groups if g.source is not None)


@pytest.mark.spark
def test_the_payments_examples_groups_over_its_csv_are_the_same_on_spark(
    tmp_path: Path, spark: Engine
) -> None:
    from offline.simulation.fraud_world import export_minimal, fraud_preset, generate_fraud_world

    world = generate_fraud_world(fraud_preset("tiny", n_users=150, days=20))
    export_minimal(world, tmp_path / "payments.csv")  # the CSV make_data.py writes
    groups = _payments_groups()
    assert groups
    rng = np.random.default_rng(4)
    rows = rng.choice(len(world.occurred_ms), 300)
    for g in groups:
        ids = {"user_id": world.user_ids, "merchant_id": world.merchant_ids}[g.entity]
        col = {"user_id": world.user, "merchant_id": world.merchant}[g.entity]
        who = [str(ids[i]) for i in col[rows]]
        at = world.occurred_ms[rows] + rng.integers(-1, 2, 300)
        duck = compiler.point_in_time(g, who, at, tmp_path)
        sp = compiler.point_in_time(g, who, at, tmp_path, engine=spark)
        assert_same_values(duck, sp, g.columns)
        assert (duck != np.array([f.default for f in g.features for _ in range(f.size)], np.float32)).any()
        ids_d, snap_d = compiler.snapshot(g, int(world.occurred_ms.max()), tmp_path)
        ids_s, snap_s = compiler.snapshot(g, int(world.occurred_ms.max()), tmp_path, engine=spark)
        assert list(ids_d) == list(ids_s)
        assert_same_values(snap_d, snap_s, g.columns)


@pytest.mark.spark
def test_validate_with_engine_spark_runs_every_group_and_refuses_what_it_cannot_carry(
    tmp_path: Path, spark: Engine
) -> None:
    """`decision-service validate --engine spark` on the payments example (a subprocess: a
    process serves one project): every group's query runs on Spark; a derived column using
    DuckDB's typeof is refused, naming the group and the column."""
    import shutil
    import subprocess
    import sys

    from offline.simulation.fraud_world import export_minimal, fraud_preset, generate_fraud_world

    root = tmp_path / "payments"
    shutil.copytree(REPO / "examples/payments", root, ignore=shutil.ignore_patterns("data"))
    export_minimal(generate_fraud_world(fraud_preset("tiny", n_users=300)), root / "data/payments.csv")

    def validate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "offline.cli", "validate", "--project", str(root), "--engine", "spark",
             "--conf", "spark.sql.shuffle.partitions=2"],
            capture_output=True, text=True, timeout=600, cwd=REPO,
        )  # fmt: skip

    ok = validate()
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "ok: payments" in ok.stdout
    features = (root / "features.py").read_text()
    (root / "features.py").write_text(
        features.replace('format="csv",', 'format="csv", derived={"kind": "typeof(tx_amount)"},', 1)
    )
    refused = validate()
    assert refused.returncode == 1
    assert "derived column 'kind': cannot run on spark" in refused.stdout + refused.stderr


@pytest.mark.spark
def test_bootstrap_with_engine_spark_trains_the_same_fraud_model(tmp_path: Path, spark: Engine) -> None:
    """`decision-service bootstrap --engine spark` on the payments example: every fraud
    profile (FRAUD_USER, MERCHANT) of the training rows computed on Spark; the published
    model's held-out metrics equal those of the DuckDB bootstrap of the same data; and what it
    materializes into the online store (each into its own private Redis) holds the same keys,
    the same profile values and the same velocity members."""
    import json
    import shutil
    import subprocess
    import sys

    from decision_service.devtools.local_redis import LocalRedis
    from offline.simulation.fraud_world import export_minimal, fraud_preset, generate_fraud_world

    world = generate_fraud_world(fraud_preset("tiny", n_users=300))
    metrics = {}
    stores: dict[str, dict[bytes, object]] = {}
    for engine in ("duckdb", "spark"):
        root = tmp_path / engine
        shutil.copytree(REPO / "examples/payments", root, ignore=shutil.ignore_patterns("data", ".ds"))
        export_minimal(world, root / "data/payments.csv")
        with LocalRedis() as store:
            out = subprocess.run(
                [sys.executable, "-m", "offline.cli", "bootstrap", "--project", str(root), "--engine", engine,
                 "--redis-url", store.url],
                capture_output=True, text=True, timeout=900, cwd=REPO,
            )  # fmt: skip
            assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-1500:]
            stores[engine] = _online_state(store.client())
        manifest = root / ".ds/registry/fraud/versions/v0001/manifest.json"
        metrics[engine] = json.loads(manifest.read_text())["metrics"]
    assert stores["duckdb"].keys() == stores["spark"].keys()
    assert sum(k.startswith(b"fv:") for k in stores["duckdb"]) > 300  # profiles of users and merchants
    for key, value in stores["duckdb"].items():
        if isinstance(value, np.ndarray):  # a packed profile: values after the 8-byte header
            np.testing.assert_allclose(stores["spark"][key], value, rtol=1e-5, atol=1e-6, err_msg=str(key))
        else:
            assert stores["spark"][key] == value, key
    assert metrics["duckdb"]["model_auc"] > 0.5
    assert metrics["spark"].keys() == metrics["duckdb"].keys()
    for key, value in metrics["duckdb"].items():
        if isinstance(value, (int, float)):
            assert metrics["spark"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        else:
            assert metrics["spark"][key] == value, key


def _online_state(client) -> dict[bytes, object]:  # type: ignore[no-untyped-def]
    """Every key of a private Redis: a packed profile as its float32 values (the header holds
    the write time), a sorted set as its members (scores are times shifted to the wall clock
    of the run), anything else as its raw value."""
    state: dict[bytes, object] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            raw = client.get(key)
            state[key] = np.frombuffer(raw[8:], "<f4").copy() if key.startswith(b"fv:") else raw
        elif kind == b"zset":
            state[key] = sorted(client.zrange(key, 0, -1))
        elif kind == b"set":
            state[key] = sorted(client.smembers(key))
    return state

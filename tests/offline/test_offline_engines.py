"""The offline engine seam without Spark: the DuckDB -> Spark translation and the forward-fill.

The forward-fill (Spark's point-in-time lookup) is checked against DuckDB's ASOF JOIN on
DuckDB itself, so its semantics are tested in `make test` even where Java is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decision_service.features.definitions import ITEM
from offline.engines import open_engine, parse_conf
from offline.engines.base import FORWARD_FILL
from offline.engines.duckdb_engine import DuckDBEngine
from offline.features import feature_history

T0 = 1_780_000_000_000


class ForwardFillDuckDB(DuckDBEngine):
    """DuckDB running Spark's point-in-time query instead of its own ASOF JOIN."""

    def point_in_time(self, keys: str, history: str) -> str:
        return FORWARD_FILL.format(keys=keys, history=history)


def test_forward_fill_equals_asof_join(tmp_path):
    rng = np.random.default_rng(5)
    ids = [f"e{k}" for k in range(8)]  # e7 never has a snapshot
    cols = ["i_trend", "i_price"]
    for step in range(25):
        at = T0 + int(rng.integers(0, 50)) * 1000  # few distinct instants: many ties
        who = list(rng.choice(ids[:7], size=3, replace=False))
        values = rng.random((3, ITEM.width)).astype(np.float32)
        values[0, ITEM.slot("i_price")] = np.nan if step % 4 == 0 else values[0, ITEM.slot("i_price")]
        feature_history.append_snapshot(tmp_path, ITEM, who, values, at)
    keys = [str(x) for x in rng.choice(ids, size=300)]
    at_ms = T0 + rng.integers(-5, 55, size=300) * 1000  # decided_at == event_time often
    asof, found_a = feature_history.asof_values(tmp_path, ITEM.name, keys, at_ms, cols, engine=DuckDBEngine())
    ffill, found_f = feature_history.asof_values(
        tmp_path, ITEM.name, keys, at_ms, cols, engine=ForwardFillDuckDB()
    )
    assert found_a.any() and not found_a.all()
    np.testing.assert_array_equal(found_a, found_f)
    np.testing.assert_array_equal(asof[found_a], ffill[found_f])
    # A hand-checked key: the latest snapshot at or before its time, same-instant ties -> greater.
    history = {}
    for path in feature_history.history_files(tmp_path, ITEM.name):
        import pyarrow.parquet as pq

        t = pq.read_table(path).to_pydict()
        for e, ts, v in zip(t["entity_id"], t["event_time"], t["i_trend"], strict=True):
            history.setdefault(e, []).append((int(ts.timestamp() * 1000), v))
    for k in range(len(keys)):
        earlier = [(ts, v) for ts, v in history.get(keys[k], []) if ts <= at_ms[k]]
        if not earlier:
            assert not found_a[k, 0]
            continue
        latest = max(ts for ts, _ in earlier)
        assert asof[k, 0] == pytest.approx(max(v for ts, v in earlier if ts == latest))


def test_to_spark_fixes_what_a_plain_transpile_gets_wrong():
    pytest.importorskip("sqlglot", reason="the Spark translation needs the scale extra (sqlglot)")
    from offline.engines.dialect import DialectError, to_spark

    assert "UNIX_MILLIS(decided_at)" in to_spark("select epoch_ms(decided_at) + 5 from t")
    zipped = to_spark("select d, unnest(a) as x, unnest(b) as y, e from t where d > 0")
    assert zipped.count("EXPLODE") == 0 and "LATERAL VIEW INLINE(ARRAYS_ZIP(a, b)) _zipped AS x, y" in zipped
    assert zipped.startswith("SELECT d, _zipped.x AS x, _zipped.y AS y, e FROM t")
    assert "FILTER(WHERE" in to_spark("select count(distinct d) filter (where x > 1) from t")
    assert to_spark("select null::timestamptz as a") == "SELECT CAST(NULL AS TIMESTAMP_LTZ) AS a"
    with pytest.raises(DialectError, match="ASOF"):
        to_spark("select * from k asof join h on k.e = h.e and k.t >= h.t")


def test_engine_choice_and_conf():
    with open_engine(None) as eng:
        assert eng.name == "duckdb"
        assert eng.sql("select 1 as one").column("one").to_pylist() == [1]
    with pytest.raises(ValueError, match="unknown offline engine 'flink'"):
        open_engine("flink")
    assert parse_conf(["spark.master=local[4]", "spark.executor.memory=2g"]) == {
        "spark.master": "local[4]",
        "spark.executor.memory": "2g",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_conf(["spark.master"])


def test_cli_engine_choice(tmp_path, monkeypatch, capsys):
    """`training-set --engine duckdb` builds; `--engine spark` where Spark cannot start says
    why in one line (exit 1), it does not fall back to DuckDB silently."""
    from offline import cli
    from offline.engines import spark_engine
    from offline.loop import training_set

    out = tmp_path / "train.parquet"
    assert training_set.main(["--logs", str(tmp_path), "--out", str(out), "--engine", "duckdb"]) == 0
    assert out.exists()
    monkeypatch.setattr(spark_engine, "spark_missing_reason", lambda: "the Spark engine needs Java 17 (test)")
    project = Path(__file__).resolve().parents[2] / "examples" / "synthetic"
    code = cli.main(
        ["training-set", "--project", str(project), "--use-case", "recommendation", "--engine", "spark",
         "--out", str(tmp_path / "never.parquet"), "--conf", "spark.master=local[1]"]
    )  # fmt: skip
    assert code == 1 and "needs Java 17 (test)" in capsys.readouterr().err
    assert not (tmp_path / "never.parquet").exists()


def test_a_job_on_a_given_engine_leaves_nothing_behind(tmp_path):
    import duckdb
    import pyarrow as pa

    from offline.loop.training_set import build_training_set

    eng = DuckDBEngine()
    kept = eng.register_arrow("kept", pa.table({"a": [1]}))
    with eng.scope():
        table = eng.materialize("m", "select 1 as x")
        view = eng.register_arrow("v", pa.table({"b": [2]}))
        assert eng.sql(f"select x from {table}").column("x").to_pylist() == [1]
    for gone in (table, view):
        with pytest.raises(duckdb.Error):
            eng.sql(f"select * from {gone}")
    before = eng.sql("select count(*) as n from duckdb_views() where not internal").column("n")[0]
    build_training_set(tmp_path, None, as_of_ms=T0, engine=eng)  # no logs: still registers "o"
    after = eng.sql("select count(*) as n from duckdb_views() where not internal").column("n")[0]
    tables = eng.sql("select count(*) as n from duckdb_tables()").column("n")[0].as_py()
    assert after == before and tables == 0
    assert eng.sql(f"select a from {kept}").column("a").to_pylist() == [1]  # the caller's stays
    eng.close()

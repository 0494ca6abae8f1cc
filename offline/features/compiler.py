"""One compiler from declared feature groups (decision_service/features/declarative.py) to
DuckDB SQL, used for both flows of a group's values:

  * ``snapshot(group, as_of_ms)``: every entity's values as of one time (materialization
    into the online store, the feature history);
  * ``point_in_time(group, entity_ids, times_ms)``: each (entity, time) row's values as
    they were at that time (training sets, backfill).

Both run the SAME compiled query: a snapshot is the point-in-time query of (every entity,
T). So the values a model is trained on and the values it is served can never come from two
implementations that drift apart. Never a value from after a row's time: only events
strictly before it count (``ts < t``).

The query, for a relation ``queries(qid, entity_id, t)``:
  ev     the event source, its entity id column as ``k``, its time as epoch ms ``ts``, its
         event type as ``etype``, plus the looked-up attributes
  then each aggregate one of two ways (below): agg / d<i> or rg / rc / l
  base   queries LEFT JOIN the entity table and the aggregates
  then one layer per derived feature (Expr, PercentileInGroup), in declared order; every
  value that is NULL or not finite becomes the feature's declared default.

Two ways to aggregate, the same values (tests/offline/test_compiler_scale.py):
  * the join path: j = queries JOIN ev ON same entity AND ev.ts < q.t; agg = one GROUP BY
    qid, every aggregate FILTERed by its window and where; d<i> per (qid, value) summaries
    (Entropy, TopShare, FirstSeenCount). Its cost is the number of (query, earlier event)
    pairs: linear for a snapshot, quadratic for a busy entity queried at each of its events.
  * the running path, for what decomposes (Count, Sum, Mean, Std, Last, TimeSinceLast /
    First, FirstSeenCount, Share without half-life; Min, Max and DistinctCount over all
    time): one stream of events (each ``time=`` column and each value's first event for an
    entity as sub-streams), rg = partial aggregates per (entity, time), rc = running
    aggregates per entity in time order (Std centred on the entity's mean), l = one ASOF
    join per window edge: the last row strictly before t, the last before (open window) or
    at (``closed="left"``) t - w; a window's aggregate is the difference of the two.
    Its cost is a sort of the events and of the queries, whatever the skew.
  What does not decompose (windowed Min / Max / DistinctCount, a recency-weighted Share,
  Entropy, TopShare, percentiles) always takes the join path. ``compile_group``'s strategy
  "auto" compiles both and ``run`` picks per call by the number of pairs: the join path for
  a snapshot (each entity once), the running path for a training set with heavy entities.

Engines: the query runs on an offline ``Engine`` (offline/engines/; DuckDB by default, the
text verbatim). It is written in forms both engines run (explicit column lists or
``EXCLUDE``, Spark's ``* EXCEPT``; no ``REPLACE`` or ``UNION BY NAME``); the one
engine-specific piece is the running path's lookup, ``Engine.asof_left_join`` (DuckDB's
ASOF LEFT JOIN, a sort + fill elsewhere). On
Spark the text is transpiled (offline/engines/dialect.py) and the source files are read by
DuckDB (the files' own columns) and handed to Spark as Arrow tables; lookups, derived
columns and every aggregate run on Spark. A user expression the translation cannot carry
(DuckDB's ``typeof`` / ``timezone``, e.g. a time column with a non-UTC timezone) is refused
by name (``CompileError``) before anything runs.

Errors: ``CompileError`` (ValueError) naming the group, the feature and what is wrong;
``SourceError`` naming the file and the missing column.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from decision_service.features.declarative import (  # noqa: F401 (used and re-exported)
    TEXT_OFFSET,
    Aggregation,
    Attribute,
    Count,
    DistinctCount,
    Entropy,
    Events,
    Expr,
    FirstSeenCount,
    Last,
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
    time_sql,
)
from decision_service.features.registry import Feature, FeatureGroup
from offline.engines.base import Engine, QueryError


class CompileError(ValueError):
    """A declaration the compiler cannot turn into SQL (names the group and the feature)."""


class SourceError(ValueError):
    """A source that does not match its declaration (names the file and the column)."""


def _lit(value: str | int | float) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _unit_ms(unit: str) -> float:
    return seconds(f"1{unit}") * 1000.0


def resolve(path: str, base_dir: str | Path) -> str:
    """A declared path made absolute against ``base_dir``; a folder means every file in it."""
    p = Path(path)
    if not p.is_absolute():
        p = Path(base_dir) / p
    return str(p)


def scan_sql(source: Table | Events, base_dir: str | Path, *, derived: bool = True) -> str:
    """The DuckDB relation reading a declared file / folder / glob, with its derived columns
    appended (``derived=False``: the file's own columns only).

    On failure: SourceError when nothing matches the path or the format is unknown."""
    fmt = source.format
    full = resolve(source.path, base_dir)
    if os.path.isdir(full):
        full = os.path.join(full, "**", f"*.{fmt}")
    if not glob.glob(full, recursive=True):
        raise SourceError(f"{full}: no {fmt} file found")
    hive = str(source.hive_partitioning).lower()
    if fmt == "parquet":
        scan = f"read_parquet({_lit(full)}, hive_partitioning = {hive})"
    elif fmt == "csv":
        delim = _lit(source.delimiter)
        scan = f"read_csv({_lit(full)}, header = true, delim = {delim}, hive_partitioning = {hive})"
    else:
        raise SourceError(f"{full}: unknown format {fmt!r} (parquet or csv)")
    if derived:
        for name, sql in source.derived.items():
            scan = derive(scan, name, sql)
    return scan


Connection = duckdb.DuckDBPyConnection | Engine
"""Where the compiler's queries run: a DuckDB connection (wrapped as the DuckDB engine) or an
offline Engine."""

_SOURCE_VIEWS: dict[tuple[int, str], str] = {}  # (id(engine), DuckDB scan) -> its Arrow view


def _engine(con: Connection | None) -> Engine:
    """The Engine of ``con``: a new DuckDB engine for None, a connection wrapped (not owned)."""
    from offline.engines.duckdb_engine import DuckDBEngine

    if isinstance(con, Engine):
        return con
    return DuckDBEngine(con if con is not None else connect())


def _on_duckdb(con: Connection) -> bool:
    return not isinstance(con, Engine) or con.name == "duckdb"


def source_relation(source: Table | Events, base_dir: str | Path, con: Connection) -> str:
    """The relation of a declared file's own columns (no derived column) for queries on
    ``con``: DuckDB's scan (``scan_sql(derived=False)``) on DuckDB; on another engine a view of
    the rows DuckDB read, registered once per engine as an Arrow table (dropped with the
    engine's ``scope``). On failure: SourceError naming the file."""
    scan = scan_sql(source, base_dir, derived=False)
    if _on_duckdb(con):
        return scan
    assert isinstance(con, Engine)
    key = (id(con), scan)
    view = _SOURCE_VIEWS.get(key)
    if view is None or not con.holds(view):
        reader = connect()
        try:
            table = reader.sql(f"SELECT * FROM {scan}").to_arrow_table()
        except duckdb.Error as e:
            raise SourceError(f"{resolve(source.path, base_dir)}: cannot read {source.name!r}: {e}") from e
        finally:
            reader.close()
        for stale in [k for k, v in _SOURCE_VIEWS.items() if k[0] == key[0] and not con.holds(v)]:
            del _SOURCE_VIEWS[stale]  # dropped with a scope that ended
        view = con.register_arrow(f"src_{source.name}", table)
        _SOURCE_VIEWS[key] = view
    return view


def table_relation(table: Table, base_dir: str | Path, con: Connection) -> str:
    """A table's relation on ``con``: its file's columns, then its derived columns."""
    rel = source_relation(table, base_dir, con)
    for name, sql in table.derived.items():
        rel = derive(rel, name, sql)
    return rel


def derive(scan: str, name: str, sql: str) -> str:
    """``scan`` with one derived column appended: derived columns are added in declaration
    order, so each may use the ones declared before it."""
    return f"(SELECT *, ({sql}) AS {_q(name)} FROM {scan})"


def fetch(
    con: duckdb.DuckDBPyConnection, sql: str, path: str, base_dir: str | Path, what: str
) -> dict[str, np.ndarray]:
    """``sql``'s columns as numpy (``fetchnumpy``); SourceError naming the source's file and
    ``what`` was being read when DuckDB refuses (a missing column, a bad cast)."""
    try:
        return con.execute(sql).fetchnumpy()
    except Exception as exc:  # duckdb.Error
        raise SourceError(f"{resolve(path, base_dir)}: cannot read the {what}: {exc}") from exc


def floats(values: np.ndarray) -> np.ndarray:
    """float64 of a DuckDB ``fetchnumpy`` column with NULL as NaN: a NULL comes back masked,
    and ``np.asarray`` of a masked array keeps its hidden filler (0, i.e. 1970 for a time)."""
    return np.ma.filled(np.ma.asarray(values).astype(np.float64), np.nan)


@dataclass(frozen=True)
class Compiled:
    """A group's query over ``queries(qid BIGINT, entity_id VARCHAR, t BIGINT)``; its result
    has ``qid`` then the group's columns (DOUBLE), one row per query, ordered by qid.

    ``sql`` aggregates with running sums where it can (see "Two ways to aggregate" in the
    module docstring). With ``join_sql`` (strategy "auto"), ``run`` takes ``join_sql`` instead
    when the queries have few (query, event) pairs: ``pairs_sql`` counts them (an upper
    bound: (queries x events) per entity, and the events of the queried entities)."""

    group: FeatureGroup
    sql: str
    base_dir: str
    join_sql: str = ""
    pairs_sql: str = ""
    engine: str = "duckdb"  # the engine it was compiled for (``Engine.name``)


def _describe(con: Connection, scan: str, what: str) -> list[str]:
    """The column names of a relation; SourceError (naming ``what``) when it cannot be read."""
    if _on_duckdb(con):
        duck = con.con if isinstance(con, Engine) else con  # type: ignore[attr-defined]
        try:
            return [r[0] for r in duck.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
        except duckdb.Error as e:  # an unreadable file, a derived column over a missing one
            raise SourceError(f"{what}: cannot read {scan}: {e}") from e
    assert isinstance(con, Engine)
    try:
        return con.sql(f"SELECT * FROM {scan} LIMIT 0").column_names
    except con.errors as e:  # a derived column over a missing one, an expression Spark refuses
        raise SourceError(f"{what}: cannot read {scan}: {str(e).splitlines()[0]}") from e


def events_relation(
    ev: Events,
    base_dir: str | Path,
    con: Connection,
    lookups: Sequence[int] | None = None,
) -> tuple[str, list[str]]:
    """(SQL relation, its columns) of an event source: the file's columns, the looked-up
    columns of ``lookups`` (indices into ``ev.lookups``; None: all) and every derived column.

    Derived columns are added in declared order, each over what exists before it; a lookup
    is joined as soon as its ``on`` column exists (a file column first, a derived one right
    after it is computed). On failure: SourceError naming the source and the column."""
    what = f"source {ev.name!r} ({resolve(ev.path, base_dir)})"
    scan = source_relation(ev, base_dir, con)
    columns = _describe(con, scan, what)
    rel = f"(SELECT * FROM {scan})"
    pending = [i for i in range(len(ev.lookups)) if lookups is None or i in lookups]

    def join_ready() -> None:
        nonlocal rel
        for i in [i for i in pending if ev.lookups[i].on in columns]:
            pending.remove(i)
            lk = ev.lookups[i]
            lscan = table_relation(lk.table, base_dir, con)
            have = _describe(con, lscan, f"table {lk.table.name!r}")
            missing = [c for c in (lk.table.key, *lk.columns) if c not in have]
            if missing:
                raise SourceError(
                    f"{resolve(lk.table.path, base_dir)}: table {lk.table.name!r} lacks column(s) "
                    f"{', '.join(missing)} (it has {', '.join(have)})"
                )
            sel = ", ".join([f"CAST({_q(lk.table.key)} AS VARCHAR) AS __k", *(_q(c) for c in lk.columns)])
            clash = [c for c in lk.columns if c in columns]  # a looked-up column replaces the event's
            # r.* keeps what a caller's scan adds (the validators' row numbers); EXCLUDE is
            # Spark's * EXCEPT (dialect.to_spark)
            keep = f"r.* EXCLUDE ({', '.join(_q(c) for c in clash)})" if clash else "r.*"
            got = ", ".join([keep, *(f"l.{_q(c)}" for c in lk.columns)])
            rel = (
                f"(SELECT {got} FROM {rel} r LEFT JOIN (SELECT {sel} FROM {lscan}) l "
                f"ON l.__k = CAST(r.{_q(lk.on)} AS VARCHAR))"
            )
            columns[:] = [c for c in columns if c not in clash] + list(lk.columns)

    join_ready()
    for name, sql in ev.derived.items():
        if name in columns:  # replaces the column (moved last: Spark has no * REPLACE)
            rel = f"(SELECT * EXCLUDE ({_q(name)}), ({sql}) AS {_q(name)} FROM {rel})"
            columns.remove(name)
            columns.append(name)
        else:
            rel = f"(SELECT *, ({sql}) AS {_q(name)} FROM {rel})"
            columns.append(name)
        join_ready()
    if pending:
        raise SourceError(
            f"{what}: lookup(s) on {', '.join(ev.lookups[i].on for i in pending)}: no such column "
            f"(it has {', '.join(columns)})"
        )
    _describe(con, rel, what)  # binds every derived expression: a clear error now, not at run time
    return rel, columns


class _Builder:
    def __init__(
        self,
        group: FeatureGroup,
        base_dir: str | Path,
        con: Engine,
        strategy: str = "running",
    ) -> None:
        self.group = group
        self.strategy = strategy
        self.base_dir = base_dir
        self.con = con
        src = group.source
        if src is None:
            raise CompileError(f"group {group.name!r} declares no source")
        self.events: Events | None = src.events
        self.table: Table | None = src.table
        self.aggs: list[_Raw] = []  # the raw aggregates, as _a<i> of base
        # the nested per-(query, value) summaries d<i> of the join path: (kind, of, event
        # condition, time index, condition on the value's first time) -- "dist": Entropy /
        # TopShare, "first": FirstSeenCount
        self.nested: list[tuple[str, str, str, int, str]] = []
        self.stream = _Stream()  # the running path
        self.ev_sql = ""  # the events relation (ev), once built
        self.ev_columns: list[str] = []  # its columns (quoted), known once the features are read
        self.times: list[Time | None] = [None]  # 0: the source's time; then time= overrides
        self.table_columns: list[str] = self._columns_of_table() if self.table else []

    # --- sources ---------------------------------------------------------------------------
    def _describe(self, scan: str) -> list[str]:
        return _describe(self.con, scan, f"group {self.group.name!r}")

    def _require(self, scan: str, path: str, wanted: Sequence[str], what: str) -> list[str]:
        have = self._describe(scan)
        missing = [c for c in wanted if c not in have]
        if missing:
            raise SourceError(
                f"{resolve(path, self.base_dir)}: {what} lacks column(s) {', '.join(missing)} "
                f"(it has {', '.join(have)})"
            )
        return have

    def _columns_of_table(self) -> list[str]:
        t = self.table
        assert t is not None
        scan = table_relation(t, self.base_dir, self.con)
        return self._require(scan, t.path, [t.key], f"table {t.name!r}")

    def table_sql(self) -> str:
        t = self.table
        assert t is not None
        scan = table_relation(t, self.base_dir, self.con)
        rest = [c for c in self.table_columns if c != t.key]
        cols = "".join(f", {_q(c)}" for c in rest)
        return f"SELECT CAST({_q(t.key)} AS VARCHAR) AS k{cols} FROM {scan}"

    def events_sql(self, used: set[str]) -> str:
        ev = self.events
        assert ev is not None
        g = self.group
        if g.entity not in ev.keys:
            raise CompileError(
                f"group {g.name!r}: source {ev.name!r} has no id column for entity {g.entity!r} "
                f"(keys: {', '.join(ev.keys)})"
            )
        # a lookup is joined when a column of it is used; with derived columns, every lookup
        # is (a derived expression may read any looked-up column)
        needed = [i for i, lk in enumerate(ev.lookups) if ev.derived or any(c in used for c in lk.columns)]
        extra_times = [t for t in self.times[1:] if t is not None]
        rel, have = events_relation(ev, self.base_dir, self.con, needed)
        wanted = [ev.keys[g.entity], ev.time.column, *([ev.event_type] if ev.event_type else [])]
        wanted += [*sorted(used), *(t.column for t in extra_times)]
        missing = [c for c in dict.fromkeys(wanted) if c not in have]
        if missing:
            raise SourceError(
                f"{resolve(ev.path, self.base_dir)}: source {ev.name!r} lacks column(s) "
                f"{', '.join(missing)} (it has {', '.join(have)})"
            )
        etype = f"CAST(e.{_q(ev.event_type)} AS VARCHAR)" if ev.event_type else "NULL"
        cols = [
            f"CAST(e.{_q(ev.keys[g.entity])} AS VARCHAR) AS k",
            f"{time_sql(ev.time.column, ev.time)} AS ts",
            f"{etype} AS etype",
            *(f"e.{_q(c)} AS {_q(c)}" for c in sorted(used)),
            *(f"{time_sql(t.column, t)} AS _ts{i}" for i, t in enumerate(self.times[1:], start=1) if t),
        ]
        return f"SELECT {', '.join(cols)} FROM {rel} e"

    # --- aggregates ------------------------------------------------------------------------
    def _time_index(self, a: Aggregation) -> int:
        """0 for the source's time, else the index of the aggregation's ``time=`` column."""
        if a.time is None:
            return 0
        ev = self.events
        if ev is None:
            raise CompileError(f"group {self.group.name!r}: time={a.time!r} needs the source's events")
        t = a.time if isinstance(a.time, Time) else Time(a.time, ev.time.unit, ev.time.timezone)
        if t == ev.time:
            return 0
        if t not in self.times:
            self.times.append(t)
        return self.times.index(t)

    def _window_ms(self, a: Aggregation) -> int | None:
        return None if a.window_s is None else int(round(a.window_s * 1000))

    def _window_cond(self, a: Aggregation, ts: str, t: str) -> str:
        if a.window_s is None:
            return ""
        op = ">=" if a.closed == "left" else ">"
        return f"{ts} {op} {t} - {self._window_ms(a)}"

    def _where_cond(self, a: Aggregation) -> str:
        if not a.where:
            return ""
        if self.events is None or self.events.event_type is None:
            raise CompileError(f"group {self.group.name!r}: where={a.where} needs the source's event_type")
        return f"j.etype IN ({', '.join(_lit(w) for w in a.where)})"

    def _raw(self, a: Aggregation, kind: str, of: str | None = None, pred: str | None = None, **kw) -> str:
        """A raw aggregate of ``a``'s events (its time, window and where); returns its column."""
        raw = _Raw(
            kind,
            of,
            self._where_cond(a) if pred is None else pred,
            self._window_ms(a),
            a.closed,
            self._time_index(a),
            **kw,
        )
        if raw not in self.aggs:  # the same aggregate twice (a Ratio's count and a feature): once
            self.aggs.append(raw)
        return f"_a{self.aggs.index(raw)}"

    def _nested(self, key: tuple[str, str, str, int, str]) -> int:
        if key not in self.nested:
            self.nested.append(key)
        return self.nested.index(key)

    def aggregate(self, a: Aggregation, f: Feature) -> str:
        value = self._aggregate(a, f)
        if a.min_count > 0:  # fewer events (with a value) than min_count: the default
            n = self._raw(a, "count_of", a.of) if hasattr(a, "of") else self._raw(a, "count")
            return f"(CASE WHEN coalesce({n}, 0) >= {int(a.min_count)} THEN {value} END)"
        return value

    def _aggregate(self, a: Aggregation, f: Feature) -> str:
        of = getattr(a, "of", None)
        if isinstance(a, Count):
            return self._raw(a, "count")
        for kind, cls in (("sum", Sum), ("avg", Mean), ("std", Std), ("min", Min), ("max", Max)):
            if isinstance(a, cls):
                return self._raw(a, kind, of)
        if isinstance(a, Last):  # the latest non-NULL value; ties: the largest
            return self._raw(a, "last", of)
        if isinstance(a, DistinctCount):
            return self._raw(a, "distinct", of)
        if isinstance(a, TimeSinceLast):
            return f"(base.t - {self._raw(a, 'last_ts')}) / {_unit_ms(a.unit)}"
        if isinstance(a, TimeSinceFirst):
            return f"(base.t - {self._raw(a, 'first_ts')}) / {_unit_ms(a.unit)}"
        if isinstance(a, (Entropy, TopShare)):
            cond = " AND ".join(filter(None, (self._window_cond(a, "j.ts", "j.t"), self._where_cond(a))))
            i = self._nested(("dist", a.of, cond, self._time_index(a), ""))
            return f"d{i}_{'entropy' if isinstance(a, Entropy) else 'top'}"
        if isinstance(a, FirstSeenCount):  # the window applies to each value's first time
            return self._raw(a, "first_seen", of)
        raise CompileError(
            f"group {self.group.name!r}, feature {f.name!r}: {type(a).__name__} is not a scalar aggregation"
        )

    def share(self, a: Share, f: Feature) -> list[str]:
        if f.size != len(a.vocabulary):
            raise CompileError(
                f"group {self.group.name!r}, feature {f.name!r}: size {f.size} but the Share has "
                f"{len(a.vocabulary)} vocabulary values"
            )
        half = None if a.half_life is None else seconds(a.half_life) * 1000.0
        floor = "1.0" if a.half_life is None else "1e-12"
        total = self._raw(a, "wsum", half_life_ms=half)
        where = self._where_cond(a)
        out = []
        for v in a.vocabulary:
            pred = " AND ".join(filter(None, (f"j.{_q(a.of)} = {_lit(v)}", where)))
            part = self._raw(a, "wsum", pred=pred, half_life_ms=half)
            out.append(f"coalesce({part}, 0) / greatest(coalesce({total}, 0), {floor})")
        if a.min_count > 0:
            n = self._raw(a, "count_of", a.of)
            out = [f"(CASE WHEN coalesce({n}, 0) >= {int(a.min_count)} THEN {x} END)" for x in out]
        return out

    def scalar(self, c: object, f: Feature) -> str:
        if isinstance(c, Ratio):
            num, den = self.aggregate(c.numerator, f), self.aggregate(c.denominator, f)
            if c.prior_weight > 0:  # smoothed: pseudo-events at the prior's rate
                pseudo = float(c.prior_weight) * float(c.prior)
                return (
                    f"(coalesce({num}, 0) + {pseudo!r}) / "
                    f"greatest(coalesce({den}, 0) + {float(c.prior_weight)!r}, {float(c.min_denominator)!r})"
                )
            return f"{num} / greatest(coalesce({den}, 0), {float(c.min_denominator)})"
        if isinstance(c, Aggregation):
            return self.aggregate(c, f)
        if isinstance(c, Attribute):
            self._attribute(c.column, f)
            col = f"base.{_q(c.column)}"
            if not c.vocabulary:
                return col
            if isinstance(c.vocabulary[0], str):
                items, value = ", ".join(_lit(v) for v in c.vocabulary), f"CAST({col} AS VARCHAR)"
            else:
                items = ", ".join(repr(float(v)) for v in c.vocabulary)
                value = f"TRY_CAST({col} AS DOUBLE)"  # not a number: outside the vocabulary
            return f"(list_position([{items}], {value}) - 1)"  # NULL outside: the default
        if isinstance(c, TimeSinceAttribute):
            self._attribute(c.column, f)
            at = time_sql(c.column, c.column_unit, "base")
            return f"greatest(base.t - {at}, 0) / {_unit_ms(c.unit)}"
        raise CompileError(f"group {self.group.name!r}, feature {f.name!r}: cannot compute {c!r}")

    def _attribute(self, column: str, f: Feature) -> None:
        if self.table is None:
            raise CompileError(
                f"group {self.group.name!r}, feature {f.name!r}: an attribute needs the group's table"
            )
        if column not in self.table_columns:
            raise SourceError(
                f"{resolve(self.table.path, self.base_dir)}: table {self.table.name!r} lacks column {column} "
                f"(feature {f.name!r}; it has {', '.join(self.table_columns)})"
            )

    # --- the join path: every (query, earlier event) pair --------------------------------------
    def _join(self, ti: int) -> str:
        """The (query, event) pairs of time index ``ti``: events of the query's entity whose
        time (the source's, or the ``time=`` column) is strictly before the query's."""
        extra = {f"_ts{i}" for i in range(1, len(self.times))}
        if ti == 0:
            cols = ", ".join(f"ev.{c}" for c in self.ev_columns if c not in {"k", *extra})
            return f"SELECT q.qid, q.t, {cols} FROM q JOIN ev ON ev.k = q.entity_id AND ev.ts < q.t"
        cols = ", ".join(f"ev.{c}" for c in self.ev_columns if c not in {"k", "ts", *extra})
        return (
            f"SELECT q.qid, q.t, {cols}, ev._ts{ti} AS ts "
            f"FROM q JOIN ev ON ev.k = q.entity_id AND ev._ts{ti} < q.t"
        )

    def _join_raw(self, r: _Raw) -> str:
        """A raw aggregate as an aggregate of ``agg<ti>`` over the pairs of its time index."""
        of = f"j.{_q(r.of)}" if r.of else ""
        cond = " AND ".join(filter(None, (_in_window(r, "j.ts", "j.t"), r.pred)))
        if r.kind == "last":
            cond = " AND ".join(filter(None, (f"{of} IS NOT NULL", cond)))
        w = "1.0" if r.half_life_ms is None else f"pow(0.5, (j.t - j.ts) / {r.half_life_ms!r})"
        expr = {
            "count": "count(*)",
            "count_of": f"count({of})",
            "sum": f"sum({of})",
            "avg": f"avg({of})",
            "std": f"stddev_pop({of})",
            "min": f"min({of})",
            "max": f"max({of})",
            "last": f"arg_max({of}, [j.ts, {of}])",
            "distinct": f"count(DISTINCT {of})",
            "last_ts": "max(j.ts)",
            "first_ts": "min(j.ts)",
            "wsum": f"sum({w})",
        }[r.kind]
        return f"{expr} FILTER (WHERE {cond})" if cond else expr

    # --- the running-sum path: per-entity cumulative aggregates, looked up per query -----------
    def _is_fast(self, r: _Raw) -> bool:
        """Whether a raw aggregate decomposes into running aggregates in event-time order
        (a difference of two lookups for a window); the others take the join path."""
        if self.strategy == "join":
            return False
        if r.kind in ("min", "max", "distinct"):
            return r.window_ms is None
        if r.kind == "wsum":
            return r.half_life_ms is None
        return True

    def _source(self, key: tuple[str | int, ...]) -> str:
        """The condition on ``j._src`` of a sub-stream of the running path's one stream: the
        events of a time index ("ev", ti), or each value's first event per entity ("first",
        of, pred, ti): a value new to the entity (FirstSeenCount, DistinctCount)."""
        st = self.stream
        if key not in st.sources:
            ti = key[-1]
            assert isinstance(ti, int)
            i = len(st.sources)
            # every sub-stream has ev's columns, in ev's order (the first-seen ones NULL but k, ts)
            rows = ", ".join(f"_ts{ti} AS ts" if c == "ts" and ti else c for c in self.ev_columns)
            if key[0] == "ev":
                st.sources[key] = f"SELECT {i} AS _src, {rows} FROM ev"
            else:
                v = f"j.{_q(str(key[1]))}"
                keep = " AND ".join(filter(None, (f"{v} IS NOT NULL", str(key[2]))))
                nulls = "".join(f", NULL AS {c}" for c in self.ev_columns if c not in ("k", "ts"))
                st.sources[key] = (
                    f"SELECT {i} AS _src, j.k, min(j.ts) AS ts{nulls} FROM (SELECT {rows} FROM ev) AS j "
                    f"WHERE {keep} GROUP BY j.k, {v}"
                )
        return f"j._src = {list(st.sources).index(key)}"

    def _fast_raw(self, r: _Raw) -> str:
        """A raw aggregate as SQL over the stream's lookups (``l``) and ``q.t``: NULL exactly
        where the join path's aggregate is (no pair, no value)."""
        st = self.stream
        of = f"j.{_q(r.of)}" if r.of else ""
        src = self._source(("ev", r.ti))
        pred = " AND ".join(filter(None, (src, r.pred)))
        hi = (0, ">")  # every event strictly before t
        lo = None if r.window_ms is None else (r.window_ms, ">" if r.closed == "left" else ">=")

        def filt(expr: str, cond: str = pred) -> str:
            return f"{expr} FILTER (WHERE {cond})"

        def diff(col: str) -> str:
            h = f"coalesce({st.look(hi, col)}, 0)"
            return h if lo is None else f"({h} - coalesce({st.look(lo, col)}, 0))"

        def count(cond: str) -> str:
            return st.cum("count", st.partial(filt("count(*)", cond)))

        present = f"coalesce({st.look(hi, count(src))}, 0) > 0"  # the query has pairs
        nn = st.cum("count", st.partial(filt(f"count({of})"))) if of else ""
        if r.kind in ("count", "count_of", "wsum"):
            n = diff(nn if r.kind == "count_of" else count(pred))
            if r.kind == "wsum":  # no half-life: a count (NULL without a matching event)
                return f"CASE WHEN {n} > 0 THEN CAST({n} AS DOUBLE) END"
            return f"CASE WHEN {present} THEN {n} END"
        if r.kind in ("sum", "avg"):
            s = diff(st.cum("sum", st.partial(filt(f"sum({of})"))))
            return f"CASE WHEN {diff(nn)} > 0 THEN {s if r.kind == 'sum' else f'{s} / {diff(nn)}'} END"
        if r.kind == "std":  # centred on the entity's mean: sums of raw squares cancel badly
            x = f"CAST({of} AS DOUBLE)"
            pn = st.partial(filt(f"count({of})"))
            pm, pv = st.partial(filt(f"avg({x})")), st.partial(filt(f"var_pop({x})"))
            dev = f"({pm} - {st.mean(st.partial(filt(f'sum({x})')), pn)})"
            sy = diff(st.cum("sum", f"coalesce({pn} * {dev}, 0)"))
            sy2 = diff(st.cum("sum", f"coalesce({pn} * {pv} + {pn} * {dev} * {dev}, 0)"))
            n = diff(nn)
            return (
                f"CASE WHEN {n} > 0 THEN sqrt(greatest({sy2} / {n} - ({sy} / {n}) * ({sy} / {n}), 0.0)) END"
            )
        if r.kind in ("min", "max"):  # all time
            return st.look(hi, st.cum(r.kind, st.partial(filt(f"{r.kind}({of})"))))
        if r.kind == "last":  # the latest non-NULL value; ties: the largest
            cond = f"{pred} AND {of} IS NOT NULL"
            value = st.look(hi, st.cum("last", st.partial(filt(f"max({of})", cond))))
            if lo is None:
                return value
            at = st.look(hi, st.cum("max", st.partial(filt("max(j.ts)", cond))))
            return f"CASE WHEN {_in_window(r, at, 'q.t')} THEN {value} END"
        if r.kind == "last_ts":
            at = st.look(hi, st.cum("max", st.partial(filt("max(j.ts)"))))
            return f"CASE WHEN {_in_window(r, at, 'q.t')} THEN {at} END" if lo else at
        if r.kind == "first_ts":
            if lo is None:
                return st.look(hi, st.cum("min", st.partial(filt("max(j.ts)"))))
            # the first matching event at or after the window's start, if before t
            start = (r.window_ms, "<=" if r.closed == "left" else "<")
            at = st.look(start, st.cum("next", st.partial(filt("max(j.ts)"))))
            return f"CASE WHEN {at} < q.t THEN {at} END"
        if r.kind in ("first_seen", "distinct"):
            n = count(self._source(("first", r.of or "", r.pred, r.ti)))
            if r.kind == "distinct":  # all time: the values first seen before t
                return f"CASE WHEN {present} THEN coalesce({st.look(hi, n)}, 0) END"
            return f"CASE WHEN coalesce({st.look(hi, n)}, 0) > 0 THEN {diff(n)} END"
        raise AssertionError(r.kind)

    # --- the query -------------------------------------------------------------------------
    def build(self) -> str:
        g = self.group
        reserved = sorted(set(g.columns) & {"qid", "entity_id", "t"})
        if reserved:
            raise CompileError(f"group {g.name!r}: feature name(s) {', '.join(reserved)} are reserved")
        finals: list[tuple[str, str, float]] = []  # (column, raw SQL over base, default)
        derived: list[tuple[Feature, Expr | PercentileInGroup]] = []
        used: set[str] = set()
        for f in g.features:
            c = f.compute
            if c is None:
                raise CompileError(f"group {g.name!r}, feature {f.name!r}: no compute declared")
            for a in _aggregations(c):
                if hasattr(a, "of"):
                    used.add(a.of)
            if isinstance(c, (Expr, PercentileInGroup)):  # may read any direct feature, and
                derived.append((f, c))  # the derived ones declared before it
                continue
            if isinstance(c, Share):
                finals += [
                    (col, sql, f.default) for col, sql in zip(f.column_names(), self.share(c, f), strict=True)
                ]
            elif f.size != 1:
                raise CompileError(f"group {g.name!r}, feature {f.name!r}: size {f.size} needs a Share")
            else:
                finals.append((f.name, self.scalar(c, f), f.default))
        self.ev_columns = ["k", "ts", "etype", *(_q(c) for c in sorted(used))]
        self.ev_columns += [f"_ts{i}" for i in range(1, len(self.times))]
        needs_events = bool(self.aggs) or bool(self.nested)
        if needs_events and self.events is None:
            raise CompileError(f"group {g.name!r}: aggregations need the source's events")
        raw_cols: list[str] = []  # base's column of each raw aggregate, as _a<i>
        joined: list[tuple[int, int, str]] = []  # (raw index, time index, aggregate of agg<ti>)
        for i, r in enumerate(self.aggs):
            if self._is_fast(r):
                raw_cols.append(f"({self._fast_raw(r)}) AS _a{i}")
            elif r.kind == "first_seen":  # each value's first time before t, then those in the window
                d = self._nested(("first", r.of or "", r.pred, r.ti, _in_window(r, "first_ts", "t")))
                raw_cols.append(f"d{d}.d{d}_new AS _a{i}")
            else:
                joined.append((i, r.ti, self._join_raw(r)))
                name = "agg" if r.ti == 0 else f"agg_{r.ti}"
                raw_cols.append(f"{name}._a{i}")
        ctes = [f"q AS (SELECT qid, entity_id, t FROM {QUERIES})"]
        time_indices = sorted({ti for _, ti, _ in joined} | {n[3] for n in self.nested})
        if needs_events:
            self.ev_sql = self.events_sql(used)
            ctes.append(f"ev AS ({self.ev_sql})")
            for ti in time_indices:
                ctes.append(f"{_j(ti)} AS ({self._join(ti)})")
        joins = []
        for ti in time_indices:
            mine = [(i, a) for i, t, a in joined if t == ti]
            if not mine:
                continue
            cols = ", ".join(f"{a} AS _a{i}" for i, a in mine)
            name = "agg" if ti == 0 else f"agg_{ti}"
            ctes.append(f"{name} AS (SELECT j.qid, {cols} FROM {_j(ti)} AS j GROUP BY j.qid)")
            joins.append(f"LEFT JOIN {name} ON {name}.qid = q.qid")
        for i, (kind, of, cond, ti, first_cond) in enumerate(self.nested):
            where = f"WHERE {cond}" if cond else ""
            if kind == "dist":
                ctes.append(
                    f"c{i} AS (SELECT j.qid, j.{_q(of)} AS v, count(*) AS n FROM {_j(ti)} AS j {where} "
                    "GROUP BY j.qid, v)"
                )
                ctes.append(
                    f"d{i} AS (SELECT qid, -sum((n / s) * ln(n / s)) AS d{i}_entropy, "
                    f"max(n) / greatest(s, 1) AS d{i}_top FROM "
                    f"(SELECT qid, n, sum(n) OVER (PARTITION BY qid) AS s FROM c{i}) GROUP BY qid, s)"
                )
                raw_cols += [f"d{i}.d{i}_entropy", f"d{i}.d{i}_top"]
            else:  # "first": each value's first time before t, then the values new in the window
                keep = " AND ".join(filter(None, (f"j.{_q(of)} IS NOT NULL", cond)))
                ctes.append(
                    f"c{i} AS (SELECT j.qid, j.t, j.{_q(of)} AS v, min(j.ts) AS first_ts "
                    f"FROM {_j(ti)} AS j WHERE {keep} GROUP BY j.qid, j.t, v)"
                )
                new = f"count(*) FILTER (WHERE {first_cond})" if first_cond else "count(*)"
                ctes.append(f"d{i} AS (SELECT qid, {new} AS d{i}_new FROM c{i} GROUP BY qid)")
            joins.append(f"LEFT JOIN d{i} ON d{i}.qid = q.qid")
        if self.stream.sources:
            ctes += self.stream.ctes(self.con)
            joins.append("LEFT JOIN l ON l.qid = q.qid")
        if self.table is not None:
            ctes.append(f"ent AS ({self.table_sql()})")
            joins.insert(0, "LEFT JOIN ent ON ent.k = q.entity_id")
        attrs = [c for c in self.table_columns if self.table and c != self.table.key]
        base_cols = ["q.qid", "q.entity_id", "q.t", *(f"ent.{_q(a)}" for a in attrs), *raw_cols]
        ctes.append(f"base AS (SELECT {', '.join(base_cols)} FROM q {' '.join(joins)})")
        sql_raw = ", ".join(f"{_finite(sql, d)} AS {_q(col)}" for col, sql, d in finals)
        # a feature named like a table column hides the column from the derived features
        keep = ["qid", "entity_id", "t", *(_q(a) for a in attrs if a not in g.columns)]
        ctes.append(f"f0 AS (SELECT {', '.join(keep)}{', ' if finals else ''}{sql_raw} FROM base)")
        layer = "f0"
        for k, (f, c) in enumerate(derived, start=1):
            expr = _derived(c, f)
            ctes.append(f"f{k} AS (SELECT *, {expr} AS {_q(f.name)} FROM {layer})")
            layer = f"f{k}"
        out = ", ".join(_q(c) for c in g.columns)
        return f"WITH {', '.join(ctes)} SELECT qid, {out} FROM {layer} ORDER BY qid"


def _in_window(r: _Raw, ts: str, t: str) -> str:
    """The window condition of a raw aggregate on an event time ``ts`` ("" without a window)."""
    if r.window_ms is None:
        return ""
    return f"{ts} {'>=' if r.closed == 'left' else '>'} {t} - {r.window_ms}"


@dataclass(frozen=True)
class _Raw:
    """One aggregate over a query's events: ``kind`` (count, count_of, sum, avg, std, min, max,
    last, distinct, last_ts, first_ts, wsum: a Share's sum of (weighted) events, first_seen)
    of column ``of``, over the events (of time index ``ti``) matching ``pred`` (SQL over the
    event row ``j``) within the window. NULL for a query without events (or values), as SQL's
    aggregates over no row."""

    kind: str
    of: str | None
    pred: str
    window_ms: int | None
    closed: str
    ti: int
    half_life_ms: float | None = None


_RUNNING = "PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
_AHEAD = "PARTITION BY k ORDER BY ts ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING"


class _Stream:
    """The running path: the events of every sub-stream (``sources``: the source's time, a
    ``time=`` column, each value's first event) as one stream ``j`` summarised per (entity,
    time) (``rg``: partial aggregates, each of its sub-stream), then running aggregates in
    time order per entity (``rc``: one row per distinct time, including every event at that
    time), looked up for each query by one ASOF join per window edge (``l``): the last row
    strictly before t, before / at a window's start, or the first after it. The aggregate of
    a window is the difference of two lookups."""

    def __init__(self) -> None:
        self.sources: dict[tuple[str | int, ...], str] = {}  # key -> SELECT of its rows
        self.partials: dict[str, str] = {}  # SQL aggregate over j -> p<i>
        self.means: dict[tuple[str, str], str] = {}  # (sum, count partials) -> the entity's mean m<i>
        self.cums: dict[tuple[str, str], str] = {}  # (function, SQL over the partials) -> c<i>
        self.edges: dict[tuple[int, str], int] = {}  # (offset ms, q.t - offset <op> ts) -> e<i>
        self.looks: dict[tuple[int, str], str] = {}  # (edge, c<i>) -> its column in l

    def partial(self, sql: str) -> str:
        return self.partials.setdefault(sql, f"p{len(self.partials)}")

    def mean(self, total: str, n: str) -> str:
        return self.means.setdefault((total, n), f"m{len(self.means)}")

    def cum(self, func: str, sql: str) -> str:
        return self.cums.setdefault((func, sql), f"c{len(self.cums)}")

    def look(self, edge: tuple[int, str], col: str) -> str:
        e = self.edges.setdefault(edge, len(self.edges))
        return f"l.{self.looks.setdefault((e, col), f'e{e}{col}')}"

    def ctes(self, engine: Engine) -> list[str]:
        rows = " UNION ALL ".join(f"({sql})" for sql in self.sources.values())  # aligned columns
        parts = "".join(f", {sql} AS {p}" for sql, p in self.partials.items())
        out = [
            f"rg AS (SELECT j.k, j.ts{parts} FROM ({rows}) AS j "
            "WHERE j.k IS NOT NULL AND j.ts IS NOT NULL GROUP BY j.k, j.ts)"
        ]
        src = "rg"
        if self.means:
            means = ", ".join(f"sum({total}) / sum({n}) AS {m}" for (total, n), m in self.means.items())
            out.append(
                f"rm AS (SELECT rg.*, {', '.join(self.means.values())} FROM rg "
                f"LEFT JOIN (SELECT k AS mk, {means} FROM rg GROUP BY k) AS rk ON rk.mk = rg.k)"
            )
            src = "rm"
        cums = []
        for (func, sql), c in self.cums.items():
            if func == "count":
                cums.append(f"CAST(sum({sql}) OVER ({_RUNNING}) AS BIGINT) AS {c}")
            elif func == "last":
                cums.append(f"last_value({sql} IGNORE NULLS) OVER ({_RUNNING}) AS {c}")
            elif func == "next":
                cums.append(f"min({sql}) OVER ({_AHEAD}) AS {c}")
            else:
                cums.append(f"{func}({sql}) OVER ({_RUNNING}) AS {c}")
        out.append(f"rc AS MATERIALIZED (SELECT k, ts, {', '.join(cums)} FROM {src})")
        cols = ", ".join(f"e{e}.{c} AS {name}" for (e, c), name in self.looks.items())
        joins = " ".join(
            engine.asof_left_join(
                ("q", "qid", "q.entity_id", f"q.t{f' - {off}' * bool(off)}"), ("rc", f"e{e}", "k", "ts"), op
            )
            for (off, op), e in self.edges.items()
        )
        out.append(f"l AS (SELECT q.qid, {cols} FROM q {joins})")
        return out


def _j(ti: int) -> str:
    return "j" if ti == 0 else f"j_{ti}"


def _finite(sql: str, default: float) -> str:
    return f"CASE WHEN isfinite(CAST({sql} AS DOUBLE)) THEN CAST({sql} AS DOUBLE) ELSE {float(default)!r} END"


def _derived(c: Expr | PercentileInGroup, f: Feature) -> str:
    if isinstance(c, Expr):
        return _finite(f"({c.sql})", f.default)
    among = f"({c.among})" if c.among else "TRUE"
    part = ", ".join(["t", *([_q(c.by)] if c.by else []), among])
    over = f"OVER (PARTITION BY {part})"
    ranked = f"OVER (PARTITION BY {part} ORDER BY {_q(c.of)})"
    otherwise = f.default if c.otherwise is None else c.otherwise
    return (
        f"CASE WHEN {among} THEN (CASE WHEN count(*) {over} = 1 THEN 1.0 ELSE percent_rank() {ranked} END) "
        f"ELSE {float(otherwise)!r} END"
    )


def _aggregations(c: object) -> list[Aggregation]:
    if isinstance(c, Aggregation):
        return [c]
    if isinstance(c, Ratio):
        return [c.numerator, c.denominator]
    return []


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC, as the compiler's queries expect."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


STRATEGIES = ("auto", "running", "join")

# "auto" joins when (query, event) pairs <= this x (events + queries): a running aggregate
# costs a few times a pair (a sort, a window per column, an ASOF join per window edge)
PAIRS_PER_ROW = 16

QUERIES = "queries"
"""The name the compiled text reads its queries from (``run`` binds it to the registered view)."""


def _bind(sql: str, view: str) -> str:
    """``sql`` reading its queries from ``view`` instead of QUERIES."""
    return sql if view == QUERIES else sql.replace(f"FROM {QUERIES}", f"FROM {view}")


def compile_group(
    group: FeatureGroup,
    base_dir: str | Path,
    con: Connection | None = None,
    strategy: str = "auto",
) -> Compiled:
    """The group's query (see the module docstring). Reads the sources' schemas (not their
    rows) to check the declared columns. On failure: CompileError, SourceError.

    ``con``: a DuckDB connection or an offline Engine (None: a new DuckDB connection); run the
    result with ``run`` on the same one (on an engine other than DuckDB the sources are views
    it holds). ``strategy``: "running" (running aggregates where they decompose, the join
    elsewhere), "join" (every aggregate over the (query, event) pairs) or "auto" (either, per
    ``run``, by the number of pairs); the same values every way."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    engine = _engine(con)
    if engine.name != "duckdb":
        check_translatable(group, engine.name)
    builder = _Builder(group, base_dir, engine, "join" if strategy == "join" else "running")
    sql = builder.build()
    if strategy != "auto" or not builder.stream.sources:  # nothing runs: the join path already
        return Compiled(group, sql, str(base_dir), engine=engine.name)
    join_sql = _Builder(group, base_dir, engine, "join").build()
    pairs_sql = (
        f"WITH ev AS ({builder.ev_sql}), "
        f"qn AS (SELECT entity_id AS k, count(*) AS n FROM {QUERIES} GROUP BY entity_id), "
        "en AS (SELECT k, count(*) AS n FROM ev WHERE k IS NOT NULL GROUP BY k) "
        "SELECT coalesce(sum(CAST(qn.n AS DOUBLE) * en.n), 0) AS pairs, coalesce(sum(en.n), 0) AS events "
        "FROM qn JOIN en ON en.k = qn.k"
    )
    return Compiled(group, sql, str(base_dir), join_sql, pairs_sql, engine=engine.name)


def user_sql(group: FeatureGroup) -> list[tuple[str, str]]:
    """(what, DuckDB SQL) of every expression a project wrote or declared for ``group``: its
    sources' derived columns (a lookup's table included), time columns, Expr features and
    PercentileInGroup ``among`` conditions; ``what`` names the declaration."""
    out: list[tuple[str, str]] = []
    src = group.source
    tables = [] if src is None or src.table is None else [src.table]
    ev = None if src is None else src.events
    if ev is not None:
        tables += [lk.table for lk in ev.lookups]
        out += [(f"source {ev.name!r}, derived column {n!r}", sql) for n, sql in ev.derived.items()]
        times = [ev.time]
        for f in group.features:
            for a in _aggregations(f.compute):
                if isinstance(a.time, Time):
                    times.append(a.time)
                elif a.time is not None:
                    times.append(Time(a.time, ev.time.unit, ev.time.timezone))
        for t in dict.fromkeys(times):
            out.append(
                (
                    f"source {ev.name!r}, time column {t.column!r} ({t.unit}, {t.timezone})",
                    time_sql(t.column, t),
                )
            )
    for t in [t for i, t in enumerate(tables) if t not in tables[:i]]:  # (unhashable: derived)
        out += [(f"table {t.name!r}, derived column {n!r}", sql) for n, sql in t.derived.items()]
    for f in group.features:
        if isinstance(f.compute, Expr):
            out.append((f"feature {f.name!r} (Expr)", f.compute.sql))
        elif isinstance(f.compute, PercentileInGroup) and f.compute.among:
            out.append((f"feature {f.name!r} (PercentileInGroup among)", f.compute.among))
    return out


def check_translatable(group: FeatureGroup, engine: str = "spark") -> None:
    """Every expression of ``user_sql(group)`` has a faithful Spark translation.

    On failure: CompileError naming the group, the declaration and the construct (e.g.
    DuckDB's ``typeof`` of a non-UTC time column), before anything runs."""
    from sqlglot.errors import SqlglotError

    from offline.engines.dialect import DialectError, to_spark

    for what, sql in user_sql(group):
        try:
            to_spark(f"SELECT ({sql}) AS x")
        except (DialectError, SqlglotError) as exc:
            raise CompileError(
                f"group {group.name!r}, {what}: cannot run on {engine}: {str(exc).splitlines()[0]}"
            ) from exc


def _pick(compiled: Compiled, queries: pa.Table, con: Connection, view: str = QUERIES) -> str:
    """The query ``run`` executes for ``queries`` (registered as ``view``): with strategy
    "auto", the join path when the pairs are few (always when no entity is queried twice: a
    snapshot). Returns the compiled text (still reading QUERIES)."""
    if not compiled.join_sql:
        return compiled.sql
    ids = queries.column("entity_id")
    if pc.count_distinct(ids).as_py() + ids.null_count >= queries.num_rows:
        return compiled.join_sql
    counts = _engine(con).sql(_bind(compiled.pairs_sql, view))  # one row
    pairs, events = (counts.column(i)[0].as_py() for i in range(2))
    return compiled.join_sql if pairs <= PAIRS_PER_ROW * (events + queries.num_rows) else compiled.sql


def run(compiled: Compiled, queries: pa.Table, con: Connection | None = None) -> np.ndarray:
    """float32 [len(queries), group.width]: the values of each query row, in row order.

    ``queries``: entity_id (string) and t (int64 epoch ms) columns. ``con``: the connection or
    engine ``compile_group`` used (None: a new DuckDB connection). On failure: ValueError when
    ``con`` is not the engine the query was compiled for; CompileError naming the group when
    an engine other than DuckDB refuses the query (QueryError); DuckDB's errors as they are."""
    engine = _engine(con)
    if engine.name != compiled.engine:
        raise ValueError(
            f"group {compiled.group.name!r} was compiled for {compiled.engine}, not {engine.name}"
        )
    n = queries.num_rows
    table = pa.table(
        {
            "qid": pa.array(np.arange(n, dtype=np.int64)),
            "entity_id": queries.column("entity_id").cast(pa.string()),
            "t": queries.column("t").cast(pa.int64()),
        }
    )
    try:
        with engine.scope():
            view = engine.register_arrow("queries", table)
            result = engine.sql(_bind(_pick(compiled, table, engine, view), view))
    except QueryError as exc:
        raise CompileError(f"group {compiled.group.name!r}: {exc}") from exc
    out = np.empty((n, compiled.group.width), dtype=np.float32)
    for j, col in enumerate(compiled.group.columns):
        # never NULL (defaults in the SQL); NaN if it were
        out[:, j] = result.column(col).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return out


def point_in_time(
    group: FeatureGroup,
    entity_ids: Sequence[str],
    times_ms: Sequence[int] | np.ndarray,
    base_dir: str | Path,
    strategy: str = "auto",
    engine: str | Engine | None = None,
) -> np.ndarray:
    """float32 [n, group.width]: row i is ``entity_ids[i]``'s values as of ``times_ms[i]``,
    computed only from events strictly before that time.

    ``engine``: an offline engine or its name (None: the one of an enclosing ``using`` block,
    else DuckDB); what is registered on it is dropped when the call returns.
    On failure: CompileError, SourceError (see run)."""
    queries = pa.table(
        {
            "entity_id": pa.array([str(e) for e in entity_ids], pa.string()),
            "t": pa.array(np.asarray(times_ms, dtype=np.int64)),
        }
    )
    with _opened(engine) as eng, eng.scope():
        return run(compile_group(group, base_dir, eng, strategy), queries, eng)


def snapshot(
    group: FeatureGroup,
    as_of_ms: int,
    base_dir: str | Path,
    entity_ids: Sequence[str] | None = None,
    strategy: str = "auto",
    engine: str | Engine | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(entity ids object [n], float32 [n, group.width]) as of ``as_of_ms``: the point-in-time
    query at one time for every entity: ``entity_ids``, else the group's table (file order),
    else every entity of its events (sorted). ``engine``: as for ``point_in_time``."""
    src = group.source
    assert src is not None
    with _opened(engine) as eng, eng.scope():
        compiled = compile_group(group, base_dir, eng, strategy)
        if entity_ids is None:
            if src.table is not None:
                t = src.table
                # the file's order: read by DuckDB whatever the engine (Spark keeps no row order)
                reader = connect()
                try:
                    ids = reader.execute(
                        f"SELECT CAST({_q(t.key)} AS VARCHAR) FROM {table_relation(t, base_dir, reader)}"
                    ).fetchnumpy()
                finally:
                    reader.close()
                entity_ids = list(next(iter(ids.values())))
            else:
                ev = src.events
                assert ev is not None
                rel, _ = events_relation(ev, base_dir, eng)
                key = _q(ev.keys[group.entity])
                ids_table = eng.sql(
                    f"SELECT DISTINCT CAST({key} AS VARCHAR) AS k FROM {rel} AS e "
                    f"WHERE {key} IS NOT NULL ORDER BY k"
                )
                entity_ids = ids_table.column("k").to_pylist()
        queries = pa.table(
            {
                "entity_id": pa.array([str(e) for e in entity_ids], pa.string()),
                "t": pa.array(np.full(len(entity_ids), as_of_ms, dtype=np.int64)),
            }
        )
        return np.asarray(entity_ids, dtype=object), run(compiled, queries, eng)


_ENGINE: contextvars.ContextVar[Engine | None] = contextvars.ContextVar("compiler_engine", default=None)


@contextlib.contextmanager
def using(engine: Engine) -> Iterator[Engine]:
    """Inside the block, ``point_in_time`` and ``snapshot`` called without ``engine`` run on
    ``engine`` (the CLI's ``--engine`` for jobs that reach the compiler several calls deep:
    bootstrap's snapshots and fraud profiles). The engine stays open; its caller closes it."""
    token = _ENGINE.set(engine)
    try:
        yield engine
    finally:
        _ENGINE.reset(token)


class _opened:
    """``with _opened(engine) as eng``: an engine by name (opened, closed on exit) or as given;
    None: the engine of an enclosing ``using`` block, else a new DuckDB connection."""

    def __init__(self, engine: str | Engine | None) -> None:
        if engine is None:
            engine = _ENGINE.get()
        self._given = engine if isinstance(engine, Engine) else None
        self._name = None if isinstance(engine, Engine) else engine
        self._engine: Engine | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> Engine:
        if self._given is not None:
            return self._given
        if self._name in (None, "duckdb"):
            self._con = connect()  # the compiler's own settings (UTC, every core)
            self._engine = _engine(self._con)
        else:
            from offline.engines import open_engine

            self._engine = open_engine(self._name)
        return self._engine

    def __exit__(self, *exc: Any) -> None:
        if self._engine is not None:
            self._engine.close()
        if self._con is not None:
            self._con.close()

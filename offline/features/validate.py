"""Check a project's data sources against their declarations, before anything is computed.

``validate_sources(groups, base_dir)`` collects every distinct source the feature groups read
(``GroupSource.events`` / ``.table`` and the events' lookup tables, plus ``tables=`` /
``events=`` passed in) and checks each with DuckDB: one connection, SQL aggregates only
(one query of counts per source, one of DISTINCT counts over the id columns, one join for
an event source's lookups; an example row is fetched only for a problem found), so it stays
fast on 10M-row files (~0.5 s for 10M Parquet events on 2 cores; ~0.3 s per 1M events whose
derived columns read looked-up ones, as the payments world's: the main query then joins the
lookups, the others skip them when they need none). Nothing is written.

An event source is read as the compiler reads it (``compiler.events_relation``): its lookups
joined as soon as their ``on`` column exists, its derived columns computed in declared
order over the file's columns, the looked-up ones and the derived ones before them; a
table's derived columns likewise in declared order. The file name and row number of each
event are carried along, so an example row still points into the file.

What is checked, per source:

  files      the path (file, folder or glob) matches at least one file; no file is empty
             (0 bytes, or a Parquet file without rows); the source has rows; it can be read
  columns    every column the declarations need exists: ids (``Events.keys``, ``Table.key``),
             the time, the event type, lookup ``on`` columns and lookup ``columns``, the
             ``of=`` columns of the groups' aggregations (FirstSeenCount's included), the
             ``time=`` columns of aggregations, ``Attribute`` / ``TimeSinceAttribute``
             columns. Derived and looked-up columns count as existing; a derived expression
             that fails (at bind or at run time) is an error naming it, with an example row
  types      ids: anything castable to VARCHAR (not a LIST / STRUCT / MAP; FLOAT / DOUBLE
             ids: a warning, they read as '17.0'); time and ``time=`` columns: numbers for
             unit s / ms / us, a TIMESTAMP / DATE or timestamp strings for "timestamp" (a
             ``time=`` name has the source time's unit, a ``time=Time(...)`` its own);
             ``of=`` columns of Sum, Mean, Std, Min, Max: numbers; attributes: castable to
             DOUBLE, any type with a ``vocabulary``
  ids        NULL ids (event keys, table keys) and duplicate table keys
  time       NULL event times; every time, converted with the declared unit, within
             1990-01-01 .. now + 1 day, else, when another unit would fit, "looks like
             seconds, declared ms"; events later than now + 5 minutes ("rows in the future").
             ``time=`` columns likewise, except: NULL is "never happened" (not a problem)
             and values after now + 5 minutes are a warning (not known yet at now)
  event type values outside a declared ``event_types`` (up to 5 listed with counts); a
             ``where=`` name outside ``event_types`` (or, without a vocabulary, matching no
             event: a warning); NULL event types (a warning)
  lookups    events whose lookup key is not in the lookup table (a warning)
  values     NULL values in ``of=`` / attribute columns (a warning); attribute values outside
             an ``Attribute``'s ``vocabulary`` (a warning: they get the default)

Shapes: every finding is a ``Problem(severity, file, column, message, example, row)``:
``file`` is the file (relative to ``base_dir`` when inside it), ``column`` the column (None
for a file-level problem), ``example`` one offending row's relevant values and ``row`` its
1-based data row number within that file (a CSV header line not counted)::

    items.parquet: column 'price': 3 NULL values, e.g. row 17 {'item_id': 'i17', 'price': None}

``ValidationReport``: ``.problems``, ``.errors``, ``.warnings``, ``.ok`` (no error),
``.sources`` (per-source ``SourceStats``: rows, distinct ids, time range), ``.rows``
(source name -> rows), ``.summary()`` (text) and ``.raise_for_errors()``, which raises
``SourceValidationError`` (a ``SourceError``, so a ``ValueError``) listing every error.
A run that must not write from bad input calls ``raise_for_errors()`` before it writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
import time as _time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow.parquet as pq

from decision_service.features.declarative import (
    Aggregation,
    Attribute,
    Events,
    Max,
    Mean,
    Min,
    Ratio,
    Std,
    Sum,
    Table,
    Time,
    TimeSinceAttribute,
)
from decision_service.features.registry import FeatureGroup
from offline.features.compiler import (
    TEXT_OFFSET,
    SourceError,
    connect,
    derive,
    events_relation,
    resolve,
    scan_sql,
)

__all__ = [
    "Problem",
    "SourceStats",
    "SourceValidationError",
    "ValidationReport",
    "validate_sources",
]

MIN_TIME_MS = 631_152_000_000  # 1990-01-01T00:00:00Z
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
MAX_AHEAD_MS = 86_400_000  # a time later than now + 1 day is implausible for its unit
_UNIT_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_UNIT_NAME = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_NUMERIC_AGGS = (Sum, Mean, Std, Min, Max)
_NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
)
_ROW, _FILE = "__row", "__file"  # helper columns of the validation scan


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding. ``str()``: ``file: column 'c': message, e.g. row N {values}``."""

    severity: Literal["error", "warning"]
    file: str
    column: str | None
    message: str
    example: dict[str, Any] | None = None
    row: int | None = None  # 1-based data row of ``example`` within ``file``
    source: str = ""  # the declared source's name

    def __str__(self) -> str:
        where = f"{self.file}: column {self.column!r}" if self.column else self.file
        text = f"{where}: {self.message}"
        if self.example is not None:
            at = f"row {self.row} " if self.row is not None else ""
            text += f", e.g. {at}{self.example!r}"
        return text


@dataclass
class SourceStats:
    """What was read of one source: rows, distinct ids per id column, time range (ms)."""

    name: str
    kind: Literal["events", "table"]
    path: str
    files: int = 0
    rows: int | None = None
    distinct: dict[str, int] = field(default_factory=dict)
    time_min_ms: int | None = None
    time_max_ms: int | None = None


class SourceValidationError(SourceError):
    """Sources that do not match their declarations; the message lists every error."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        errors = report.errors
        lines = [f"{len(errors)} source error(s):", *(f"  - {p}" for p in errors)]
        super().__init__("\n".join(lines))


@dataclass
class ValidationReport:
    """Every problem found and what was read per source (see the module docstring)."""

    problems: list[Problem] = field(default_factory=list)
    sources: list[SourceStats] = field(default_factory=list)
    now_ms: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def rows(self) -> dict[str, int | None]:
        """Source name -> rows read (None: not readable)."""
        return {s.name: s.rows for s in self.sources}

    def raise_for_errors(self) -> None:
        """SourceValidationError listing every error, if any."""
        if self.errors:
            raise SourceValidationError(self)

    def summary(self) -> str:
        """Per source: rows, distinct ids, time range (ISO dates), then its problems."""
        lines = [
            f"{len(self.sources)} source(s) checked in {self.seconds:.2f}s (now {_iso(self.now_ms)}): "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        ]
        for s in self.sources:
            parts = [f"{s.files} file(s)"]
            if s.rows is not None:
                parts.append(f"{s.rows:,} rows")
            parts += [f"{n:,} distinct {c}" for c, n in s.distinct.items()]
            if s.time_min_ms is not None and s.time_max_ms is not None:
                parts.append(f"time {_iso(s.time_min_ms, date=True)} .. {_iso(s.time_max_ms, date=True)}")
            lines.append(f"{s.name} ({s.kind}, {s.path}): {', '.join(parts)}")
            mine = [p for p in self.problems if p.source == s.name]
            lines += [f"  {p.severity}: {p}" for p in mine] or ["  ok"]
        other = [p for p in self.problems if p.source not in {s.name for s in self.sources}]
        lines += [f"{p.severity}: {p}" for p in other]
        return "\n".join(lines)


# --- what the declarations need --------------------------------------------------------------


_Kind = Literal["id", "time", "etype", "value", "numeric", "attribute", "vocab", "time_attribute", "time_at"]


@dataclass
class _Need:
    why: str
    kind: _Kind  # "vocab": an Attribute with a vocabulary; "time_at": an aggregation's time=
    unit: str = "ms"
    timezone: str = "UTC"
    vocabulary: tuple[str | int | float, ...] = ()


@dataclass
class _Plan:
    source: Table | Events
    needs: dict[str, list[_Need]] = field(default_factory=dict)
    wheres: list[tuple[str, str]] = field(default_factory=list)  # (where name, feature)

    def need(self, column: str, why: str, kind: _Kind, unit: str = "ms", **kw: Any) -> None:
        self.needs.setdefault(column, []).append(_Need(why, kind, unit, **kw))

    def kinds(self, column: str) -> set[str]:
        return {n.kind for n in self.needs.get(column, [])}


def _aggregations(c: object) -> list[Aggregation]:
    if isinstance(c, Aggregation):
        return [c]
    if isinstance(c, Ratio):
        return [c.numerator, c.denominator]
    return []


class _Plans:
    def __init__(self) -> None:
        self.plans: list[_Plan] = []
        self.problems: list[Problem] = []

    def of(self, source: Table | Events) -> _Plan:
        for p in self.plans:
            if p.source is source or p.source == source:
                return p
        plan = _Plan(source)
        self.plans.append(plan)
        if isinstance(source, Table):
            plan.need(source.key, f"the key of table {source.name!r}", "id")
        else:
            for entity, col in source.keys.items():
                plan.need(col, f"the {entity} id", "id")
            plan.need(source.time.column, f"the time ({source.time.unit})", "time", source.time.unit)
            if source.event_type:
                plan.need(source.event_type, "the event type", "etype")
            for lk in source.lookups:
                plan.need(lk.on, f"the lookup key into {lk.table.name!r}", "id")
                tplan = self.of(lk.table)
                for c in lk.columns:
                    tplan.need(c, f"looked up by {source.name!r}", "value")
        return plan

    def add_group(self, g: FeatureGroup, base_dir: str | Path) -> None:
        src = getattr(g, "source", None)  # an OnDemandGroup has none
        if src is None:
            return
        ev, tb = src.events, src.table
        if ev is not None:
            self.of(ev)
            if g.entity not in ev.keys:
                self._error(ev, base_dir, f"group {g.name!r}: no id column for entity {g.entity!r}")
        if tb is not None:
            self.of(tb)
        for f in g.features:
            feat = f"feature {f.name!r} of group {g.name!r}"
            c = f.compute
            if isinstance(c, (Attribute, TimeSinceAttribute)):
                if tb is None:
                    self._error(ev, base_dir, f"{feat}: an attribute needs the group's table")
                    continue
                if isinstance(c, Attribute) and c.vocabulary:  # any type: compared with the vocabulary
                    self.of(tb).need(c.column, feat, "vocab", vocabulary=c.vocabulary)
                elif isinstance(c, Attribute):
                    self.of(tb).need(c.column, feat, "attribute")
                else:
                    self.of(tb).need(c.column, f"{feat} ({c.column_unit})", "time_attribute", c.column_unit)
            for a in _aggregations(c):
                if ev is None:
                    self._error(tb, base_dir, f"{feat}: an aggregation needs the group's events")
                    break
                for w in a.where:
                    self.of(ev).wheres.append((w, feat))
                if a.time is not None:  # counted by another time column of the events
                    t = a.time if isinstance(a.time, Time) else Time(a.time, ev.time.unit, ev.time.timezone)
                    if t != ev.time:
                        why = f"the time= of {feat} ({type(a).__name__}, {t.unit})"
                        self.of(ev).need(t.column, why, "time_at", t.unit, timezone=t.timezone)
                of = getattr(a, "of", None)
                if of is None:
                    continue
                kind: _Kind = "numeric" if isinstance(a, _NUMERIC_AGGS) else "value"
                why = f"{feat} ({type(a).__name__})"
                holder: Table | Events = ev
                if of not in ev.derived:  # a looked-up column: checked in its table (the last wins)
                    for lk in ev.lookups:
                        if of in lk.columns:
                            holder = lk.table
                self.of(holder).need(of, why, kind)

    def _error(self, source: Table | Events | None, base_dir: str | Path, message: str) -> None:
        if source is None:
            self.problems.append(Problem("error", "", None, message))
        else:
            self.problems.append(
                Problem(
                    "error",
                    _display(resolve(source.path, base_dir), base_dir),
                    None,
                    message,
                    source=source.name,
                )
            )


# --- helpers ---------------------------------------------------------------------------------


MAX_ID_LENGTH = 256
"""The service's id length limit (config.max_string_length's default)."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _iso(ms: int | float | None, date: bool = False) -> str:
    if ms is None:
        return "?"
    try:
        t = dt.datetime.fromtimestamp(ms / 1000.0, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ms:.0f} ms"
    return t.date().isoformat() if date else t.isoformat(timespec="seconds").replace("+00:00", "Z")


def _display(path: str, base_dir: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(base_dir).resolve()))
    except ValueError:
        return path


def _files(source: Table | Events, base_dir: str | Path) -> tuple[str, list[str]]:
    """(the pattern, the files it matches), resolved like compiler.scan_sql."""
    full = resolve(source.path, base_dir)
    if os.path.isdir(full):
        full = os.path.join(full, "**", f"*.{source.format}")
    return full, sorted(f for f in glob.glob(full, recursive=True) if os.path.isfile(f))


def _numeric(typ: str) -> bool:
    return typ in _NUMERIC_TYPES or typ.startswith("DECIMAL")


def _nested(typ: str) -> bool:
    return typ.endswith("]") or typ.startswith(("STRUCT", "MAP", "UNION"))


def _timestamp(typ: str) -> bool:
    return typ.startswith(("TIMESTAMP", "DATE"))


def _n(x: int) -> str:
    return f"{x:,}"


@dataclass(frozen=True)
class _Example:
    """An example row, fetched only when read: ``SELECT struct ... WHERE cond ORDER BY order
    LIMIT 1`` (an ``arg_min`` per check in the one scan would cost more than the checks)."""

    struct: str
    cond: str
    order: str
    relation: str = ""  # what follows FROM, the scan aliased ``e`` (default: the query's)


class _Query:
    """The aggregates of one source, built up column by column: one SELECT over the scan,
    one for the DISTINCT counts (mixed with the others they make DuckDB's plan slow), and
    examples fetched when a check reads one (only when it found a problem)."""

    def __init__(self) -> None:
        self.exprs: list[str | _Example] = []
        self.distinct: set[int] = set()

    def add(self, expr: str | _Example, distinct: bool = False) -> int:
        self.exprs.append(expr)
        if distinct:
            self.distinct.add(len(self.exprs) - 1)
        return len(self.exprs) - 1

    def run(self, con: duckdb.DuckDBPyConnection, relation: str, distinct_relation: str = "") -> _Row:
        """``relation``: what follows FROM, the scan aliased ``e``; ``distinct_relation``: the
        same for the DISTINCT counts, when a narrower relation has their columns."""
        values: dict[int, Any] = {}
        for distinct in (False, True):
            idx = [
                i for i, x in enumerate(self.exprs) if isinstance(x, str) and (i in self.distinct) == distinct
            ]
            if idx:
                sel = ", ".join(str(self.exprs[i]) for i in idx)
                rel = distinct_relation if distinct and distinct_relation else relation
                row = con.execute(f"SELECT {sel} FROM {rel}").fetchone()
                assert row is not None
                values.update(zip(idx, row, strict=True))
        return _Row(values, self.exprs, con, relation)


class _Row:
    """The aggregates' values by index; an example is queried on first read."""

    def __init__(
        self,
        values: dict[int, Any],
        exprs: list[str | _Example],
        con: duckdb.DuckDBPyConnection,
        relation: str,
    ) -> None:
        self.values, self.exprs, self.con, self.relation = values, exprs, con, relation

    def __getitem__(self, i: int) -> Any:
        if i not in self.values:
            x = self.exprs[i]
            assert isinstance(x, _Example)
            rel = x.relation or self.relation
            got = self.con.execute(
                f"SELECT {x.struct} FROM {rel} WHERE {x.cond} ORDER BY {x.order} LIMIT 1"
            ).fetchone()
            self.values[i] = got[0] if got else None
        return self.values[i]


# --- checking one source ---------------------------------------------------------------------


@dataclass
class _Tables:
    """What the checked tables gave, for the event sources' lookups (tables are checked first)."""

    # (table, columns): tables the compiler can read, every derived column included
    readable: list[tuple[Table, set[str]]] = field(default_factory=list)
    # (table, scan, column types): tables whose checks ran, for the lookup-miss counts
    scans: list[tuple[Table, str, dict[str, str]]] = field(default_factory=list)


class _Checker:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        plan: _Plan,
        base_dir: str | Path,
        now_ms: int,
        report: ValidationReport,
        tables: _Tables,
    ) -> None:
        self.con = con
        self.plan = plan
        self.src = plan.source
        self.base_dir = base_dir
        self.now_ms = now_ms
        self.report = report
        self.tables = tables
        self.scans = tables.scans
        self.kind: Literal["events", "table"] = "events" if isinstance(self.src, Events) else "table"
        self.files: list[str] = []
        self.no_rows = 0  # Parquet files without rows (each reported)
        self.file = _display(resolve(self.src.path, base_dir), base_dir)
        self.raw = ""  # compiler.scan_sql of the file's own columns
        self.scan = self.base = ""  # the validation scan: with / without lookups and derived columns
        self.light = ""  # an event source's file columns plus the derived columns over them only
        self.light_columns: set[str] = set()
        self.unjoined: list[str] = []  # the tables of lookups left out (unreadable, or no key)
        self.types: dict[str, str] = {}  # column -> DuckDB type, derived columns included
        self.file_types: dict[str, str] = {}
        self.stats = SourceStats(self.src.name, self.kind, self.src.path)

    # problems
    def problem(
        self,
        severity: Literal["error", "warning"],
        column: str | None,
        message: str,
        example: dict[str, Any] | None = None,
    ) -> None:
        file, row = self.file, None
        if example is not None:
            example = dict(example)
            f, row = example.pop(_FILE, None), example.pop(_ROW, None)
            if f:
                file = _display(str(f), self.base_dir)
                if self.src.format == "csv" and len(self.files) > 1 and row is not None:
                    first = self.con.execute(
                        f"SELECT min({_ROW}) FROM {self.scan} WHERE {_FILE} = ?", [f]
                    ).fetchone()
                    row = int(row) - int(first[0]) + 1 if first and first[0] is not None else row
            row = int(row) if row is not None else None
        self.report.problems.append(Problem(severity, file, column, message, example, row, self.src.name))

    def error(self, column: str | None, message: str, example: dict[str, Any] | None = None) -> None:
        self.problem("error", column, message, example)

    def warn(self, column: str | None, message: str, example: dict[str, Any] | None = None) -> None:
        self.problem("warning", column, message, example)

    def example_struct(self, *columns: str) -> str:
        ids = self.src.keys.values() if isinstance(self.src, Events) else (self.src.key,)
        cols = [*ids, *([self.src.time.column] if isinstance(self.src, Events) else []), *columns]
        present = [c for c in dict.fromkeys(cols) if c in self.types]
        items = [f"{_lit(_FILE)}: e.{_FILE}", f"{_lit(_ROW)}: e.{_ROW}"]
        items += [f"{_lit(c)}: e.{_q(c)}" for c in present]
        return "{" + ", ".join(items) + "}"

    def first(self, cond: str, *columns: str, order: str = "", narrow: bool = True) -> _Example:
        """The first row (lowest row number, or by ``order``) satisfying ``cond`` over
        ``columns``: from the narrowest scan that has them (``narrow``), else the query's."""
        rel = f"{self.narrow(*columns)} e" if narrow else ""
        return _Example(self.example_struct(*columns), cond, order or f"e.{_ROW}", rel)

    def first_row(self, where: str = "TRUE", relation: str = "") -> dict[str, Any] | None:
        """The first row of the files (their own columns, up to 10) satisfying ``where``, over
        ``relation`` (default: the files' own columns)."""
        cols = list(self.file_types)[:10]
        items = ", ".join(
            [f"{_lit(_FILE)}: e.{_FILE}", f"{_lit(_ROW)}: e.{_ROW}"] + [f"{_lit(c)}: e.{_q(c)}" for c in cols]
        )
        rel = relation or self.base
        sql = f"SELECT {{{items}}} FROM {rel} e WHERE {where} ORDER BY e.{_ROW} LIMIT 1"
        row = self.con.execute(sql).fetchone()
        return row[0] if row else None

    # steps
    def run(self) -> SourceStats:
        if self.read():
            self.check()
        return self.stats

    def read(self) -> bool:
        """Files, readability, derived columns; sets ``self.scan`` and ``self.types``."""
        src = self.src
        pattern, self.files = _files(src, self.base_dir)
        self.stats.files = len(self.files)
        if not self.files:
            self.error(None, f"no {src.format} file matches {pattern}")
            return False
        empty = [f for f in self.files if os.path.getsize(f) == 0]
        for f in empty:
            self.file = _display(f, self.base_dir)
            self.error(None, "empty file (0 bytes)")
        self.file = _display(self.files[0], self.base_dir) if len(self.files) == 1 else self.file
        if empty:
            return False
        if src.format == "parquet":
            for f in self.files:
                try:
                    if pq.ParquetFile(f).metadata.num_rows == 0:
                        self.no_rows += 1
                        # one empty part among several is what partitioned writers (Spark)
                        # leave: a warning; a source of only empty files is an error below
                        self.report.problems.append(
                            Problem(
                                "warning" if len(self.files) > 1 else "error",
                                _display(f, self.base_dir),
                                None,
                                "empty file (no rows)",
                                source=src.name,
                            )
                        )
                except Exception as e:  # not a Parquet file (or a truncated one)
                    message = f"not a readable Parquet file: {_short(e)}"
                    self.report.problems.append(
                        Problem("error", _display(f, self.base_dir), None, message, source=src.name)
                    )
                    return False
        try:
            raw = scan_sql(src, self.base_dir, derived=False)
        except SourceError as e:
            self.error(None, str(e))
            return False
        row = "file_row_number + 1" if src.format == "parquet" else "row_number() OVER ()"
        base = f"(SELECT *, filename AS {_FILE}, {row} AS {_ROW} FROM {raw})"
        try:
            types = self.describe(base)
        except duckdb.Error as e:
            self.error(None, f"cannot be read: {_short(e)}")
            return False
        self.types = self.file_types = {c: t for c, t in types.items() if c not in (_ROW, _FILE)}
        self.raw, self.scan, self.base = raw, base, base
        if isinstance(src, Events):
            scan = self._events_scan()
            if scan is None:
                return True  # the file's own columns: the checks that need no more still run
        else:
            scan = base  # derived columns in declaration order: each may use the ones before it
            failed = False
            for name, sql in src.derived.items():
                try:
                    self.describe(f"(SELECT ({sql}) AS {_q(name)} FROM {scan})")
                    scan = derive(scan, name, sql)
                except duckdb.Error as e:
                    failed = True
                    self.error(
                        name, f"derived column {name!r} = `{sql}` fails: {_short(e)}", self.first_row()
                    )
            if not failed:  # as the compiler reads it (scan_sql): the events may look it up
                self.tables.readable.append((src, set(self.file_types) | set(src.derived)))
        if scan != base:
            self.scan = scan
            self.types = {c: t for c, t in self.describe(self.scan).items() if c not in (_ROW, _FILE)}
            if isinstance(src, Events):
                self._light()
        return True

    def describe(self, scan: str) -> dict[str, str]:
        return {r[0]: r[1] for r in self.con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}

    def _light(self) -> None:
        """``self.light``: the event file's columns plus the derived columns computed over
        them alone (no looked-up or other derived column), when no derived or looked-up
        column replaces a file column; the same values as the full scan, without its joins."""
        src = self.src
        assert isinstance(src, Events)
        made = {*src.derived, *(c for lk in src.lookups for c in lk.columns)}
        if made & set(self.file_types):
            return
        light = [(n, sql) for n, sql in src.derived.items() if n in self.types]
        cols = ", ".join(f"({sql}) AS {_q(n)}" for n, sql in light)
        if not cols:
            return
        try:
            self.describe(f"(SELECT {cols} FROM {self.base})")  # usually all of them bind
        except duckdb.Error:
            ok = []
            for n, sql in light:
                try:
                    self.describe(f"(SELECT ({sql}) AS {_q(n)} FROM {self.base})")
                    ok.append((n, sql))
                except duckdb.Error:
                    pass  # it reads a looked-up or another derived column
            light = ok
            cols = ", ".join(f"({sql}) AS {_q(n)}" for n, sql in light)
        if light:
            self.light = f"(SELECT *, {cols} FROM {self.base})"
            self.light_columns = {n for n, _ in light}

    def narrow(self, *columns: str) -> str:
        """The narrowest scan that has ``columns`` and the example rows' columns as the
        declarations read them: the files' own (none derived or looked up), or, for events,
        the files' plus the derived columns over them alone, else the full scan. A query
        that needs no looked-up column skips the lookups' joins."""
        src = self.src
        made = set(src.derived)
        if isinstance(src, Events):
            made.update(c for lk in src.lookups for c in lk.columns)
            columns = (*columns, *src.keys.values(), src.time.column)
        else:
            columns = (*columns, src.key)
        if all(c in self.file_types and c not in made for c in columns):
            return self.base
        if self.light and all(
            c in self.light_columns or (c in self.file_types and c not in made) for c in columns
        ):
            return self.light
        return self.scan

    def relation(self, derived: Sequence[tuple[str, str]]) -> str:
        """The validation scan of the source with the ``derived`` (name, SQL) columns only: a
        table's file columns then each derived column; an event source's relation as the
        compiler builds it (``compiler.events_relation``: each lookup joined as soon as its
        ``on`` column exists), over the file's columns plus its file name and row number.
        Lookups of tables the compiler could not read are left out (their table's problems
        are reported there). On failure: SourceError or duckdb.Error."""
        src = self.src
        if isinstance(src, Table):
            scan = self.base
            for name, sql in derived:
                scan = derive(scan, name, sql)
            return scan
        have = set(self.file_types) | {name for name, _ in derived}
        ever = {*self.file_types, *src.derived, *(c for lk in src.lookups for c in lk.columns)}
        joined: list[int] = []
        for i, lk in enumerate(src.lookups):
            cols = [c for t, c in self.tables.readable if t is lk.table or t == lk.table]
            usable = bool(cols) and {lk.table.key, *lk.columns} <= cols[0]
            if lk.on in have and usable:
                joined.append(i)
                have |= set(lk.columns)
            elif (not usable or lk.on not in ever) and lk.table.name not in self.unjoined:
                self.unjoined.append(lk.table.name)  # never joined
        ev = dataclasses.replace(src, derived=dict(derived))
        rel, _ = events_relation(ev, self.base_dir, self.con, joined)
        # the compiler's scan of the file, with the file name and row number added
        anchor = f"(SELECT * FROM {self.raw})"
        if anchor not in rel:
            raise SourceError(f"cannot add the row numbers to the compiler's relation {rel}")
        return rel.replace(anchor, self.base, 1)

    def _events_scan(self) -> str | None:
        """The event source's relation with every derived column that works; each failing
        one is an error naming it (None: not even the file's columns and lookups join)."""
        items = list(self.src.derived.items())
        try:
            return self.relation(items)
        except (SourceError, duckdb.Error) as e:
            first = e
        kept: list[tuple[str, str]] = []  # find the culprits: add the derived columns one by one
        for name, sql in items:
            try:
                self.relation([*kept, (name, sql)])
                kept.append((name, sql))
            except (SourceError, duckdb.Error) as e:
                why = _cause(e)
                if self.unjoined:  # perhaps it reads a column of one of them
                    why += f" (tables not looked up: {', '.join(map(repr, self.unjoined))})"
                self.error(name, f"derived column {name!r} = `{sql}` fails: {why}", self.first_row())
        try:
            scan = self.relation(kept)
        except (SourceError, duckdb.Error) as e:
            self.error(None, f"cannot be read with its lookups: {_cause(e)}")
            return None
        if len(kept) == len(items):  # no derived column to blame
            self.error(None, f"cannot be read with its lookups: {_cause(first)}")
        return scan

    def check(self) -> None:
        src, plan, types = self.src, self.plan, self.types
        have = ", ".join(types)
        missing = [c for c in plan.needs if c not in types]
        for c in missing:
            whys = "; ".join(dict.fromkeys(n.why for n in plan.needs[c]))
            self.error(c, f"missing column (needed as {whys}); the file has: {have}", self.first_row())
        q = _Query()
        post: list[Callable[[_Row], None]] = []
        n_rows = q.add("count(*)")

        # ids: NULLs, types, distinct counts
        ids = list(dict.fromkeys(src.keys.values() if isinstance(src, Events) else [src.key]))
        for c in ids:
            if c not in types:
                continue
            if _nested(types[c]):
                self.error(c, f"id column has type {types[c]}, not castable to an id string")
                continue
            if types[c] in ("FLOAT", "DOUBLE"):
                self.warn(c, f"id column has type {types[c]}: ids read as text like '17.0'")
            optional = isinstance(src, Events) and c in {src.keys[k] for k in src.optional_keys}
            if not optional:  # an optional party (a payment without a device): NULL is "none"
                post.append(self._nulls(q, c, "error", "NULL ids"))
            post.append(self._distinct(q, c))
            post.append(self._unservable_ids(q, c))
        for c, needs in plan.needs.items():
            if c in types and c not in ids and {"value", "numeric", "attribute", "vocab"} & plan.kinds(c):
                post.append(self._nulls(q, c, "warning", "NULL values"))
            if c in types and "numeric" in plan.kinds(c) and not _numeric(types[c]):
                post.append(self._not_numeric(q, c, needs))
            elif (
                c in types
                and "attribute" in plan.kinds(c)
                and not (_numeric(types[c]) or types[c] == "BOOLEAN")
            ):
                post.append(self._not_numeric(q, c, needs, castable=True))
            if c in types and "vocab" in plan.kinds(c):
                for vocab in dict.fromkeys(n.vocabulary for n in needs if n.kind == "vocab"):
                    post.append(self._vocabulary(q, c, vocab, needs))
            if c in types and "time_attribute" in plan.kinds(c):
                unit = next(n.unit for n in needs if n.kind == "time_attribute")
                post.append(self._time(q, c, unit, "UTC", "attribute"))
            if c in types and "time_at" in plan.kinds(c):  # an aggregation's time=: NULL never happened
                for unit, tz in dict.fromkeys((n.unit, n.timezone) for n in needs if n.kind == "time_at"):
                    post.append(self._time(q, c, unit, tz, "time_at"))
        if isinstance(src, Events):
            if plan.wheres and not src.event_type:
                feats = ", ".join(dict.fromkeys(f for _, f in plan.wheres))
                self.error(None, f"where= needs the source's event_type column ({feats})")
            if src.time.column in types:
                post.append(self._time(q, src.time.column, src.time.unit, src.time.timezone, "events"))
            if src.event_type and src.event_type in types:
                post.append(self._event_types(q, src.event_type))
        elif src.key in types:
            post.append(self._duplicates(q, src.key))

        try:
            row = q.run(self.con, f"{self.scan} e", f"{self.narrow(*ids)} e")
        except duckdb.Error as e:
            self._failed(e)
            return
        self.stats.rows = int(row[n_rows])
        if self.stats.rows == 0:
            if self.no_rows < len(self.files):  # else each file was reported
                self.error(None, "no rows")
            return
        for p in post:
            p(row)
        if isinstance(src, Table):
            self.scans.append((src, self.scan, types))
        elif src.lookups:
            self._lookups()

    def _failed(self, e: duckdb.Error) -> None:
        """The aggregate query failed: blame a derived column if one fails at run time."""
        kept: list[tuple[str, str]] = []
        for name, sql in self.src.derived.items():
            try:
                scan = self.relation(kept)  # what the derived column is computed over
            except (SourceError, duckdb.Error):
                break  # (it did bind in read(): not expected)
            try:
                self.con.execute(f"SELECT count(({sql})) FROM {scan} e").fetchone()
                kept.append((name, sql))
            except duckdb.Error as e2:
                try:
                    example = self.first_row(f"try(({sql})) IS NULL", scan)
                except duckdb.Error:
                    example = self.first_row()
                self.error(name, f"derived column {name!r} = `{sql}` fails: {_short(e2)}", example)
                return
        self.error(None, f"cannot be read: {_short(e)}")

    def median(self, expr: str, column: str) -> float | None:
        """An approximate median of ``expr`` over ``column`` (only when a problem needs one: it
        is slow to compute along with the other aggregates)."""
        row = self.con.execute(f"SELECT approx_quantile({expr}, 0.5) FROM {self.narrow(column)} e").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # checks: each adds its aggregates to ``q`` and returns what reads them
    def _nulls(self, q: _Query, c: str, severity: Any, what: str) -> Callable[[_Row], None]:
        n = q.add(f"count(*) FILTER (WHERE e.{_q(c)} IS NULL)")
        x = q.add(self.first(f"e.{_q(c)} IS NULL", c))

        def read(row: _Row) -> None:
            if row[n]:
                self.problem(severity, c, f"{_n(row[n])} {what} (of {_n(row[0])} rows)", row[x])

        return read

    def _unservable_ids(self, q: _Query, c: str) -> Callable[[_Row], None]:
        """Ids a request could never name: the edge canonicalises ids (domain/identifiers.py
        canonical_text: no control characters, no blanks around, NFC, at most
        MAX_ID_LENGTH characters), so a stored id that is not in that form is never found."""
        v = f"CAST(e.{_q(c)} AS VARCHAR)"
        bad = (
            f"{v} IS NOT NULL AND (length({v}) > {MAX_ID_LENGTH} OR {v} <> trim({v}) "
            f"OR regexp_matches({v}, '[\\x00-\\x1f\\x7f]') OR {v} <> nfc_normalize({v}))"
        )
        n = q.add(f"count(*) FILTER (WHERE {bad})")
        x = q.add(self.first(bad, c))

        def read(row: _Row) -> None:
            if row[n]:
                self.problem(
                    "error",
                    c,
                    f"{_n(row[n])} ids a request can never name (blanks around them, control "
                    f"characters, not NFC, or longer than {MAX_ID_LENGTH}): the service "
                    "canonicalises the ids it is asked for",
                    row[x],
                )

        return read

    def _distinct(self, q: _Query, c: str) -> Callable[[_Row], None]:
        n = q.add(f"count(DISTINCT e.{_q(c)})", distinct=True)

        def read(row: _Row) -> None:
            self.stats.distinct[c] = int(row[n])

        return read

    def _not_numeric(
        self, q: _Query, c: str, needs: list[_Need], castable: bool = False
    ) -> Callable[[_Row], None]:
        bad = f"e.{_q(c)} IS NOT NULL AND TRY_CAST(e.{_q(c)} AS DOUBLE) IS NULL"
        n = q.add(f"count(*) FILTER (WHERE {bad})")
        x = q.add(self.first(bad, c))
        x_any = q.add(self.first(f"e.{_q(c)} IS NOT NULL", c))
        whys = "; ".join(dict.fromkeys(nd.why for nd in needs if nd.kind in ("numeric", "attribute")))
        typ = self.types[c]

        def read(row: _Row) -> None:
            if castable and not row[n]:
                return  # text that reads as numbers: the compiler's CAST works
            detail = f"; {_n(row[n])} values are not numbers" if row[n] else ""
            self.error(c, f"has type {typ}, {whys} needs numbers{detail}", row[x] or row[x_any])

        return read

    def _vocabulary(
        self, q: _Query, c: str, vocab: tuple[str | int | float, ...], needs: list[_Need]
    ) -> Callable[[_Row], None]:
        """Values outside an Attribute's vocabulary (compared as the compiler does: text as
        text, numbers as numbers): a warning, they get the feature's default."""
        col = f"e.{_q(c)}"
        if isinstance(vocab[0], str):
            items, value = ", ".join(_lit(str(v)) for v in vocab), f"CAST({col} AS VARCHAR)"
        else:
            items, value = ", ".join(repr(float(v)) for v in vocab), f"TRY_CAST({col} AS DOUBLE)"
        bad = f"{col} IS NOT NULL AND NOT coalesce(list_contains([{items}], {value}), false)"
        n, x = q.add(f"count(*) FILTER (WHERE {bad})"), q.add(self.first(bad, c))
        whys = "; ".join(
            dict.fromkeys(nd.why for nd in needs if nd.kind == "vocab" and nd.vocabulary == vocab)
        )

        def read(row: _Row) -> None:
            if not row[n]:
                return
            top = self.con.execute(
                f"SELECT CAST({col} AS VARCHAR) AS v, count(*) AS k FROM {self.scan} e WHERE {bad} "
                "GROUP BY v ORDER BY k DESC, v LIMIT 5"
            ).fetchall()
            listed = ", ".join(f"{v!r} ({_n(k)})" for v, k in top)
            shown = ", ".join(map(repr, vocab[:5])) + (
                f", ... ({len(vocab)} values)" if len(vocab) > 5 else ""
            )
            self.warn(
                c,
                f"{_n(row[n])} values outside the vocabulary of {whys} (they get its default): {listed}; "
                f"vocabulary: {shown}",
                row[x],
            )

        return read

    def _time(
        self, q: _Query, c: str, unit: str, tz: str, mode: Literal["events", "attribute", "time_at"]
    ) -> Callable[[_Row], None]:
        """``mode``: "events", the source's event time (no NULL, none in the future, its range
        in the stats); "attribute", a TimeSinceAttribute column (later than now + 1 day: a
        warning); "time_at", an aggregation's ``time=`` column (NULL: never happened; later
        than now + 5 minutes: a warning, not known yet at now)."""
        col, typ = f"e.{_q(c)}", self.types[c]
        events = mode == "events"
        what = {"events": "time", "attribute": "time attribute", "time_at": "time= value"}[mode]
        declare = (
            f"declare time=Time({c!r}, 'timestamp')" if mode == "time_at" else "declare unit='timestamp'"
        )
        if unit == "timestamp":
            if _numeric(typ):
                x = q.add(self.first(f"{col} IS NOT NULL", c))

                def read_num(row: _Row) -> None:
                    guess = _guess_unit(self.median(f"CAST({col} AS DOUBLE)", c), self.now_ms)
                    hint = f" (looks like {_UNIT_NAME[guess]}: declare unit={guess!r})" if guess else ""
                    self.error(c, f"{what} has type {typ} but its unit is declared 'timestamp'{hint}", row[x])

                return read_num
            if typ == "VARCHAR":
                bad = f"{col} IS NOT NULL AND TRY_CAST({col} AS TIMESTAMPTZ) IS NULL"
                nbad, xbad = q.add(f"count(*) FILTER (WHERE {bad})"), q.add(self.first(bad, c))
                if tz == "UTC":
                    ms = f"epoch_ms(TRY_CAST({col} AS TIMESTAMPTZ))"
                else:  # text with its own offset or Z keeps it (as the compiler reads it)
                    ms = (
                        f"epoch_ms(CASE WHEN regexp_matches(trim({col}), {_lit(TEXT_OFFSET)}) "
                        f"THEN TRY_CAST({col} AS TIMESTAMPTZ) "
                        f"ELSE timezone({_lit(tz)}, TRY_CAST({col} AS TIMESTAMP)) END)"
                    )
            elif _timestamp(typ):
                nbad = xbad = -1
                if tz == "UTC" or typ == "TIMESTAMP WITH TIME ZONE":
                    ms = f"epoch_ms(CAST({col} AS TIMESTAMPTZ))"
                else:
                    ms = f"epoch_ms(timezone({_lit(tz)}, CAST({col} AS TIMESTAMP)))"
            else:
                x = q.add(self.first(f"{col} IS NOT NULL", c))
                return lambda row: self.error(
                    c,
                    f"{what} has type {typ}; unit 'timestamp' needs a TIMESTAMP, DATE or timestamp text",
                    row[x],
                )
            raw = ms
        else:
            if _timestamp(typ):
                x = q.add(self.first(f"{col} IS NOT NULL", c))
                return lambda row: self.error(
                    c,
                    f"{what} has type {typ} but its unit is declared {unit!r}: {declare}",
                    row[x],
                )
            if not _numeric(typ):
                bad = f"{col} IS NOT NULL AND TRY_CAST({col} AS DOUBLE) IS NULL"
                x = q.add(self.first(bad, c))
                x_any = q.add(self.first(f"{col} IS NOT NULL", c))
                return lambda row: self.error(
                    c, f"{what} has type {typ}; unit {unit!r} needs epoch numbers", row[x] or row[x_any]
                )
            nbad = xbad = -1
            raw = f"CAST({col} AS DOUBLE)"
            ms = f"({raw} * {_UNIT_MS[unit]!r})"
        hi = self.now_ms + MAX_AHEAD_MS
        future = self.now_ms + FUTURE_TOLERANCE_MS
        out = f"({ms} < {MIN_TIME_MS} OR {ms} > {hi})"
        i_null = q.add(f"count(*) FILTER (WHERE {col} IS NULL)") if events else -1
        x_null = q.add(self.first(f"{col} IS NULL", c)) if events else -1
        i_min, i_max, i_count = q.add(f"min({ms})"), q.add(f"max({ms})"), q.add(f"count({col})")
        i_out, x_out = q.add(f"count(*) FILTER (WHERE {out})"), q.add(self.first(out, c))
        i_old = q.add(f"count(*) FILTER (WHERE {ms} < {MIN_TIME_MS})")
        x_old = q.add(self.first(f"{ms} < {MIN_TIME_MS}", c))
        later = mode != "attribute"
        i_fut = q.add(f"count(*) FILTER (WHERE {ms} > {future})") if later else -1
        x_fut = q.add(self.first(f"{ms} > {future}", c, order=f"{ms} DESC, e.{_ROW}")) if later else -1

        def read(row: _Row) -> None:
            n = row[0]
            if nbad >= 0 and row[nbad]:
                self.error(c, f"{_n(row[nbad])} values are not timestamps", row[xbad])
            if events and row[i_null]:
                self.error(c, f"{_n(row[i_null])} NULL event times (of {_n(n)} rows)", row[x_null])
            if events and row[i_min] is not None:
                self.stats.time_min_ms, self.stats.time_max_ms = int(row[i_min]), int(row[i_max])
            if row[i_out]:
                # a wrong unit puts (nearly) every value out of range: the median, only then
                med = self.median(raw, c) if 2 * row[i_out] >= row[i_count] else None
                guess = _guess_unit(med, self.now_ms) if unit != "timestamp" else None
                if guess and guess != unit:
                    self.error(
                        c,
                        f"{what}s look like {_UNIT_NAME[guess]}, declared {unit}: "
                        f"{_n(row[i_out])} of {_n(n)} values fall outside 1990-01-01 .. "
                        f"{_iso(hi, date=True)} (median {med:.0f} read as {_iso(med * _UNIT_MS[unit])})",
                        row[x_out],
                    )
                    return
                if row[i_old]:
                    self.error(
                        c, f"{_n(row[i_old])} {what}s before 1990-01-01 (declared unit {unit})", row[x_old]
                    )
                if mode == "attribute" and row[i_out] > row[i_old]:
                    self.warn(c, f"{_n(row[i_out] - row[i_old])} {what}s after {_iso(hi)}", row[x_out])
            if events and row[i_fut]:
                self.error(
                    c,
                    f"{_n(row[i_fut])} {'row' if row[i_fut] == 1 else 'rows'} in the future "
                    f"(after now + 5 min = {_iso(future)}; the latest "
                    f"{_iso(row[i_max])})",
                    row[x_fut],
                )
            elif mode == "time_at" and row[i_fut]:
                self.warn(
                    c,
                    f"{_n(row[i_fut])} {what}s in the future (after now + 5 min = {_iso(future)}; the latest "
                    f"{_iso(row[i_max])}): not known yet at now, they count only from then on",
                    row[x_fut],
                )

        return read

    def _event_types(self, q: _Query, c: str) -> Callable[[_Row], None]:
        src = self.src
        assert isinstance(src, Events)
        et = f"CAST(e.{_q(c)} AS VARCHAR)"
        vocab = tuple(str(v) for v in src.event_types)
        i_null = q.add(f"count(*) FILTER (WHERE e.{_q(c)} IS NULL)")
        x_null = q.add(self.first(f"e.{_q(c)} IS NULL", c))
        names = list(dict.fromkeys(w for w, _ in self.plan.wheres))
        i_where = {w: q.add(f"count(*) FILTER (WHERE {et} = {_lit(w)})") for w in names}
        unknown, i_unk, x_unk = "", -1, -1
        if vocab:
            unknown = f"e.{_q(c)} IS NOT NULL AND {et} NOT IN ({', '.join(_lit(v) for v in vocab)})"
            i_unk, x_unk = q.add(f"count(*) FILTER (WHERE {unknown})"), q.add(self.first(unknown, c))

        def read(row: _Row) -> None:
            if row[i_null]:
                self.warn(c, f"{_n(row[i_null])} NULL event types (they match no where=)", row[x_null])
            if vocab and row[i_unk]:
                top = self.con.execute(
                    f"SELECT {et} AS v, count(*) AS n FROM {self.narrow(c)} e WHERE {unknown} "
                    "GROUP BY v ORDER BY n DESC, v LIMIT 5"
                ).fetchall()
                listed = ", ".join(f"{v!r} ({_n(k)})" for v, k in top)
                self.error(
                    c,
                    f"{_n(row[i_unk])} events of unknown types: {listed}; "
                    f"declared event_types: {', '.join(vocab)}",
                    row[x_unk],
                )
            for w, feat in dict.fromkeys(self.plan.wheres):
                if vocab and w not in vocab:
                    self.error(c, f"{feat}: where={w!r} is not a declared event type ({', '.join(vocab)})")
                elif not vocab and not row[i_where[w]]:
                    self.warn(c, f"{feat}: where={w!r} matches no event")

        if not src.event_type:
            return lambda row: None
        return read

    def _duplicates(self, q: _Query, c: str) -> Callable[[_Row], None]:
        i = q.add(f"count(e.{_q(c)}) - count(DISTINCT e.{_q(c)})", distinct=True)

        def read(row: _Row) -> None:
            if not row[i]:
                return
            k = f"e.{_q(c)}"
            dup = self.con.execute(
                f"SELECT {k} AS k, count(*) AS n, count(*) OVER () AS ids FROM {self.scan} e "
                f"WHERE {k} IS NOT NULL GROUP BY {k} HAVING count(*) > 1 "
                f"ORDER BY n DESC, min(e.{_ROW}) LIMIT 1"
            ).fetchone()
            assert dup is not None
            ex = self.con.execute(
                f"SELECT {self.example_struct(c)} FROM {self.scan} e WHERE {k} = ? "
                f"ORDER BY e.{_FILE}, e.{_ROW} LIMIT 2",
                [dup[0]],
            ).fetchall()
            rows = [r[0] for r in ex]
            also = ""
            if len(rows) > 1:  # row numbers count per file: name the file when it is another one
                other = _display(rows[1][_FILE], self.base_dir)
                where = "" if rows[1][_FILE] == rows[0][_FILE] else f" of {other}"
                also = f" (also row {rows[1][_ROW]}{where})"
            self.error(
                c,
                f"{_n(row[i])} duplicate ids ({_n(dup[2])} ids appear more than once): {dup[0]!r} "
                f"appears {_n(dup[1])} times{also}",
                rows[0],
            )

        return read

    def _lookups(self) -> None:
        src = self.src
        assert isinstance(src, Events)
        joins: list[str] = []
        exprs: list[str] = []
        examples: list[_Example] = []
        which = []
        for i, lk in enumerate(src.lookups):
            got = [(sc, ty) for t, sc, ty in self.scans if t is lk.table or t == lk.table]
            if not got or lk.on not in self.types or lk.table.key not in got[0][1]:
                continue
            tscan = got[0][0]
            joins.append(
                f"LEFT JOIN (SELECT DISTINCT CAST({_q(lk.table.key)} AS VARCHAR) AS k FROM {tscan}) l{i} "
                f"ON l{i}.k = CAST(e.{_q(lk.on)} AS VARCHAR)"
            )
            exprs.append(f"count(*) FILTER (WHERE l{i}.k IS NULL)")
            examples.append(self.first(f"l{i}.k IS NULL", lk.on, narrow=False))
            which.append(lk)
        if not joins:
            return
        q = _Query()
        for x in (*exprs, *examples):
            q.add(x)
        try:
            row = q.run(self.con, f"{self.narrow(*(lk.on for lk in which))} e {' '.join(joins)}")
        except duckdb.Error as e:
            self.error(None, f"lookups cannot be joined: {_short(e)}")
            return
        n = self.stats.rows or 1
        for j, lk in enumerate(which):
            miss = row[j]
            if miss:
                self.warn(
                    lk.on,
                    f"{_n(miss)} events ({miss / n:.1%}) have no {lk.on} in table {lk.table.name!r} "
                    f"({lk.table.path}): their {', '.join(lk.columns)} are NULL",
                    row[len(which) + j],
                )


def _guess_unit(median: float | None, now_ms: int) -> str | None:
    """The unit that puts ``median`` between 1990-01-01 and now + 1 day, if one does."""
    if median is None:
        return None
    for unit, f in _UNIT_MS.items():
        if MIN_TIME_MS <= median * f <= now_ms + MAX_AHEAD_MS:
            return unit
    return None


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0]


def _cause(e: Exception) -> str:
    """The DuckDB error behind a compiler SourceError (whose message holds the whole SQL)."""
    cause = e.__cause__ if isinstance(e.__cause__, duckdb.Error) else e
    return _short(cause)


# --- entry point -----------------------------------------------------------------------------


def validate_sources(
    groups: Sequence[FeatureGroup],
    base_dir: str | Path,
    now_ms: int | None = None,
    *,
    tables: Sequence[Table] = (),
    events: Sequence[Events] = (),
) -> ValidationReport:
    """Check every source ``groups`` read (plus ``tables`` / ``events``) against its
    declaration; see the module docstring. ``now_ms``: the present for the future / unit
    checks (default: the wall clock). Never raises for bad data: the report holds every
    problem; call ``.raise_for_errors()`` to stop a run."""
    t0 = _time.perf_counter()
    now = int(_time.time() * 1000) if now_ms is None else int(now_ms)
    plans = _Plans()
    extra: Iterable[Table | Events] = [*tables, *events]
    for s in extra:
        plans.of(s)
    for g in groups:
        plans.add_group(g, base_dir)
    report = ValidationReport(problems=list(plans.problems), now_ms=now)
    con = connect()
    try:
        tables = _Tables()
        # tables first: the events' lookups join the checked tables
        ordered = sorted(plans.plans, key=lambda p: isinstance(p.source, Events))
        for plan in ordered:
            report.sources.append(_Checker(con, plan, base_dir, now, report, tables).run())
    finally:
        con.close()
    report.seconds = _time.perf_counter() - t0
    return report

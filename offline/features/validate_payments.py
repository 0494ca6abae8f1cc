"""Check a project's payments table against its fraud contract (``Payments``), before anything
is loaded: what the generic source validator (offline/features/validate.py) does not check.

``validate_payments(fraud, base_dir)`` reads the payments source as the loader
(offline/features/payments.py) does: the declared ``Payments.transactions`` relation
(``compiler.events_relation``: its own lookups and derived columns; not the standard
derived columns of ``fraud.source``, which cast the amount and the label and would stop the
scan at the first bad value this module is meant to count). One DuckDB query of counts, one
of a DISTINCT count over the transaction ids; an example row (and a top-5 listing) is
fetched only for a problem found, so it stays fast on millions of rows. Nothing is written.

What is checked (errors unless said otherwise):

  transaction id  NULL ids; duplicate ids (the most repeated one, with two of its rows)
  amount          NULL values; values not castable to DOUBLE; negative values; NaN / infinite
  label           values not castable to BOOLEAN (NULL is "not fraud": fine); no fraud label
                  at all ("nothing to learn from"); fewer than ``MIN_FRAUD_LABELS`` (a warning)
  currency        (when declared) codes not in ``currencies.CURRENCIES`` after upper(trim()),
                  NULL included (up to 5 listed with counts)
  label_time      (when declared; rows with label true only) NULL (a warning: the loader never
                  counts the label as arrived, so training reads the payment as not fraud);
                  values that do not read as times of the declared unit; times earlier than
                  the payment's (a warning)
  channel         (when declared; a warning) values that are neither the integers 0..4 nor
                  decision.v1.Channel names (WEB, APP, POS, PHONE, UNSPECIFIED, optionally
                  CHANNEL_-prefixed, any case); up to 5 listed with counts
  columns         every declared column exists (an error per missing one; its checks skipped)

Every finding is an ``offline.features.validate.Problem``: ``file`` the file of the example
row (relative to ``base_dir`` when inside it; the source's path when there is no example),
``column`` the contract's column, ``example`` one offending row's values and ``row`` its
1-based data row number within that file (a CSV header line not counted), ``source`` the
payments source's name::

    payments.csv: column 'amount': 1 negative amounts, e.g. row 3 {'tx_id': 't3', 'amount': -5.0}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import duckdb

from decision_service.features.currencies import CURRENCIES
from decision_service.features.declarative import Time
from decision_service.features.payments import CHANNELS, FraudFeatures
from offline.features.compiler import (
    SourceError,
    _lit,
    _q,
    connect,
    events_relation,
    resolve,
    scan_sql,
    time_sql,
)
from offline.features.validate import Problem, _cause, _display, _files, _n, _short

__all__ = ["MIN_FRAUD_LABELS", "validate_payments"]

MIN_FRAUD_LABELS = 20
"""Fewer fraud labels than this: a warning (too few to learn from)."""

_ROW, _FILE = "__row", "__file"  # helper columns of the example rows (as in validate.py)
_UNIT_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3}


def validate_payments(fraud: FraudFeatures, base_dir: str | Path) -> list[Problem]:
    """The contract-specific problems of ``fraud.payments``' table under ``base_dir`` (see the
    module docstring); [] when it is clean. Never raises for bad data: an unreadable source
    is one error."""
    con = connect()
    try:
        return _Check(fraud, base_dir, con).run()
    finally:
        con.close()


class _Check:
    def __init__(self, fraud: FraudFeatures, base_dir: str | Path, con: duckdb.DuckDBPyConnection) -> None:
        self.p = fraud.payments
        self.ev = self.p.transactions
        self.base_dir = base_dir
        self.con = con
        self.problems: list[Problem] = []
        self.rel = self.numbered = ""
        self.types: dict[str, str] = {}
        self.file = self.ev.path
        self.exprs: list[str] = []  # the aggregates of the one query of counts

    # --- problems ------------------------------------------------------------------------------
    def problem(
        self,
        severity: Literal["error", "warning"],
        column: str | None,
        message: str,
        cond: str | None = None,
        *columns: str,
    ) -> None:
        """A problem; with ``cond``, its example is the first row (by file, row) satisfying it."""
        file, example, row = self.file, None, None
        if cond is not None:
            example = self.example(cond, *(c for c in (column, *columns) if c))
            if example is not None:
                f, row = example.pop(_FILE, None), example.pop(_ROW, None)
                if f:
                    file = _display(str(f), self.base_dir)
                    row = self.row_in_file(str(f), row)
        self.problems.append(Problem(severity, file, column, message, example, row, self.ev.name))

    def error(self, column: str | None, message: str, cond: str | None = None, *columns: str) -> None:
        self.problem("error", column, message, cond, *columns)

    def warn(self, column: str | None, message: str, cond: str | None = None, *columns: str) -> None:
        self.problem("warning", column, message, cond, *columns)

    def struct(self, *columns: str) -> str:
        cols = [c for c in dict.fromkeys((self.p.transaction_id, *columns)) if c in self.types]
        items = [f"{_lit(_FILE)}: e.{_FILE}", f"{_lit(_ROW)}: e.{_ROW}"]
        return "{" + ", ".join(items + [f"{_lit(c)}: e.{_q(c)}" for c in cols]) + "}"

    def example(self, cond: str, *columns: str) -> dict[str, Any] | None:
        got = self.con.execute(
            f"SELECT {self.struct(*columns)} FROM {self.numbered} e WHERE {cond} "
            f"ORDER BY e.{_FILE}, e.{_ROW} LIMIT 1"
        ).fetchone()
        return dict(got[0]) if got else None

    def row_in_file(self, file: str, row: Any) -> int | None:
        """A CSV row number counts over every file (``row_number() OVER ()``): made per file."""
        if row is None:
            return None
        if self.ev.format == "csv":
            first = self.con.execute(
                f"SELECT min({_ROW}) FROM {self.numbered} WHERE {_FILE} = ?", [file]
            ).fetchone()
            if first and first[0] is not None:
                return int(row) - int(first[0]) + 1
        return int(row)

    def top(self, value: str, cond: str) -> str:
        """The 5 most frequent values of ``value`` among the rows satisfying ``cond``, counted."""
        got = self.con.execute(
            f"SELECT {value} AS v, count(*) AS n FROM {self.rel} e WHERE {cond} "
            "GROUP BY v ORDER BY n DESC, v NULLS FIRST LIMIT 5"
        ).fetchall()
        return ", ".join(f"{v!r} ({_n(n)})" for v, n in got)

    def add(self, expr: str) -> int:
        self.exprs.append(expr)
        return len(self.exprs) - 1

    # --- reading ---------------------------------------------------------------------------------
    def read(self) -> bool:
        """``self.rel``: the payments relation; ``self.numbered``: the same with each row's file
        and row number (the compiler's scan of the files, those two columns added)."""
        ev = self.ev
        _, files = _files(ev, self.base_dir)
        self.file = _display(files[0] if len(files) == 1 else resolve(ev.path, self.base_dir), self.base_dir)
        try:
            raw = scan_sql(ev, self.base_dir, derived=False)
            self.rel, _ = events_relation(ev, self.base_dir, self.con)
            described = self.con.execute(f"DESCRIBE SELECT * FROM {self.rel}").fetchall()
        except (SourceError, duckdb.Error) as e:
            self.error(None, f"payments source {ev.name!r} cannot be read: {_cause(e)}")
            return False
        self.types = {r[0]: r[1] for r in described}
        row = "file_row_number + 1" if ev.format == "parquet" else "row_number() OVER ()"
        anchor = f"(SELECT * FROM {raw})"
        numbered = f"(SELECT *, filename AS {_FILE}, {row} AS {_ROW} FROM {raw})"
        if anchor in self.rel:
            self.numbered = self.rel.replace(anchor, numbered, 1)
        else:  # not the compiler's usual shape: examples without file and row
            self.numbered = f"(SELECT *, NULL AS {_FILE}, NULL AS {_ROW} FROM {self.rel})"
        return True

    def column(self, name: str | None, what: str) -> str | None:
        """``e."name"`` when the relation has the declared column; else an error, None."""
        if name is None:
            return None
        if name not in self.types:
            have = ", ".join(c for c in self.types)
            self.error(name, f"no such column ({what}, declared in Payments); the source has {have}")
            return None
        return f"e.{_q(name)}"

    def ms(self, c: str, t: Time) -> str:
        """Epoch ms of time column ``c`` (``e."c"``), NULL where it does not read as one."""
        if t.unit in _UNIT_MS:
            return f"(TRY_CAST({c} AS DOUBLE) * {_UNIT_MS[t.unit]!r})"
        return time_sql(t.column, t).replace("CAST(", "TRY_CAST(")

    # --- the checks ------------------------------------------------------------------------------
    def run(self) -> list[Problem]:
        if not self.read():
            return self.problems
        p, ev = self.p, self.ev
        tx = self.column(p.transaction_id, "the transaction id")
        amount = self.column(p.amount, "the amount")
        label = self.column(p.label, "the fraud label")
        currency = self.column(p.currency, "the currency")
        channel = self.column(p.channel, "the channel")
        label_time = self.column(p.label_time.column, "the label's arrival time") if p.label_time else None
        pay_time = f"e.{_q(ev.time.column)}" if ev.time.column in self.types else None

        conds: dict[str, str] = {}  # check -> the condition of its offending rows
        if tx:
            conds["tx_null"] = f"{tx} IS NULL"
        if amount:
            d = f"TRY_CAST({amount} AS DOUBLE)"
            conds["amount_null"] = f"{amount} IS NULL"
            conds["amount_text"] = f"{amount} IS NOT NULL AND {d} IS NULL"
            conds["amount_negative"] = f"{d} < 0 AND isfinite({d})"
            conds["amount_infinite"] = f"NOT isfinite({d})"
        fraud = ""
        if label:
            fraud = f"coalesce(TRY_CAST({label} AS BOOLEAN), false)"
            conds["label_bad"] = f"{label} IS NOT NULL AND TRY_CAST({label} AS BOOLEAN) IS NULL"
            conds["fraud"] = fraud
        known = ", ".join(_lit(c) for c in CURRENCIES)
        if currency:
            conds["currency"] = (
                f"{currency} IS NULL OR upper(trim(CAST({currency} AS VARCHAR))) NOT IN ({known})"
            )
        if label_time and fraud and p.label_time is not None:
            at = self.ms(label_time, p.label_time)
            conds["label_time_null"] = f"{fraud} AND {label_time} IS NULL"
            conds["label_time_bad"] = f"{fraud} AND {label_time} IS NOT NULL AND {at} IS NULL"
            if pay_time:
                conds["label_time_early"] = f"{fraud} AND {at} < {self.ms(pay_time, ev.time)}"
        if channel:
            s = f"trim(CAST({channel} AS VARCHAR))"
            names = ", ".join(_lit(pre + k) for k in CHANNELS for pre in ("", "CHANNEL_"))
            conds["channel"] = (
                f"{channel} IS NOT NULL AND NOT coalesce(TRY_CAST({s} AS INTEGER) BETWEEN 0 AND 4, false) "
                f"AND upper({s}) NOT IN ({names})"
            )
        i_rows = self.add("count(*)")
        idx = {k: self.add(f"count(*) FILTER (WHERE {c})") for k, c in conds.items()}
        try:
            got = self.con.execute(f"SELECT {', '.join(self.exprs)} FROM {self.rel} e").fetchone()
            dups = 0
            if tx:  # apart: mixed with the others a DISTINCT count makes DuckDB's plan slow
                one = self.con.execute(
                    f"SELECT count({tx}) - count(DISTINCT {tx}) FROM {self.rel} e"
                ).fetchone()
                dups = int(one[0]) if one else 0
        except duckdb.Error as e:
            self.error(None, f"payments source {ev.name!r} cannot be checked: {_short(e)}")
            return self.problems
        assert got is not None
        rows = int(got[i_rows])
        n = {k: int(got[i]) for k, i in idx.items()}

        if n.get("tx_null"):
            self.error(
                p.transaction_id,
                f"{_n(n['tx_null'])} NULL transaction ids (of {_n(rows)} rows)",
                conds["tx_null"],
            )
        if tx and dups:
            self.duplicates(tx, dups)
        if amount:
            d = p.amount
            if n["amount_null"]:
                self.error(d, f"{_n(n['amount_null'])} NULL amounts", conds["amount_null"])
            if n["amount_text"]:
                listed = self.top(f"CAST({amount} AS VARCHAR)", conds["amount_text"])
                self.error(
                    d, f"{_n(n['amount_text'])} amounts are not numbers: {listed}", conds["amount_text"]
                )
            if n["amount_negative"]:
                self.error(d, f"{_n(n['amount_negative'])} negative amounts", conds["amount_negative"])
            if n["amount_infinite"]:
                what = "amounts are not finite (NaN or infinite)"
                self.error(d, f"{_n(n['amount_infinite'])} {what}", conds["amount_infinite"])
        if label:
            lb = p.label
            if n["label_bad"]:
                listed = self.top(f"CAST({label} AS VARCHAR)", conds["label_bad"])
                self.error(
                    lb,
                    f"{_n(n['label_bad'])} labels are not booleans (true / false, 1 / 0, yes / no; "
                    f"NULL = not fraud): {listed}",
                    conds["label_bad"],
                )
            if not n["fraud"]:
                self.error(
                    lb, f"no fraud labels: 0 of {_n(rows)} rows have label true; nothing to learn from"
                )
            elif n["fraud"] < MIN_FRAUD_LABELS:
                self.warn(
                    lb,
                    f"only {_n(n['fraud'])} fraud labels (label true) of {_n(rows)} rows: fewer than "
                    f"{MIN_FRAUD_LABELS}, too few to learn from",
                )
        if n.get("currency"):
            listed = self.top(f"CAST({currency} AS VARCHAR)", conds["currency"])
            self.error(
                p.currency,
                f"{_n(n['currency'])} payments with an unknown ISO 4217 currency code: {listed} "
                "(known: decision_service/features/currencies.py)",
                conds["currency"],
            )
        if label_time and p.label_time is not None:
            lt, unit = p.label_time.column, p.label_time.unit
            if n.get("label_time_null"):
                self.warn(
                    lt,
                    f"{_n(n['label_time_null'])} fraud labels (label true) without a label time: the "
                    "loader never counts them as arrived (no chargeback), so training reads these "
                    "payments as not fraud",
                    conds["label_time_null"],
                    p.label,
                )
            if n.get("label_time_bad"):
                self.error(
                    lt,
                    f"{_n(n['label_time_bad'])} label times of fraud labels do not read as times "
                    f"(declared unit {unit!r})",
                    conds["label_time_bad"],
                    p.label,
                )
            if n.get("label_time_early"):
                self.warn(
                    lt,
                    f"{_n(n['label_time_early'])} fraud labels arrive before their payment (label time < "
                    f"{ev.time.column}): known before the payment happened; check the column and its unit",
                    conds["label_time_early"],
                    ev.time.column,
                    p.label,
                )
        if n.get("channel"):
            listed = self.top(f"CAST({channel} AS VARCHAR)", conds["channel"])
            self.warn(
                p.channel,
                f"{_n(n['channel'])} channel values are neither 0..4 nor decision.v1.Channel names "
                f"({', '.join(CHANNELS)}, optionally CHANNEL_-prefixed): {listed}; text reads as 0 "
                "(UNSPECIFIED), other numbers as themselves",
                conds["channel"],
            )
        return self.problems

    def duplicates(self, tx: str, dups: int) -> None:
        """The most repeated id (the first seen of those), with its first two rows."""
        top = self.con.execute(
            f"SELECT {tx} AS k, count(*) AS n, count(*) OVER () AS ids FROM {self.numbered} e "
            f"WHERE {tx} IS NOT NULL GROUP BY {tx} HAVING count(*) > 1 "
            f"ORDER BY n DESC, min(row(e.{_FILE}, e.{_ROW})) LIMIT 1"
        ).fetchone()
        if top is None:
            return
        got = self.con.execute(
            f"SELECT {self.struct()} FROM {self.numbered} e WHERE {tx} = ? "
            f"ORDER BY e.{_FILE}, e.{_ROW} LIMIT 2",
            [top[0]],
        ).fetchall()
        rows = [dict(r[0]) for r in got]
        where = [(r.pop(_FILE, None), r.pop(_ROW, None)) for r in rows]
        also = ""
        if len(where) > 1:
            (f0, _), (f1, r1) = where
            other = "" if f1 == f0 else f" of {_display(str(f1), self.base_dir)}"
            also = f" (also row {self.row_in_file(str(f1), r1) if f1 else r1}{other})"
        message = (
            f"{_n(dups)} duplicate transaction ids ({_n(top[2])} ids appear more than once): "
            f"{top[0]!r} appears {_n(top[1])} times{also}"
        )
        f0, r0 = where[0] if where else (None, None)
        file = _display(str(f0), self.base_dir) if f0 else self.file
        row = self.row_in_file(str(f0), r0) if f0 else r0
        example = rows[0] if rows else None
        self.problems.append(
            Problem("error", file, self.p.transaction_id, message, example, row, self.ev.name)
        )

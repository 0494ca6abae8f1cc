"""Check a project's payments table against its fraud contract (``Payments``), before anything
is loaded: what the generic source validator (offline/features/validate.py) does not check.

``validate_payments(fraud, base_dir)`` reads the payments source as the loader
(offline/features/payments.py) does: the declared ``Payments.transactions`` relation
(``compiler.events_relation``: its own lookups and derived columns; not the standard
derived columns of ``fraud.source``, which cast the amount and the label and would stop the
scan at the first bad value this module is meant to count); the declared ``users``,
``merchants`` and ``devices`` tables with ``compiler.scan_sql``. One DuckDB query of counts
over the payments, one of a DISTINCT count over the transaction ids, one over the users
table's ids against the payments' customers; an example row (and a top-5 listing) is fetched
only for a problem found, so it stays fast on millions of rows. Nothing is written.

What is checked (errors unless said otherwise):

  transaction id  NULL ids; duplicate ids (the most repeated one, with two of its rows)
  amount          NULL values; values not castable to DOUBLE; negative values; NaN / infinite
  label           values not castable to BOOLEAN (NULL is "not fraud": fine); numbers other
                  than 0 and 1 (-1, 2, a 0.3 score: DuckDB reads any non-zero number as true,
                  fraud); no fraud label at all ("nothing to learn from"); fewer than
                  ``MIN_FRAUD_LABELS`` (a warning). Booleans and the text DuckDB reads as one
                  ('true' / 'false', 't' / 'f', 'yes' / 'no', '1' / '0') are fine
  currency        (when declared) codes not in ``currencies.CURRENCIES`` after upper(trim()),
                  NULL included (up to 5 listed with counts)
  label_time      (when declared; rows with label true only) NULL (a warning: the loader never
                  counts the label as arrived, so training reads the payment as not fraud);
                  values that do not read as times of the declared unit; times earlier than
                  the payment's (the label leaks into the features: it cannot be known before
                  the payment)
  channel         (when declared; a warning) values that are neither the integers 0..4 nor
                  decision.v1.Channel names (WEB, APP, POS, PHONE, UNSPECIFIED, optionally
                  CHANNEL_-prefixed, any case): the loader reads them as 0 (UNSPECIFIED); up to
                  5 listed with counts
  country         (when declared; a warning) values that are not two ASCII letters after
                  upper(trim()) ('DEU', 'Germany'; NULL and empty are fine): the service takes
                  ISO 3166-1 alpha-2 codes; the same for the users table's ``home_country``
  columns         every declared column exists: the payments' id, amount, label, label time,
                  currency, country, channel, mcc, ip, instrument; the users table's key,
                  ``signup`` and ``home_country``; the merchants' and devices' keys (an error
                  per missing one, naming the Payments field; its checks skipped). An
                  unreadable table is one error
  users' ids      (a warning) fewer than half of the payments' distinct customers
                  (``keys["user_id"]``) are keys of the users table (both read as text), with
                  an unmatched customer and a users key as examples ("42" vs "u00042")

Every finding is an ``offline.features.validate.Problem``: ``file`` the file of the example
row (relative to ``base_dir`` when inside it; the source's path when there is no example),
``column`` the contract's column, ``example`` one offending row's values and ``row`` its
1-based data row number within that file (a CSV header line not counted), ``source`` the
name of the source read (the payments, or the users / merchants / devices table)::

    payments.csv: column 'amount': 1 negative amounts, e.g. row 3 {'tx_id': 't3', 'amount': -5.0}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb

from decision_service.domain.identifiers import ISO_3166_ALPHA2
from decision_service.features.currencies import CURRENCIES
from decision_service.features.declarative import Events, Table, Time
from decision_service.features.payments import CHANNELS, FraudFeatures
from offline.features.compiler import (
    SourceError,
    _lit,
    _q,
    connect,
    derive,
    events_relation,
    resolve,
    scan_sql,
    time_sql,
)
from offline.features.validate import Problem, _cause, _display, _files, _n, _short

__all__ = ["MIN_FRAUD_LABELS", "validate_payments"]

MIN_FRAUD_LABELS = 20
"""Fewer fraud labels than this: a warning (too few to learn from)."""

MIN_USERS_FOUND = 0.5
"""A smaller share of the payments' customers among the users table's ids: a warning."""

_ROW, _FILE = "__row", "__file"  # helper columns of the example rows (as in validate.py)
_UNIT_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3}
_NOT_ALPHA2 = (
    "the service takes assigned ISO 3166-1 alpha-2 codes (DE, GB, US; not UK, EU or ZZ); these "
    "never match a request's country"
)


def validate_payments(fraud: FraudFeatures, base_dir: str | Path) -> list[Problem]:
    """The contract-specific problems of ``fraud.payments``' table under ``base_dir`` (see the
    module docstring); [] when it is clean. Never raises for bad data: an unreadable source
    is one error."""
    con = connect()
    try:
        return _Check(fraud, base_dir, con).run()
    finally:
        con.close()


@dataclass
class _Source:
    """One relation read: the payments, or one of their tables."""

    name: str  # the declared source's name (Problem.source)
    decl: Events | Table
    id: str | None  # the column every example starts with
    what: str  # how messages name it: "the source", "table 'users'"
    file: str = ""  # its file (or path) as shown
    rel: str = ""  # the relation, derived columns included
    numbered: str = ""  # the same, each row with its file and row number
    types: dict[str, str] = field(default_factory=dict)


def _numbered(raw: str, fmt: str) -> str:
    """``raw`` (a file scan) with each row's file and row number."""
    row = "file_row_number + 1" if fmt == "parquet" else "row_number() OVER ()"
    return f"(SELECT *, filename AS {_FILE}, {row} AS {_ROW} FROM {raw})"


class _Check:
    def __init__(self, fraud: FraudFeatures, base_dir: str | Path, con: duckdb.DuckDBPyConnection) -> None:
        self.p = fraud.payments
        self.ev = self.p.transactions
        self.base_dir = base_dir
        self.con = con
        self.problems: list[Problem] = []
        self.pay = _Source(self.ev.name, self.ev, self.p.transaction_id, "the source", self.ev.path)
        self.exprs: list[str] = []  # the aggregates of the one query of counts

    # --- problems ------------------------------------------------------------------------------
    def problem(
        self,
        severity: Literal["error", "warning"],
        column: str | None,
        message: str,
        cond: str | None = None,
        *columns: str,
        src: _Source | None = None,
    ) -> None:
        """A problem; with ``cond``, its example is the first row (by file, row) satisfying it."""
        src = src or self.pay
        file, example, row = src.file, None, None
        if cond is not None:
            example = self.example(src, cond, *(c for c in (column, *columns) if c))
            if example is not None:
                f, row = example.pop(_FILE, None), example.pop(_ROW, None)
                if f:
                    file = _display(str(f), self.base_dir)
                    row = self.row_in_file(src, str(f), row)
        self.problems.append(Problem(severity, file, column, message, example, row, src.name))

    def error(
        self,
        column: str | None,
        message: str,
        cond: str | None = None,
        *columns: str,
        src: _Source | None = None,
    ) -> None:
        self.problem("error", column, message, cond, *columns, src=src)

    def warn(
        self,
        column: str | None,
        message: str,
        cond: str | None = None,
        *columns: str,
        src: _Source | None = None,
    ) -> None:
        self.problem("warning", column, message, cond, *columns, src=src)

    def struct(self, src: _Source, *columns: str) -> str:
        cols = [c for c in dict.fromkeys((src.id, *columns)) if c and c in src.types]
        items = [f"{_lit(_FILE)}: e.{_FILE}", f"{_lit(_ROW)}: e.{_ROW}"]
        return "{" + ", ".join(items + [f"{_lit(c)}: e.{_q(c)}" for c in cols]) + "}"

    def example(self, src: _Source, cond: str, *columns: str) -> dict[str, Any] | None:
        got = self.con.execute(
            f"SELECT {self.struct(src, *columns)} FROM {src.numbered} e WHERE {cond} "
            f"ORDER BY e.{_FILE}, e.{_ROW} LIMIT 1"
        ).fetchone()
        return dict(got[0]) if got else None

    def row_in_file(self, src: _Source, file: str, row: Any) -> int | None:
        """A CSV row number counts over every file (``row_number() OVER ()``): made per file."""
        if row is None:
            return None
        if src.decl.format == "csv":
            first = self.con.execute(
                f"SELECT min({_ROW}) FROM {src.numbered} WHERE {_FILE} = ?", [file]
            ).fetchone()
            if first and first[0] is not None:
                return int(row) - int(first[0]) + 1
        return int(row)

    def top(self, value: str, cond: str, src: _Source | None = None) -> str:
        """The 5 most frequent values of ``value`` among the rows satisfying ``cond``, counted."""
        got = self.con.execute(
            f"SELECT {value} AS v, count(*) AS n FROM {(src or self.pay).rel} e WHERE {cond} "
            "GROUP BY v ORDER BY n DESC, v NULLS FIRST LIMIT 5"
        ).fetchall()
        return ", ".join(f"{v!r} ({_n(n)})" for v, n in got)

    def add(self, expr: str) -> int:
        self.exprs.append(expr)
        return len(self.exprs) - 1

    # --- reading ---------------------------------------------------------------------------------
    def shown(self, decl: Events | Table) -> str:
        """The declared file as problems name it: the one file matched, else the path."""
        _, files = _files(decl, self.base_dir)
        return _display(files[0] if len(files) == 1 else resolve(decl.path, self.base_dir), self.base_dir)

    def read(self) -> bool:
        """``self.pay``: the payments relation, and the same with each row's file and row number
        (the compiler's scan of the files, those two columns added)."""
        ev, src = self.ev, self.pay
        src.file = self.shown(ev)
        try:
            raw = scan_sql(ev, self.base_dir, derived=False)
            src.rel, _ = events_relation(ev, self.base_dir, self.con)
            described = self.con.execute(f"DESCRIBE SELECT * FROM {src.rel}").fetchall()
        except (SourceError, duckdb.Error) as e:
            self.error(None, f"payments source {ev.name!r} cannot be read: {_cause(e)}")
            return False
        src.types = {r[0]: r[1] for r in described}
        anchor = f"(SELECT * FROM {raw})"
        if anchor in src.rel:
            src.numbered = src.rel.replace(anchor, _numbered(raw, ev.format), 1)
        else:  # not the compiler's usual shape: examples without file and row
            src.numbered = f"(SELECT *, NULL AS {_FILE}, NULL AS {_ROW} FROM {src.rel})"
        return True

    def read_table(self, table: Table, attr: str) -> _Source | None:
        """A declared table (``Payments.<attr>``), its derived columns included; None (and an
        error) when it cannot be read."""
        src = _Source(table.name, table, table.key, f"table {table.name!r}", self.shown(table))
        try:
            raw = scan_sql(table, self.base_dir, derived=False)
            src.rel = scan_sql(table, self.base_dir)
            described = self.con.execute(f"DESCRIBE SELECT * FROM {src.rel}").fetchall()
        except (SourceError, duckdb.Error) as e:
            what = f"table {table.name!r} (Payments.{attr})"
            self.error(None, f"{what} cannot be read: {_cause(e)}", src=src)
            return None
        src.types = {r[0]: r[1] for r in described}
        src.numbered = _numbered(raw, table.format)
        for name, sql in table.derived.items():
            src.numbered = derive(src.numbered, name, sql)
        return src

    def column(self, name: str | None, attr: str, what: str, src: _Source | None = None) -> str | None:
        """``e."name"`` when the relation has the declared column; else an error, None."""
        src = src or self.pay
        if name is None:
            return None
        if name not in src.types:
            have = ", ".join(c for c in src.types)
            self.error(name, f"no such column (Payments.{attr}: {what}); {src.what} has {have}", src=src)
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
        self.payments()
        self.tables()
        return self.problems

    def payments(self) -> None:
        p, ev = self.p, self.ev
        tx = self.column(p.transaction_id, "transaction_id", "the transaction id")
        amount = self.column(p.amount, "amount", "the amount")
        label = self.column(p.label, "label", "the fraud label")
        label_time = None
        if p.label_time is not None:
            label_time = self.column(p.label_time.column, "label_time", "the label's arrival time")
        currency = self.column(p.currency, "currency", "the currency")
        country = self.column(p.country, "country", "the payment's country")
        channel = self.column(p.channel, "channel", "the channel")
        for attr, what in (("mcc", "the merchant category code"), ("ip", "the IP address"),
                           ("instrument", "the payment instrument")):  # fmt: skip
            self.column(getattr(p, attr), attr, what)
        pay_time = f"e.{_q(ev.time.column)}" if ev.time.column in self.pay.types else None

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
            number = f"coalesce(TRY_CAST({label} AS DOUBLE) NOT IN (0, 1), false)"
            conds["label_number"] = number
            # text that is neither a boolean nor a number (those are label_number's)
            conds["label_bad"] = (
                f"{label} IS NOT NULL AND TRY_CAST({label} AS BOOLEAN) IS NULL AND NOT {number}"
            )
            conds["fraud"] = fraud
        known = ", ".join(_lit(c) for c in CURRENCIES)
        if currency:
            conds["currency"] = (
                f"{currency} IS NULL OR upper(trim(CAST({currency} AS VARCHAR))) NOT IN ({known})"
            )
        if country:
            conds["country"] = _not_alpha2(country)
        # ids a fraud check must be able to name (domain/identifiers.py canonical_party_id)
        parties = {"transaction_id": p.transaction_id, "customer": ev.keys["user_id"],
                   "merchant": ev.keys["merchant_id"], "device": ev.keys.get("device_id"),
                   "instrument": p.instrument}  # fmt: skip
        party_cols: dict[str, str] = {}
        for what, name in parties.items():
            if name and name in self.pay.types:
                c = f"e.{_q(name)}"
                party_cols[what] = name
                conds[f"party_{what}"] = (
                    f"{c} IS NOT NULL AND NOT regexp_full_match(CAST({c} AS VARCHAR), {_PARTY})"
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
            top = max(CHANNELS.values())
            conds["channel"] = (
                f"{channel} IS NOT NULL AND NOT coalesce(TRY_CAST({s} AS INTEGER) BETWEEN 0 AND {top}, "
                f"false) AND upper({s}) NOT IN ({names})"
            )
        i_rows = self.add("count(*)")
        idx = {k: self.add(f"count(*) FILTER (WHERE {c})") for k, c in conds.items()}
        try:
            got = self.con.execute(f"SELECT {', '.join(self.exprs)} FROM {self.pay.rel} e").fetchone()
            dups = 0
            if tx:  # apart: mixed with the others a DISTINCT count makes DuckDB's plan slow
                one = self.con.execute(
                    f"SELECT count({tx}) - count(DISTINCT {tx}) FROM {self.pay.rel} e"
                ).fetchone()
                dups = int(one[0]) if one else 0
        except duckdb.Error as e:
            self.error(None, f"payments source {ev.name!r} cannot be checked: {_short(e)}")
            return
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
            if n["label_number"]:
                listed = self.top(f"CAST({label} AS VARCHAR)", conds["label_number"])
                self.error(
                    lb,
                    f"{_n(n['label_number'])} labels are numbers other than 0 and 1: {listed}; any "
                    "non-zero number reads as true (fraud): a label is 1 (fraud) or 0 (NULL = not fraud)",
                    conds["label_number"],
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
        if n.get("country"):
            listed = self.top(f"CAST({country} AS VARCHAR)", conds["country"])
            self.warn(
                p.country,
                f"{_n(n['country'])} country values are not assigned alpha-2 codes: {listed}; {_NOT_ALPHA2}",
                conds["country"],
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
                self.error(
                    lt,
                    f"{_n(n['label_time_early'])} fraud labels arrive before their payment (label time < "
                    f"{ev.time.column}): a label cannot be known before the payment, and training would "
                    "read it into the payment's own features (a leak); check the column and its unit",
                    conds["label_time_early"],
                    ev.time.column,
                    p.label,
                )
        for what, name in party_cols.items():
            if n.get(f"party_{what}"):
                cond = conds[f"party_{what}"]
                listed = self.top(f"CAST(e.{_q(name)} AS VARCHAR)", cond)
                self.error(
                    name,
                    f"{_n(n[f'party_{what}'])} {what} ids a fraud check can never name: {listed}; the "
                    "service takes ASCII letters, digits and . _ : - only, starting with a letter or "
                    "digit (map them in a derived column, e.g. md5 or regexp_replace)",
                    cond,
                )
        if n.get("channel"):
            listed = self.top(f"CAST({channel} AS VARCHAR)", conds["channel"])
            self.warn(
                p.channel,
                f"{_n(n['channel'])} channel values are neither 0..{max(CHANNELS.values())} nor "
                f"decision.v1.Channel names ({', '.join(CHANNELS)}, optionally CHANNEL_-prefixed): "
                f"{listed}; the loader reads them as 0 (UNSPECIFIED), numbers outside "
                f"0..{max(CHANNELS.values())} and unknown names alike",
                conds["channel"],
            )

    def tables(self) -> None:
        """The declared users, merchants and devices tables: their columns; the users' ids
        against the payments' customers, their home countries."""
        p = self.p
        if p.users is not None:
            users = self.read_table(p.users, "users")
            if users is not None:
                key = self.column(p.users.key, "users.key", "the users table's key", users)
                if p.signup is not None:
                    self.column(p.signup.column, "signup", "the sign-up time", users)
                home = self.column(p.home_country, "home_country", "the home country", users)
                if key:
                    self.users_found(users, key)
                if home:
                    self.home_countries(users, home)
        for attr in ("merchants", "devices"):
            table: Table | None = getattr(p, attr)
            if table is not None:
                src = self.read_table(table, attr)
                if src is not None:
                    self.column(table.key, f"{attr}.key", f"the {attr} table's key", src)

    def users_found(self, users: _Source, key: str) -> None:
        """Few of the payments' customers among the users table's ids: a warning."""
        customer = self.ev.keys["user_id"]
        if customer not in self.pay.types:
            return
        c = f"e.{_q(customer)}"
        try:
            got = self.con.execute(
                f"WITH c AS (SELECT DISTINCT CAST({c} AS VARCHAR) AS k FROM {self.pay.rel} e "
                f"WHERE {c} IS NOT NULL), "
                f"u AS (SELECT DISTINCT CAST({key} AS VARCHAR) AS k FROM {users.rel} e "
                f"WHERE {key} IS NOT NULL) "
                "SELECT count(c.k), count(c.k) FILTER (WHERE u.k IS NOT NULL), "
                "min(c.k) FILTER (WHERE u.k IS NULL), "
                "coalesce(min(u.k) FILTER (WHERE c.k IS NULL), min(u.k)) "
                "FROM c FULL OUTER JOIN u ON c.k = u.k"
            ).fetchone()
        except duckdb.Error as e:
            self.error(users.id, f"{users.what}'s ids cannot be checked: {_short(e)}", src=users)
            return
        assert got is not None
        customers, found, lost, theirs = int(got[0]), int(got[1]), got[2], got[3]
        if not customers or found >= MIN_USERS_FOUND * customers:
            return
        them = (
            f"e.g. customer {lost!r} in the payments vs {theirs!r} in {users.file}"
            if theirs is not None
            else "it is empty"
        )
        self.warn(
            users.id,
            f"only {_n(found)} of the payments' {_n(customers)} customers ({found / customers:.0%}; column "
            f"{customer!r}) are ids of {users.what} (key {users.id!r}): {them}; check that both id columns "
            "are written alike (the loader reads both as text); a customer not found has no sign-up time "
            "nor home country",
            f"CAST({key} AS VARCHAR) = {_lit(theirs)}" if theirs is not None else None,
            src=users,
        )

    def home_countries(self, users: _Source, home: str) -> None:
        cond = _not_alpha2(home)
        try:
            got = self.con.execute(f"SELECT count(*) FILTER (WHERE {cond}) FROM {users.rel} e").fetchone()
        except duckdb.Error as e:
            self.error(self.p.home_country, f"{users.what} cannot be checked: {_short(e)}", src=users)
            return
        bad = int(got[0]) if got else 0
        if bad:
            listed = self.top(f"CAST({home} AS VARCHAR)", cond, users)
            self.warn(
                self.p.home_country,
                f"{_n(bad)} home countries are not assigned alpha-2 codes: {listed}; {_NOT_ALPHA2}",
                cond,
                src=users,
            )

    def duplicates(self, tx: str, dups: int) -> None:
        """The most repeated id (the first seen of those), with its first two rows."""
        src = self.pay
        top = self.con.execute(
            f"SELECT {tx} AS k, count(*) AS n, count(*) OVER () AS ids FROM {src.numbered} e "
            f"WHERE {tx} IS NOT NULL GROUP BY {tx} HAVING count(*) > 1 "
            f"ORDER BY n DESC, min(row(e.{_FILE}, e.{_ROW})) LIMIT 1"
        ).fetchone()
        if top is None:
            return
        got = self.con.execute(
            f"SELECT {self.struct(src)} FROM {src.numbered} e WHERE {tx} = ? "
            f"ORDER BY e.{_FILE}, e.{_ROW} LIMIT 2",
            [top[0]],
        ).fetchall()
        rows = [dict(r[0]) for r in got]
        where = [(r.pop(_FILE, None), r.pop(_ROW, None)) for r in rows]
        also = ""
        if len(where) > 1:
            (f0, _), (f1, r1) = where
            other = "" if f1 == f0 else f" of {_display(str(f1), self.base_dir)}"
            also = f" (also row {self.row_in_file(src, str(f1), r1) if f1 else r1}{other})"
        message = (
            f"{_n(dups)} duplicate transaction ids ({_n(top[2])} ids appear more than once): "
            f"{top[0]!r} appears {_n(top[1])} times{also}"
        )
        f0, r0 = where[0] if where else (None, None)
        file = _display(str(f0), self.base_dir) if f0 else src.file
        row = self.row_in_file(src, str(f0), r0) if f0 else r0
        example = rows[0] if rows else None
        self.problems.append(Problem("error", file, self.p.transaction_id, message, example, row, src.name))


_PARTY = "'[A-Za-z0-9][A-Za-z0-9._:\\-]*'"
"""domain/identifiers.py _PARTY_ID as a DuckDB regex literal."""
_ASSIGNED = ", ".join(f"'{c}'" for c in sorted(ISO_3166_ALPHA2))


def _not_alpha2(c: str) -> str:
    """Rows whose country ``c`` is set and not an assigned ISO 3166-1 alpha-2 code after
    upper(trim()) (the codes the service accepts: 'UK', 'EU', 'ZZ' are not)."""
    s = f"upper(trim(CAST({c} AS VARCHAR)))"
    return f"{c} IS NOT NULL AND {s} <> '' AND {s} NOT IN ({_ASSIGNED})"

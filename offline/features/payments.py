"""Loads a project's declared payments (decision_service/features/payments.py) into the
in-memory ``FraudWorld`` arrays the fraud jobs run on (training rows, velocity, neighbours,
materialization).

One DuckDB pass over the payments source (with the standard derived columns the feature
groups read: the amount in EUR, the label's arrival), in time order; one per optional party
table. Ids are the sources' own, as strings. Columns the table does not have take neutral
values (no device: ``device`` is -1 and ``device_ids`` empty; no country / channel / currency:
"", 0, the declared currency) and the features that need them are left out of the model
(``FraudFeatures.left_out``).

On failure: SourceError naming the file and the column (offline/features/compiler.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from decision_service.features.currencies import CURRENCIES
from decision_service.features.payments import CHANNELS, FraudFeatures
from offline.features.compiler import (
    SourceError,
    _q,
    connect,
    events_relation,
    fetch,
    floats,
    resolve,
    scan_sql,
    time_sql,
)
from offline.simulation.fraud_world import FraudWorld, FraudWorldConfig
from offline.simulation.world import DAY_MS


@dataclass(frozen=True)
class PaymentsReport:
    payments: int
    labelled: int  # label true
    label_arrivals: int  # labels with a known arrival (all of them, with label_delay)
    users: int
    merchants: int
    devices: int
    start_ms: int
    now_ms: int

    def summary(self) -> str:
        days = (self.now_ms - self.start_ms) / DAY_MS
        return (
            f"{self.payments:,} payments over {days:.1f} days ({self.labelled:,} labelled fraud), "
            f"{self.users:,} customers, {self.merchants:,} merchants"
            + (f", {self.devices:,} devices" if self.devices else ", no devices")
        )


def _ids(values: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Row of each value in ``vocabulary`` (int32; every non-NULL value is in it; NULL: -1)."""
    rows = pc.index_in(pa.array(values, pa.string()), value_set=pa.array(vocabulary, pa.string()))
    return np.asarray(pc.fill_null(rows, -1).to_numpy(zero_copy_only=False), np.int32)  # NULL: -1


def _union(first: np.ndarray, more: np.ndarray) -> np.ndarray:
    """``first`` then the values of ``more`` not in it, in first-seen order (object str)."""
    seen = pc.drop_null(pc.unique(pa.array(more, pa.string())))  # NULL: no such party
    extra = seen.filter(pc.invert(pc.is_in(seen, value_set=pa.array(first, pa.string()))))
    return np.concatenate([np.asarray(first, dtype=object), np.asarray(extra.to_pylist(), dtype=object)])


def load_payments(
    fraud: FraudFeatures, base_dir: str | Path, name: str = "project"
) -> tuple[FraudWorld, PaymentsReport]:
    """(FraudWorld, PaymentsReport) of the declared payments under ``base_dir``.

    The world starts at the first payment's day (UTC midnight); its "now" is one ms after the
    last payment; ``world.directory`` is ``base_dir`` (where the groups' sources resolve)."""
    p = fraud.payments
    ev = fraud.source
    con = connect()

    def run(sql: str, path: str, what: str) -> dict[str, np.ndarray]:
        return fetch(con, sql, path, base_dir, what)

    def text(column: str | None, default: str = "") -> str:
        return f"coalesce(trim(CAST(e.{_q(column)} AS VARCHAR)), '')" if column else repr(default)

    rel, _ = events_relation(ev, base_dir, con)
    channel = "0"
    if p.channel:
        c = f"trim(CAST(e.{_q(p.channel)} AS VARCHAR))"
        names = " ".join(f"WHEN '{k}' THEN {v} WHEN 'CHANNEL_{k}' THEN {v}" for k, v in CHANNELS.items())
        number = f"TRY_CAST({c} AS INTEGER)"
        # a number outside decision.v1.Channel, or an unknown name: 0 (unspecified)
        channel = (
            f"CASE WHEN {number} BETWEEN 0 AND {max(CHANNELS.values())} THEN {number} "
            f"ELSE coalesce(CASE upper({c}) {names} END, 0) END"
        )
    device = f"CAST(e.{_q(ev.keys['device_id'])} AS VARCHAR)" if p.has_device else "NULL"
    amount = f"CAST(e.{_q(p.amount)} AS DOUBLE)"
    t = run(
        f"SELECT CAST(e.{_q(p.transaction_id)} AS VARCHAR) AS txn, "
        f"CAST(e.{_q(ev.keys['user_id'])} AS VARCHAR) AS u, "
        f"CAST(e.{_q(ev.keys['merchant_id'])} AS VARCHAR) AS m, {device} AS d, "
        f"{time_sql(ev.time.column, ev.time)} AS ts, {amount} AS amount, "
        f"CAST(e.amount_eur AS DOUBLE) AS eur, "
        f"upper({text(p.currency, p.default_currency)}) AS currency, {text(p.country)} AS country, "
        f"{channel} AS channel, {text(p.mcc)} AS mcc, {text(p.ip)} AS ip, "
        f"coalesce(CAST(e.{_q(p.label)} AS BOOLEAN), false) AS label, "
        f"CAST(e.chargeback_at AS BIGINT) AS label_at "  # epoch ms (features/payments.py)
        f"FROM {rel} e ORDER BY ts, txn",
        ev.path,
        "payments",
    )
    n = len(t["ts"])
    if not n:
        raise SourceError(f"{resolve(ev.path, base_dir)}: no payments")
    ts = np.asarray(t["ts"], np.int64)

    def column(name: str) -> np.ndarray:
        return np.asarray(t[name], dtype=object)

    # parties: the declared tables first (their order), then the ones seen only in payments
    user_ids, signup, home = np.empty(0, object), None, None
    if p.users is not None:
        signup_sql = time_sql(p.signup.column, p.signup, "x") if p.signup else "NULL"
        home_sql = (
            f"coalesce(upper(trim(CAST(x.{_q(p.home_country)} AS VARCHAR))), '')" if p.home_country else "''"
        )
        u = run(
            f"SELECT CAST(x.{_q(p.users.key)} AS VARCHAR) AS id, {signup_sql} AS signup, {home_sql} AS home "
            f"FROM {scan_sql(p.users, base_dir)} x",
            p.users.path,
            "users",
        )
        user_ids, signup, home = np.asarray(u["id"], object), u["signup"], np.asarray(u["home"], object)

    def table_ids(table, what: str) -> np.ndarray:  # table: Table | None
        if table is None:
            return np.empty(0, object)
        r = run(
            f"SELECT CAST(x.{_q(table.key)} AS VARCHAR) AS id FROM {scan_sql(table, base_dir)} x",
            table.path,
            what,
        )
        return np.asarray(r["id"], object)

    n_declared_users = len(user_ids)
    user_ids = _union(user_ids, column("u"))
    merchant_ids = _union(table_ids(p.merchants, "merchants"), column("m"))
    user = _ids(column("u"), user_ids)
    merchant = _ids(column("m"), merchant_ids)
    if p.has_device:
        device_ids = _union(table_ids(p.devices, "devices"), column("d"))
        device = _ids(column("d"), device_ids)
    else:
        device_ids, device = np.empty(0, object), np.full(n, -1, np.int32)

    first_ms, last_ms = int(ts[0]), int(ts[-1])
    start_ms, now_ms = first_ms - first_ms % DAY_MS, last_ms + 1
    first_of_user = np.full(len(user_ids), now_ms, np.int64)
    np.minimum.at(first_of_user, user, ts)
    signup_ms = np.full(len(user_ids), np.nan)
    if signup is not None:
        signup_ms[:n_declared_users] = floats(signup)  # NULL: the first payment
    signup_ms = np.where(np.isnan(signup_ms), first_of_user, signup_ms).astype(np.int64)
    user_home = np.full(len(user_ids), "", dtype=object)
    if home is not None:
        user_home[:n_declared_users] = home

    mcc = np.full(len(merchant_ids), "", dtype=object)
    mcc[merchant[::-1]] = column("mcc")[::-1]  # each merchant's first payment's code
    ip = np.full(len(device_ids), "", dtype=object)
    if p.has_device:
        with_device = device >= 0
        ip[device[with_device]] = column("ip")[with_device]  # each device's latest address

    currency = column("currency")
    unknown = sorted(set(pc.unique(pa.array(currency, pa.string())).to_pylist()) - set(CURRENCIES))
    if unknown:
        row = int(np.flatnonzero(np.isin(currency, unknown))[0])
        raise SourceError(
            f"{resolve(ev.path, base_dir)}: column {p.currency!r}: unknown ISO 4217 code(s) {unknown[:5]} "
            f"(e.g. transaction {t['txn'][row]!r}); known: {', '.join(CURRENCIES)}"
        )
    exponent = np.array([CURRENCIES[c][0] for c in currency.tolist()], np.float64)
    amount_ = np.asarray(t["amount"], np.float64)
    minor = amount_ if p.amount_unit == "minor" else amount_ * 10.0**exponent
    label = np.asarray(t["label"], bool)
    label_at = floats(t["label_at"])  # NaN where not fraud (or a fraud without a label time)
    chargeback_ms = np.where(label & ~np.isnan(label_at), label_at, -1).astype(np.int64)
    days = max(1, int(np.ceil((now_ms - start_ms) / DAY_MS)))
    world = FraudWorld(
        config=FraudWorldConfig(preset=name, n_users=len(user_ids), n_merchants=len(merchant_ids), days=days),
        txn_ids=column("txn"),
        user=user,
        merchant=merchant,
        device=device,
        amount_minor=np.round(minor).astype(np.int64),
        currency=currency,
        country=column("country"),
        channel=np.asarray(t["channel"], np.int8),
        occurred_ms=ts,
        is_fraud=label,
        pattern=np.where(label, -1, 0).astype(np.int8),  # -1: fraud of unknown pattern
        chargeback_ms=chargeback_ms,
        user_ids=user_ids,
        user_home=user_home,
        user_signup_ms=signup_ms,
        merchant_ids=merchant_ids,
        merchant_mcc=mcc,
        merchant_risky=np.zeros(len(merchant_ids), bool),
        device_ids=device_ids,
        device_ip=ip,
        directory=Path(base_dir),
        span_ms=(start_ms, now_ms),
        eur=np.nan_to_num(floats(t["eur"])),
    )
    report = PaymentsReport(
        payments=n,
        labelled=int(label.sum()),
        label_arrivals=int((chargeback_ms >= 0).sum()),
        users=len(user_ids),
        merchants=len(merchant_ids),
        devices=len(device_ids),
        start_ms=start_ms,
        now_ms=now_ms,
    )
    return world, report

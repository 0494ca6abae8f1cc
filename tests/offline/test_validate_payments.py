"""The payments contract's checks (offline/features/validate_payments.py): one tiny CSV or
Parquet payments table per fault kind, each problem naming the file, the column and an
example row by its row number in that file; a clean table has no problem (and loads)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.features.declarative import Events, Table, Time
from decision_service.features.payments import FraudFeatures, Payments, fraud_features
from offline.features.validate import Problem
from offline.features.validate_payments import MIN_FRAUD_LABELS, validate_payments

T0 = 1_767_225_600  # 2026-01-01, seconds
N = 40  # rows of the clean table; every other one is fraud (20, MIN_FRAUD_LABELS)
CHANNELS = ["WEB", "1", "channel_pos", None, "4"]


def _rows(n: int = N) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        fraud = i % 2 == 0
        rows.append(
            {
                "tx_id": f"t{i + 1}",
                "ts": T0 + 60 * i,
                "customer_id": f"c{i % 5}",
                "terminal_id": f"m{i % 3}",
                "amount": 10.0 + i,
                "is_fraud": "true" if fraud else "false",
                "currency": ["EUR", "USD", "GBP"][i % 3],
                "country": ["DE", "fr", " US ", None][i % 4],  # upper(trim()): two letters
                "channel": CHANNELS[i % len(CHANNELS)],
                "label_ts": T0 + 60 * i + 86_400 if fraud else None,
            }
        )
    return rows


def _with(rows: list[dict[str, Any]], row: int, **values: Any) -> list[dict[str, Any]]:
    """``rows`` with 1-based data row ``row`` changed."""
    rows[row - 1].update(values)
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
        return
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    for k, vs in columns.items():  # a column of mixed values: text, as a CSV would read it
        if any(isinstance(v, str) for v in vs) and not all(isinstance(v, str) for v in vs if v is not None):
            columns[k] = [None if v is None else str(v) for v in vs]
    pq.write_table(pa.table(columns), path)


def _fraud(path: str = "payments.csv", **kw: Any) -> FraudFeatures:
    fmt = "csv" if path.endswith(".csv") or kw.pop("csv", False) else "parquet"
    keys = {"user_id": "customer_id", "merchant_id": "terminal_id"}
    if kw.pop("device", False):
        keys["device_id"] = "device"
    ev = Events("payments", path, Time("ts", "s"), format=fmt, keys=keys)
    declared: dict[str, Any] = {
        "currency": "currency",
        "country": "country",
        "channel": "channel",
        "label_time": Time("label_ts", "s"),
    }
    declared.update(kw)
    return fraud_features(Payments(ev, transaction_id="tx_id", amount="amount", label="is_fraud", **declared))


def _users(tmp_path: Path, rows: list[dict[str, Any]] | None = None, **declared: Any) -> dict[str, Any]:
    """A users table (the payments' customers c0..c4 and one more) written to users.csv, and
    its Payments declaration (``declared`` replaces any of it; None leaves it out)."""
    if rows is None:
        rows = [
            {"user_id": f"c{i}", "signup_ts": T0 - 86_400 * (i + 1), "home": ["DE", "fr", "US"][i % 3]}
            for i in range(6)
        ]
    _write(tmp_path / "users.csv", rows)
    kw: dict[str, Any] = {
        "users": Table("users", "users.csv", "user_id", format="csv"),
        "signup": Time("signup_ts", "s"),
        "home_country": "home",
    }
    kw.update(declared)
    return {k: v for k, v in kw.items() if v is not None}


def _one(
    problems: list[Problem],
    severity: str,
    file: str,
    column: str,
    text: str,
    row: int | None,
    source: str = "payments",
) -> Problem:
    """The only problem; it names ``file``, ``column`` and (when given) ``row``."""
    assert len(problems) == 1, [str(p) for p in problems]
    (p,) = problems
    assert (p.severity, p.file, p.column, p.row, p.source) == (severity, file, column, row, source), str(p)
    assert text in p.message, p.message
    assert str(p).startswith(f"{file}: column {column!r}: "), str(p)
    if row is not None:
        assert f"e.g. row {row} " in str(p), str(p)
    return p


@pytest.mark.parametrize("name", ["payments.csv", "payments.parquet"])
def test_a_clean_table_has_no_problem_and_loads(tmp_path: Path, name: str) -> None:
    from offline.features.payments import load_payments

    _write(tmp_path / name, _rows())
    fraud = _fraud(name)
    assert validate_payments(fraud, tmp_path) == []
    _, report = load_payments(fraud, tmp_path)
    assert (report.payments, report.labelled, report.label_arrivals) == (N, 20, 20)


def test_a_clean_table_without_the_optional_columns_has_no_problem(tmp_path: Path) -> None:
    drop = ("currency", "country", "channel", "label_ts")
    rows = [{k: v for k, v in r.items() if k not in drop} for r in _rows()]
    _write(tmp_path / "payments.csv", rows)
    fraud = _fraud(currency=None, country=None, channel=None, label_time=None)
    assert validate_payments(fraud, tmp_path) == []


def test_a_clean_table_with_every_optional_column_and_table_has_no_problem_and_loads(tmp_path: Path) -> None:
    from offline.features.payments import load_payments

    rows = [
        dict(r, mcc="5411", ip=f"10.0.0.{i % 7}", card=f"k{i % 9}", device=f"d{i % 4}")
        for i, r in enumerate(_rows())
    ]
    _write(tmp_path / "payments.parquet", rows)
    _write(tmp_path / "merchants.csv", [{"terminal": f"m{i}"} for i in range(3)])
    _write(tmp_path / "devices.csv", [{"device_key": f"d{i}"} for i in range(4)])
    fraud = _fraud(
        "payments.parquet",
        device=True,
        mcc="mcc",
        ip="ip",
        instrument="card",
        merchants=Table("merchants", "merchants.csv", "terminal", format="csv"),
        devices=Table("devices", "devices.csv", "device_key", format="csv"),
        **_users(tmp_path),
    )
    assert validate_payments(fraud, tmp_path) == []
    _, report = load_payments(fraud, tmp_path)
    assert (report.payments, report.users, report.merchants, report.devices) == (N, 6, 3, 4)


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("payments.parquet", [True, False, None]),
        ("payments.parquet", [1, 0, None]),
        ("payments.parquet", [1.0, 0.0, None]),
        ("payments.csv", [1, 0, None]),
        ("payments.csv", ["t", "f", None]),
        ("payments.csv", ["yes", "no", "NO"]),
        ("payments.csv", ["1", "0", "false"]),
    ],
)
def test_labels_written_as_booleans_0_1_or_boolean_text_are_fine(
    tmp_path: Path, name: str, labels: list[Any]
) -> None:
    fraud_, *not_fraud = labels
    rows = [dict(r, is_fraud=fraud_ if i % 2 == 0 else not_fraud[i % 4 // 2]) for i, r in enumerate(_rows())]
    _write(tmp_path / name, rows)
    assert validate_payments(_fraud(name), tmp_path) == []


def test_kind_null_transaction_id(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _with(_rows(), 5, tx_id=None))
    p = _one(
        validate_payments(_fraud(), tmp_path), "error", "payments.csv", "tx_id", "1 NULL transaction ids", 5
    )
    assert p.example == {"tx_id": None}


def test_kind_duplicate_transaction_id_names_the_id_and_both_rows(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _with(_rows(), 7, tx_id="t3"))
    p = _one(validate_payments(_fraud(), tmp_path), "error", "payments.csv", "tx_id", "1 duplicate", 3)
    assert "'t3' appears 2 times (also row 7)" in p.message, p.message
    assert p.example == {"tx_id": "t3"}


def test_kind_duplicate_transaction_id_across_parts_names_both_files(tmp_path: Path) -> None:
    rows = _rows()
    _write(tmp_path / "payments" / "part-0.parquet", rows[:20])
    _write(tmp_path / "payments" / "part-1.parquet", _with(rows[20:], 2, tx_id="t4"))
    problems = validate_payments(_fraud("payments"), tmp_path)
    p = _one(problems, "error", "payments/part-0.parquet", "tx_id", "'t4' appears 2 times", 4)
    assert "(also row 2 of payments/part-1.parquet)" in p.message, p.message


def test_kind_row_of_another_csv_file_counts_within_that_file(tmp_path: Path) -> None:
    rows = _rows()
    _write(tmp_path / "payments" / "a.csv", rows[:20])
    _write(tmp_path / "payments" / "b.csv", _with(rows[20:], 3, amount=-1.0))
    problems = validate_payments(_fraud("payments", csv=True), tmp_path)
    _one(problems, "error", "payments/b.csv", "amount", "1 negative amounts", 3)


@pytest.mark.parametrize("name", ["payments.csv", "payments.parquet"])
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "1 NULL amounts"),
        ("12,50 EUR", "1 amounts are not numbers: '12,50 EUR' (1)"),
        (-5.0, "1 negative amounts"),
        ("inf", "1 amounts are not finite (NaN or infinite)"),
        (float("nan"), "1 amounts are not finite (NaN or infinite)"),
    ],
)
def test_kind_bad_amount(tmp_path: Path, name: str, value: Any, text: str) -> None:
    _write(tmp_path / name, _with(_rows(), 6, amount=value))
    p = _one(validate_payments(_fraud(name), tmp_path), "error", name, "amount", text, 6)
    assert p.example is not None and p.example["tx_id"] == "t6" and "amount" in p.example


@pytest.mark.parametrize("name", ["payments.csv", "payments.parquet"])
def test_kind_label_not_boolean(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name, _with(_rows(), 4, is_fraud="fraud"))
    p = _one(
        validate_payments(_fraud(name), tmp_path), "error", name, "is_fraud", "1 labels are not booleans", 4
    )
    assert "'fraud' (1)" in p.message
    assert p.example == {"tx_id": "t4", "is_fraud": "fraud"}


def test_kind_no_fraud_label_at_all_is_an_error(tmp_path: Path) -> None:
    rows = [dict(r, is_fraud="false" if i % 3 else None, label_ts=None) for i, r in enumerate(_rows())]
    _write(tmp_path / "payments.csv", rows)  # false or NULL: not fraud
    p = _one(
        validate_payments(_fraud(), tmp_path), "error", "payments.csv", "is_fraud", "no fraud labels", None
    )
    assert "nothing to learn from" in p.message


@pytest.mark.parametrize("name", ["payments.csv", "payments.parquet"])
@pytest.mark.parametrize(("value", "listed"), [(-1, "'-1' (2)"), (2, "'2' (2)"), (0.3, "'0.3' (2)")])
def test_kind_label_number_other_than_0_or_1(tmp_path: Path, name: str, value: Any, listed: str) -> None:
    rows = [dict(r, is_fraud=1 if i % 2 == 0 else 0) for i, r in enumerate(_rows())]
    _write(
        tmp_path / name, _with(_with(_with(rows, 5, is_fraud=value), 9, is_fraud=value), 12, is_fraud=None)
    )
    p = _one(
        validate_payments(_fraud(name), tmp_path),
        "error",
        name,
        "is_fraud",
        "2 labels are numbers other than 0 and 1: " + listed,
        5,
    )
    assert "any non-zero number reads as true (fraud)" in p.message, p.message
    assert p.example == {"tx_id": "t5", "is_fraud": value}


def test_kind_label_number_as_text_is_one_error_not_two(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _with(_with(_rows(), 4, is_fraud="-1"), 6, is_fraud="fraud"))
    problems = validate_payments(_fraud(), tmp_path)
    got = [(p.severity, p.file, p.column, p.row) for p in problems]
    assert got == [("error", "payments.csv", "is_fraud", 6), ("error", "payments.csv", "is_fraud", 4)], got
    assert "not booleans" in problems[0].message and "'fraud' (1)" in problems[0].message
    assert "numbers other than 0 and 1: '-1' (1)" in problems[1].message


def test_kind_few_fraud_labels_is_a_warning(tmp_path: Path) -> None:
    rows = [dict(r, is_fraud="1" if i < 6 and i % 2 == 0 else "0") for i, r in enumerate(_rows())]
    _write(tmp_path / "payments.csv", rows)
    p = _one(
        validate_payments(_fraud(), tmp_path), "warning", "payments.csv", "is_fraud", "only 3 fraud", None
    )
    assert f"fewer than {MIN_FRAUD_LABELS}" in p.message


@pytest.mark.parametrize("name", ["payments.csv", "payments.parquet"])
def test_kind_unknown_currency(tmp_path: Path, name: str) -> None:
    rows = _with(_with(_with(_rows(), 2, currency="XYZ"), 9, currency="XYZ"), 12, currency=None)
    _write(tmp_path / name, _with(rows, 13, currency=" usd "))  # upper(trim()): known
    p = _one(validate_payments(_fraud(name), tmp_path), "error", name, "currency", "3 payments", 2)
    assert "unknown ISO 4217 currency code: 'XYZ' (2), None (1)" in p.message, p.message
    assert p.example == {"tx_id": "t2", "currency": "XYZ"}


def test_kind_fraud_without_label_time_is_a_warning(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _with(_with(_rows(), 9, label_ts=None), 10, label_ts=None))
    p = _one(
        validate_payments(_fraud(), tmp_path), "warning", "payments.csv", "label_ts", "1 fraud labels", 9
    )
    assert "never counts them as arrived" in p.message  # row 10 is not fraud: no label time needed
    assert p.example == {"tx_id": "t9", "label_ts": None, "is_fraud": True}


def test_kind_label_time_before_the_payment_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "payments.parquet", _with(_rows(), 11, label_ts=T0))
    p = _one(
        validate_payments(_fraud("payments.parquet"), tmp_path),
        "error",
        "payments.parquet",
        "label_ts",
        "1 fraud labels arrive before their payment",
        11,
    )
    assert p.example == {"tx_id": "t11", "label_ts": T0, "ts": T0 + 600, "is_fraud": "true"}
    assert "cannot be known before the payment" in p.message and "leak" in p.message, p.message


def test_kind_label_time_that_is_not_a_time_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _with(_rows(), 15, label_ts="soon"))
    _one(
        validate_payments(_fraud(), tmp_path), "error", "payments.csv", "label_ts", "do not read as times", 15
    )


def test_kind_unknown_channel_is_a_warning(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _with(_with(_rows(), 8, channel="KIOSK"), 21, channel="9"))
    p = _one(
        validate_payments(_fraud(), tmp_path), "warning", "payments.csv", "channel", "2 channel values", 8
    )
    assert "'9' (1)" in p.message and "'KIOSK' (1)" in p.message, p.message
    assert "reads them as 0 (UNSPECIFIED), numbers outside 0..4 and unknown names alike" in p.message
    assert p.example == {"tx_id": "t8", "channel": "KIOSK"}


def test_unknown_channel_values_load_as_unspecified(tmp_path: Path) -> None:
    from offline.features.payments import load_payments

    rows = _with(_with(_with(_rows(), 8, channel="KIOSK"), 21, channel="9"), 22, channel="-1")
    _write(tmp_path / "payments.csv", rows)
    world, _ = load_payments(_fraud(), tmp_path)
    by_tx = dict(zip(world.txn_ids.tolist(), world.channel.tolist(), strict=True))
    assert (by_tx["t8"], by_tx["t21"], by_tx["t22"], by_tx["t2"], by_tx["t3"]) == (0, 0, 0, 1, 3)


@pytest.mark.parametrize("name", ["payments.csv", "payments.parquet"])
def test_kind_country_not_alpha2(tmp_path: Path, name: str) -> None:
    rows = _with(_with(_with(_rows(), 3, country="DEU"), 7, country="Germany"), 10, country="DEU")
    _write(tmp_path / name, _with(rows, 11, country=""))  # empty: no country, fine
    p = _one(validate_payments(_fraud(name), tmp_path), "warning", name, "country", "3 country values", 3)
    assert "'DEU' (2), 'Germany' (1)" in p.message, p.message
    assert "ISO 3166-1 alpha-2" in p.message and "never match a request's country" in p.message
    assert p.example == {"tx_id": "t3", "country": "DEU"}


@pytest.mark.parametrize("attr", ["currency", "country", "channel", "mcc", "ip", "instrument"])
def test_kind_missing_optional_column(tmp_path: Path, attr: str) -> None:
    rows = [{k: v for k, v in r.items() if k != attr} for r in _rows()]
    _write(tmp_path / "payments.csv", rows)
    p = _one(
        validate_payments(_fraud(**{attr: attr}), tmp_path),
        "error",
        "payments.csv",
        attr,
        f"no such column (Payments.{attr}: ",
        None,
    )
    assert "the source has tx_id, ts, customer_id" in p.message, p.message


@pytest.mark.parametrize(
    ("attr", "column"), [("users.key", "user_id"), ("signup", "signup_ts"), ("home_country", "home")]
)
def test_kind_users_table_missing_column(tmp_path: Path, attr: str, column: str) -> None:
    _write(tmp_path / "payments.csv", _rows())
    users = [{"user_id": f"c{i}", "signup_ts": T0, "home": "DE"} for i in range(5)]
    fraud = _fraud(**_users(tmp_path, [{k: v for k, v in u.items() if k != column} for u in users]))
    p = _one(
        validate_payments(fraud, tmp_path), "error", "users.csv", column, f"(Payments.{attr}: ", None, "users"
    )
    assert "no such column" in p.message and "table 'users' has " in p.message, p.message


@pytest.mark.parametrize("attr", ["merchants", "devices"])
def test_kind_merchants_or_devices_table_missing_key(tmp_path: Path, attr: str) -> None:
    _write(tmp_path / "payments.csv", _rows())
    _write(tmp_path / f"{attr}.csv", [{"id": f"x{i}", "name": "a"} for i in range(3)])
    fraud = _fraud(**{attr: Table(attr, f"{attr}.csv", "key", format="csv")})
    p = _one(
        validate_payments(fraud, tmp_path),
        "error",
        f"{attr}.csv",
        "key",
        f"(Payments.{attr}.key: ",
        None,
        attr,
    )
    assert f"table {attr!r} has id, name" in p.message, p.message


def test_kind_users_table_without_a_file_is_one_error(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _rows())
    fraud = _fraud(**_users(tmp_path, users=Table("users", "people.csv", "user_id", format="csv")))
    (p,) = validate_payments(fraud, tmp_path)
    assert (p.severity, p.file, p.column, p.row, p.source) == ("error", "people.csv", None, None, "users"), (
        str(p)
    )
    assert "table 'users' (Payments.users) cannot be read" in p.message and "no csv file found" in p.message


def test_kind_users_ids_unlike_the_customers(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _rows())  # customers c0..c4
    users = [{"user_id": f"u0000{i}", "signup_ts": T0, "home": "DE"} for i in range(5)]
    users[3]["user_id"] = "c3"  # 1 of 5 found
    p = _one(
        validate_payments(_fraud(**_users(tmp_path, users)), tmp_path),
        "warning",
        "users.csv",
        "user_id",
        "only 1 of the payments' 5 customers (20%; column 'customer_id') are ids of table 'users'",
        1,
        "users",
    )
    assert "e.g. customer 'c0' in the payments vs 'u00000' in users.csv" in p.message, p.message
    assert "check that both id columns are written alike" in p.message
    assert p.example == {"user_id": "u00000"}


def test_users_ids_half_found_is_fine(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _rows())  # customers c0..c4
    users = [{"user_id": u, "signup_ts": T0, "home": "DE"} for u in ("c0", "c1", "c2", "x3", "x4")]
    assert validate_payments(_fraud(**_users(tmp_path, users)), tmp_path) == []


def test_kind_home_country_not_alpha2(tmp_path: Path) -> None:
    _write(tmp_path / "payments.csv", _rows())
    homes = ["DE", "Deutschland", None, "FRA", " us "]
    users = [{"user_id": f"c{i}", "signup_ts": T0, "home": h} for i, h in enumerate(homes)]
    p = _one(
        validate_payments(_fraud(**_users(tmp_path, users)), tmp_path),
        "warning",
        "users.csv",
        "home",
        "2 home countries are not assigned alpha-2 codes: 'Deutschland' (1), 'FRA' (1)",
        2,
        "users",
    )
    assert "never match a request's country" in p.message
    assert p.example == {"user_id": "c1", "home": "Deutschland"}


def test_kind_no_file_is_one_error(tmp_path: Path) -> None:
    (p,) = validate_payments(_fraud(), tmp_path)
    assert p.severity == "error" and p.column is None and "cannot be read" in p.message, str(p)
    assert "no csv file found" in p.message

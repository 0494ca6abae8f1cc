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

from decision_service.features.declarative import Events, Time
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
    ev = Events(
        "payments",
        path,
        Time("ts", "s"),
        format=fmt,
        keys={"user_id": "customer_id", "merchant_id": "terminal_id"},
    )
    declared: dict[str, Any] = {
        "currency": "currency",
        "channel": "channel",
        "label_time": Time("label_ts", "s"),
    }
    declared.update(kw)
    return fraud_features(Payments(ev, transaction_id="tx_id", amount="amount", label="is_fraud", **declared))


def _one(
    problems: list[Problem], severity: str, file: str, column: str, text: str, row: int | None
) -> Problem:
    """The only problem; it names ``file``, ``column`` and (when given) ``row``."""
    assert len(problems) == 1, [str(p) for p in problems]
    (p,) = problems
    assert (p.severity, p.file, p.column, p.row, p.source) == (severity, file, column, row, "payments"), str(
        p
    )
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
    rows = [{k: v for k, v in r.items() if k not in ("currency", "channel", "label_ts")} for r in _rows()]
    _write(tmp_path / "payments.csv", rows)
    assert validate_payments(_fraud(currency=None, channel=None, label_time=None), tmp_path) == []


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


def test_kind_label_time_before_the_payment_is_a_warning(tmp_path: Path) -> None:
    _write(tmp_path / "payments.parquet", _with(_rows(), 11, label_ts=T0))
    p = _one(
        validate_payments(_fraud("payments.parquet"), tmp_path),
        "warning",
        "payments.parquet",
        "label_ts",
        "1 fraud labels arrive before their payment",
        11,
    )
    assert p.example == {"tx_id": "t11", "label_ts": T0, "ts": T0 + 600, "is_fraud": "true"}


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
    assert p.example == {"tx_id": "t8", "channel": "KIOSK"}


def test_kind_missing_column(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "channel"} for r in _rows()]
    _write(tmp_path / "payments.csv", rows)
    _one(validate_payments(_fraud(), tmp_path), "error", "payments.csv", "channel", "no such column", None)


def test_kind_no_file_is_one_error(tmp_path: Path) -> None:
    (p,) = validate_payments(_fraud(), tmp_path)
    assert p.severity == "error" and p.column is None and "cannot be read" in p.message, str(p)
    assert "no csv file found" in p.message

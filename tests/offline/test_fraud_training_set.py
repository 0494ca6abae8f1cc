"""The fraud training set from logs: chargeback window, analyst verdicts, maturity, logged rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.decision_log import fraud_log, outcome_log
from decision_service.decision_log.fraud_log import FraudLogRecord
from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.domain.fraud import FraudAction, FraudDecision, Transaction
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features.definitions import FRAUD_MODEL_FEATURES
from decision_service.use_cases import OUTCOME_TYPES
from offline.loop.training_set import FRAUD_LABEL, LabelWindow, build_fraud_training_set, main

T0 = 1_780_000_000_000  # ms
DAY = 86_400_000
SMALL = ("r_amount_log", "r_new_device") + tuple(c for c in FRAUD_MODEL_FEATURES if c.startswith("nn_"))


def verdict(
    decision_id: str,
    at_ms: int,
    names: tuple[str, ...] = FRAUD_MODEL_FEATURES,
    action: FraudAction = FraudAction.APPROVE,
    row: np.ndarray | None = None,
    built: bool = True,
) -> FraudLogRecord:
    if row is None:
        row = np.random.default_rng(abs(hash(decision_id)) % 2**32).random(len(names)).astype(np.float32)
    txn = Transaction(
        f"t-{decision_id}", "u1", 2500, "EUR", 25.0, "m1", "5411", "DE", "d1", "1.2.3.4", 1, at_ms, "c1"
    )
    decision = FraudDecision(
        decision_id, "r", "v0001", at_ms, action=action, risk_score=10, fraud_probability=0.1, fired_rules=[], reasons=[]
    )
    return FraudLogRecord(decision, txn, names, row if built else None, (0, 0, 0))


def outcome(decision_id: str, kind: str, occurred_ms: int, received_ms: int | None = None) -> OutcomeLogRecord:
    return OutcomeLogRecord(
        Outcome(decision_id, OUTCOME_TYPES[kind], occurred_ms),
        received_ms if received_ms is not None else occurred_ms,
        DecisionRef(decision_id, "fraud", "u1", T0),
    )


def write(root: Path, decisions: list[FraudLogRecord], outcomes: list[OutcomeLogRecord]) -> None:
    for i, batch in enumerate((decisions[: len(decisions) // 2], decisions[len(decisions) // 2 :])):
        d = root / f"decisions/use_case=fraud/date=2026-05-28/hour=0{i}"
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_batches([fraud_log.to_batch(batch)]), d / "part-0.parquet")
    o = root / "outcomes/use_case=fraud/date=2026-05-28/hour=00"
    o.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([outcome_log.to_batch(outcomes)]), o / "part-0.parquet")


def test_chargeback_window_verdicts_and_maturity(tmp_path: Path):
    as_of = T0 + 70 * DAY
    decisions = [
        verdict("a-cb", T0),                                        # chargeback on day 5 -> 1
        verdict("b-clean", T0 + DAY),                               # window closed, nothing -> 0
        verdict("c-late", T0 + 2 * DAY),                            # chargeback on day 65 -> 0, late
        verdict("d-legit", T0 + 3 * DAY),                           # confirmed_legit -> 0 (beats a chargeback)
        verdict("e-young", T0 + 40 * DAY),                          # window open, no verdict -> waits
        verdict("f-analyst", T0 + 50 * DAY, action=FraudAction.REVIEW),  # confirmed_fraud, window open -> 1
        verdict("g-future", T0 + 4 * DAY),                          # chargeback received after as_of -> 0
        verdict("h-norow", T0 + 5 * DAY, built=False),              # no model row -> skipped
        verdict("i-small", T0 + 6 * DAY, names=SMALL, row=np.array([4.0, 1.0, 0.5, 2.0], np.float32)),
    ]
    outcomes = [
        outcome("a-cb", "chargeback", T0 + 5 * DAY),
        outcome("a-cb", "refund", T0 + 6 * DAY),                    # not a label type
        outcome("c-late", "chargeback", T0 + 65 * DAY),
        outcome("d-legit", "chargeback", T0 + 10 * DAY),
        outcome("d-legit", "confirmed_legit", T0 + 12 * DAY),
        outcome("f-analyst", "confirmed_fraud", T0 + 51 * DAY),
        outcome("g-future", "chargeback", T0 + 9 * DAY, received_ms=as_of + 1),
    ]
    write(tmp_path, decisions, outcomes)
    table, report = build_fraud_training_set(tmp_path, tmp_path / "fraud.parquet", as_of_ms=as_of)

    labels = dict(zip(table.column("decision_id").to_pylist(), table.column("fraud").to_pylist(), strict=True))
    assert labels == {
        "a-cb": True, "b-clean": False, "c-late": False, "d-legit": False,
        "f-analyst": True, "g-future": False, "i-small": False,
    }
    assert (report.decisions_read, report.decisions_labelled, report.decisions_immature) == (9, 7, 1)
    assert report.positives == {"fraud": 2} and report.late_outcomes == 1
    assert report.verdicts == {"confirmed_fraud": 1, "confirmed_legit": 1}
    assert report.skipped == {"no_model_row": 1} and report.layouts == 2
    assert list(table.column_names[-len(FRAUD_MODEL_FEATURES):]) == list(FRAUD_MODEL_FEATURES)

    # Features are the exact logged row; a column the small layout lacks gets its default.
    a = table.filter(pa.compute.equal(table.column("decision_id"), "a-cb")).to_pylist()[0]
    np.testing.assert_array_equal([a[c] for c in FRAUD_MODEL_FEATURES], verdict("a-cb", T0).features)
    small = table.filter(pa.compute.equal(table.column("decision_id"), "i-small")).to_pylist()[0]
    assert (small["r_amount_log"], small["r_new_device"], small["nn_fraud_rate"]) == (4.0, 1.0, 0.5)
    assert small["fu_txn_count_30d"] == 0.0 and report.backfill_defaults["fu_txn_count_30d"] == 1
    assert pq.read_table(tmp_path / "fraud.parquet").num_rows == 7

    # A shorter window: the day-5 chargeback of a-cb no longer counts.
    short, _ = build_fraud_training_set(tmp_path, None, LabelWindow("fraud", ("chargeback",), 3 * 86400.0), as_of)
    assert dict(zip(short.column("decision_id").to_pylist(), short.column("fraud").to_pylist(), strict=True))[
        "a-cb"
    ] is False
    assert FRAUD_LABEL.window_s == 60 * 86400.0


def test_empty_logs_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    table, report = build_fraud_training_set(tmp_path, None, as_of_ms=T0)
    assert table.num_rows == 0 and report.positives == {"fraud": 0}
    assert "fraud" in table.column_names and "nn_fraud_rate" in table.column_names
    write(tmp_path, [verdict("a", T0), verdict("b", T0 + 1)], [outcome("a", "chargeback", T0 + DAY)])
    out = tmp_path / "cli.parquet"
    code = main(["--use-case", "fraud", "--logs", str(tmp_path), "--out", str(out),
                 "--label", "fraud:chargeback=2d", "--as-of-ms", str(T0 + 3 * DAY)])
    assert code == 0 and "positives: fraud 1" in capsys.readouterr().out
    assert pq.read_table(out).column("fraud").to_pylist() == [True, False]

"""The outcome log: one row per reported outcome, joined to decisions by decision_id."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from decision_service.domain.outcomes import DecisionRef, Outcome


@dataclass(frozen=True, slots=True)
class OutcomeLogRecord:
    outcome: Outcome
    received_at_ms: int
    decision: DecisionRef | None  # None: no replica remembers the decision (still logged)


SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("type", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("occurred_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("received_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
        pa.field("use_case", pa.string()),
        pa.field("decision_known", pa.bool_()),
        pa.field("user_id", pa.string()),
        pa.field("decided_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def partition_of(record: OutcomeLogRecord) -> tuple[tuple[str, str], ...]:
    t = time.gmtime(record.received_at_ms / 1000.0)
    return (
        ("use_case", record.outcome.type.use_case),
        ("date", time.strftime("%Y-%m-%d", t)),
        ("hour", f"{t.tm_hour:02d}"),
    )


def to_batch(records: Sequence[OutcomeLogRecord]) -> pa.RecordBatch:
    def ts(values: list[int | None]) -> pa.Array:
        return pa.array(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))

    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.outcome.decision_id for r in records]),
            pa.array([r.outcome.item_id or None for r in records], pa.string()),
            pa.array([r.outcome.type.name for r in records]),
            pa.array([r.outcome.value for r in records], pa.float64()),
            ts([r.outcome.occurred_at_ms for r in records]),
            ts([r.received_at_ms for r in records]),
            pa.array([list(r.outcome.attributes) for r in records], SCHEMA.field("attributes").type),
            pa.array([r.outcome.type.use_case for r in records]),
            pa.array([r.decision is not None for r in records]),
            pa.array([r.decision.user_id if r.decision else None for r in records], pa.string()),
            ts([r.decision.decided_at_ms if r.decision else None for r in records]),
        ],
        schema=SCHEMA,
    )

"""The shadow log: what a shadow model version scored for served decisions, off the answer path.

One row per decision a shadow version scored, for every use case, under
``shadow/use_case=<name>/date=YYYY-MM-DD/hour=HH`` (the decision's time); joined to the
decision log by ``decision_id``. ``scores`` line up with the scores the decision log holds
for the same decision: recommendation, every scored candidate in the order of the decision
log's ``item_ids`` / ``scores``; fraud, ``[fraud_probability]``; conversion,
``[probability]``. The shadow scored the EXACT features served (the decision log's), so a
difference is the model's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from decision_service.decision_log import columns


@dataclass(frozen=True, slots=True)
class ShadowLogRecord:
    decision_id: str
    decided_at_ms: int
    use_case: str
    model_version: str  # the version that served the decision
    arm: str  # the arm that served it ("live" / "canary")
    shadow_model_version: str
    shadow_scores: np.ndarray  # float32 [n]: see the module docstring for the order
    shadow_ms: float  # time the shadow scoring took, ms


SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("decided_at", columns.TIMESTAMP, nullable=False),
        pa.field("use_case", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("arm", columns.ARM),
        pa.field("shadow_model_version", pa.string()),
        pa.field("shadow_scores", pa.list_(pa.float32())),
        pa.field("shadow_ms", pa.float32()),
    ]
)


def partition_of(record: ShadowLogRecord) -> tuple[tuple[str, str], ...]:
    return columns.partition(record.use_case, record.decided_at_ms)


def to_batch(records: Sequence[ShadowLogRecord]) -> pa.RecordBatch:
    lengths = np.fromiter((len(r.shadow_scores) for r in records), np.int32, len(records))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = (
        np.concatenate([np.asarray(r.shadow_scores, np.float32).reshape(-1) for r in records])
        if records
        else np.empty(0, np.float32)
    )
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.decision_id for r in records]),
            columns.timestamps([r.decided_at_ms for r in records]),
            pa.array([r.use_case for r in records]),
            pa.array([r.model_version for r in records]),
            pa.array([r.arm for r in records]),
            pa.array([r.shadow_model_version for r in records]),
            pa.ListArray.from_arrays(offsets, pa.array(flat, pa.float32())),
            pa.array([r.shadow_ms for r in records], pa.float32()),
        ],
        schema=SCHEMA,
    )

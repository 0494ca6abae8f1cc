"""Column types and conversions every decision log shares: the envelope (ids, time, use case,
degradations), the request context, reason codes, and the Hive partition of a row.

One place, so the logs of every use case read alike (the training sets and dashboards join
them by these columns) and a change of one of them is a change of all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from decision_service.domain.decision import Degradation, RequestContext

TIMESTAMP = pa.timestamp("ms", tz="UTC")
DEGRADED = pa.list_(pa.struct([("stage", pa.string()), ("reason", pa.string())]))
CONTEXT = pa.struct(
    [
        ("surface", pa.string()),
        ("device", pa.string()),
        ("locale", pa.string()),
        ("attributes", pa.map_(pa.string(), pa.string())),
    ]
)
REASON = pa.struct([("code", pa.string()), ("feature", pa.string()), ("contribution", pa.float32())])
ARM = pa.string()
"""Which rollout arm served the decision: "live" (CURRENT) or "canary" (models/rollout.py)."""
STAGE_MS = pa.map_(pa.string(), pa.float32())
"""Server-side time of each pipeline stage of the decision, ms (the decision's ``stage_ms``)."""


def partition(use_case: str, decided_at_ms: int) -> tuple[tuple[str, str], ...]:
    """``use_case=<name>/date=YYYY-MM-DD/hour=HH`` of a decision (UTC, the server's clock)."""
    t = time.gmtime(decided_at_ms / 1000.0)
    return (("use_case", use_case), ("date", time.strftime("%Y-%m-%d", t)), ("hour", f"{t.tm_hour:02d}"))


def timestamps(values_ms: Sequence[int]) -> pa.Array:
    """ms since the epoch -> timestamp[ms, UTC]."""
    return pa.array(np.asarray(values_ms, "datetime64[ms]"), TIMESTAMP)


def degraded(rows: Iterable[Iterable[Degradation]]) -> pa.Array:
    return pa.array([[{"stage": d.stage, "reason": d.reason} for d in row] for row in rows], DEGRADED)


def contexts(rows: Iterable[RequestContext]) -> pa.Array:
    return pa.array(
        [
            {"surface": c.surface, "device": c.device, "locale": c.locale, "attributes": list(c.attributes)}
            for c in rows
        ],
        CONTEXT,
    )


def stage_ms(rows: Iterable[Any]) -> pa.Array:
    """Each decision's stage timings (a mapping or (name, ms) pairs) -> map<string, float32>."""
    return pa.array(
        [list(r.items()) if hasattr(r, "items") else list(r) for r in rows],
        STAGE_MS,
    )


def reasons(rows: Iterable[Iterable[Any]]) -> pa.Array:
    """Reason codes (anything with ``code``, ``feature``, ``contribution``) per row."""
    return pa.array(
        [[{"code": r.code, "feature": r.feature, "contribution": r.contribution} for r in x] for x in rows],
        pa.list_(REASON),
    )

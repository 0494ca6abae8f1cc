"""Records the decision under its transaction id and counts the payment: one idempotent
store change (features/store.py), so a retry or a concurrent duplicate never counts twice."""

from __future__ import annotations

import json

from decision_service.domain.decision import Degradation
from decision_service.domain.fraud import FiredRule, FraudAction, FraudDecision, Reason
from decision_service.features.definitions import DEVICE
from decision_service.features.store import PAYMENT_RECORD, Change, CountPayment, Once, StateWrites
from decision_service.stages.fraud_base import FraudState


class CommitDecision:
    name = "commit"

    def __init__(self, writes: StateWrites, record_ttl_s: int) -> None:
        self._writes = writes
        self._record_ttl_ms = record_ttl_s * 1000

    async def commit(self, state: FraudState, record: bytes) -> bytes | None:
        """None when this call recorded it, else the record the transaction id already had."""
        t = state.request.transaction
        # counted at the server's receive time: the same instant the windows were read at
        # a project without device features keeps no device windows (features/payments.py)
        device = t.device_id if DEVICE is not None else ""
        payment = CountPayment(t.transaction_id, t.user_id, device, t.amount_eur, state.request.counted_at_ms)
        once = Once(PAYMENT_RECORD, t.transaction_id, self._record_ttl_ms, record)
        return await self._writes.write(Change((payment,), once))


def encode_record(fingerprint: str, d: FraudDecision) -> bytes:
    """The idempotency record: the payload fingerprint and the decision as answered."""
    return json.dumps(
        {
            "fp": fingerprint,
            "id": d.decision_id,
            "model": d.model_version,
            "at": d.decided_at_ms,
            "action": int(d.action),
            "risk": d.risk_score,
            "p": d.fraud_probability,
            "rules": [[r.code, r.description] for r in d.fired_rules],
            "reasons": [[r.code, r.feature, r.contribution, r.description] for r in d.reasons],
            "degraded": [[g.stage, g.reason] for g in d.degraded],
            "arm": d.arm,
        },
        separators=(",", ":"),
    ).encode()


def decode_record(raw: bytes, request_id: str) -> tuple[str, FraudDecision]:
    """(payload fingerprint, the recorded decision answered again). On failure: ValueError."""
    try:
        r = json.loads(raw)
        return r["fp"], FraudDecision(
            decision_id=r["id"],
            request_id=request_id,
            model_version=r["model"],
            decided_at_ms=int(r["at"]),
            action=FraudAction(r["action"]),
            risk_score=int(r["risk"]),
            fraud_probability=float(r["p"]),
            fired_rules=[FiredRule(*x) for x in r["rules"]],
            reasons=[Reason(x[0], x[1], float(x[2]), x[3]) for x in r["reasons"]],
            degraded=[Degradation(*x) for x in r["degraded"]],
            arm=str(r.get("arm", "live")),  # records written before arms: live
            replayed=True,
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt decision record: {exc}") from exc

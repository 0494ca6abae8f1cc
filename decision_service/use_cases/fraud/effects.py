"""How a confirmed fraud (chargeback, analyst verdict) changes the online state at once.

* the user's and the device's ``*_chargebacks_90d`` profile features go up by one, in place
  in their packed vectors (a missing profile starts from the declared defaults), so the very
  next check of that user or device sees it;
* the payment instrument joins the block list, so it is declined by rule from then on.

Once per payment: offline (offline/features/fraud_features.py) a payment counts as one
chargeback whatever arrives for it, so online the effect is applied once per transaction
(per decision when the transaction id is unknown), whatever is duplicated, retried or
confirmed again (a chargeback then an analyst's ``confirmed_fraud``). It is one idempotent
store change (features/store.py) with the once-key ``fx:fraud_confirmed:{subject}`` (TTL =
the decision index TTL of fraud, so it outlives every outcome that can still be attributed):
applied whole or not at all, and a retry applies it once.

The 90-day window is not aged out online: the next offline materialization recomputes it.
"""

from __future__ import annotations

from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features.definitions import DEVICE, FRAUD_USER
from decision_service.features.store import AddToBlockList, Change, IncrementFeature, Once, Write

FRAUD_CONFIRMED = "fraud_confirmed"
"""The effect name: the transaction's user / device / card become risky (fraud outcome types)."""

ONCE_KIND = f"fx:{FRAUD_CONFIRMED}"
"""The once-key kind of the effect: ``fx:fraud_confirmed:{transaction id or decision id}``."""


def mark_confirmed_fraud(outcome: Outcome, ref: DecisionRef, once_ttl_ms: int) -> Change:
    """Effect handler for FRAUD_CONFIRMED (see outcomes/recorder.py): once per payment."""
    entities = dict(ref.entities)
    subject = entities.get("transaction_id") or ref.decision_id
    device = entities.get("device_id") or ""
    instrument = entities.get("payment_instrument_id") or ""
    writes: list[Write] = [IncrementFeature(FRAUD_USER, ref.user_id, "fu_chargebacks_90d")]
    if device and DEVICE is not None:  # None: the project's payments have no devices
        writes.append(IncrementFeature(DEVICE, device, "d_chargebacks_90d"))
    if instrument:
        writes.append(AddToBlockList("instrument", instrument))
    return Change(tuple(writes), Once(ONCE_KIND, subject, once_ttl_ms))

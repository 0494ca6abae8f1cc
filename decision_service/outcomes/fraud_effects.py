"""How a confirmed fraud (chargeback, analyst verdict) changes the online state at once.

* the user's and the device's ``*_chargebacks_90d`` profile features go up by one, in place
  in their packed vectors (an atomic Lua read-modify-write; a missing profile is created
  from the declared defaults first), so the very next check of that user or device sees it;
* the payment instrument joins the block list, so it is declined by rule from then on.

The 90-day window is not aged out online: the next offline materialization recomputes it.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features import online_store
from decision_service.features.definitions import DEVICE, FRAUD_USER
from decision_service.features.fraud_store import block_key
from decision_service.features.registry import FeatureGroup

_BUMP = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[3]) end
local off = tonumber(ARGV[1])
local raw = redis.call('GETRANGE', KEYS[1], off, off + 3)
if #raw ~= 4 then return 0 end
local value = struct.unpack('<f', raw)
redis.call('SETRANGE', KEYS[1], off, struct.pack('<f', value + tonumber(ARGV[2])))
return 1
"""

_HEADER_BYTES = 8


def _bump(pipe: aioredis.client.Pipeline, group: FeatureGroup, entity_id: str, column: str) -> None:
    offset = _HEADER_BYTES + 4 * group.slot(column)
    default = online_store.encode(group, group.defaults[None, :], online_store.now_ms())[0]
    pipe.eval(_BUMP, 1, online_store.feature_key(group, entity_id), offset, 1, default)


def mark_confirmed_fraud(pipe: aioredis.client.Pipeline, outcome: Outcome, ref: DecisionRef) -> None:
    """Effect handler for Effect.FRAUD_CONFIRMED (see outcomes/recorder.py)."""
    entities = dict(ref.entities)
    _bump(pipe, FRAUD_USER, ref.user_id, "fu_chargebacks_90d")
    if entities.get("device_id"):
        _bump(pipe, DEVICE, entities["device_id"], "d_chargebacks_90d")
    if entities.get("payment_instrument_id"):
        pipe.sadd(block_key("instrument"), entities["payment_instrument_id"])

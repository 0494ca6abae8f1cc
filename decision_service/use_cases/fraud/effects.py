"""How a confirmed fraud (chargeback, analyst verdict) changes the online state at once.

* the user's and the device's ``*_chargebacks_90d`` profile features go up by one, in place
  in their packed vectors (a missing profile is created from the declared defaults first),
  so the very next check of that user or device sees it;
* the payment instrument joins the block list, so it is declined by rule from then on.

Once per payment: offline (offline/features/fraud_features.py) a payment counts as one chargeback
whatever arrives for it, so online the effect is applied once per transaction (per decision
when the transaction id is unknown), whatever is duplicated, retried or confirmed again (a
chargeback then an analyst's ``confirmed_fraud``). One Lua script, atomic: it sets a marker
``fx:fraud_confirmed:{transaction id}`` (TTL = the decision index TTL of fraud, so it
outlives every outcome that can still be attributed): when the marker exists nothing is
done; otherwise every key's type is checked before the first write (Redis does not roll a
script back when it errors part-way), then the effects are applied and the marker is set
last, so a failure leaves nothing half-applied and a retry applies the effect once.

The 90-day window is not aged out online: the next offline materialization recomputes it.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features import online_store
from decision_service.features.definitions import DEVICE, FRAUD_USER
from decision_service.features.fraud_store import block_key
from decision_service.features.registry import FeatureGroup

# KEYS: marker, user profile, device profile, instrument block list
# ARGV: marker TTL ms, user offset, user default, device offset ('' = none), device default,
#       instrument ('' = none)
_CONFIRM_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
-- every check before the first write: a script that errors part-way is not rolled back
local function expect(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= kind then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. kind)
  end
end
local bad = expect(KEYS[2], 'string')
  or (ARGV[4] ~= '' and expect(KEYS[3], 'string'))
  or (ARGV[6] ~= '' and expect(KEYS[4], 'set'))
if bad then return bad end
local function bump(key, off, default)
  if redis.call('EXISTS', key) == 0 then redis.call('SET', key, default) end
  local raw = redis.call('GETRANGE', key, off, off + 3)
  if #raw == 4 then
    redis.call('SETRANGE', key, off, struct.pack('<f', struct.unpack('<f', raw) + 1))
  end
end
bump(KEYS[2], tonumber(ARGV[2]), ARGV[3])
if ARGV[4] ~= '' then bump(KEYS[3], tonumber(ARGV[4]), ARGV[5]) end
if ARGV[6] ~= '' then redis.call('SADD', KEYS[4], ARGV[6]) end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])  -- the marker last: set only when all applied
return 1
"""

FRAUD_CONFIRMED = "fraud_confirmed"
"""The effect name: the transaction's user / device / card become risky (fraud outcome types)."""


def marker_key(effect: str, subject: str) -> str:
    """The once-marker of ``effect`` for one payment / decision."""
    return f"fx:{effect}:{subject}"


def _default(group: FeatureGroup) -> bytes:
    return online_store.encode(group, group.defaults[None, :], online_store.now_ms())[0]


def mark_confirmed_fraud(
    pipe: aioredis.client.Pipeline, outcome: Outcome, ref: DecisionRef, once_ttl_ms: int
) -> None:
    """Effect handler for FRAUD_CONFIRMED (see outcomes/recorder.py): once per payment."""
    entities = dict(ref.entities)
    subject = entities.get("transaction_id") or ref.decision_id
    device = entities.get("device_id") or ""
    instrument = entities.get("payment_instrument_id") or ""
    keys = [
        marker_key(FRAUD_CONFIRMED, subject),
        online_store.feature_key(FRAUD_USER, ref.user_id),
        online_store.feature_key(DEVICE, device or "-"),
        block_key("instrument"),
    ]
    args = [
        once_ttl_ms,
        online_store.value_offset(FRAUD_USER, "fu_chargebacks_90d"),
        _default(FRAUD_USER),
        online_store.value_offset(DEVICE, "d_chargebacks_90d") if device else "",
        _default(DEVICE) if device else "",
        instrument,
    ]
    pipe.eval(_CONFIRM_ONCE, len(keys), *keys, *args)

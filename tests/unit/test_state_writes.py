"""The online store's write half (features/store.py on Redis): idempotency is one store
operation. A change with a once-key is applied whole, at most once; a change that cannot be
applied whole is not applied at all; every change of a call goes in one round trip."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from decision_service.features import packed
from decision_service.features.definitions import DEVICE, FRAUD_USER
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import (
    RedisStateWrites,
    block_key,
    feature_key,
    once_key,
    seen_key,
    user_devices_key,
    velocity_key,
)
from decision_service.features.store import (
    AddSeen,
    AddToBlockList,
    Change,
    CountPayment,
    IncrementFeature,
    Once,
)

NOW = 1_700_000_000_000


def run(redis_server, *changes: Change, max_seen: int = 3):
    async def go():
        client = MultiplexedRedis(redis_server.url)
        try:
            return await RedisStateWrites(client, max_seen).write_many(list(changes))
        finally:
            await client.aclose()

    return asyncio.run(go())


def chargebacks(client: redis.Redis, user: str) -> float:
    return float(packed.decode(FRAUD_USER, [client.get(feature_key(FRAUD_USER, user))], NOW).values[0, FRAUD_USER.slot("fu_chargebacks_90d")])


def confirmed(user="u1", device="d1", card="c1", subject="t-1") -> Change:
    return Change(
        (
            IncrementFeature(FRAUD_USER, user, "fu_chargebacks_90d"),
            IncrementFeature(DEVICE, device, "d_chargebacks_90d"),
            AddToBlockList("instrument", card),
        ),
        Once("fx:fraud_confirmed", subject, 60_000),
    )


def test_once_change_applies_once_and_answers_the_first_record(redis_client, redis_server):
    pay = Change((CountPayment("t-1", "u1", "d1", 25.0, NOW),), Once("fraud:txn", "t-1", 60_000, b"first"))
    again = Change((CountPayment("t-1", "u1", "d1", 25.0, NOW + 5),), Once("fraud:txn", "t-1", 60_000, b"second"))
    assert run(redis_server, pay) == [None]
    assert run(redis_server, again, again) == [b"first", b"first"]
    assert redis_client.get(once_key("fraud:txn", "t-1")) == b"first"
    assert 0 < redis_client.pttl(once_key("fraud:txn", "t-1")) <= 60_000
    assert redis_client.zrange(velocity_key("user", "u1"), 0, -1, withscores=True) == [(b"t-1|25.0000", NOW)]
    assert redis_client.zcard(velocity_key("device", "d1")) == 1
    assert redis_client.zscore(user_devices_key("u1"), "d1") == NOW


def test_increment_starts_from_defaults_and_keeps_the_other_values(redis_client, redis_server):
    profile = FRAUD_USER.defaults[None, :].copy() + 3.0
    redis_client.set(feature_key(FRAUD_USER, "u1"), packed.encode(FRAUD_USER, profile, NOW)[0])
    run(redis_server, confirmed())
    got = packed.decode(FRAUD_USER, [redis_client.get(feature_key(FRAUD_USER, "u1"))], NOW)
    slot = FRAUD_USER.slot("fu_chargebacks_90d")
    expected = profile[0].copy()
    expected[slot] += 1
    assert np.array_equal(got.values[0], expected)  # one slot moved, the time and the rest kept
    device = packed.decode(DEVICE, [redis_client.get(feature_key(DEVICE, "d1"))], NOW)
    d_expected = DEVICE.defaults.copy()
    d_expected[DEVICE.slot("d_chargebacks_90d")] += 1
    assert np.array_equal(device.values[0], d_expected)  # no profile: the declared defaults + 1
    assert redis_client.sismember(block_key("instrument"), "c1")


def test_kind_half_applied_change_a_wrong_key_type_applies_nothing(redis_client, redis_server):
    """Redis does not roll a script back when it errors part-way: every key's type is checked
    before the first write, so a change fails whole and its retry applies it once."""
    redis_client.set(block_key("instrument"), b"not a set")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        run(redis_server, confirmed())
    assert not redis_client.exists(feature_key(FRAUD_USER, "u1"), feature_key(DEVICE, "d1"))
    assert not redis_client.exists(once_key("fx:fraud_confirmed", "t-1"))
    redis_client.delete(block_key("instrument"))
    assert run(redis_server, confirmed(), confirmed()) == [None, b"1"]
    assert chargebacks(redis_client, "u1") == FRAUD_USER.defaults[FRAUD_USER.slot("fu_chargebacks_90d")] + 1


def test_changes_without_once_key_are_idempotent_by_themselves(redis_client, redis_server):
    """Seen items: the time only moves forward, and the set keeps the newest ``max_seen``."""
    seen = [Change((AddSeen("u1", f"i{i}", NOW + i),)) for i in range(5)]
    run(redis_server, *seen, *seen, Change((AddSeen("u1", "i4", NOW - 1_000),)))
    assert redis_client.zrevrange(seen_key("u1"), 0, -1, withscores=True) == [
        (b"i4", NOW + 4), (b"i3", NOW + 3), (b"i2", NOW + 2)
    ]


def test_all_changes_of_a_call_go_in_one_round_trip_even_after_a_script_flush(redis_client, redis_server):
    redis_client.script_flush()  # a restarted Redis: the script is not cached
    redis_client.config_resetstat()
    run(redis_server, confirmed(subject="t-1"), confirmed(user="u2", subject="t-2"))
    once = FRAUD_USER.defaults[FRAUD_USER.slot("fu_chargebacks_90d")] + 1
    assert chargebacks(redis_client, "u1") == chargebacks(redis_client, "u2") == once  # not twice
    assert redis_client.exists(once_key("fx:fraud_confirmed", "t-1"), once_key("fx:fraud_confirmed", "t-2")) == 2
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_eval"]["calls"] == 2  # the NOSCRIPT answer, then every change by EVAL
    run(redis_server, confirmed(subject="t-3"))
    assert redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] == 3  # cached from then on


def test_kind_double_count_a_non_idempotent_write_needs_a_once_key():
    """A retry (or the NOSCRIPT re-send) of a change must never count twice: an increment
    without a once-key is refused when the change is made, not when it runs."""
    with pytest.raises(ValueError, match="once-key"):
        Change((IncrementFeature(FRAUD_USER, "u1", "fu_chargebacks_90d"),))
    with pytest.raises(ValueError, match="nothing"):
        Change(())
    with pytest.raises(ValueError, match="ttl_ms"):
        Once("fx:x", "t-1", 0)
    with pytest.raises(ValueError, match="finite"):
        IncrementFeature(FRAUD_USER, "u1", "fu_chargebacks_90d", float("nan"))
    with pytest.raises(ValueError):
        IncrementFeature(FRAUD_USER, "u1", "no_such_column")
    with pytest.raises(ValueError, match="unknown block list"):
        RedisStateWrites(None, 1)._command(Change((AddToBlockList("email", "x"),)))  # type: ignore[arg-type]


def test_a_malformed_value_is_replaced_by_defaults_before_the_increment(redis_client, redis_server):
    """A stored value of the wrong length is served as the declared defaults (INVALID);
    the effect starts from those defaults instead of being lost."""
    redis_client.set(feature_key(FRAUD_USER, "u1"), b"short")
    run(redis_server, confirmed())
    assert chargebacks(redis_client, "u1") == FRAUD_USER.defaults[FRAUD_USER.slot("fu_chargebacks_90d")] + 1


def test_block_list_entries_are_stored_canonical(redis_client, redis_server):
    run(redis_server, Change((AddToBlockList("ip", "::FFFF:198.51.100.7"),)))
    assert redis_client.smembers(block_key("ip")) == {b"198.51.100.7"}

"""The decision index: how long a decision stays attributable, and that an answer waits for it."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from decision_service.config import ServiceConfig
from decision_service.domain.outcomes import DecisionRef
from decision_service.domain.outcomes import attribution_window_s as _window
from decision_service.outcomes.decision_index import (
    DecisionIndex,
    DecisionIndexUnavailable,
    ttls_from_label_windows,
)
from decision_service.use_cases import OUTCOME_TYPES, USE_CASES
from offline.loop.training_set import FRAUD_LABEL, RECOMMENDATION_LABELS


def test_kind_attribution_window_covers_every_label_window_offline_counts():
    """The index TTL derives from the label windows, and they cover the offline defaults (the
    old 7-day constant was shorter than the 60-day fraud window)."""
    ttl = ttls_from_label_windows(ServiceConfig().decision_index_grace_s, OUTCOME_TYPES.values())
    for label in (*RECOMMENDATION_LABELS, FRAUD_LABEL):
        use_cases = {OUTCOME_TYPES[t].use_case for t in label.outcome_types}
        for use_case in use_cases:
            assert _window(OUTCOME_TYPES.values(), use_case) >= label.window_s, (label, use_case)
            assert ttl[use_case] >= label.window_s
    assert ttl["fraud"] >= 60 * 86_400
    assert set(ttl) == {u.name for u in USE_CASES}


def test_kind_attribution_window_a_ttl_shorter_than_the_label_window_is_refused():
    types = OUTCOME_TYPES.values()
    short = {u.name: _window(types, u.name) for u in USE_CASES} | {"fraud": 7 * 86_400}
    with pytest.raises(ValueError, match="fraud"):
        DecisionIndex(None, short, 10, outcome_types=types)  # type: ignore[arg-type]


def test_kind_attribution_window_a_written_entry_lives_for_its_use_case_window(redis_server):
    """A real key's TTL, and what it costs: MEMORY USAGE of one entry per use case."""

    async def body() -> dict[str, tuple[int, int]]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            types = OUTCOME_TYPES.values()
            index = DecisionIndex(client, ttls_from_label_windows(86_400, types), 10, outcome_types=types)
            refs = {
                "recommendation": DecisionRef("0" * 20 + "a" * 12, "recommendation", "u0001234", 1_700_000_000_000),
                "fraud": DecisionRef(
                    "0" * 20 + "b" * 12,
                    "fraud",
                    "fu000123",
                    1_700_000_000_000,
                    (("transaction_id", "t-0000000001"), ("device_id", "d00001"), ("payment_instrument_id", "")),
                ),
            }
            out = {}
            for use_case, ref in refs.items():
                await index.remember(ref)
                key = f"dec:{ref.decision_id}"
                out[use_case] = (await client.ttl(key), await client.memory_usage(key))
            ttl = ttls_from_label_windows(86_400, OUTCOME_TYPES.values())
            fresh = DecisionIndex(client, ttl, 10, outcome_types=OUTCOME_TYPES.values())  # no local tier
            found = await fresh.lookup([r.decision_id for r in refs.values()])
            assert found == {r.decision_id: DecisionRef(
                r.decision_id, r.use_case, r.user_id, r.decided_at_ms, tuple(e for e in r.entities if e[1])
            ) for r in refs.values()}
            return out
        finally:
            await client.aclose()

    out = asyncio.run(body())
    assert out["fraud"][0] >= 60 * 86_400
    assert out["recommendation"][0] >= 86_400
    assert all(0 < usage < 256 for _, usage in out.values()), out  # README: Collect, memory


def test_kind_unreadable_index_is_unavailable_not_unknown():
    """Redis down: a lookup the local tier cannot answer raises (UNAVAILABLE), never "unknown"."""
    from decision_service.devtools.local_redis import free_port

    async def body() -> None:
        client = aioredis.Redis.from_url(
            f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2
        )
        try:
            types = OUTCOME_TYPES.values()
            index = DecisionIndex(client, ttls_from_label_windows(0, types), 10, outcome_types=types)
            ref = DecisionRef("c" * 32, "recommendation", "u1", 0)
            with pytest.raises(DecisionIndexUnavailable):
                await index.remember(ref)  # the caller flags the answer
            assert (await index.lookup([ref.decision_id]))[ref.decision_id] == ref  # local tier
            with pytest.raises(DecisionIndexUnavailable):
                await index.lookup(["d" * 32])
            assert index.write_errors == 1 and index.lookup_errors == 1
        finally:
            await client.aclose()

    asyncio.run(body())

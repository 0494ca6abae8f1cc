"""The integration suite's core cases against a real local Redis Cluster (3 primaries, started
here): the same test functions as on one Redis, imported below, with this module's fixtures
serving the tiny worlds from the cluster (``redis+cluster://``, hash-tagged keys,
features/redis_store.KeyLayout). Plus what only a cluster has: readiness waits for every
primary and the recorded key layout; a change spanning slots applies once across a fault
between its two phases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis, LocalRedisCluster
from decision_service.features import redis_store
from decision_service.features.definitions import FRAUD_USER, ITEM, USER, USER_EMBEDDING
from decision_service.features.redis_cluster import ClusterMultiplexedRedis
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.store import Change, CountPayment, IncrementFeature, Once
from offline.features.fraud_features import FraudHistory
from offline.features.materialize import materialize
from offline.runs.bootstrap_fraud import materialize_fraud
from offline.simulation.fraud_world import FraudWorld
from offline.simulation.world import World
from tests.integration.conftest import ServedWorld, publish_fraud_version, start
from tests.integration.test_collect import (  # noqa: F401 - collected here, on the cluster
    test_a_click_removes_the_item_from_the_next_decision,
    test_kind_client_clock_does_not_move_the_seen_set,
    test_kind_cross_replica_attribution_an_outcome_right_after_the_answer,
    test_n_decisions_give_n_records_with_the_exact_scored_features,
)
from tests.integration.test_fraud import (  # noqa: F401
    FraudServed,
    test_block_listed_device_is_declined_with_the_rule_named,
    test_concurrent_duplicates_get_one_decision_and_count_once,
    test_each_action_is_reachable_with_rules_and_reasons,
    test_kind_every_spelling_of_a_block_listed_ip_is_declined,
    test_same_id_different_payload_is_already_exists,
    test_velocity_rises_across_calls_and_a_retry_is_not_counted_twice,
)
from tests.integration.test_fraud_collect import (  # noqa: F401
    test_a_chargeback_marks_user_device_and_card_for_the_next_check,
    test_kind_duplicate_outcome_effects_count_one_chargeback_per_payment,
)
from tests.integration.test_recommendations import (  # noqa: F401
    test_answers_never_contain_seen_or_out_of_stock_items,
    test_exclusions_and_category_allow_list_are_honoured,
    test_health_is_serving_and_reflection_lists_the_service,
    test_known_user_gets_a_ranked_personalised_list,
    test_unknown_user_gets_popular_fallback_flagged_degraded,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(3) as c:
        yield c


@pytest.fixture(scope="module")
def served_world(tiny_bootstrap, cluster) -> ServedWorld:
    world_dir, registry_root, version = tiny_bootstrap
    materialize(world_dir, cluster.url)
    return ServedWorld(World.load(world_dir), Path(registry_root), version.name, cluster, world_dir=Path(world_dir))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(served_world, loop_thread):
    running = start(loop_thread, served_world.registry_root, served_world.redis.url)
    yield running
    loop_thread.run(running.stop(1.0))


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    grpc.channel_ready_future(ch).result(timeout=10)
    _wait_serving(ch)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel) -> pb_grpc.DecisionServiceStub:
    return pb_grpc.DecisionServiceStub(channel)


@pytest.fixture
def logged_server(served_world, loop_thread, tmp_path):
    running = start(
        loop_thread, served_world.registry_root, served_world.redis.url, log_dir=str(tmp_path / "logs")
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    _wait_serving(channel)
    yield running, pb_grpc.DecisionServiceStub(channel), tmp_path / "logs"
    channel.close()
    loop_thread.run(running.stop(1.0))


@pytest.fixture(scope="module")
def fraud_world(tiny_bootstrap, tiny_fraud_bootstrap, served_world) -> FraudWorld:
    _, rec_registry, _ = tiny_bootstrap
    fraud_world_dir, _, fraud_version = tiny_fraud_bootstrap
    publish_fraud_version(rec_registry, fraud_version)
    world = FraudWorld.load(fraud_world_dir)
    materialize_fraud(FraudHistory(world), served_world.redis.url)
    return world


@pytest.fixture(scope="module")
def fraud_served(fraud_world, served_world, loop_thread) -> Iterator[FraudServed]:
    running = start(loop_thread, served_world.registry_root, served_world.redis.url, request_budget_ms=1000)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    _wait_serving(channel)
    try:
        yield FraudServed(fraud_world, served_world.registry_root, served_world.redis, pb_grpc.DecisionServiceStub(channel))  # type: ignore[arg-type]
    finally:
        channel.close()
        loop_thread.run(running.stop(0.5))


@pytest.fixture(scope="module")
def fraud_logged(fraud_world, served_world, loop_thread, tmp_path_factory) -> Iterator[tuple]:
    logs = tmp_path_factory.mktemp("cluster-fraud-logs")
    running = start(loop_thread, served_world.registry_root, served_world.redis.url, log_dir=str(logs))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    _wait_serving(channel)
    try:
        yield (fraud_world, pb_grpc.DecisionServiceStub(channel), running, served_world.redis, logs,
               served_world.registry_root)  # fmt: skip
    finally:
        channel.close()
        loop_thread.run(running.stop(0.5))


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status


def _wait_serving(channel: grpc.Channel, timeout_s: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while _health(channel) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "the server never reported SERVING on the cluster"
        time.sleep(0.05)


# --- what only a cluster has -------------------------------------------------------------------


def test_keys_of_one_entity_share_a_slot_and_items_spread_over_the_buckets(cluster, served_world):
    layout = redis_store.layout_of(cluster.client())
    assert layout.buckets == redis_store.BUCKETS_PER_PRIMARY * 3
    user = "u0000042"
    slots = {
        redis.crc.key_slot(k)
        for k in (
            layout.feature_key(USER, user),
            layout.feature_key(USER_EMBEDDING, user),
            layout.feature_key(FRAUD_USER, user),
            layout.seen_key(user),
            layout.velocity_key("user", user),
            layout.user_devices_key(user),
        )
    }
    assert len(slots) == 1  # a user's state is one slot: one round trip to one node
    items = [str(i) for i in served_world.world.item_ids[:251]]
    item_slots = {redis.crc.key_slot(k) for k in layout.feature_keys(ITEM, items)}
    assert len(item_slots) == layout.buckets  # 251 items over every bucket, never one per key
    # the standalone names are untouched (a standalone store keeps its data across this release)
    assert redis_store.STANDALONE.feature_key(ITEM, "i1") == redis_store.feature_key(ITEM, "i1") == b"fv:" + (
        f"{ITEM.name}:{ITEM.fingerprint}:i1".encode()
    )


def test_reads_on_the_cluster_equal_reads_on_one_redis(served_world, cluster):
    """The same materialized state read through both stores' read halves: equal values."""
    world = served_world.world
    users = [str(u) for u in world.user_ids[:40]]
    items = [str(i) for i in world.item_ids[:251]]
    with LocalRedis() as single:
        materialize(served_world.world_dir, single.url)

        async def read(client, layout):  # type: ignore[no-untyped-def]
            store = redis_store.RedisFeatureReads(client, 200, 100, layout)
            groups = await store.read_groups([(USER, users[:1]), (ITEM, items)])
            states = [await store.read_user_state(USER_EMBEDDING, u) for u in users]
            await client.aclose()
            return groups, states

        on_one = asyncio.run(read(MultiplexedRedis(single.url, timeout_s=2.0), redis_store.STANDALONE))
        many = ClusterMultiplexedRedis.from_url(cluster.url, timeout_s=2.0)
        on_cluster = asyncio.run(read(many, redis_store.layout_of(cluster.client())))
    for a, b in zip(on_one[0], on_cluster[0], strict=True):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.status, b.status)
    assert on_one[0][1].n_present == 251
    for (emb_a, seen_a), (emb_b, seen_b) in zip(on_one[1], on_cluster[1], strict=True):
        np.testing.assert_array_equal(emb_a.values, emb_b.values)
        assert seen_a == seen_b
    assert sum(len(seen) for _, seen in on_one[1]) > 0


def _writes(cluster: LocalRedisCluster) -> tuple[ClusterMultiplexedRedis, redis_store.RedisStateWrites]:
    client = ClusterMultiplexedRedis.from_url(cluster.url, timeout_s=2.0)
    return client, redis_store.RedisStateWrites(client, 200, _layout(cluster))


def _layout(cluster: LocalRedisCluster) -> redis_store.KeyLayout:
    """The cluster's layout, recorded here when no test materialized it yet (order-free tests)."""
    return redis_store.layout_of(cluster.client(), create=True)


def test_kind_a_change_across_slots_applies_once_across_a_fault_between_its_phases(cluster, monkeypatch):
    """A payment's commit touches the user's, the device's and the record's slots: the claim,
    the writes per slot, then the record. A fault after the writes (the record lost) and a
    retry count the payment once; a later duplicate returns the record and counts nothing."""
    layout = _layout(cluster)
    user, device, txn = "u-phase-1", "d-phase-1", "t-phase-1"
    assert len({redis.crc.key_slot(k) for k in (
        layout.velocity_key("user", user), layout.velocity_key("device", device),
        redis_store.record_key(txn))}) == 3  # fmt: skip
    change = Change(
        (CountPayment(txn, user, device, 12.5, 1_700_000_000_000),),
        Once(redis_store.PAYMENT_RECORD, txn, 60_000, b"the-record"),
    )

    async def run() -> tuple:  # type: ignore[type-arg]
        client, writes = _writes(cluster)
        calls = {"n": 0}
        real = writes._run

        async def fault_after_phase_one(scripts, *source):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 3:  # the record's round trip (after the claim's and the writes')
                raise redis.exceptions.ConnectionError("injected: lost after the writes")
            return await real(scripts, *source)

        monkeypatch.setattr(writes, "_run", fault_after_phase_one)
        with pytest.raises(redis.exceptions.ConnectionError):
            await writes.write(change)
        monkeypatch.setattr(writes, "_run", real)
        first = await writes.write(change)  # the client's retry
        again = await writes.write(change)  # a duplicate after it completed
        await client.aclose()
        return first, again

    first, again = asyncio.run(run())
    c = cluster.client()
    assert first is None and again == b"the-record"
    assert c.zcard(layout.velocity_key("user", user)) == 1
    assert c.zcard(layout.velocity_key("device", device)) == 1
    assert c.zscore(layout.user_devices_key(user), device) is not None
    assert c.get(redis_store.record_key(txn)) == b"the-record"


def test_kind_a_non_idempotent_write_in_another_slot_applies_once(cluster):
    """An increment whose key is not in its once-key's slot claims a marker in its own slot:
    three deliveries of the same effect add one."""
    layout = _layout(cluster)
    user = "u-incr-1"
    change = Change(
        (IncrementFeature(FRAUD_USER, user, "fu_chargebacks_90d", 1.0),),
        Once("fx:chargeback", "decision-incr-1", 60_000),
    )
    assert redis.crc.key_slot(layout.feature_key(FRAUD_USER, user)) != redis.crc.key_slot(
        redis_store.once_key("fx:chargeback", "decision-incr-1")
    )

    async def run() -> list:  # type: ignore[type-arg]
        client, writes = _writes(cluster)
        out = [await writes.write(change) for _ in range(3)]
        out.append(await writes.write_many([change, change]))
        await client.aclose()
        return out

    asyncio.run(run())
    from decision_service.features import packed

    value = packed.decode(FRAUD_USER, [cluster.client().get(layout.feature_key(FRAUD_USER, user))])
    assert float(value.values[0, FRAUD_USER.slot("fu_chargebacks_90d")]) == 1.0


def test_wrongtype_in_one_slot_writes_nothing_there_and_sets_no_record(cluster):
    layout = _layout(cluster)
    c = cluster.client()
    user, device, txn = "u-wrong-1", "d-wrong-1", "t-wrong-1"
    c.set(layout.velocity_key("device", device), b"not a sorted set")
    change = Change(
        (CountPayment(txn, user, device, 3.0, 1_700_000_000_000),),
        Once(redis_store.PAYMENT_RECORD, txn, 60_000, b"rec"),
    )

    async def run() -> None:
        client, writes = _writes(cluster)
        try:
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await writes.write(change)
        finally:
            await client.aclose()

    asyncio.run(run())
    assert c.get(redis_store.record_key(txn)) is None  # the claim released: a retry after the fix applies it
    assert c.get(layout.velocity_key("device", device)) == b"not a sorted set"


def test_readiness_waits_for_the_key_layout_and_names_the_cause(tiny_bootstrap, loop_thread, caplog):
    """A cluster nothing was materialized into: NOT_SERVING (every read would miss), with the
    cause logged; SERVING once a layout is recorded."""
    _, registry_root, _ = tiny_bootstrap
    with LocalRedisCluster(3) as empty:
        running = start(loop_thread, Path(registry_root), empty.url)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            import time

            time.sleep(1.5)
            assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert "no key layout" in caplog.text
            redis_store.layout_of(empty.client(), create=True)
            _wait_serving(channel)
        finally:
            channel.close()
            loop_thread.run(running.stop(0.5))


def test_a_cluster_url_that_names_no_node_is_a_config_error():
    from decision_service.config import ConfigError, ServiceConfig

    for url, words in (
        ("redis+cluster://", "names no node"),
        ("redis+cluster://127.0.0.1", "not host:port"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
    ):
        with pytest.raises(ConfigError, match=words):
            ServiceConfig(redis_url=url).validate()
    ServiceConfig(redis_url="redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001").validate()


def test_kill_a_primary_mid_load_answers_degrade_then_recover_and_nothing_wrong_is_served(
    tiny_bootstrap, loop_thread
):
    """3 primaries with a replica each; a primary is SIGKILLed while four clients ask for
    recommendations. Every call answers (no error status); an answer is either whole (no seen
    item of the user, no duplicate, known items) or flagged degraded with a store reason;
    after the replica is promoted the answers are whole again, and the client counted the
    failed node."""
    import threading
    import time

    from decision_service._generated.decision.v1 import decision_service_pb2 as pb

    world_dir, registry_root, _ = tiny_bootstrap
    world = World.load(world_dir)
    known_items = {str(i) for i in world.item_ids}
    with LocalRedisCluster(3, replicas=1, node_timeout_ms=1000) as c:
        materialize(world_dir, c.url)
        seen = {}
        client = c.client()
        layout = redis_store.layout_of(client)
        users = [  # users the store knows (an unknown user is degraded whatever the cluster does)
            u for u in (str(u) for u in world.user_ids[:250]) if client.exists(layout.feature_key(USER_EMBEDDING, u))
        ]
        for u in users:
            seen[u] = {s.decode() for s in client.zrange(layout.seen_key(u), 0, -1)}
        running = start(loop_thread, Path(registry_root), c.url, redis_timeout_ms=100, request_budget_ms=300)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        _wait_serving(channel)
        stub = pb_grpc.DecisionServiceStub(channel)
        answers: list[tuple[float, str, list[str], list[str]]] = []
        errors: list[str] = []
        stop = threading.Event()

        def load(k: int) -> None:
            n = k
            while not stop.is_set():
                user = users[n % len(users)]
                n += 4
                try:
                    r = stub.GetDecision(
                        pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=10)),
                        timeout=2,
                    )
                except grpc.RpcError as exc:
                    errors.append(f"{exc.code()}: {exc.details()}")
                    continue
                reasons = [f"{d.stage}:{d.reason}" for d in r.degraded]
                answers.append((time.monotonic(), user, [i.item_id for i in r.recommendation.items], reasons))

        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        try:
            for t in threads:
                t.start()
            time.sleep(2.0)
            killed_at = time.monotonic()
            victim = c.primary_ports()[0]
            c.kill(victim)
            deadline = time.monotonic() + 20
            while victim in c.primary_ports() or len(c.primary_ports()) < 3:  # the replica takes over
                assert time.monotonic() < deadline, "no replica was promoted"
                time.sleep(0.1)
            promoted_at = time.monotonic()
            time.sleep(4.0)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        node_errors = dict(running.redis_reads.node_errors)
        channel.close()
        loop_thread.run(running.stop(0.5))
    assert not errors, errors[:5]
    before = [a for a in answers if a[0] < killed_at]
    during = [a for a in answers if killed_at <= a[0] < promoted_at + 1.0]
    after = [a for a in answers if a[0] >= promoted_at + 1.0]
    assert before and during and after, (len(before), len(during), len(after))
    for _, user, items, reasons in answers:
        assert len(items) == len(set(items)) and set(items) <= known_items
        if not reasons:  # a whole answer: personalised, nothing the user has seen
            assert not set(items) & seen[user], (user, items)
        if reasons:  # degraded: by the store (its consequences may be flagged beside it)
            causes = {r.split(":", 1)[1] for r in reasons}
            assert causes & {"store_unavailable", "store_timeout", "deadline_exceeded"}, reasons
            assert causes <= {"store_unavailable", "store_timeout", "deadline_exceeded",
                              "features_unavailable", "short_list", "unknown_user"}, reasons  # fmt: skip
    assert not any(r for *_, r in before)
    assert any(r for *_, r in during), "killing a primary degraded nothing: the test did not reach it"
    late = after[len(after) // 2 :]
    assert not any(r for *_, r in late), [r for *_, r in late if r][:5]
    assert sum(node_errors.values()) > 0 and f"127.0.0.1:{victim}" in node_errors


def test_offline_jobs_check_every_primary_and_refuse_an_unreadable_layout(cluster):
    """The CLI's preflight (offline/cli._check_redis) on a redis+cluster:// URL: every primary
    must answer; a layout record this release cannot read is refused before anything is written."""
    from decision_service import project as projects
    from offline.cli import _check_redis

    _check_redis(cluster.url)  # answers, layout readable (or none yet)
    with LocalRedisCluster(3) as other:
        other.client().set(redis_store.LAYOUT_KEY, b"cluster:zero")
        with pytest.raises(projects.ProjectError, match="unreadable key layout"):
            _check_redis(other.url)
        dead = other.primary_ports()[0]
        other.kill(dead)
        with pytest.raises(projects.ProjectError, match="does not answer"):
            _check_redis(other.url.replace("redis+cluster://", f"redis+cluster://127.0.0.1:{dead},", 1))


def _payment(txn: str, user: str, device: str, amount: float, record: bytes) -> Change:
    return Change(
        (CountPayment(txn, user, device, amount, 1_700_000_000_000),),
        Once(redis_store.PAYMENT_RECORD, txn, 60_000, record),
    )


@pytest.mark.parametrize("concurrent", [False, True])
def test_kind_a_twin_with_another_payload_applies_nothing_on_a_cluster(cluster, concurrent):
    """The same transaction id with another amount and device (a client bug, or an attack),
    one after the other or at the same time: exactly one payload is counted, the other gets
    its record back, as on one Redis (found by review: the first two-phase write applied the
    twin's writes before it found the once-key)."""
    layout = _layout(cluster)
    txn, user = f"t-twin-{concurrent}", f"u-twin-{concurrent}"
    a = _payment(txn, user, f"d-a-{concurrent}", 10.0, b"record-A")
    b = _payment(txn, user, f"d-b-{concurrent}", 99.0, b"record-B")

    async def run() -> list:  # type: ignore[type-arg]
        client, writes = _writes(cluster)
        try:
            if concurrent:
                return list(await asyncio.gather(writes.write(a), writes.write(b)))
            return [await writes.write(a), await writes.write(b)]
        finally:
            await client.aclose()

    first, second = asyncio.run(run())
    c = cluster.client()
    winner = "a" if first is None else "b"
    assert {first, second} == {None, b"record-A" if winner == "a" else b"record-B"}
    assert c.get(redis_store.record_key(txn)) == (b"record-A" if winner == "a" else b"record-B")
    assert c.zcard(layout.velocity_key("user", user)) == 1
    devices = {d.decode() for d in c.zrange(layout.user_devices_key(user), 0, -1)}
    assert devices == {f"d-{winner}-{concurrent}"}
    loser = "b" if winner == "a" else "a"
    assert c.zcard(layout.velocity_key("device", f"d-{loser}-{concurrent}")) == 0


def test_a_claim_in_flight_is_no_record_to_readers_and_makes_a_twin_wait_then_time_out(cluster):
    """A once-key still claimed by another attempt: the read path sees no record (the twin
    decides), and its commit waits for the record, then gives up with a retryable timeout
    (never applying its writes alongside)."""
    layout = _layout(cluster)
    txn, user = "t-inflight-1", "u-inflight-1"
    c = cluster.client()
    c.set(redis_store.record_key(txn), redis_store.CLAIM_PREFIX + b"someone-else", px=5_000)

    async def run() -> None:
        client, writes = _writes(cluster)
        try:
            reads = redis_store.RedisFeatureReads(client, 200, 100, layout)
            context = await reads.read_payment_context(txn, user, "m1", "", "", "", 1_700_000_000_000)
            assert context.previous_record is None
            with pytest.raises(redis.exceptions.TimeoutError, match="in flight"):
                await writes.write(_payment(txn, user, "d-1", 5.0, b"rec"))
        finally:
            await client.aclose()

    asyncio.run(run())
    assert c.zcard(layout.velocity_key("user", user)) == 0


def test_kind_credentials_never_reach_a_message_and_the_offline_writer_authenticates():
    """A cluster with a password: materialization (redis-py's RedisCluster) logs in with the
    URL's credentials, the server's client too; an error message never carries the password
    (found by review: both were wrong)."""
    from decision_service.config import ConfigError, ServiceConfig

    with LocalRedisCluster(3, password="s3cret-pw") as secured:
        assert "s3cret-pw" in secured.url
        client = redis_store.connect(secured.url)
        bulk = redis_store.RedisBulkWrites(client)  # records the layout: authenticated
        bulk.add_to_block_list("device", "d-pw-1")
        assert client.sismember(redis_store.block_key("device"), "d-pw-1")

        async def read() -> None:
            mux = ClusterMultiplexedRedis.from_url(secured.url, timeout_s=2.0)
            try:
                assert await mux.execute("SISMEMBER", redis_store.block_key("device"), "d-pw-1") == 1
            finally:
                await mux.aclose()

        asyncio.run(read())
        dead = secured.url.split("@", 1)[0] + "@127.0.0.1:1/0"

        async def unreachable() -> str:
            mux = ClusterMultiplexedRedis.from_url(dead, timeout_s=0.5)
            try:
                await mux.execute("GET", "x")
            except redis.exceptions.ConnectionError as exc:
                return str(exc)
            finally:
                await mux.aclose()
            return ""

        message = asyncio.run(unreachable())
        assert message and "s3cret-pw" not in message and "****" in message
    with pytest.raises(ConfigError) as err:
        ServiceConfig(redis_url="redis+cluster://:top/secret@127.0.0.1:0/0").validate()
    assert "top/secret" not in str(err.value)


def test_kind_a_cancelled_refresh_does_not_stall_later_ones(cluster):
    """A slot-table reload whose waiter is cancelled (a request deadline) must not leave a
    finished task behind that makes every later refresh a no-op (found by review)."""

    async def run() -> int:
        mux = ClusterMultiplexedRedis.from_url(cluster.url, timeout_s=2.0)
        try:
            await mux.refresh()
            waiter = asyncio.ensure_future(mux.refresh())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await asyncio.sleep(0.3)  # the shielded load finishes on its own
            before = mux.refreshes
            await mux.refresh()
            return mux.refreshes - before
        finally:
            await mux.aclose()

    assert asyncio.run(run()) == 1


def test_kind_a_dead_primary_does_not_start_a_slot_table_reload_per_request():
    """The primary owning slot 0 killed (no replica): reads of keys on the other primaries
    keep being answered and reloads stay within one per REFRESH_INTERVAL_S (found by review:
    "slot 0 has no owner" was read as "no table yet": one CLUSTER SHARDS per request)."""
    import time

    from decision_service.features import redis_cluster

    with LocalRedisCluster(3, node_timeout_ms=500, full_coverage=False) as c:
        ranges = redis.Redis(port=c.nodes[0].port).execute_command("CLUSTER", "SLOTS")
        victim = next(int(r[2][1]) for r in ranges if int(r[0]) == 0)
        theirs = [(int(r[0]), int(r[1])) for r in ranges if int(r[2][1]) != victim]
        keys = [
            k for k in (f"k{n}" for n in range(400))
            if any(a <= redis.crc.key_slot(k.encode()) <= b for a, b in theirs)
        ][:20]  # fmt: skip
        writer = c.client()
        for k in keys:
            writer.set(k, b"v")
        writer.close()
        c.kill(victim)
        time.sleep(1.5)  # the others mark it failed: slot 0 has no owner now

        async def run() -> tuple[int, int, float]:
            mux = ClusterMultiplexedRedis.from_url(c.url, timeout_s=0.5)
            await mux.execute("MGET", *keys)  # the first table load
            before, ok = mux.refreshes, 0
            loop = asyncio.get_running_loop()
            start = loop.time()
            for _ in range(200):
                with contextlib.suppress(redis.exceptions.RedisError):
                    ok += (await mux.execute("MGET", *keys)) == [b"v"] * len(keys)
                await asyncio.sleep(0.005)
            elapsed = loop.time() - start
            await mux.aclose()
            return ok, mux.refreshes - before, elapsed

        ok, loads, elapsed = asyncio.run(run())
    assert ok == 200  # the other primaries' keys are answered throughout
    assert loads <= elapsed / redis_cluster.REFRESH_INTERVAL_S + 2, (loads, elapsed)

"""Kind: memory per client is unbounded. A server bounds the calls it handles at once
(max_concurrent_rpcs) and the size of one message (max_message_bytes): beyond, callers get
RESOURCE_EXHAUSTED instead of the server holding every request body they send."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from tests.integration.conftest import start


def test_kind_unbounded_concurrency_calls_beyond_the_bound_get_resource_exhausted(served_world, loop_thread):
    running = start(loop_thread, served_world.registry_root, served_world.redis.url, max_concurrent_rpcs=2)
    users = [str(u) for u in served_world.world.user_ids[:64]]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            futures = [
                stub.GetDecision.future(
                    pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=u, num_items=5)),
                    timeout=10,
                )
                for u in users
            ]
            codes = []
            for f in futures:
                codes.append(f.code())
                if f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "limit" in f.details().lower()
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
        assert grpc.StatusCode.OK in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
        # the bound is on calls at once, not on calls: one at a time all pass
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            with ThreadPoolExecutor(1) as pool:
                replies = list(pool.map(lambda u: stub.GetDecision(
                    pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=u, num_items=5)),
                    timeout=10), users[:10]))
        assert all(r.recommendation.items for r in replies)
    finally:
        loop_thread.run(running.stop(0.5))


def test_kind_unbounded_message_default_refuses_a_multi_megabyte_request(served_world, loop_thread):
    """The default max_message_bytes (1 MiB) refuses the 3.9 MB bodies of the report."""
    running = start(loop_thread, served_world.registry_root, served_world.redis.url)
    try:
        big = pb.GetDecisionRequest(
            recommendation=pb.RecommendationRequest(user_id="u1", num_items=3, exclude_item_ids=["x" * 200] * 20_000)
        )
        assert big.ByteSize() > 3_900_000
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            try:
                pb_grpc.DecisionServiceStub(channel).GetDecision(big, timeout=10)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            else:
                raise AssertionError("a 4 MB request was accepted")
    finally:
        loop_thread.run(running.stop(0.5))

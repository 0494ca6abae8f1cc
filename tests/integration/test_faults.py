"""Redis faults seen through the real gRPC server: degraded answers within deadlines."""

from __future__ import annotations

import time

import grpc

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import free_port
from tests.integration.conftest import start


def ask(stub, timeout):
    request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id="u0000001", num_items=5))
    return stub.GetDecision(request, timeout=timeout)


def test_redis_down_gives_degraded_answers_not_errors(served_world, loop_thread):
    running = start(loop_thread, served_world.registry_root, f"redis://127.0.0.1:{free_port()}/0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for _ in range(3):
                start_t = time.perf_counter()
                reply = ask(stub, timeout=2.0)
                assert time.perf_counter() - start_t < 1.5
                reasons = {(d.stage, d.reason) for d in reply.degraded}
                assert ("user_context", "store_unavailable") in reasons
                assert ("features", "store_unavailable") in reasons
                assert len(reply.recommendation.items) == 5
    finally:
        loop_thread.run(running.stop(0.5))


def test_paused_redis_answers_within_the_client_deadline(stub, served_world):
    client = served_world.redis.client()
    client.execute_command("CLIENT", "PAUSE", 2000, "ALL")
    try:
        start_t = time.perf_counter()
        reply = ask(stub, timeout=0.3)  # shorter than the server budget: the client's wins
        elapsed = time.perf_counter() - start_t
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
    assert elapsed < 0.3
    reasons = {(d.stage, d.reason) for d in reply.degraded}
    # Redis socket timeout (50 ms) or the request budget, whichever fires first.
    assert reasons & {("user_context", "store_timeout"), ("user_context", "deadline_exceeded")}
    assert len(reply.recommendation.items) == 5

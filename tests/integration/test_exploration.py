"""Exploration over gRPC: reserved slots are served with their propensity and source."""

from __future__ import annotations

import grpc
import numpy as np

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from tests.integration.conftest import start


def test_explored_slots_carry_their_propensity(served_world, loop_thread):
    running = start(
        loop_thread,
        served_world.registry_root,
        served_world.redis.url,
        exploration_share=0.3,
        model_reload_interval_s=0,
    )
    try:
        counts = np.bincount(served_world.world.event_user, minlength=served_world.world.n_users)
        user = str(served_world.world.user_ids[int(np.argmax(counts))])
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = pb_grpc.DecisionServiceStub(channel).GetDecision(
                pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=10)),
                timeout=5,
            )
        items = reply.recommendation.items
        assert [i.propensity for i in items[:7]] == [1.0] * 7
        assert all(0 < i.propensity < 0.2 for i in items[7:])
        assert [i.source for i in items[7:]] == [pb.CANDIDATE_SOURCE_EXPLORATION] * 3
    finally:
        loop_thread.run(running.stop(1.0))

"""``serve --workers N``: N processes answer on one port; SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pyarrow.parquet as pq

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import free_port
from decision_service.devtools.server_process import wait_serving
from decision_service.server.servicer import WORKER_TRAILER


def serve(served_world, log_dir: Path, *extra: str, registry: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "decision_service.server", "serve", *extra,
         "--registry-dir", str(registry or served_world.registry_root),
         "--redis-url", served_world.redis.url],
        env={**os.environ, "DS_LOG_DIR": str(log_dir), "DS_LOG_LEVEL": "WARNING",
             "DS_MODEL_RELOAD_INTERVAL_S": "0"},
    )


def answering_worker(port: int, user: str) -> tuple[str, str]:
    """(decision id, "w<id>:<pid>") from a fresh channel, so connections spread over workers."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        reply, call = pb_grpc.DecisionServiceStub(channel).GetDecision.with_call(
            pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=5)),
            metadata=[("x-debug-timings", "1")],
            timeout=10,
        )
    worker = dict(call.trailing_metadata())[WORKER_TRAILER]
    return reply.decision_id, worker


def test_two_workers_share_one_port_and_stop_cleanly(served_world, tmp_path):
    port = free_port()
    process = serve(served_world, tmp_path, "--workers", "2", "--port", str(port))
    try:
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{port}"), process)
        users = [str(u) for u in served_world.world.user_ids[:200]]
        answers = []
        for user in users:
            answers.append(answering_worker(port, user))
            if len({w for _, w in answers}) == 2 and len(answers) >= 10:
                break
        workers = {w for _, w in answers}
        pids = {int(w.split(":")[1]) for w in workers}
        assert {w.split(":")[0] for w in workers} == {"w0", "w1"}
        assert len(pids) == 2 and process.pid not in pids
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    # every answer was flushed to the decision log by the worker that gave it
    logged: list[str] = []
    for path in tmp_path.rglob("*.parquet"):
        if "decisions" in path.parts and not path.name.startswith("."):
            logged += pq.read_table(path, columns=["decision_id"]).column("decision_id").to_pylist()
    assert sorted(logged) == sorted(d for d, _ in answers)
    for pid in pids:  # the workers are gone too
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker {pid} outlived the supervisor")


def test_a_worker_that_cannot_start_fails_the_whole_start(served_world, tmp_path):
    process = serve(served_world, tmp_path, "--workers", "2", "--port", "0", registry=tmp_path / "empty")
    assert process.wait(timeout=60) == 1

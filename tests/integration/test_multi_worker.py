"""``serve --workers N``: N processes answer on one port; SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pyarrow.parquet as pq

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import free_port
from decision_service.devtools.server_process import wait_serving
from decision_service.server.servicer import WORKER_TRAILER


def serve(
    served_world, log_dir: Path, *extra: str, registry: Path | None = None, stderr=None, **env: str
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "decision_service.server", "serve", *extra,
         "--registry-dir", str(registry or served_world.registry_root),
         "--redis-url", served_world.redis.url],
        env={**os.environ, "DS_LOG_DIR": str(log_dir), "DS_LOG_LEVEL": "WARNING",
             "DS_MODEL_RELOAD_INTERVAL_S": "0", **env},
        stderr=stderr, text=True,
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


def workers_of(port: int, wanted: int, users: list[str]) -> set[str]:
    """The "w<id>:<pid>" labels answering on ``port``, from fresh channels, until ``wanted``."""
    seen: set[str] = set()
    for user in users:
        seen.add(answering_worker(port, user)[1])
        if len(seen) >= wanted:
            break
    return seen


def test_kind_port_in_use_a_second_deployment_exits_address_already_in_use(served_world, tmp_path):
    """Two `serve --workers 2` on one port used to share it (SO_REUSEPORT); a single-process
    server must refuse it too. The first keeps serving with its own workers only."""
    port = free_port()
    first = serve(served_world, tmp_path / "a", "--workers", "2", "--port", str(port))
    try:
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{port}"), first)
        users = [str(u) for u in served_world.world.user_ids[:200]]
        before = workers_of(port, 2, users)
        for workers in ("2", "1"):
            second = serve(served_world, tmp_path / f"b{workers}", "--workers", workers, "--port", str(port),
                           stderr=subprocess.PIPE)
            try:
                _, err = second.communicate(timeout=120)
            finally:
                second.kill()
            assert second.returncode not in (0, None), f"--workers {workers} started on a port in use"
            assert "address already in use" in err, err[-2000:]
        assert first.poll() is None
        after = set()
        for user in users:  # every connection still lands on the first deployment's workers
            after.add(answering_worker(port, user)[1])
        assert after == before, (before, after)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()


def test_kind_load_stays_on_one_worker_connections_are_rebalanced_by_max_age(served_world, tmp_path):
    """One long-lived client channel reaches a worker the supervisor restarted, within a
    bounded time: connections are closed (GOAWAY) after max_connection_age_s and reconnect."""
    port = free_port()
    process = serve(
        served_world, tmp_path, "--workers", "2", "--port", str(port),
        DS_MAX_CONNECTION_AGE_S="0.5", DS_MAX_CONNECTION_AGE_GRACE_S="1",
    )
    users = [str(u) for u in served_world.world.user_ids[:200]]
    try:
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{port}"), process)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = pb_grpc.DecisionServiceStub(ch)

            def via_channel(user: str) -> str:
                _, call = stub.GetDecision.with_call(
                    pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=5)),
                    metadata=[("x-debug-timings", "1")], timeout=10,
                )
                return dict(call.trailing_metadata())[WORKER_TRAILER]

            current = via_channel(users[0])
            other = next(w for w in workers_of(port, 2, users) if w != current)
            os.kill(int(other.split(":")[1]), signal.SIGKILL)  # the supervisor restarts it
            restarted: set[str] = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not restarted:
                try:  # a fresh connection may still meet the killed worker's socket: reset
                    w = answering_worker(port, users[0])[1]
                except grpc.RpcError:
                    continue
                if w.split(":")[0] == other.split(":")[0] and w != other:
                    restarted.add(w)
            assert restarted, "the supervisor did not restart the killed worker"
            reached = set()
            deadline = time.monotonic() + 20
            i = 0
            while not reached & restarted and time.monotonic() < deadline:
                reached.add(via_channel(users[i % len(users)]))
                i += 1
                time.sleep(0.02)
            assert reached & restarted, f"one channel stayed on {reached} for 20 s"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, 1)  # a worker was SIGKILLed: exit 1 is allowed
    finally:
        process.kill()

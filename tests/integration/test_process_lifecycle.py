"""The server as a real process: SIGTERM flushes every record; SIGKILL leaves only complete files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.server_process import ServerProcess, wait_serving


def spawn(served_world, log_dir: Path, **env: str) -> tuple[subprocess.Popen, int]:
    server = ServerProcess(
        served_world.registry_root,
        served_world.redis.url,
        env={"DS_LOG_DIR": str(log_dir), "DS_LOG_LEVEL": "WARNING", **env},
    ).start(wait=False)
    assert server.process is not None
    return server.process, server.port


def probe(port: int) -> int:
    """Runs the installed entry point exactly as the Dockerfile's HEALTHCHECK does."""
    entry = Path(sys.executable).parent / "decision-service"
    return subprocess.run(
        [str(entry), "health", "--address", f"127.0.0.1:{port}", "--timeout", "2"],
        capture_output=True, timeout=30,
    ).returncode


def send(port: int, users: list[str]) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        ids = []
        for user in users:
            request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=5))
            ids.append(stub.GetDecision(request, timeout=5).decision_id)
        return ids


def visible_files(log_dir: Path) -> list[Path]:
    return [p for p in log_dir.rglob("*.parquet") if not p.name.startswith(".")]


def logged_ids(log_dir: Path) -> list[str]:
    ids: list[str] = []
    for path in visible_files(log_dir):
        ids += pq.read_table(path, columns=["decision_id"]).column("decision_id").to_pylist()
    return ids


def users(served_world, n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [str(u) for u in rng.choice(served_world.world.user_ids, n)]


def test_sigterm_answers_then_flushes_every_record(served_world, tmp_path):
    process, port = spawn(served_world, tmp_path, DS_LOG_FLUSH_INTERVAL_S="3600")
    try:
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{port}"), process)
        assert probe(port) == 0                      # the container HEALTHCHECK command
        sent = send(port, users(served_world, 40))
        assert visible_files(tmp_path) == []        # nothing flushed yet (interval 1 h)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert sorted(logged_ids(tmp_path / "decisions")) == sorted(sent)
    assert probe(port) == 1                          # gone: unhealthy


def test_sigkill_leaves_only_complete_files_and_loses_only_the_unflushed_buffer(served_world, tmp_path):
    process, port = spawn(
        served_world, tmp_path, DS_LOG_FLUSH_INTERVAL_S="0.2", DS_LOG_MAX_ROWS_PER_FILE="10"
    )
    try:
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{port}"), process)
        flushed = send(port, users(served_world, 35))
        deadline = time.monotonic() + 10
        while len(logged_ids(tmp_path / "decisions")) < len(flushed):
            assert time.monotonic() < deadline, "interval flushes never caught up"
            time.sleep(0.05)
        in_flight = send(port, users(served_world, 15))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    logged = logged_ids(tmp_path / "decisions")        # every visible file reads completely
    assert len(logged) == len(set(logged))
    assert set(flushed) <= set(logged)                   # flushed before the kill: all there
    assert set(logged) <= set(flushed) | set(in_flight)  # so what is lost is the unflushed tail


@pytest.mark.parametrize("workers", ["1", "2"])
def test_kind_sigterm_under_load_answers_ok_or_unavailable_never_cancelled(served_world, tmp_path, workers):
    """Calls the server took before SIGTERM finish; later ones get UNAVAILABLE (retryable).
    Before the drain (server/drain.py) calls queued in the transport were CANCELLED."""
    import threading

    process, port = spawn(served_world, tmp_path, DS_WORKERS=workers)
    statuses: list[tuple[float, str]] = []
    stop = threading.Event()
    user_ids = users(served_world, 64)

    def load(n: int) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            i = n
            while not stop.is_set():
                request = pb.GetDecisionRequest(
                    recommendation=pb.RecommendationRequest(user_id=user_ids[i % len(user_ids)], num_items=5)
                )
                started = time.monotonic()
                try:
                    stub.GetDecision(request, timeout=10)
                    statuses.append((started, "OK"))
                except grpc.RpcError as err:
                    statuses.append((started, err.code().name))
                    time.sleep(0.01)  # a client's retry backoff
                i += 1

    try:
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{port}"), process)
        threads = [threading.Thread(target=load, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(statuses) < 300:
            assert time.monotonic() < deadline, "load did not get going"
            time.sleep(0.01)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        time.sleep(0.3)  # calls after the exit: refused connections
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        process.kill()
    codes = {code for _, code in statuses}
    assert "CANCELLED" not in codes, f"{sum(c == 'CANCELLED' for _, c in statuses)} CANCELLED of {len(statuses)}"
    assert codes <= {"OK", "UNAVAILABLE"}, codes
    assert sum(c == "OK" for _, c in statuses) >= 300
    assert any(code == "UNAVAILABLE" and started > signalled for started, code in statuses)  # load went on


def test_kind_a_lost_port_race_picks_new_ports_and_starts(served_world, tmp_path):
    """Ports a ServerProcess picks are free when picked, not when the server binds them: if
    another process takes one in between, start() picks new ones and tries again."""
    import socket

    server = ServerProcess(
        served_world.registry_root,
        served_world.redis.url,
        env={"DS_LOG_DIR": str(tmp_path)},
        metrics_port=True,
    )
    taken = server.port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as thief:  # the race, lost on purpose
        thief.bind(("127.0.0.1", taken))
        thief.listen()
        server.start()
        try:
            assert server.port != taken and server.metrics_port is not None
            with grpc.insecure_channel(server.address) as channel:
                wait_serving(channel, server.process, 10)
        finally:
            assert server.terminate(timeout_s=30) == 0
    # a server that fails for another reason is not retried: the error surfaces at once
    bad = ServerProcess(tmp_path / "no-registry", served_world.redis.url)
    with pytest.raises(RuntimeError, match="exited early"):
        bad.start(timeout_s=30)

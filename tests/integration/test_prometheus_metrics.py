"""Prometheus /metrics (DS_METRICS_PORT), scraped over HTTP as Prometheus does: one server
process, and ``serve --workers 2`` (one endpoint, series labelled per worker)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.config import ConfigError, ServiceConfig
from decision_service.devtools.local_redis import free_port
from decision_service.devtools.server_process import ServerProcess
from decision_service.server.metrics_http import MetricsEndpoint, WorkerFanIn
from decision_service.server.servicer import WORKER_TRAILER
from decision_service.telemetry import LATENCY_BUCKETS_MS
from tests.integration.conftest import start

PROMETHEUS_ACCEPT = "text/plain;version=0.0.4"  # what Prometheus sends without OpenMetrics
REQUESTS = "decision_request_duration_milliseconds"
STAGES = "decision_stage_duration_milliseconds"
EXPECTED_LE = [str(b) for b in LATENCY_BUCKETS_MS] + ["+Inf"]


def scrape_text(port: int, accept: str = PROMETHEUS_ACCEPT) -> tuple[str, str]:
    """(content type, body) of GET /metrics on 127.0.0.1:``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept": accept, "User-Agent": "Prometheus/3.0.0"})
        reply = conn.getresponse()
        body = reply.read().decode("utf-8")
        assert reply.status == 200, (reply.status, body[:500])
        return reply.getheader("Content-Type", ""), body
    finally:
        conn.close()


def scrape(port: int) -> list[Sample]:
    content_type, body = scrape_text(port)
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type, content_type
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


def pick(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def request_count(samples: list[Sample], **labels: str) -> float:
    return sum(s.value for s in pick(samples, f"{REQUESTS}_count", use_case="recommendation", **labels))


def scrape_until(port: int, done, timeout_s: float = 20.0) -> list[Sample]:
    """Scrapes until ``done(samples)``: the server records a call just after the client has its answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def ask(stub: pb_grpc.DecisionServiceStub, user: str) -> str:
    """One recommendation; the "w<id>:<pid>" of the process that answered."""
    _, call = stub.GetDecision.with_call(
        pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=5)),
        metadata=[("x-debug-timings", "1")],
        timeout=10,
    )
    return dict(call.trailing_metadata())[WORKER_TRAILER]


def test_one_process_serves_its_instruments_with_fine_latency_buckets(served_world, loop_thread):
    running = start(
        loop_thread,
        served_world.registry_root,
        served_world.redis.url,
        metrics_port=0,
        metrics_host="127.0.0.1",
    )
    try:
        assert running.metrics is not None and running.metrics.host == "127.0.0.1"
        port = running.metrics.port  # the OS's pick
        known = [str(u) for u in served_world.world.user_ids[:5]]
        unknown = ["nobody-1", "nobody-2"]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for user in known + unknown:
                ask(stub, user)
        sent = len(known) + len(unknown)
        samples = scrape_until(port, lambda got: request_count(got) >= sent)

        assert request_count(samples) == sent
        assert request_count(samples, status="OK") == sent
        buckets = pick(samples, f"{REQUESTS}_bucket", use_case="recommendation", status="OK")
        assert [s.labels["le"] for s in buckets] == EXPECTED_LE  # 0.25 ms ... 100 ms ... 1 s, +Inf
        assert {"0.25", "100.0"} <= {s.labels["le"] for s in buckets}
        assert buckets[-1].value == sent
        assert sum(s.value for s in pick(samples, f"{REQUESTS}_sum", use_case="recommendation")) > 0

        stages = {s.labels["stage"] for s in pick(samples, f"{STAGES}_count", use_case="recommendation")}
        assert {"user_state", "ann", "popular", "features", "lightgbm"} <= stages, stages
        for stage in stages:
            le = [
                s.labels["le"]
                for s in pick(samples, f"{STAGES}_bucket", use_case="recommendation", stage=stage)
            ]
            assert le == EXPECTED_LE, (stage, le)

        degraded = pick(samples, "decision_degraded_total", stage="user_context", reason="unknown_user")
        assert sum(s.value for s in degraded) == len(unknown)
        served = pick(
            samples, "decision_served_total", use_case="recommendation", version=served_world.version
        )
        assert sum(s.value for s in served) == sent  # the per-version online counter
        versions = pick(samples, "decision_model_version", use_case="recommendation")
        assert [(s.labels["version"], s.value) for s in versions] == [(served_world.version, 1.0)]
        assert pick(samples, "decision_log_queue_depth", log="decisions/recommendation")
        assert pick(samples, "decision_redis_pending_commands")
        assert not any("worker" in s.labels for s in samples)  # one process: no worker label

        # a scraper that asks for OpenMetrics gets it
        content_type, body = scrape_text(port, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        assert content_type.startswith("application/openmetrics-text") and body.endswith("# EOF\n")
    finally:
        loop_thread.run(running.stop(0.5))
    with pytest.raises(ConnectionRefusedError):  # stopped with the server
        scrape_text(port)


def test_workers_one_endpoint_with_series_per_worker(served_world, tmp_path):
    metrics_port = free_port()
    server = ServerProcess(
        served_world.registry_root,
        served_world.redis.url,
        env={
            "DS_LOG_DIR": str(tmp_path),
            "DS_LOG_LEVEL": "WARNING",
            "DS_MODEL_RELOAD_INTERVAL_S": "0",
            "DS_METRICS_PORT": str(metrics_port),
            "DS_METRICS_HOST": "127.0.0.1",
        },
        args=["--workers", "2"],
    )
    try:
        server.start()
        assert server.process is not None
        users = [str(u) for u in served_world.world.user_ids[:200]]
        answered: Counter[str] = Counter()  # worker id ("0", "1") -> answers it gave
        pids: dict[str, int] = {}
        options = [("grpc.use_local_subchannel_pool", 1)]  # a fresh connection per call: both workers
        for user in users:
            with grpc.insecure_channel(server.address, options=options) as channel:
                label, pid = ask(pb_grpc.DecisionServiceStub(channel), user).split(":")
            answered[label.removeprefix("w")] += 1
            pids[label.removeprefix("w")] = int(pid)
            if len(answered) == 2 and sum(answered.values()) >= 12:
                break
        assert set(answered) == {"0", "1"}, answered
        sent = sum(answered.values())

        samples = scrape_until(metrics_port, lambda got: request_count(got) >= sent)
        assert request_count(samples) == sent
        for worker, n in answered.items():  # per-worker series add up to what each answered
            assert request_count(samples, worker=worker) == n, (worker, n)
            le = [
                s.labels["le"]
                for s in pick(
                    samples, f"{REQUESTS}_bucket", use_case="recommendation", status="OK", worker=worker
                )
            ]
            assert le == EXPECTED_LE
            assert pick(samples, f"{STAGES}_count", stage="lightgbm", worker=worker)
            assert pick(samples, "decision_model_version", version=served_world.version, worker=worker)
        assert {s.labels["worker"]: s.value for s in pick(samples, "decision_metrics_worker_up")} == {
            "0": 1.0,
            "1": 1.0,
        }
        assert all("worker" in s.labels for s in samples if s.name.startswith("decision_"))
        _, text = scrape_text(metrics_port)  # one HELP / TYPE per family, however many workers
        assert text.count(f"# TYPE {REQUESTS} histogram\n") == 1
        assert text.count("# TYPE decision_degraded_total counter\n") <= 1

        # a worker that dies is left out of the scrape, which still answers, then comes back
        victim, other = "1", "0"
        os.kill(pids[victim], signal.SIGKILL)
        samples = scrape_until(
            metrics_port,
            lambda got: any(s.value == 0 for s in pick(got, "decision_metrics_worker_up", worker=victim)),
            timeout_s=10,
        )
        assert pick(samples, "decision_metrics_worker_up", worker=victim)[0].value == 0
        assert (
            sum(s.value for s in pick(samples, "decision_metrics_worker_scrape_errors_total", worker=victim))
            >= 1
        )
        assert request_count(samples, worker=other) == answered[other]  # the other one is still there
        samples = scrape_until(
            metrics_port,
            lambda got: [s.value for s in pick(got, "decision_metrics_worker_up", worker=victim)] == [1.0],
            timeout_s=60,
        )
        assert [s.value for s in pick(samples, "decision_metrics_worker_up", worker=victim)] == [1.0]
        assert request_count(samples, worker=victim) == 0  # a restarted worker starts from zero

        assert server.terminate() in (0, 1)  # a worker was SIGKILLed: exit 1 is allowed
        with pytest.raises(ConnectionRefusedError):  # the endpoint closed with the supervisor
            scrape_text(metrics_port)
    finally:
        server.kill()


def test_bad_metrics_port_is_a_config_error_naming_the_variable():
    for raw in ("nine", "70000", "-1"):
        with pytest.raises(ConfigError, match="DS_METRICS_PORT"):
            ServiceConfig.from_env(env={"DS_METRICS_PORT": raw})
    with pytest.raises(ConfigError, match="DS_METRICS_PORT.*gRPC port"):
        ServiceConfig.from_env(env={"DS_METRICS_PORT": "50051", "DS_PORT": "50051"})
    assert ServiceConfig.from_env(env={"DS_METRICS_PORT": ""}).metrics_port is None  # empty = off
    assert ServiceConfig.from_env(env={"DS_HOST": "0.0.0.0"}).metrics_bind_host == "0.0.0.0"


def test_cli_refuses_a_bad_metrics_port_and_a_taken_one(served_world, tmp_path):
    base = [
        sys.executable,
        "-m",
        "decision_service.server",
        "serve",
        "--port",
        "0",
        "--registry-dir",
        str(served_world.registry_root),
        "--redis-url",
        served_world.redis.url,
    ]
    env = {**os.environ, "DS_LOG_DIR": str(tmp_path), "DS_LOG_LEVEL": "WARNING"}
    bad = subprocess.run(
        base, env={**env, "DS_METRICS_PORT": "metrics"}, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "DS_METRICS_PORT" in bad.stderr, bad.stderr[-2000:]

    with socket.socket() as taken:  # the supervisor binds /metrics before any worker starts
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = subprocess.run(
            [*base, "--workers", "2"],
            env={**env, "DS_METRICS_PORT": str(taken.getsockname()[1]), "DS_METRICS_HOST": "127.0.0.1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert busy.returncode == 1 and "cannot listen" in busy.stderr and "/metrics" in busy.stderr, busy.stderr[
        -2000:
    ]


def test_k8s_pods_are_scraped_on_the_metrics_port():
    """deploy/k8s: the prometheus.io annotations, the container port and DS_METRICS_PORT agree."""
    path = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "decision-service.yaml"
    deployment = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    server = template["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in server["env"]}
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == env["DS_METRICS_PORT"] == str(ports["metrics"])


def test_fan_in_leaves_out_a_worker_that_does_not_answer_in_time():
    """A worker that accepts the connection but never answers costs the scrape one timeout and
    is left out; the others' series are there, labelled, one family per name."""
    registry = CollectorRegistry()
    PromCounter("decision_served", "answers", ["version"], registry=registry).labels("v1").inc(3)
    answering = MetricsEndpoint(registry, "127.0.0.1", 0)
    with socket.socket() as silent:  # the kernel accepts (backlog); nobody reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        fan_in = WorkerFanIn(range(3), timeout_s=0.3)
        fan_in.set_worker(0, answering.port)
        fan_in.set_worker(1, silent.getsockname()[1])  # worker 2: not listening (restarting)
        try:
            started = time.monotonic()
            text = generate_latest(fan_in_registry(fan_in)).decode()
            assert time.monotonic() - started < 2.0
        finally:
            answering.stop()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert [(s.labels, s.value) for s in pick(samples, "decision_served_total")] == [
        ({"version": "v1", "worker": "0"}, 3.0)
    ]
    assert {s.labels["worker"]: s.value for s in pick(samples, "decision_metrics_worker_up")} == {
        "0": 1.0,
        "1": 0.0,
        "2": 0.0,
    }
    errors = {
        (s.labels["worker"], s.labels["reason"]): s.value
        for s in pick(samples, "decision_metrics_worker_scrape_errors_total")
    }
    assert errors == {("1", "failed"): 1.0, ("2", "unavailable"): 1.0}
    assert text.count("# TYPE decision_served_total counter\n") == 1


def fan_in_registry(fan_in):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(fan_in)
    return registry

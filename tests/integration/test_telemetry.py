"""OpenTelemetry: a span per request and per stage, and the service's metrics (in memory)."""

from __future__ import annotations

import contextlib
import time

import grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.config import ServiceConfig
from decision_service.server.app import start_server
from decision_service.telemetry import Telemetry


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    out: dict[str, list] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def test_spans_and_metrics_for_a_request(served_world, loop_thread, tmp_path):
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    config = ServiceConfig(
        port=0, registry_dir=served_world.registry_root, redis_url=served_world.redis.url, log_dir=str(tmp_path)
    )
    running = loop_thread.run(start_server(config, telemetry=telemetry))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            reply = stub.GetDecision(
                pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id="nobody-1", num_items=4)),
                timeout=5,
            )
            with contextlib.suppress(grpc.RpcError):
                stub.GetDecision(
                    pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id="", num_items=4)),
                    timeout=5,
                )
        finished = spans.get_finished_spans()
        request = next(s for s in finished if s.name == "decision recommendation")
        assert request.attributes["decision_id"] == reply.decision_id
        assert request.attributes["degraded"] == ("user_context:unknown_user",)
        children = {s.name for s in finished if s.parent is not None and s.parent.span_id == request.context.span_id}
        assert {"user_state", "ann", "popular", "features", "lightgbm", "top_k_category_cap"} <= children

        deadline = time.monotonic() + 5   # the server records a status just after the client has it
        while True:
            got = points(reader)
            requests = {
                (p.attributes["use_case"], p.attributes["status"]): p.count for p in got["decision.request.duration"]
            }
            if len(requests) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert requests[("recommendation", "OK")] == 1
        assert requests.get(("recommendation", "INVALID_ARGUMENT")) == 1, requests
        stages = {p.attributes["stage"] for p in got["decision.stage.duration"]}
        assert {"user_state", "features", "lightgbm"} <= stages
        degraded = {(p.attributes["stage"], p.attributes["reason"]): p.value for p in got["decision.degraded"]}
        assert degraded[("user_context", "unknown_user")] == 1
        assert {p.attributes["log"] for p in got["decision.log.queue_depth"]} >= {"decisions/recommendation", "outcomes"}
        versions = {p.attributes["version"] for p in got["decision.model.version"] if p.attributes["use_case"] == "recommendation"}
        assert versions == {served_world.version}
        assert [p.value for p in got["decision.redis.pending_commands"]] == [0]  # all answered
    finally:
        loop_thread.run(running.stop(0.5))


def test_disabled_telemetry_creates_nothing():
    telemetry = Telemetry.disabled()
    assert not telemetry.enabled
    with telemetry.request_span("recommendation", {}) as span:
        assert span is None

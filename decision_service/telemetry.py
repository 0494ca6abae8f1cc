"""OpenTelemetry traces and metrics for the decision path.

Exporters by configuration (``DS_TELEMETRY_EXPORTER``): ``none`` (default: nothing is
created, the hot path pays one attribute check per stage), ``console`` (development) or
``otlp`` (production; endpoint from the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``).

Spans: one per request (``decision <use case>``) with a child per pipeline stage.
Metrics:
  decision.request.duration   histogram, ms, by use_case and status (gRPC code)
  decision.stage.duration     histogram, ms, by use_case and stage
  decision.degraded           counter, by use_case, stage and reason
  decision.log.queue_depth    gauge, by log
  decision.log.dropped        counter (observed), by log and cause
  decision.model.version      gauge = 1, by use_case and version (the version in use)
  decision.redis.pending_commands  gauge: serving reads sent to Redis, not yet answered
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

Gauge = Callable[[], Iterable[tuple[float, dict[str, str]]]]


class Telemetry:
    """Owns the providers; the executor and the edge call its small recording methods."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.enabled = tracer_provider is not None or meter_provider is not None
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._gauges: dict[str, list[Gauge]] = {}
        if tracer_provider is not None:
            self.tracer: trace.Tracer = tracer_provider.get_tracer("decision_service")
        else:
            self.tracer = trace.NoOpTracer()
        meter = meter_provider.get_meter("decision_service") if meter_provider else metrics.NoOpMeter("x")
        self._request_ms = meter.create_histogram("decision.request.duration", unit="ms")
        self._stage_ms = meter.create_histogram("decision.stage.duration", unit="ms")
        self._degraded = meter.create_counter("decision.degraded")
        for name, kind in (
            ("decision.log.queue_depth", "gauge"),
            ("decision.log.dropped", "counter"),
            ("decision.model.version", "gauge"),
            ("decision.redis.pending_commands", "gauge"),
        ):
            self._gauges[name] = []
            callback = self._observer(name)
            if kind == "gauge":
                meter.create_observable_gauge(name, callbacks=[callback])
            else:
                meter.create_observable_counter(name, callbacks=[callback])

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls()

    @classmethod
    def from_exporter(cls, exporter: str, service_name: str = "decision-service") -> Telemetry:
        if exporter == "none":
            return cls.disabled()
        resource = Resource.create({"service.name": service_name})
        span_exporter: SpanExporter
        reader: MetricReader
        if exporter == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            span_exporter = ConsoleSpanExporter()
            reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
        elif exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter()
            reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        else:
            raise ValueError(f"telemetry_exporter must be none, console or otlp, got {exporter!r}")
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        return cls(tracer_provider, MeterProvider(resource=resource, metric_readers=[reader]))

    # ---------------------------------------------------------------- recording

    @contextlib.contextmanager
    def request_span(self, use_case: str, attributes: dict[str, Any]) -> Iterator[trace.Span | None]:
        if not self.enabled:
            yield None
            return
        with self.tracer.start_as_current_span(f"decision {use_case}", attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def stage_span(self, use_case: str, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self.tracer.start_as_current_span(stage, attributes={"use_case": use_case}):
            yield

    def stage_done(self, use_case: str, stage: str, ms: float) -> None:
        if self.enabled:
            self._stage_ms.record(ms, {"use_case": use_case, "stage": stage})

    def request_done(self, use_case: str, status: str, ms: float) -> None:
        if self.enabled:
            self._request_ms.record(ms, {"use_case": use_case, "status": status})

    def degraded(self, use_case: str, stage: str, reason: str) -> None:
        if self.enabled:
            self._degraded.add(1, {"use_case": use_case, "stage": stage, "reason": reason})

    def add_gauge(self, name: str, read: Gauge) -> None:
        """Registers a reader for one of the observable instruments listed above."""
        self._gauges[name].append(read)

    def shutdown(self) -> None:
        for provider in (self._tracer_provider, self._meter_provider):
            if provider is not None:
                provider.shutdown()

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for read in self._gauges[name]:
                for value, attributes in read():
                    yield Observation(value, attributes)

        return observe


"""OpenTelemetry traces and metrics for the decision path.

Exporters by configuration (``DS_TELEMETRY_EXPORTER``): ``none`` (default: nothing is
created, the hot path pays one attribute check per stage), ``console`` (development) or
``otlp`` (production; endpoint from the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``).
Independently, ``DS_METRICS_PORT`` adds a Prometheus reader (``prometheus=True``): the
same instruments, collected on each scrape of ``/metrics`` (server/metrics_http.py; README
"Metrics (Prometheus)"); it combines with any exporter.

Latency histograms have explicit buckets, in ms, ``LATENCY_BUCKETS_MS`` (0.25 ms ... 100 ms,
then 150 ms ... 1 s): this service answers in well under 5 ms, the SDK's default first bucket.

Spans: one per request (``decision <use case>``) with a child per pipeline stage.
Metrics (OpenTelemetry name; as Prometheus shows it):
  decision.request.duration   histogram, ms, by use_case and status (gRPC code);
                              decision_request_duration_milliseconds_{bucket,sum,count}
  decision.stage.duration     histogram, ms, by use_case and stage;
                              decision_stage_duration_milliseconds_{bucket,sum,count}
  decision.degraded           counter, by use_case, stage and reason; decision_degraded_total
  decision.served             counter, by use_case, version and arm (live / canary);
                              decision_served_total
  decision.shadow             counter, by use_case, version (the shadow's) and outcome
                              (scored / skipped_queue_full / skipped_shutdown / failed);
                              decision_shadow_total
  decision.shadow.queue_depth gauge: served decisions waiting for the shadow model;
                              decision_shadow_queue_depth
  decision.log.queue_depth    gauge, by log; decision_log_queue_depth
  decision.log.dropped        counter (observed), by log and cause; decision_log_dropped_total
  decision.model.version      gauge = 1, by use_case, version and arm (live = CURRENT, canary, shadow);
                              decision_model_version
  decision.redis.pending_commands  gauge: serving reads sent to Redis, not yet answered;
                              decision_redis_pending_commands
  decision.redis.node_errors  counter (observed), by node: failed sends to a Redis Cluster
                              primary; decision_redis_node_errors_total
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Gauge = Callable[[], Iterable[tuple[float, dict[str, str]]]]

# Upper bounds (ms) of the latency histograms' buckets: sub-millisecond stages to the 100 ms
# request budget, then a few for outliers (anything slower lands in +Inf).
# fmt: off
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0,
    150.0, 250.0, 500.0, 1000.0,
)
# fmt: on
LATENCY_HISTOGRAMS = ("decision.request.duration", "decision.stage.duration")


def latency_views() -> list[View]:
    """Views giving ``LATENCY_HISTOGRAMS`` the explicit ``LATENCY_BUCKETS_MS`` buckets; pass
    them to any ``MeterProvider`` (``views=``) that records this service's instruments."""
    return [
        View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS_MS))
        for name in LATENCY_HISTOGRAMS
    ]


class Telemetry:
    """Owns the providers; the executor and the edge call its small recording methods."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.enabled = tracer_provider is not None or meter_provider is not None
        self._tracing = tracer_provider is not None  # metrics only (Prometheus): no spans
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        # set by from_exporter(prometheus=True): what /metrics exposes (server/metrics_http.py)
        self.prometheus_registry: CollectorRegistry | None = None
        self._gauges: dict[str, list[Gauge]] = {}
        if tracer_provider is not None:
            self.tracer: trace.Tracer = tracer_provider.get_tracer("decision_service")
        else:
            self.tracer = trace.NoOpTracer()
        meter = meter_provider.get_meter("decision_service") if meter_provider else metrics.NoOpMeter("x")
        self._request_ms = meter.create_histogram(
            "decision.request.duration", unit="ms", description="Time to answer an RPC, by final status"
        )
        self._stage_ms = meter.create_histogram(
            "decision.stage.duration", unit="ms", description="Time spent in one pipeline stage"
        )
        self._degraded = meter.create_counter(
            "decision.degraded", description="Answers given with a stage degraded, by stage and reason"
        )
        self._served = meter.create_counter(
            "decision.served", description="Answered decisions, by model version and arm"
        )
        self._shadow = meter.create_counter(
            "decision.shadow", description="Shadow scorings, by the shadow's version and outcome"
        )
        for name, kind, description in (
            ("decision.log.queue_depth", "gauge", "Records waiting in a log writer's queue"),
            ("decision.log.dropped", "counter", "Log records dropped, by cause"),
            ("decision.model.version", "gauge", "1 for the model version each use case serves"),
            ("decision.redis.pending_commands", "gauge", "Serving reads sent to Redis, not yet answered"),
            ("decision.redis.node_errors", "counter", "Failed sends to a Redis Cluster primary"),
            ("decision.shadow.queue_depth", "gauge", "Served decisions waiting for the shadow model"),
        ):
            self._gauges[name] = []
            callback = self._observer(name)
            if kind == "gauge":
                meter.create_observable_gauge(name, callbacks=[callback], description=description)
            else:
                meter.create_observable_counter(name, callbacks=[callback], description=description)

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls()

    @classmethod
    def from_exporter(
        cls, exporter: str, service_name: str = "decision-service", prometheus: bool = False
    ) -> Telemetry:
        """Telemetry for ``exporter`` (none / console / otlp: traces and metrics), plus, with
        ``prometheus``, a Prometheus reader on a private registry (``prometheus_registry``),
        which metrics_http serves. Latency histograms get ``latency_views()``.

        On failure: ValueError naming an unknown exporter."""
        if exporter not in ("none", "console", "otlp"):
            raise ValueError(f"telemetry_exporter must be none, console or otlp, got {exporter!r}")
        if exporter == "none" and not prometheus:
            return cls.disabled()
        resource = Resource.create({"service.name": service_name})
        readers: list[MetricReader] = []
        registry = None
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            # a registry of its own: no process-global state, one per server in a test process
            registry = CollectorRegistry(auto_describe=True)
            readers.append(PrometheusMetricReader(registry=registry, scope_info_enabled=False))
        tracer_provider = None
        if exporter != "none":
            span_exporter, reader = cls._exporters(exporter)
            readers.append(reader)
            tracer_provider = TracerProvider(resource=resource)
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        telemetry = cls(
            tracer_provider, MeterProvider(resource=resource, metric_readers=readers, views=latency_views())
        )
        telemetry.prometheus_registry = registry
        return telemetry

    @staticmethod
    def _exporters(exporter: str) -> tuple[SpanExporter, MetricReader]:
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
        return span_exporter, reader

    # ---------------------------------------------------------------- recording

    @contextlib.contextmanager
    def request_span(self, use_case: str, attributes: dict[str, Any]) -> Iterator[trace.Span | None]:
        if not self._tracing:
            yield None
            return
        with self.tracer.start_as_current_span(f"decision {use_case}", attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def stage_span(self, use_case: str, stage: str) -> Iterator[None]:
        if not self._tracing:
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

    def served(self, use_case: str, version: str, arm: str) -> None:
        """One answered decision of ``version`` on ``arm`` (per-version online counters)."""
        if self.enabled:
            self._served.add(1, {"use_case": use_case, "version": version, "arm": arm})

    def shadow(self, use_case: str, version: str, outcome: str) -> None:
        """One shadow job of ``version``: scored, skipped (and why) or failed."""
        if self.enabled:
            self._shadow.add(1, {"use_case": use_case, "version": version, "outcome": outcome})

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

"""Prometheus ``/metrics`` over HTTP (``DS_METRICS_PORT``; README "Metrics (Prometheus)").

One server process (``--workers 1``) serves its own registry (telemetry.py's Prometheus
reader) on ``DS_METRICS_HOST:DS_METRICS_PORT``: ``MetricsEndpoint``.

With ``--workers N`` every worker serves its registry on a private loopback port the OS
picks and reports it to the supervisor with its gRPC port (server/workers.py). The
supervisor serves the public endpoint: on each scrape ``WorkerFanIn`` fetches every
listening worker's text (in parallel, ``WORKER_SCRAPE_TIMEOUT_S`` each), adds
``worker="<id>"`` to every sample, merges the families (one HELP / TYPE each) and adds its
own series:

  decision_metrics_worker_up{worker}                     1 = this scrape has its series
  decision_metrics_worker_scrape_errors_total{worker,reason}
      reason "unavailable": not listening (starting, restarting); "failed": refused, timed
      out or answered something that is not the text format

A worker that is left out never fails the scrape. Both kinds of endpoint answer any path
(``/metrics`` by convention) in the format the scraper's ``Accept`` asks for (Prometheus
text 0.0.4 or OpenMetrics), gzip-compressed when accepted (prometheus_client's server).
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from decision_service.server.listen import ListenError

if TYPE_CHECKING:
    from decision_service.config import ServiceConfig
    from decision_service.telemetry import Telemetry

log = logging.getLogger(__name__)

WORKER_SCRAPE_TIMEOUT_S = 1.0  # per worker and scrape; Prometheus' own scrape_timeout is 10 s
WORKER_METRICS_HOST = "127.0.0.1"  # where workers serve their private endpoints
TEXT_FORMAT = "text/plain;version=0.0.4"  # what the supervisor asks its workers for
WORKER_LABEL = "worker"


class MetricsEndpoint:
    """An HTTP server exposing one prometheus_client registry (daemon threads: a request per
    thread, none of them on the caller's event loop).

    ``port`` is the bound port (the OS's pick when asked for 0).
    On failure: ListenError naming the address (in use, not bindable)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ListenError(f"/metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.host = host
        self.port: int = self._httpd.server_port

    def stop(self) -> None:
        """Stops accepting and closes the socket (a scrape being answered finishes on its own
        daemon thread); idempotent."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5.0)
        self._httpd.server_close()


def start_for_server(config: ServiceConfig, telemetry: Telemetry) -> MetricsEndpoint | None:
    """The endpoint of one server process, on ``config.metrics_bind_host:metrics_port``;
    None when ``config.metrics_port`` is None (metrics off).

    On failure: ListenError (address in use); a ``telemetry`` without a Prometheus registry
    (one a caller built itself) serves nothing and logs why."""
    if config.metrics_port is None:
        return None
    if telemetry.prometheus_registry is None:
        log.warning("metrics_port is set but the telemetry given has no Prometheus reader: no /metrics")
        return None
    endpoint = MetricsEndpoint(telemetry.prometheus_registry, config.metrics_bind_host, config.metrics_port)
    log.info("metrics: http://%s:%d/metrics", _url_host(endpoint.host), endpoint.port)
    return endpoint


class WorkerFanIn:
    """The supervisor's collector: every listening worker's series, labelled ``worker``.

    ``lock`` is held for a whole scrape (its fetching threads are joined before it is
    released); the supervisor holds it while it forks a worker, so no child is forked from
    the middle of a scrape (a lock one of its threads held would stay locked in the child)."""

    def __init__(self, workers: Iterable[int], timeout_s: float = WORKER_SCRAPE_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._ports: dict[int, int | None] = dict.fromkeys(workers)
        self._errors: Counter[tuple[int, str]] = Counter()
        self.lock = threading.Lock()

    def set_worker(self, worker: int, port: int | None) -> None:
        """``port``: where the worker serves its metrics now; None while it is not listening
        (starting, restarting, stopped)."""
        self._ports[worker] = port

    def collect(self) -> list[Metric]:
        """One scrape: the merged families, then ``decision_metrics_worker_*``. Never raises
        for a worker: one that fails is left out (up 0, one more error). Scrapes take turns."""
        with self.lock:
            return self._scrape()

    def _scrape(self) -> list[Metric]:
        ports = dict(self._ports)
        live = {w: p for w, p in ports.items() if p is not None}
        with ThreadPoolExecutor(max_workers=max(1, min(len(live), 16))) as pool:  # joined here
            fetched = dict(zip(live, pool.map(self._fetch, live.values()), strict=True))
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "decision_metrics_worker_up",
            "1 if this scrape has the worker's series, else 0",
            labels=[WORKER_LABEL],
        )
        for worker in sorted(ports):
            families = fetched.get(worker)
            if families is None:
                self._errors[(worker, "unavailable" if worker not in live else "failed")] += 1
            else:
                _merge(merged, families, str(worker))
            up.add_metric([str(worker)], 0.0 if families is None else 1.0)
        errors = CounterMetricFamily(
            "decision_metrics_worker_scrape_errors",
            "Scrapes that left a worker out: unavailable (not listening) or failed (no valid answer in time)",
            labels=[WORKER_LABEL, "reason"],
        )
        for (worker, reason), n in sorted(self._errors.items()):
            errors.add_metric([str(worker), reason], float(n))
        return [*merged.values(), up, errors]

    def _fetch(self, port: int) -> list[Metric] | None:
        """The worker's families, or None (logged at debug: a restart is routine)."""
        conn = http.client.HTTPConnection(WORKER_METRICS_HOST, port, timeout=self._timeout_s)
        try:
            conn.request("GET", "/metrics", headers={"Accept": TEXT_FORMAT})
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200:
                raise ValueError(f"HTTP {reply.status}")
            return list(text_string_to_metric_families(body.decode("utf-8")))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            log.debug("metrics: worker on port %d left out of this scrape: %s", port, exc)
            return None
        finally:
            conn.close()


def _merge(merged: dict[str, Metric], families: list[Metric], worker: str) -> None:
    """Adds ``families``' samples, labelled ``worker``, to ``merged`` (name -> family; the
    first HELP / TYPE of a name wins, a sample of another type under that name is dropped)."""
    for family in families:
        into = merged.get(family.name)
        if into is None:
            into = merged[family.name] = Metric(family.name, family.documentation, family.type)
        elif into.type != family.type:
            continue
        into.samples.extend(s._replace(labels={**s.labels, WORKER_LABEL: worker}) for s in family.samples)


def start_supervisor_endpoint(
    config: ServiceConfig, workers: int
) -> tuple[MetricsEndpoint, WorkerFanIn] | None:
    """The public endpoint of ``serve --workers N`` (on ``metrics_bind_host:metrics_port``)
    and the fan-in behind it; None when metrics are off.

    On failure: ListenError naming the address."""
    if config.metrics_port is None:
        return None
    fan_in = WorkerFanIn(range(workers))
    registry = CollectorRegistry(auto_describe=False)  # no collect() at registration
    registry.register(fan_in)
    endpoint = MetricsEndpoint(registry, config.metrics_bind_host, config.metrics_port)
    log.info(
        "supervisor: metrics of %d workers on http://%s:%d/metrics",
        workers,
        _url_host(endpoint.host),
        endpoint.port,
    )
    return endpoint, fan_in


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

"""Several server processes on one port: a supervisor and its workers (SO_REUSEPORT).

One grpc.aio process is bound by one core (the GIL), so ``serve --workers N`` forks N
workers that each bind the same host:port with ``grpc.so_reuseport`` and the kernel
spreads connections between them, as grpc's multiprocessing example does. Only this
deployment's workers: the supervisor locks the port first (server/listen.py). Workers share
nothing but Redis and the artifacts on disk: each loads its own models, has its own Redis
pool, decision-log writer (file names are unique per writer) and log lines tagged
``w<id>``.

The supervisor (the parent, which never starts gRPC itself, so forking is safe):
  * waits until every worker reports that it listens; a worker that dies before that fails
    the whole start: the others are stopped and the exit status is 1;
  * on SIGTERM/SIGINT stops the workers one after the other with SIGTERM (each finishes its
    in-flight calls, flushes its logs and exits; meanwhile the others take the connections
    its clients re-open); exits 0 when all of them stopped cleanly;
  * restarts a worker that dies later (at most ``MAX_RESTARTS`` per ``RESTART_WINDOW_S``,
    beyond that it stops everything and exits 1);
  * with ``DS_METRICS_PORT`` set, serves the one public ``/metrics`` (bound before any worker
    starts; a taken port fails the start with exit status 1): each worker serves its own
    series on a private loopback port the OS picks and reports it with its gRPC port; a
    scrape merges them with a ``worker="<id>"`` label (server/metrics_http.py). The endpoint
    closes after the last worker has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from decision_service.config import ConfigError, ServiceConfig
from decision_service.models.registry import RegistryError
from decision_service.server import listen, metrics_http
from decision_service.server.listen import ListenError
from decision_service.server.metrics_http import MetricsEndpoint, WorkerFanIn

log = logging.getLogger(__name__)

WORKER_ID_ENV = "DS_WORKER_ID"
START_TIMEOUT_S = 600.0  # loading a 1M-item index and compiling trees takes a while
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
LOG_FORMAT = "%(asctime)s %(levelname)s {tag} %(name)s: %(message)s"


def worker_count(config: ServiceConfig) -> int:
    """``config.workers``, or one per CPU available to this process when it is 0."""
    if config.workers > 0:
        return config.workers
    return available_cpus()


def available_cpus(cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity, capped by the container's CPU quota (a
    Kubernetes ``limits.cpu`` is a CFS quota, not fewer visible cores): cgroup v2
    ``cpu.max`` ("200000 100000" = 2 CPUs, "max" = none), else cgroup v1
    ``cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 = none); a fraction rounds up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    root = Path(cgroup_root)
    quota: float | None = None
    try:
        first = (root / "cpu.max").read_text().split()
        if first and first[0] != "max":
            quota = int(first[0]) / int(first[1])
    except (OSError, ValueError, IndexError):
        try:
            q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            if q > 0 and period > 0:
                quota = q / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def worker_id() -> int:
    """This process's worker number (0 when not started by the supervisor)."""
    return int(os.environ.get(WORKER_ID_ENV, "0"))


def configure_logging(level: str, tag: str) -> None:
    """Log lines carry ``tag`` (``w<id>`` in a worker, ``supervisor`` in the parent)."""
    logging.basicConfig(level=level, format=LOG_FORMAT.format(tag=tag), force=True)


def _worker_main(config: ServiceConfig, worker: int, ready: Connection, parent_pid: int) -> None:
    """A worker: its own logging, then the ordinary single-process server."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until serve() installs its handlers
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _die_with_parent(parent_pid)
    os.environ[WORKER_ID_ENV] = str(worker)
    configure_logging(config.log_level, f"w{worker}")
    from decision_service.server.app import serve

    def on_ready(port: int, metrics_port: int | None) -> None:
        ready.send((port, metrics_port))
        ready.close()

    try:
        asyncio.run(serve(config, on_ready=on_ready))
    except ListenError as exc:
        print(f"decision-service w{worker}: cannot listen: {exc}", file=sys.stderr)
        sys.exit(1)
    except RegistryError as exc:
        print(f"decision-service w{worker}: cannot start: {exc}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as exc:
        print(f"decision-service w{worker}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


def _die_with_parent(parent_pid: int) -> None:
    """A SIGKILLed supervisor must not leave workers serving: Linux kills them with it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class Supervisor:
    """Starts, watches and stops the worker processes (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        workers: int,
        target: Callable[..., None] = _worker_main,
        fan_in: WorkerFanIn | None = None,
    ) -> None:
        """``fan_in``: the public /metrics' view of the workers (None: metrics off); each
        worker then serves its own series on a private loopback port."""
        self._config = config
        self._worker_config = config
        if fan_in is not None:
            self._worker_config = replace(
                config, metrics_host=metrics_http.WORKER_METRICS_HOST, metrics_port=0
            )
        self._n = workers
        self._target = target
        self._ctx = mp.get_context("fork")
        self._procs: dict[int, Any] = {}
        self._stopping = False
        self._signalled = False
        self._restarts: list[float] = []
        self._fan_in = fan_in
        self._restarting: dict[Connection, int] = {}  # ready pipes of restarted workers

    def _spawn(self, worker: int) -> Connection:
        receive, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=self._target,
            args=(self._worker_config, worker, send, os.getpid()),
            name=f"decision-service-w{worker}",
        )
        if self._fan_in is not None:
            self._fan_in.set_worker(worker, None)
            with self._fan_in.lock:  # not from the middle of a scrape (its threads' locks)
                proc.start()
        else:
            proc.start()
        send.close()
        self._procs[worker] = proc
        return receive

    def _listening(self, worker: int, report: int | tuple[int, int | None]) -> int:
        """A worker's ready report: its gRPC port (returned) and where it serves its metrics."""
        port, metrics_port = report if isinstance(report, tuple) else (report, None)
        if self._fan_in is not None:
            self._fan_in.set_worker(worker, metrics_port)
        return port

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self._stopping:
            log.info("supervisor: %s, stopping %d workers", signal.Signals(signum).name, len(self._procs))
        self._stopping = True
        self._signalled = True

    def run(self) -> int:
        """Returns the process exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        pending = {self._spawn(w): w for w in range(self._n)}
        deadline = time.monotonic() + START_TIMEOUT_S
        while pending and not self._stopping:
            sentinels = {self._procs[w].sentinel: w for w in pending.values()}
            ready = wait([*pending, *sentinels], timeout=0.5)  # short: a signal must not wait
            if not ready and time.monotonic() < deadline:
                continue
            if not ready:
                late = sorted(pending.values())
                log.error("supervisor: workers %s not listening after %.0f s", late, START_TIMEOUT_S)
                return self._shutdown(failed=True)
            for item in ready:
                if item in pending:
                    conn = item
                    worker = pending.pop(conn)
                    try:
                        port = self._listening(worker, conn.recv())
                    except EOFError:  # died before it could report
                        if self._stopping:
                            break
                        return self._failed_start(worker)
                    conn.close()
                    pid = self._procs[worker].pid
                    log.info("supervisor: worker %d (pid %d) listening on port %d", worker, pid, port)
                elif sentinels[item] in pending.values() and not self._stopping:
                    return self._failed_start(sentinels[item])
        if not self._stopping:
            log.info("supervisor: %d workers serving on %s:%d", self._n, self._config.host, self._config.port)
        while not self._stopping:
            by_sentinel = {p.sentinel: w for w, p in self._procs.items()}
            for item in wait([*by_sentinel, *self._restarting], timeout=0.5):
                if item in self._restarting:  # a restarted worker listens again (or died)
                    self._restarted(item)
                    continue
                if item not in by_sentinel:  # the pipe of a worker restarted again meanwhile
                    continue
                worker = by_sentinel[item]
                self._procs[worker].join()
                if self._fan_in is not None:
                    self._fan_in.set_worker(worker, None)
                if self._stopping:
                    break
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
                code = self._procs[worker].exitcode
                if len(self._restarts) > MAX_RESTARTS:
                    log.error("supervisor: worker %d exited (%s); too many restarts, stopping", worker, code)
                    return self._shutdown(failed=True)
                log.error("supervisor: worker %d exited unexpectedly (%s); restarting it", worker, code)
                for conn, w in list(self._restarting.items()):  # an earlier restart's pipe
                    if w == worker:
                        del self._restarting[conn]
                        conn.close()
                self._restarting[self._spawn(worker)] = worker
        return self._shutdown(failed=False)

    def _restarted(self, conn: Connection) -> None:
        worker = self._restarting.pop(conn)
        try:
            port = self._listening(worker, conn.recv())
            log.info("supervisor: restarted worker %d listening on port %d", worker, port)
        except EOFError:  # it died before it listened: its sentinel says so
            pass
        finally:
            conn.close()

    def _failed_start(self, worker: int) -> int:
        self._procs[worker].join()
        code = self._procs[worker].exitcode
        log.error("supervisor: worker %d exited during start-up (exit %s); stopping", worker, code)
        return self._shutdown(failed=True)

    def _shutdown(self, failed: bool) -> int:
        """Stops the workers one after the other: while one drains, the others still take the
        connections its clients re-open, so no call lands on a server that is stopping."""
        self._stopping = True
        for proc in self._procs.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
                proc.join(self._config.grace_period_s + 30.0)
            if proc.is_alive():
                log.error("supervisor: worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join()
                failed = True
        codes = [p.exitcode for p in self._procs.values()]
        # a worker still loading when the stop was asked for dies of the signal: that is clean
        clean = (0, -signal.SIGTERM, -signal.SIGINT) if self._signalled else (0,)
        if any(c not in clean for c in codes):
            failed = True
        log.info("supervisor: all workers stopped (exit codes %s)", codes)
        for conn in self._restarting:
            conn.close()
        self._restarting.clear()
        return 1 if failed else 0


def serve_workers(config: ServiceConfig, workers: int) -> int:
    """Runs ``workers`` server processes on ``config.host:config.port`` until SIGTERM/SIGINT.

    The port belongs to this deployment alone (server/listen.py): one in use by anything else,
    another deployment included, is refused with "address already in use" and exit status 1.
    """
    try:
        if config.port == 0:  # pick one port for all workers
            reserved = listen.reserve_port(config.host)
            config = replace(config, port=reserved.getsockname()[1])
            lock = listen.deployment_lock(config.host, config.port)
        else:
            lock = listen.deployment_lock(config.host, config.port)
            listen.check_port_free(config.host, config.port)
            reserved = listen.reserve_port(config.host, config.port)
    except ListenError as exc:
        log.error("supervisor: cannot listen: %s", exc)
        print(f"decision-service: cannot listen: {exc}", file=sys.stderr)
        return 1
    metrics: tuple[MetricsEndpoint, WorkerFanIn] | None = None
    try:
        metrics = metrics_http.start_supervisor_endpoint(config, workers)
    except ListenError as exc:
        reserved.close()
        if lock is not None:
            lock.close()
        log.error("supervisor: cannot listen: %s", exc)
        print(f"decision-service: cannot listen: {exc}", file=sys.stderr)
        return 1
    try:  # all held until every worker has stopped
        return Supervisor(config, workers, fan_in=metrics[1] if metrics else None).run()
    finally:
        if metrics is not None:
            metrics[0].stop()
        reserved.close()
        if lock is not None:
            lock.close()

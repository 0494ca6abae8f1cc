"""`decision-service serve` as a child process on a free loopback port (demo, flywheel,
benchmarks and process-level tests all start the real server this way)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decision_service.devtools.local_redis import free_port


def wait_serving(channel: grpc.Channel, process: subprocess.Popen[Any], timeout_s: float = 60) -> None:
    """Blocks until the server's health check says SERVING; raises if it exits or times out."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not become SERVING within {timeout_s:.0f}s")


class ServerProcess:
    """The server as a child process. Ports it picks itself (the gRPC port when ``port`` is
    None, the /metrics port with ``metrics_port=True``) come from the OS; if another process
    takes one between the pick and the bind (a lost race: the server exits at start and the
    port is held), ``start`` picks new ones and tries again, up to ``START_ATTEMPTS`` times."""

    START_ATTEMPTS = 3

    def __init__(
        self,
        registry_dir: str | os.PathLike[str],
        redis_url: str,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
        stderr: int | IO[Any] | None = None,
        metrics_port: bool = False,
    ) -> None:
        self._given_port = port
        self._with_metrics = metrics_port
        self._base = [
            "--registry-dir", os.fspath(registry_dir), "--redis-url", redis_url, *args,
        ]  # fmt: skip
        self._env = {**os.environ, **(env or {})}
        self._stderr = stderr
        self.process: subprocess.Popen[Any] | None = None
        self._pick_ports()

    def _pick_ports(self) -> None:
        self.port = self._given_port or free_port()
        self.metrics_port: int | None = free_port() if self._with_metrics else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout_s: float = 60) -> ServerProcess:
        """Starts the server; with ``wait``, until health says SERVING.
        On failure: RuntimeError (it exited, or was not SERVING within ``timeout_s``)."""
        for attempt in range(1, self.START_ATTEMPTS + 1):
            command = [sys.executable, "-m", "decision_service.server", "serve", "--port", str(self.port)]
            env = dict(self._env)
            if self.metrics_port is not None:
                env["DS_METRICS_PORT"] = str(self.metrics_port)
            self.process = subprocess.Popen([*command, *self._base], env=env, stderr=self._stderr, text=True)
            if not wait:
                return self
            try:
                with grpc.insecure_channel(self.address) as channel:
                    wait_serving(channel, self.process, timeout_s)
                return self
            except RuntimeError:
                if self.process.poll() is None or attempt == self.START_ATTEMPTS or not self._lost_race():
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def _lost_race(self) -> bool:
        """True when a port this object picked is held by another process now."""
        picked = [p for p in (None if self._given_port else self.port, self.metrics_port) if p]
        for port in picked:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return True
        return False

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM (graceful: drain, flush logs) and the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

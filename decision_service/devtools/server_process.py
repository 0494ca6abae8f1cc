"""`decision-service serve` as a child process on a free loopback port (demo, flywheel,
benchmarks and process-level tests all start the real server this way)."""

from __future__ import annotations

import os
import signal
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
    def __init__(
        self,
        registry_dir: str | os.PathLike[str],
        redis_url: str,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        self.port = port or free_port()
        self._command = [
            sys.executable, "-m", "decision_service.server", "serve", "--port", str(self.port),
            "--registry-dir", os.fspath(registry_dir), "--redis-url", redis_url, *args,
        ]
        self._env = {**os.environ, **(env or {})}
        self._stderr = stderr
        self.process: subprocess.Popen[Any] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout_s: float = 60) -> ServerProcess:
        self.process = subprocess.Popen(self._command, env=self._env, stderr=self._stderr, text=True)
        if wait:
            with grpc.insecure_channel(self.address) as channel:
                wait_serving(channel, self.process, timeout_s)
        return self

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

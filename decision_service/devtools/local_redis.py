"""Starts a private ``redis-server`` on a free loopback port in a temporary directory.

Tests, the demo and benchmarks use this so they never touch (or flush) a Redis they did
not start. Persistence is off; the server dies with its ``stop()`` (or the process).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

INSTALL_HINT = (
    "redis-server is not installed. Debian/Ubuntu: sudo apt-get install -y redis-server; "
    "macOS: brew install redis. `make test` / `make demo` install it where they can."
)


class RedisUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    """A redis-server child process. Use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, maxmemory: str | None = None) -> None:
        self.port = port or free_port()
        self._maxmemory = maxmemory
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(INSTALL_HINT)
        self._dir = tempfile.mkdtemp(prefix="ds-redis-")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self._dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(Path(self._dir) / "redis.log"),
        ]
        if self._maxmemory:
            args += ["--maxmemory", self._maxmemory]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    raise RedisUnavailable(f"redis-server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailable(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

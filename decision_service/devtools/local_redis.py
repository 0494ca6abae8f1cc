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
        args += getattr(self, "_extra", [])
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


class LocalRedisCluster:
    """A private Redis Cluster: ``n`` primaries (``redis-server --cluster-enabled yes``) on free
    loopback ports, joined by ``redis-cli --cluster create`` (16384 slots spread over them).
    Use as a context manager or call start()/stop(). ``urls``: one ``redis://`` URL per node."""

    def __init__(self, n: int = 3) -> None:
        if n < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self.nodes = [_ClusterNode() for _ in range(n)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout_s: float = 20.0) -> LocalRedisCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisUnavailable(
                "redis-cli is not installed (it comes with redis-server: " + INSTALL_HINT + ")"
            )
        try:
            for node in self.nodes:
                node.start(timeout_s)
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            out = subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            if out.returncode != 0:
                raise RedisUnavailable(
                    f"redis-cli --cluster create failed: {out.stdout[-500:]} {out.stderr[-500:]}"
                )
            deadline = time.monotonic() + timeout_s
            for node in self.nodes:  # every node, not one: each must see the slots covered
                client = redis.Redis(port=node.port, socket_connect_timeout=0.5)
                try:
                    while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                        if time.monotonic() > deadline:
                            raise RedisUnavailable(f"cluster node {node.port} did not reach cluster_state:ok")
                        time.sleep(0.05)
                finally:
                    client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_cluster_port(attempts: int = 50) -> int:
    """A free loopback port p <= 55535 whose cluster bus port p + 10000 is free too (the OS
    picks ephemeral ports above that range, so these are drawn at random and tried)."""
    import random

    for _ in range(attempts):
        port = random.randint(20_000, 55_535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            return port
        except OSError:
            continue
    raise RedisUnavailable("no free port pair (p, p + 10000) for a cluster node")


class _ClusterNode(LocalRedis):
    """A LocalRedis started with cluster mode on (its nodes.conf in its own temp dir); a port
    lost to a race between picking and binding is picked again."""

    def __init__(self) -> None:
        super().__init__(port=free_cluster_port())
        self._extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        for attempt in range(3):
            try:
                return super().start(timeout_s)
            except RedisUnavailable:
                if attempt == 2:
                    raise
                self.port = free_cluster_port()
        raise AssertionError("unreachable")

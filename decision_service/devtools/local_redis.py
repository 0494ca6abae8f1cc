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
import redis.cluster

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

    def __init__(
        self, port: int | None = None, maxmemory: str | None = None, password: str | None = None
    ) -> None:
        self.port = port or free_port()
        self._maxmemory = maxmemory
        self.password = password
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

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
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        args += getattr(self, "_extra", [])
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, password=self.password)
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

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash); the temp dir stays until stop()."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalRedisCluster:
    """A private Redis Cluster: ``n`` primaries (``redis-server --cluster-enabled yes``), each
    with ``replicas`` replicas, on free loopback ports, joined by ``redis-cli --cluster create``
    (16384 slots spread over the primaries). Use as a context manager or call start()/stop().
    ``urls``: one ``redis://`` URL per node; ``url``: the ``redis+cluster://`` URL of them all.
    ``node_timeout_ms``: how long a silent primary takes to be failed over (cluster-node-timeout)."""

    def __init__(
        self,
        n: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
        password: str | None = None,
        full_coverage: bool = True,
    ) -> None:
        """``password``: every node requires it (requirepass, masterauth); ``url`` carries it.
        ``full_coverage=False``: the other primaries keep answering while a slot has no owner
        (cluster-require-full-coverage no); by default the whole cluster refuses (CLUSTERDOWN)."""
        if n < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self.replicas = replicas
        self.password = password
        count = n * (1 + replicas)
        self.nodes = [_ClusterNode(node_timeout_ms, password, full_coverage) for _ in range(count)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes) + "/0"

    def client(self) -> redis.cluster.RedisCluster:
        nodes = [redis.cluster.ClusterNode("127.0.0.1", node.port) for node in self.nodes if node.running]
        return redis.cluster.RedisCluster(startup_nodes=nodes, password=self.password)

    def _node_client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_connect_timeout=0.5, password=self.password)

    def primary_ports(self) -> list[int]:
        """Ports of the nodes that are primaries now (a failover changes them)."""
        for node in self.nodes:
            if not node.running:
                continue
            client = self._node_client(node.port)
            try:
                lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
            except redis.RedisError:
                continue
            finally:
                client.close()
            return sorted(
                int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
                for line in lines
                if "master" in line.split()[2] and "fail" not in line.split()[2]
            )
        raise RedisUnavailable("no cluster node answers CLUSTER NODES")

    def kill(self, port: int) -> None:
        """Stops the node on ``port`` at once (SIGKILL: a crash, not a shutdown)."""
        for node in self.nodes:
            if node.port == port:
                node.kill()
                return
        raise ValueError(f"no node of this cluster listens on {port}")

    def wait_ok(self, timeout_s: float = 20.0) -> None:
        """Until every running node reports cluster_state:ok (RedisUnavailable after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:  # every node, not one: each must see the slots covered
            if not node.running:
                continue
            client = self._node_client(node.port)
            try:
                while True:
                    try:
                        if b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                            break
                    except redis.RedisError:
                        pass
                    if time.monotonic() > deadline:
                        raise RedisUnavailable(f"cluster node {node.port} did not reach cluster_state:ok")
                    time.sleep(0.05)
            finally:
                client.close()

    def start(self, timeout_s: float = 30.0) -> LocalRedisCluster:
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
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes", *(["-a", self.password, "--no-auth-warning"] if self.password else [])],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )  # fmt: skip
            if out.returncode != 0:
                raise RedisUnavailable(
                    f"redis-cli --cluster create failed: {out.stdout[-500:]} {out.stderr[-500:]}"
                )
            self.wait_ok(timeout_s)
            if self.replicas:  # replicas attach asynchronously: wait until each primary has its own
                deadline = time.monotonic() + timeout_s
                while not self._replicas_attached():
                    if time.monotonic() > deadline:
                        raise RedisUnavailable("cluster replicas did not attach to their primaries")
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _replicas_attached(self) -> bool:
        client = self._node_client(self.nodes[0].port)
        try:
            lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
        finally:
            client.close()
        replicas = [line for line in lines if "slave" in line.split()[2] and line.split()[3] != "-"]
        if len(replicas) < self.replicas * (len(self.nodes) // (1 + self.replicas)):
            return False
        for node in self.nodes:
            info = self._node_client(node.port)
            try:
                text = info.execute_command("INFO", "replication")
                text = text if isinstance(text, dict) else {}
                if text.get("role") == "slave" and text.get("master_link_status") != "up":
                    return False
            finally:
                info.close()
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_cluster_port(attempts: int = 50) -> int:
    """A free loopback port p whose cluster bus port p + 10000 is free too, both below the
    kernel's ephemeral range (net.ipv4.ip_local_port_range, e.g. 32768-60999), where no
    outgoing connection can take them between picking and binding; drawn at random, tried."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(low - 1 - 10_000, 12_000)
    for _ in range(attempts):
        port = random.randint(10_000, top)
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

    def __init__(
        self, node_timeout_ms: int = 2000, password: str | None = None, full_coverage: bool = True
    ) -> None:
        super().__init__(port=free_cluster_port(), password=password)
        self._extra = [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if full_coverage else "no",
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        for attempt in range(3):
            try:
                return super().start(timeout_s)
            except RedisUnavailable:
                if attempt == 2:
                    raise
                self.port = free_cluster_port()
        raise AssertionError("unreachable")

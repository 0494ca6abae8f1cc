"""One deployment per port: a port in use is refused with "address already in use".

Workers of one deployment share their port with SO_REUSEPORT (server/workers.py). Linux lets
*any* process of the same user join such a port, so a second ``serve --workers N`` on the same
port would silently take half the connections. The supervisor therefore, before it forks:

1. takes a deployment lock: an abstract Unix socket named for host:port. Binding it is atomic,
   it lives exactly as long as the process holding it (no stale lock files after SIGKILL) and,
   like TCP ports, it belongs to the network namespace;
2. checks the TCP port is free by binding it *without* SO_REUSEPORT: that fails while any
   socket holds the port (another deployment's workers, a single-process server, any other
   program), whatever its SO_REUSEPORT setting;
3. keeps a SO_REUSEPORT socket bound (not listening) on the port for its lifetime, so no
   other program can take the port between the check and the workers' binds, or while a
   worker restarts.

A single-process server binds without SO_REUSEPORT, so the kernel alone refuses a port in use;
step 2 gives it the same plain message.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable


class ListenError(RuntimeError):
    """The server cannot listen on its address (in use, or not bindable)."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET


def check_port_free(host: str, port: int) -> None:
    """Raises ListenError "address already in use" when any socket holds ``host:port``.

    Contract: binds and closes a plain socket (SO_REUSEADDR on, as servers set it, so a port
    in TIME_WAIT counts as free; SO_REUSEPORT off, so a port shared by reuseport sockets
    counts as taken). Port 0 is always free.
    """
    if port == 0:
        return
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host.strip("[]"), port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{host}:{port}: address already in use") from None
        raise ListenError(f"{host}:{port}: cannot bind: {exc.strerror or exc}") from None
    finally:
        probe.close()


def reserve_port(host: str, port: int = 0) -> socket.socket:
    """Binds a SO_REUSEPORT socket to ``host:port`` (a free one for 0) and returns it, not
    listening: it keeps the port for this deployment's workers."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{host}:{port}: address already in use") from None
        raise ListenError(f"{host}:{port}: cannot bind: {exc.strerror or exc}") from None
    return sock


def deployment_lock(host: str, port: int) -> socket.socket | None:
    """Takes the lock of the deployment on ``host:port`` (see the module docstring); None
    where abstract Unix sockets do not exist (not Linux: the port check alone applies).
    Raises ListenError "address already in use" when another deployment holds it."""
    if not sys.platform.startswith("linux"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0decision-service:{host.strip('[]')}:{port}")
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{host}:{port}: address already in use (by another deployment)") from None
        raise
    return sock


def add_port(address: str, add: Callable[[], int]) -> int:
    """``add()`` (grpc's add_*_port), its RuntimeError turned into a ListenError naming the
    address; a port that is in use names that."""
    try:
        return add()
    except RuntimeError as exc:
        raise ListenError(f"{address}: cannot listen ({exc})") from None

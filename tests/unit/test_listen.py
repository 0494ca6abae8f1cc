"""One deployment per port (server/listen.py): a port held by anyone is refused plainly."""

from __future__ import annotations

import socket

import pytest

from decision_service.server import listen
from decision_service.server.listen import ListenError


def test_kind_port_in_use_reuseport_holder_is_detected_by_the_plain_probe():
    held = listen.reserve_port("127.0.0.1")  # SO_REUSEPORT, as another deployment's workers
    port = held.getsockname()[1]
    try:
        with pytest.raises(ListenError, match="address already in use"):
            listen.check_port_free("127.0.0.1", port)
    finally:
        held.close()
    listen.check_port_free("127.0.0.1", port)  # free again


def test_kind_port_in_use_deployment_lock_is_exclusive_and_released_with_its_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = listen.deployment_lock("127.0.0.1", port)
    try:
        with pytest.raises(ListenError, match="address already in use"):
            listen.deployment_lock("127.0.0.1", port)
    finally:
        if first is not None:
            first.close()
    again = listen.deployment_lock("127.0.0.1", port)
    if again is not None:
        again.close()

"""The gRPC edge's transport bounds come from the configuration (server/security.py)."""

from __future__ import annotations

import pytest

from decision_service.config import ConfigError, ServiceConfig
from decision_service.server.security import server_options


def test_kind_unbounded_resources_defaults_bound_messages_streams_and_connection_age():
    options = dict(server_options(ServiceConfig()))
    assert options["grpc.max_receive_message_length"] == 1024 * 1024
    assert "grpc.max_concurrent_streams" not in options  # grpc's default unless configured
    limited = dict(server_options(ServiceConfig(max_concurrent_streams_per_connection=8)))
    assert limited["grpc.max_concurrent_streams"] == 8
    assert options["grpc.max_connection_age_ms"] == 60_000
    assert options["grpc.max_connection_age_grace_ms"] == 10_000
    assert ServiceConfig().max_concurrent_rpcs == 256


def test_kind_load_stays_on_one_worker_connection_age_zero_is_off():
    options = dict(server_options(ServiceConfig(max_connection_age_s=0)))
    assert "grpc.max_connection_age_ms" not in options


def test_kind_port_in_use_single_worker_binds_without_reuseport():
    assert dict(server_options(ServiceConfig(workers=1)))["grpc.so_reuseport"] == 0
    assert dict(server_options(ServiceConfig(workers=2)))["grpc.so_reuseport"] == 1


@pytest.mark.parametrize(
    "bad", [{"max_concurrent_rpcs": 0}, {"max_concurrent_streams_per_connection": -1}, {"max_connection_age_s": -1}]
)
def test_resource_bound_knobs_are_validated(bad):
    with pytest.raises(ConfigError):
        ServiceConfig.from_env(env={}, **bad)

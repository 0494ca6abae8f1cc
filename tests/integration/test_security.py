"""TLS, mutual TLS and bearer tokens: callers without the right credentials are refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from tests.integration.conftest import start

REQUEST = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id="u0000001", num_items=3))


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=d)
    return d


def call(channel, metadata=()):
    return pb_grpc.DecisionServiceStub(channel).GetDecision(REQUEST, timeout=5, metadata=metadata)


def test_bearer_token_required_except_for_health(served_world, loop_thread):
    running = start(loop_thread, served_world.registry_root, served_world.redis.url, auth_tokens="alpha, beta")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", "beta"),)]:
                with pytest.raises(grpc.RpcError) as err:
                    call(channel, metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "bearer token" in err.value.details()
            assert call(channel, (("authorization", "Bearer beta"),)).recommendation.items
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        loop_thread.run(running.stop(0.5))


def test_tls_server_accepts_tls_clients_only(served_world, loop_thread, pki):
    running = start(
        loop_thread, served_world.registry_root, served_world.redis.url,
        tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
    )
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{running.port}", creds) as channel:
            assert call(channel).recommendation.items
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel, pytest.raises(grpc.RpcError) as err:
            call(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        loop_thread.run(running.stop(0.5))


def test_mutual_tls_refuses_clients_without_a_certificate(served_world, loop_thread, pki):
    running = start(
        loop_thread, served_world.registry_root, served_world.redis.url,
        tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key", tls_client_ca_file=pki / "ca.pem",
        auth_tokens="tok",
    )
    ca = (pki / "ca.pem").read_bytes()
    try:
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
        with grpc.secure_channel(f"127.0.0.1:{running.port}", anonymous) as channel, pytest.raises(grpc.RpcError) as err:
            call(channel, (("authorization", "Bearer tok"),))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE      # refused at the handshake
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.pem").read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{running.port}", with_cert) as channel:
            with pytest.raises(grpc.RpcError) as err:
                call(channel)                                           # cert but no token
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert call(channel, (("authorization", "Bearer tok"),)).recommendation.items
    finally:
        loop_thread.run(running.stop(0.5))


def test_oversized_messages_are_refused(served_world, loop_thread):
    running = start(loop_thread, served_world.registry_root, served_world.redis.url, max_message_bytes=10_000)
    try:
        big = pb.GetDecisionRequest(
            recommendation=pb.RecommendationRequest(user_id="u1", num_items=3, exclude_item_ids=["x" * 100] * 200)
        )
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel, pytest.raises(grpc.RpcError) as err:
            pb_grpc.DecisionServiceStub(channel).GetDecision(big, timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        loop_thread.run(running.stop(0.5))

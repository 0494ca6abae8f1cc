"""Kind: a request body that does not decode (or any failure before the servicer runs) must
answer INVALID_ARGUMENT "request could not be decoded" / a plain status, never UNKNOWN naming a
protobuf class, and must not log a traceback per call."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc import aio

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.server import errors
from decision_service.server.errors import EdgeGuardInterceptor
from tests.integration.conftest import start

GET_DECISION = "/decision.v1.DecisionService/GetDecision"
RECORD_OUTCOME = "/decision.v1.DecisionService/RecordOutcome"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
TOKEN = (("authorization", "Bearer tok"),)

VALID = pb.GetDecisionRequest(
    request_id="r1", recommendation=pb.RecommendationRequest(user_id="u0000001", num_items=3)
).SerializeToString()
# field 15 as an unknown group nested 200 deep: the schema has no recursion, but the parser
# still descends into unknown groups (its depth limit is 100)
DEEP = b"\x7b" * 200 + b"\x7c" * 200
BAD_BODIES = {
    "garbage": b"\xff\xff\xff\xffgarbage",
    "truncated": VALID[:-3],
    "invalid_utf8_top_level": b"\x0a\x02\xc3\x28",  # field 1 (a string, or a message holding one)
    "deep_nesting": DEEP,
}
# invalid UTF-8 in a string nested one message down, per method
INVALID_UTF8_NESTED = {
    "/decision.v1.DecisionService/GetDecision": b"\x52\x04\x0a\x02\xc3\x28",  # recommendation.user_id
    "/decision.v1.DecisionService/RecordOutcome": b"\x0a\x04\x0a\x02\xc3\x28",  # outcomes[0].decision_id
}


@pytest.fixture(scope="module")
def guarded_server(served_world, loop_thread):
    running = start(loop_thread, served_world.registry_root, served_world.redis.url, auth_tokens="tok")
    yield running
    loop_thread.run(running.stop(0.5))


def raw_call(channel: grpc.Channel, method: str, body: bytes, metadata=()) -> grpc.RpcError:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        call(body, timeout=5, metadata=metadata)
    return err.value


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_kind_undecodable_request_answers_invalid_argument(guarded_server, name):
    with grpc.insecure_channel(f"127.0.0.1:{guarded_server.port}") as channel:
        for method in (GET_DECISION, RECORD_OUTCOME, HEALTH_CHECK):
            err = raw_call(channel, method, BAD_BODIES[name], TOKEN)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.code(), err.details())
            assert err.details() == "request could not be decoded"


def test_kind_undecodable_request_invalid_utf8_in_a_nested_string(guarded_server):
    with grpc.insecure_channel(f"127.0.0.1:{guarded_server.port}") as channel:
        for method, body in INVALID_UTF8_NESTED.items():
            err = raw_call(channel, method, body, TOKEN)
            assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "request could not be decoded")


def test_kind_undecodable_request_without_token_is_refused_for_the_token(guarded_server):
    with grpc.insecure_channel(f"127.0.0.1:{guarded_server.port}") as channel:
        for body in BAD_BODIES.values():
            err = raw_call(channel, GET_DECISION, body)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (err.code(), err.details())


def test_kind_undecodable_request_flood_logs_a_few_lines_not_a_traceback_each(guarded_server, caplog):
    caplog.set_level(logging.DEBUG)
    errors._warn._last.clear()  # a report from an earlier test must not hide this one's first line
    bodies = [*BAD_BODIES.values(), INVALID_UTF8_NESTED[GET_DECISION]]
    with grpc.insecure_channel(f"127.0.0.1:{guarded_server.port}") as channel:
        for i in range(500):
            metadata = TOKEN if i % 2 == 0 else ()
            err = raw_call(channel, GET_DECISION, bodies[i % len(bodies)], metadata)
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED)
            assert "Error" not in err.details()  # no exception class reaches the caller
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(records) <= 3, [r.getMessage()[:200] for r in records]
    assert not any(r.exc_info for r in records)
    assert "undecodable request" in records[0].getMessage()


class _Broken(aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        raise RuntimeError("bug in an interceptor")


def test_kind_failing_interceptor_answers_internal_without_traceback_flood(loop_thread, caplog):
    """Any exception raised in an interceptor maps to a plain INTERNAL, logged rate-limited."""
    caplog.set_level(logging.DEBUG)
    errors._warn._last.clear()

    async def serve() -> tuple[aio.Server, int]:
        server = aio.server(interceptors=[EdgeGuardInterceptor(), _Broken()])
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.T", {"M": grpc.unary_unary_rpc_method_handler(_echo)}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop_thread.run(serve())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(50):
                err = raw_call(channel, "/t.T/M", b"x")
                assert err.code() == grpc.StatusCode.INTERNAL
                assert "bug" not in err.details()
    finally:
        loop_thread.run(server.stop(None))
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(records) <= 2, [r.getMessage()[:200] for r in records]


async def _echo(request, context):
    return request

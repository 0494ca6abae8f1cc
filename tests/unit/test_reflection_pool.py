"""Server reflection must resolve method symbols (what ghz and other clients ask for)."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._base import BaseReflectionServicer

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.server.reflection_pool import MethodAwarePool

METHOD = "decision.v1.DecisionService.GetDecision"


def _file_containing(pool, symbol: str) -> reflection_pb2.ServerReflectionResponse:
    servicer = BaseReflectionServicer(["decision.v1.DecisionService"], pool=pool)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    return servicer._file_containing_symbol(request, symbol)


def test_kind_reflection_symbol_lookup_resolves_methods() -> None:
    assert pb.DESCRIPTOR  # the generated module registered the file in the default pool
    reply = _file_containing(MethodAwarePool(), METHOD)
    assert reply.WhichOneof("message_response") == "file_descriptor_response"
    assert reply.file_descriptor_response.file_descriptor_proto
    # the plain pool is what failed (NOT_FOUND: ghz "Symbol not found")
    plain = _file_containing(descriptor_pool.Default(), METHOD)
    assert plain.WhichOneof("message_response") == "error_response"


def test_reflection_pool_still_resolves_types_and_refuses_unknown_symbols() -> None:
    pool = MethodAwarePool()
    assert pool.FindFileContainingSymbol("decision.v1.GetDecisionRequest").name.endswith("decision_service.proto")
    assert pool.FindFileContainingSymbol("decision.v1.DecisionService").name.endswith("decision_service.proto")
    for missing in ("decision.v1.DecisionService.NoSuchMethod", "nothing", "no.such.Thing"):
        with pytest.raises(KeyError):
            pool.FindFileContainingSymbol(missing)
    reply = _file_containing(pool, "decision.v1.DecisionService.NoSuchMethod")
    assert reply.error_response.error_code == 5  # NOT_FOUND

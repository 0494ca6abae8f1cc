"""The descriptor pool server reflection answers from, able to find methods by name.

gRPC reflection clients ask for "the file containing symbol X" where X may be a service, a
message, an enum *or a method* (``decision.v1.DecisionService.GetDecision``; ghz does this
for every reflection-mode run). Python's (upb) ``DescriptorPool.FindFileContainingSymbol``
finds no methods, so grpcio-reflection answered NOT_FOUND and ghz stopped with "Symbol not
found". This wrapper falls back to the method's service file.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor


class MethodAwarePool:
    """A ``DescriptorPool`` whose ``FindFileContainingSymbol`` also resolves method names.

    Contract: every other attribute is the wrapped pool's. On failure: KeyError, as the pool
    raises for an unknown symbol (grpcio-reflection turns it into NOT_FOUND).
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool if pool is not None else descriptor_pool.Default()

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:  # noqa: N802 - the pool's API
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            if "." not in symbol:
                raise
            try:
                return self._pool.FindMethodByName(symbol).containing_service.file
            except KeyError:
                raise KeyError(f"Couldn't find symbol {symbol}") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

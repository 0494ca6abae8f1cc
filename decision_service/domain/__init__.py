"""Pure domain types: no I/O, no gRPC, no Redis."""

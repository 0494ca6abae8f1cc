"""The gRPC edge: a thin servicer, error mapping, health, reflection and the process CLI."""

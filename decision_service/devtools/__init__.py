"""Developer tooling: a private redis-server for tests, the demo and benchmarks."""

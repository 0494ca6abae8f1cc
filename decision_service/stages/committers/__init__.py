"""committers stages: record a decision atomically with its idempotency key (one store operation)."""

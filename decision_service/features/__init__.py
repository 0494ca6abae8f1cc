"""Feature definitions (the registry) and the Redis online store derived from them."""

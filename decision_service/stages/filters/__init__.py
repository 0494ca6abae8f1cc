"""filters stages."""

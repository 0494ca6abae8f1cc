"""sources stages."""

"""Versioned model registry and the artifacts a pipeline serves from."""

"""Pipelines: the ordered stage lists of each use case."""

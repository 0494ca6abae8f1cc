"""Offline engines: the training-set and feature-history queries on DuckDB or Spark.

``duckdb`` (default): embedded, the queries run verbatim. ``spark``: the same query texts
transpiled (offline/engines/dialect.py), PySpark local mode unless Spark settings name a
cluster (offline/engines/spark_engine.py). Pick one with ``open_engine(name, conf)``.
"""

from __future__ import annotations

from collections.abc import Mapping

from offline.engines.base import Engine, EngineUnavailable, QueryError

ENGINES = ("duckdb", "spark")


def open_engine(name: str | Engine | None = None, conf: Mapping[str, str] | None = None) -> Engine:
    """An engine by name (``duckdb`` when None); an Engine is returned as it is.

    ``conf``: Spark settings (ignored by DuckDB). On failure: ValueError for an unknown name;
    EngineUnavailable (spark_engine.SparkUnavailable) when PySpark, sqlglot or Java is missing.
    """
    if isinstance(name, Engine):
        return name
    if name in (None, "duckdb"):
        from offline.engines.duckdb_engine import DuckDBEngine

        return DuckDBEngine()
    if name == "spark":
        from offline.engines.spark_engine import SparkEngine

        return SparkEngine(conf=conf)
    raise ValueError(f"unknown offline engine {name!r}: one of {', '.join(ENGINES)}")


def parse_conf(items: list[str] | None) -> dict[str, str]:
    """``["spark.executor.memory=4g", ...]`` -> dict; ValueError for an item without '='."""
    conf: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--conf takes key=value, got {item!r}")
        conf[key.strip()] = value
    return conf


__all__ = ["ENGINES", "Engine", "EngineUnavailable", "QueryError", "open_engine", "parse_conf"]

"""The Spark offline engine: the same DuckDB-dialect queries, transpiled (dialect.to_spark).

PySpark local mode by default (``local[2]``); a cluster by the usual Spark settings:
``conf={"spark.master": ...}`` (the CLI's ``--conf k=v``), the ``SPARK_MASTER`` environment
variable, or ``spark.master`` in spark-defaults.conf ($SPARK_CONF_DIR) / ``PYSPARK_SUBMIT_ARGS``.
Results come back to the driver as Arrow (``DataFrame.toArrow``): a training set is about
20x smaller than the logs it is built from, and LightGBM trains on one machine anyway.

Needs the ``scale`` extra (``pip install -e '.[scale]'``: pyspark, sqlglot) and Java 17.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from offline.engines.base import FORWARD_FILL, Engine, EngineUnavailable, QueryError

DEFAULT_MASTER = "local[2]"
SESSION_DEFAULTS: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",  # timestamps are instants; print and cast them in UTC
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.legacy.sizeOfNull": "false",  # size(NULL) is NULL, as DuckDB's array_length
    "spark.sql.shuffle.partitions": "8",  # local data; a cluster sets its own
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
"""Settings applied unless the caller (``conf``) or spark-defaults set them."""

_lock = threading.Lock()


class SparkUnavailable(EngineUnavailable):
    """PySpark or sqlglot is not installed, or no Java runtime was found (says which)."""


def spark_missing_reason() -> str | None:
    """Why a Spark session cannot start here (no pyspark, no java), or None when it can."""
    try:
        import pyspark  # noqa: F401
        import sqlglot  # noqa: F401
    except ImportError as exc:
        return f"the Spark engine needs the scale extra (pip install -e '.[scale]'): {exc}"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "the Spark engine needs Java 17 (no java on PATH, JAVA_HOME unset)"
    return None


def spark_session(conf: Mapping[str, str] | None = None) -> Any:
    """The process's SparkSession (created on first use; ``conf`` applies at creation).

    Master: ``conf["spark.master"]`` (the CLI's ``--conf``), else ``$SPARK_MASTER``, else
    spark-defaults' ``spark.master`` (or ``--master`` in ``PYSPARK_SUBMIT_ARGS``), else
    ``local[2]``. SESSION_DEFAULTS
    apply where neither ``conf`` nor spark-defaults set them. On failure: SparkUnavailable
    naming what is missing.
    """
    if reason := spark_missing_reason():
        raise SparkUnavailable(reason)
    from pyspark.sql import SparkSession

    with _lock:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        conf = dict(conf or {})
        preset = _spark_defaults()  # set before the JVM starts, so spark.driver.memory applies
        submit_args = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
        builder = SparkSession.builder.appName("decision-service-offline")
        if "spark.master" not in conf:
            if os.environ.get("SPARK_MASTER"):
                conf["spark.master"] = os.environ["SPARK_MASTER"]
            elif "spark.master" not in preset and "--master" not in submit_args:
                conf["spark.master"] = DEFAULT_MASTER
        for key, value in SESSION_DEFAULTS.items():
            if key not in conf and key not in preset:
                conf[key] = value
        for key, value in conf.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel(os.environ.get("DS_SPARK_LOG_LEVEL", "ERROR"))
        return session


def _spark_defaults() -> dict[str, str]:
    """The settings of spark-defaults.conf ($SPARK_CONF_DIR, else $SPARK_HOME/conf), if any."""
    conf_dir = os.environ.get("SPARK_CONF_DIR") or (
        os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else None
    )
    path = Path(conf_dir, "spark-defaults.conf") if conf_dir else None
    if path is None or not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            out[parts[0]] = parts[1].strip()
    return out


class SparkEngine(Engine):
    """Runs the offline queries on a SparkSession (default: ``spark_session(conf)``)."""

    name = "spark"

    def __init__(self, spark: Any = None, conf: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.spark = spark if spark is not None else spark_session(conf)
        from pyspark.errors import PySparkException
        from sqlglot.errors import SqlglotError

        from offline.engines.dialect import DialectError, to_spark

        self._to_spark = to_spark
        self._failures = (PySparkException, SqlglotError, DialectError)
        self.errors = (QueryError,)
        self._cached: dict[str, Any] = {}  # view -> its cached DataFrame

    def _df(self, query: str) -> Any:
        """The DataFrame of a DuckDB-dialect query; QueryError (one line) when Spark refuses it."""
        try:
            return self.spark.sql(self._to_spark(query))
        except self._failures as exc:
            raise QueryError(f"spark: {str(exc).splitlines()[0]}") from exc

    def register_parquet(self, stem: str, paths: Sequence[str | Path], with_filename: bool = False) -> str:
        name = self.view_name(stem)
        try:
            df = self.spark.read.option("mergeSchema", "true").parquet(*[_uri(p) for p in paths])
        except self._failures as exc:  # a missing file, an unreadable footer
            raise QueryError(f"spark: {str(exc).splitlines()[0]}") from exc
        if with_filename:
            from pyspark.sql import functions as F

            path = F.col("_metadata.file_path")
            df = df.withColumn("filename", F.regexp_replace(path, "^file:(//)?", ""))
        df.createOrReplaceTempView(name)
        return name

    def register_arrow(self, stem: str, table: pa.Table) -> str:
        name = self.view_name(stem)
        self.spark.createDataFrame(table).createOrReplaceTempView(name)
        return name

    def materialize(self, stem: str, query: str) -> str:
        name = self.view_name(stem)
        df = self._df(query).cache()
        df.createOrReplaceTempView(name)
        self._cached[name] = df
        return name

    def sql(self, query: str) -> pa.Table:
        """The result as Arrow, every top-level column nullable (as DuckDB returns them;
        Spark marks what it proves non-NULL, which would make equal tables unequal).

        A top-level CTE marked ``AS MATERIALIZED`` is computed once (a cached view, dropped
        when the query is done): Spark would otherwise recompute it at every reference."""
        try:
            with self.scope():
                table = self._df(self._materialize_ctes(query)).toArrow()
        except self._failures as exc:  # raised while running (a bad cast at run time)
            raise QueryError(f"spark: {str(exc).splitlines()[0]}") from exc
        return table.cast(pa.schema([f.with_nullable(True) for f in table.schema], table.schema.metadata))

    def _materialize_ctes(self, query: str) -> str:
        """``query`` with each top-level ``AS MATERIALIZED`` CTE read from a cached view of its
        rows (the CTEs before it go with it); the text unchanged without one."""
        if "materialized" not in query.lower():
            return query
        import sqlglot
        from sqlglot import exp

        tree = sqlglot.parse_one(query, read="duckdb")
        key = "with_" if "with_" in tree.args else "with"
        with_ = tree.args.get(key)
        if not isinstance(with_, exp.With):
            return query
        ctes = list(with_.expressions)
        for i, cte in enumerate(ctes):
            if not cte.args.get("materialized"):
                continue
            body = cte.this.copy()
            if i:
                body.set(key, exp.With(expressions=[c.copy() for c in ctes[:i]]))
            view = self.materialize(f"cte_{cte.alias_or_name}", body.sql(dialect="duckdb"))
            cte.set("this", sqlglot.parse_one(f"SELECT * FROM {view}", read="duckdb"))
            cte.set("materialized", None)
        return tree.sql(dialect="duckdb")

    def columns(self, view: str) -> list[str]:
        return list(self.spark.table(view).columns)

    def point_in_time(self, keys: str, history: str) -> str:
        """A sort + forward-fill per entity (base.FORWARD_FILL): one shuffle by entity, then a
        linear scan; no range join, so no blow-up for entities with many snapshots."""
        return FORWARD_FILL.format(keys=keys, history=history)

    def _drop(self, name: str) -> None:
        df = self._cached.pop(name, None)
        if df is not None:
            df.unpersist()
        self.spark.catalog.dropTempView(name)

    def close(self) -> None:
        """Drops this engine's views and cached results; the session stays (it is shared:
        ``spark_session().stop()`` ends it)."""
        self._release_all()


def _uri(path: str | Path) -> str:
    """A Hadoop path: URIs (s3a://, hdfs://) as given, local paths absolute (not %-escaped:
    Hadoop reads ``date=...`` literally)."""
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())

"""The default offline engine: embedded DuckDB, the queries run verbatim."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from offline.engines.base import Engine, quote_paths


class DuckDBEngine(Engine):
    """One DuckDB connection (``threads`` worker threads, time zone UTC).

    ``con``: an existing connection to use (e.g. one configured for object storage); the
    engine then leaves its settings alone and does not close it.
    """

    name = "duckdb"
    errors = (duckdb.Error,)

    def __init__(self, con: duckdb.DuckDBPyConnection | None = None, threads: int = 2) -> None:
        super().__init__()
        self._own = con is None
        self.con = duckdb.connect() if con is None else con
        if self._own:
            self.con.execute(f"set threads to {int(threads)}")
            self.con.execute("set TimeZone = 'UTC'")
        self._arrow: set[str] = set()

    def register_parquet(self, stem: str, paths: Sequence[str | Path], with_filename: bool = False) -> str:
        name = self.view_name(stem)
        extra = ", filename = true" if with_filename else ""
        self.con.execute(
            f"create or replace temp view {name} as select * from read_parquet({quote_paths(paths)}, "
            f"hive_partitioning = false, union_by_name = true{extra})"
        )
        return name

    def register_arrow(self, stem: str, table: pa.Table) -> str:
        name = self.view_name(stem)
        self.con.register(name, table)
        self._arrow.add(name)
        return name

    def materialize(self, stem: str, query: str) -> str:
        name = self.view_name(stem)
        self.con.execute(f"create or replace temp table {name} as {query}")
        return name

    def sql(self, query: str) -> pa.Table:
        return self.con.sql(query).to_arrow_table()

    def columns(self, view: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"describe select * from {view}").fetchall()]

    def point_in_time(self, keys: str, history: str) -> str:
        return f"""
            select k.row_id, h.value
            from {keys} k
            asof join {history} h
            on k.entity_id = h.entity_id and k.at >= h.event_time
        """

    def asof_left_join(
        self,
        left: tuple[str, str, str, str],
        right: tuple[str, str, str, str],
        op: str,
    ) -> str:
        """DuckDB's own ``ASOF LEFT JOIN`` (see Engine.asof_left_join)."""
        if op not in (">", ">=", "<", "<="):
            raise ValueError(f"asof_left_join: op {op!r}, expected one of >, >=, <, <=")
        _, _, key, at = left
        rview, alias, rkey, rtime = right
        return f"ASOF LEFT JOIN {rview} AS {alias} ON {key} = {alias}.{rkey} AND {at} {op} {alias}.{rtime}"

    def _drop(self, name: str) -> None:
        if name in self._arrow:
            self._arrow.discard(name)
            self.con.unregister(name)
            return
        kinds = {r[0] for r in self.con.execute(
            "select table_type from information_schema.tables where table_name = ?", [name]
        ).fetchall()}  # fmt: skip
        if "VIEW" in kinds:
            self.con.execute(f"drop view if exists {name}")
        elif kinds:
            self.con.execute(f"drop table if exists {name}")

    def close(self) -> None:
        """Drops what was registered; closes the connection if the engine opened it."""
        if self._own:
            self._arrow.clear()
            self._registered.clear()
            self.con.close()
        else:
            self._release_all()

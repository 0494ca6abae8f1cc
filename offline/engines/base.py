"""The offline engine interface: what the training-set and feature-history jobs need.

A job writes each query once, in DuckDB's SQL (offline/engines/dialect.py says which
constructs the Spark translation handles), and runs it through an ``Engine``: register the
Parquet files and Arrow tables it reads as named views, run queries, get Arrow back. The one
primitive that is not a query text is the point-in-time lookup (``point_in_time``): DuckDB
has ASOF JOIN, Spark computes it as a sort + forward-fill.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

_VIEW_IDS = itertools.count()


class EngineUnavailable(RuntimeError):
    """The engine cannot start here (a missing package or runtime); the message says which
    and how to install it."""


class QueryError(ValueError):
    """A query an engine refused or failed (a missing column, a type error, a translation it
    does not support); the message starts with the engine's name."""


class Engine(abc.ABC):
    """Runs DuckDB-dialect offline queries over Parquet / Arrow; returns Arrow tables.

    View names returned by ``register_*`` / ``materialize`` are unique per process (a shared
    Spark session may serve several jobs); use the returned name in queries. What a job
    registers inside ``scope()`` is dropped when it ends; ``close()`` drops everything.
    ``errors``: the exception types a query the engine cannot run raises (a bad column, a type
    error), for callers that turn them into their own messages.
    """

    name: str = ""
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self._registered: list[str] = []  # view names, in registration order

    def view_name(self, stem: str) -> str:
        """A new unique view name, remembered for ``scope`` / ``close`` to drop."""
        name = f"{stem}_{next(_VIEW_IDS)}"
        self._registered.append(name)
        return name

    def holds(self, name: str) -> bool:
        """Whether ``name`` is a view this engine registered and has not dropped yet."""
        return name in self._registered

    @contextlib.contextmanager
    def scope(self) -> Iterator[Engine]:
        """Drops, on exit, every view and cached result registered inside the block."""
        mark = len(self._registered)
        try:
            yield self
        finally:
            for name in reversed(self._registered[mark:]):
                self._drop(name)
            del self._registered[mark:]

    def _release_all(self) -> None:
        for name in reversed(self._registered):
            self._drop(name)
        self._registered.clear()

    @abc.abstractmethod
    def _drop(self, name: str) -> None:
        """Forgets one registered view (and its cached result); no error if already gone."""

    @abc.abstractmethod
    def register_parquet(self, stem: str, paths: Sequence[str | Path], with_filename: bool = False) -> str:
        """A view over ``paths`` (Parquet files, columns unioned by name, a file lacking a
        column gives NULL; no hive partition columns). ``with_filename``: adds ``filename``
        (the file's path, string). Returns the view name."""

    @abc.abstractmethod
    def register_arrow(self, stem: str, table: pa.Table) -> str:
        """A view over an Arrow table; returns the view name."""

    @abc.abstractmethod
    def materialize(self, stem: str, query: str) -> str:
        """A view holding ``query``'s result, computed once and reused; returns its name."""

    @abc.abstractmethod
    def sql(self, query: str) -> pa.Table:
        """``query``'s result as an Arrow table (row order as the query's ORDER BY says)."""

    @abc.abstractmethod
    def columns(self, view: str) -> list[str]:
        """The column names of a registered view, in order."""

    @abc.abstractmethod
    def point_in_time(self, keys: str, history: str) -> str:
        """A query text: for each row of view ``keys`` (row_id, entity_id, at), the ``value``
        of the ``history`` row (a view name or a parenthesised query over entity_id,
        event_time, value; at most one row per entity and event_time, value not NULL) with
        the same entity and the latest ``event_time <= at``. Columns (row_id, value); keys
        without such a row are left out."""

    def asof_left_join(
        self,
        left: tuple[str, str, str, str],
        right: tuple[str, str, str, str],
        op: str,
    ) -> str:
        """A join clause to append to ``FROM <left view>``: each left row gets the columns of
        the ``right`` row with the same key and the nearest time that satisfies
        ``left_time op right_time`` -- op ``>`` / ``>=``: the latest right time before / at
        the left time; ``<`` / ``<=``: the earliest after / at it; none: NULLs (a LEFT JOIN).

        ``left``: (view, its unique row id column, key expression, time expression), the
        expressions over the view's columns qualified by the view's name (``q.t - 60000``).
        ``right``: (view, alias in the query, key column, time column); at most one row per
        (key, time), time not NULL. This default is portable SQL (a sort + fill per key, then an
        equality join); DuckDB overrides it with ``ASOF LEFT JOIN``.
        On failure: ValueError for another op.
        """
        if op not in _ASOF_ORDER:
            raise ValueError(f"asof_left_join: op {op!r}, expected one of {', '.join(_ASOF_ORDER)}")
        view, row_id, key, at = left
        rview, alias, rkey, rtime = right
        key_first, agg, frame = _ASOF_ORDER[op]
        k_ord, r_ord = (0, 1) if key_first else (1, 0)
        m = f"{alias}_m"
        return (
            f"LEFT JOIN (SELECT _id, _k, _m FROM (SELECT _id, _k, _r, {agg}(CASE WHEN _r = 1 THEN _t END) "
            f"OVER (PARTITION BY _k ORDER BY _t, _o ROWS BETWEEN {frame}) AS _m FROM ("
            f"SELECT {view}.{row_id} AS _id, {key} AS _k, {at} AS _t, {k_ord} AS _o, 0 AS _r FROM {view} "
            f"UNION ALL SELECT NULL AS _id, {alias}.{rkey} AS _k, {alias}.{rtime} AS _t, {r_ord} AS _o, "
            f"1 AS _r FROM {rview} AS {alias}) AS _u) AS _w WHERE _r = 0) AS {m} "
            f"ON {m}._id = {view}.{row_id} "
            f"LEFT JOIN {rview} AS {alias} ON {alias}.{rkey} = {m}._k AND {alias}.{rtime} = {m}._m"
        )

    @abc.abstractmethod
    def close(self) -> None:
        """Drops what this engine registered (views, cached results; an owned connection)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ASOF_ORDER = {  # op -> (a left row sorts before a right row at the same time, fill, frame)
    ">": (True, "max", "UNBOUNDED PRECEDING AND CURRENT ROW"),  # latest right time < left time
    ">=": (False, "max", "UNBOUNDED PRECEDING AND CURRENT ROW"),  # latest right time <= left time
    "<": (False, "min", "CURRENT ROW AND UNBOUNDED FOLLOWING"),  # earliest right time > left time
    "<=": (True, "min", "CURRENT ROW AND UNBOUNDED FOLLOWING"),  # earliest right time >= left time
}


def quote_paths(paths: Sequence[str | Path]) -> str:
    """A DuckDB list literal of file paths or URIs."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


FORWARD_FILL = """
    select row_id, value from (
        select row_id, is_key,
               last_value(value ignore nulls) over (
                   partition by entity_id order by t, is_key
                   rows between unbounded preceding and current row) as value
        from (
            select k.entity_id, k.at as t, 1 as is_key, k.row_id, cast(null as float) as value from {keys} k
            union all
            select h.entity_id, h.event_time as t, 0 as is_key, cast(null as bigint) as row_id,
                   cast(h.value as float) as value
            from {history} h
        ) u
    ) f
    where is_key = 1 and value is not null
"""
"""The point-in-time lookup as one sort + forward-fill (Spark's form, valid on DuckDB too):
keys and history rows of an entity in time order, a history row before a key at the same
instant (``event_time <= at``), each key taking the last non-NULL value seen so far."""

"""One query text, two dialects: the offline jobs' DuckDB SQL, transpiled to Spark SQL.

The training-set and feature-history queries are written once, in DuckDB's dialect (the
default engine runs them verbatim). ``to_spark`` transpiles them with sqlglot and then fixes
what a plain transpile gets wrong or cannot express, so that Spark computes the same rows:

* ``epoch_ms(ts)``: DuckDB's timestamp -> milliseconds. sqlglot reads ``epoch_ms`` as the
  *inverse* (ms -> timestamp, ``TIMESTAMP_MILLIS``): a silent type error. Offline queries use
  ``epoch_ms`` only on timestamps, so it becomes Spark's ``unix_millis(ts)``.
* Several ``unnest`` in one SELECT: DuckDB zips them (row i of each list together). A naive
  translation gives several ``explode`` (Spark refuses two generators in one SELECT; in
  lateral views they would be a silent cross product). They become one
  ``LATERAL VIEW inline(arrays_zip(a, b, ...)) AS a', b'`` (zipped, shorter lists padded with
  NULL, as DuckDB does; a NULL or empty list gives no row on both engines).
* ``timestamptz``: Spark's plain ``TIMESTAMP`` is naive when a cluster sets
  ``spark.sql.timestampType=TIMESTAMP_NTZ``; it becomes ``TIMESTAMP_LTZ`` (an instant).
* ``ASOF JOIN`` has no Spark equivalent: refused here (point-in-time lookups go through the
  engine's ``point_in_time`` / ``asof_left_join`` primitives, a sort + fill on Spark).
* ``list_position(list, x)``: DuckDB gives NULL when ``x`` is absent, Spark's
  ``array_position`` 0 (a silent -1 after the compiler's ``- 1``): it becomes
  ``nullif(array_position(list, x), 0)``.
* ``isfinite(x)`` (no Spark function): ``abs(x) < double('inf')``: NULL for NULL, false for
  NaN and +-inf, as DuckDB's.
* ``AS MATERIALIZED`` on a CTE: a DuckDB planning hint, dropped (Spark inlines the CTE).
* ``typeof`` and ``timezone(zone, ts)`` are refused: DuckDB's type names and wall-time
  conversion have no faithful Spark form (a time column with a non-UTC ``timezone``).

Everything else (``filter (where ...)``, ``qualify``, ``::`` casts, ``arg_max``,
``list_transform`` lambdas, ``array_length``) is sqlglot's translation, checked by the
differential tests (tests/offline/test_spark_engine.py). Write ``array_length(list)``, not
``len(list)``: sqlglot maps ``len`` to Spark's string ``length``.
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp


class DialectError(ValueError):
    """A construct the Spark translation does not support (names it)."""


_REFUSED = frozenset({"typeof", "timezone"})
"""DuckDB functions whose Spark namesakes compute something else (type names, time zones)."""


@functools.lru_cache(maxsize=256)
def to_spark(query: str) -> str:
    """The Spark SQL text of one DuckDB-dialect offline ``query`` (one statement).

    On failure: DialectError for an ASOF JOIN, ``typeof``, ``timezone`` or an ``unnest``
    outside a SELECT list; sqlglot.errors.ParseError for text DuckDB's grammar does not parse.
    """
    tree = sqlglot.parse_one(query, read="duckdb")
    for join in tree.find_all(exp.Join):
        if "ASOF" in (join.text("kind").upper(), join.text("side").upper(), join.text("method").upper()):
            raise DialectError("ASOF JOIN has no Spark form: use the engine's point_in_time()")
    for cte in tree.find_all(exp.CTE):
        cte.set("materialized", None)
    for node in reversed(list(tree.find_all(exp.Anonymous, exp.Func))):  # innermost first
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if name in _REFUSED or isinstance(node, (exp.ConvertTimezone, exp.AtTimeZone)):
            raise DialectError(f"{node.sql('duckdb')}: DuckDB's {name}() has no faithful Spark form")
        if name == "isfinite":
            inf = exp.cast(exp.Literal.string("Infinity"), exp.DataType.build("DOUBLE"))
            node.replace(exp.paren(exp.LT(this=exp.Abs(this=node.expressions[0].copy()), expression=inf)))
        elif name in ("list_position", "array_position", "list_indexof", "array_indexof"):
            args = [
                a.copy()
                for a in (node.expressions if isinstance(node, exp.Anonymous) else node.args.values())
            ]
            found = exp.Anonymous(this="ARRAY_POSITION", expressions=args[:2])
            node.replace(exp.Nullif(this=found, expression=exp.Literal.number(0)))
    for node in list(tree.find_all(exp.UnixToTime)):
        scale = node.args.get("scale")
        if isinstance(scale, exp.Literal) and scale.this == "3":  # epoch_ms(timestamp) -> ms
            node.replace(exp.Anonymous(this="UNIX_MILLIS", expressions=[node.this.copy()]))
    for node in list(tree.find_all(exp.DataType)):
        if node.this == exp.DataType.Type.TIMESTAMPTZ:  # an instant, whatever timestampType says
            node.replace(exp.DataType(this=exp.DataType.Type.TIMESTAMPLTZ))
    for select in list(tree.find_all(exp.Select)):
        _zip_unnests(select)
    for node in tree.find_all(exp.Unnest, exp.Explode):
        if not isinstance(node.parent, exp.Lateral):
            raise DialectError(f"unnest outside a SELECT list is not translated: {node.sql('duckdb')}")
    return tree.sql(dialect="spark")


def _zip_unnests(select: exp.Select) -> None:
    """Replaces a SELECT list's unnest(...) items by one zipped LATERAL VIEW (in place)."""
    items = list(select.expressions)
    unnests = [i for i, e in enumerate(items) if isinstance(e.unalias(), (exp.Unnest, exp.Explode))]
    if not unnests:
        return
    names: list[str] = []
    arrays: list[exp.Expression] = []
    for k, i in enumerate(unnests):
        item = items[i]
        node = item.unalias()
        if any(
            isinstance(x, (exp.Unnest, exp.Explode))
            for x in node.find_all(exp.Unnest, exp.Explode)
            if x is not node
        ):
            raise DialectError(f"nested unnest is not translated: {item.sql('duckdb')}")
        arg = node.this if isinstance(node, exp.Explode) else node.expressions[0]
        names.append(item.alias if isinstance(item, exp.Alias) else f"_unnest_{k}")
        arrays.append(arg.copy())
    view = "_zipped"
    lateral = exp.Lateral(
        this=exp.func("INLINE", exp.func("ARRAYS_ZIP", *arrays)),
        view=True,
        alias=exp.TableAlias(this=exp.to_identifier(view), columns=[exp.to_identifier(n) for n in names]),
    )
    for i, name in zip(unnests, names, strict=True):
        items[i] = exp.alias_(exp.column(name, table=view), name)
    select.set("expressions", items)
    select.append("laterals", lateral)

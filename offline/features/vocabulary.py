"""Vocabularies learned from a project's data: the categories of a free-form column.

``learned("genre", MOVIES, "split_part(genres, '|', 1)")`` returns the column's distinct
values (any strings, unicode, thousands of them), most frequent first (ties by value). The
first call learns them from the source; ``persist_learned()`` (bootstrap, once the sources
pass validation: a run that fails validation writes nothing) stores them in the project's
state folder (``<project>/.ds/vocabularies/<name>.json``); later calls (the server, every
job) read the stored list, so a category's index never moves under a trained model. Bootstrap records the
vocabularies in the model version's manifest; a server refuses a version whose vocabulary
differs from the project's. Delete the file to learn it again (and retrain).

On failure: SourceError naming the file and the expression.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from decision_service import project
from decision_service.features.declarative import Events, Table
from offline.features.compiler import SourceError, connect, resolve, scan_sql

VOCABULARY_DIR = "vocabularies"


def vocabulary_path(name: str, proj: project.Project | None = None) -> Path:
    return (proj or project.active()).state_dir / VOCABULARY_DIR / f"{name}.json"


def learned(
    name: str, source: Table | Events, expression: str, proj: project.Project | None = None
) -> tuple[str, ...]:
    """The stored vocabulary ``name`` of the active project, learned from ``expression`` (DuckDB
    SQL over ``source``'s columns) on first use. NULL and empty values are not categories."""
    proj = proj or project.active()
    path = vocabulary_path(name, proj)
    if path.is_file():
        values = json.loads(path.read_text(encoding="utf-8"))["values"]
        return tuple(values)
    try:
        scan = scan_sql(source, proj.data_dir)
    except SourceError as exc:  # e.g. a serving machine that has the project but not its data
        raise SourceError(
            f"vocabulary {name!r} is not stored ({path}) and cannot be learned: {exc}. Copy "
            f"{path.parent} from where bootstrap ran (a model's vocabulary must not change under it)"
        ) from None
    sql = (
        f"SELECT v, count(*) AS n FROM (SELECT CAST(({expression}) AS VARCHAR) AS v FROM {scan}) "
        "WHERE v IS NOT NULL AND v <> '' GROUP BY v ORDER BY n DESC, v"
    )
    try:
        rows = connect().execute(sql).fetchall()
    except Exception as exc:  # duckdb.Error
        raise SourceError(
            f"{resolve(source.path, proj.data_dir)}: vocabulary {name!r} ({expression}): {exc}"
        ) from exc
    if not rows:
        raise SourceError(
            f"{resolve(source.path, proj.data_dir)}: vocabulary {name!r} ({expression}) has no value"
        )
    values = [r[0] for r in rows]
    _PENDING[path] = {
        "name": name,
        "source": source.name,
        "expression": expression,
        "counts": [r[1] for r in rows],
        "values": values,
    }
    return tuple(values)


_PENDING: dict[Path, dict] = {}
"""Vocabularies this process learned and has not stored yet (path -> its file's content)."""


def persist_learned() -> list[Path]:
    """Stores every vocabulary this process learned (atomically, one file each); returns the
    paths written. Bootstrap calls it once the sources pass validation."""
    written = []
    for path, content in list(_PENDING.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
        del _PENDING[path]
    return written


def index_sql(expression: str, vocabulary: tuple[str, ...]) -> str:
    """DuckDB SQL: the index of ``expression``'s value in ``vocabulary`` (-1 when absent)."""
    items = ", ".join("'" + v.replace("'", "''") + "'" for v in vocabulary)
    return f"coalesce(list_position([{items}], CAST(({expression}) AS VARCHAR)) - 1, -1)"

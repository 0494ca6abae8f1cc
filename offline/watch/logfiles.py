"""The log files the watch jobs read, checked before any query: one unreadable file (truncated,
not Parquet) is a ``LogFileError`` naming it, not an engine traceback from the middle of a
query; a use case with decisions but no outcome log is a ``NoOutcomesError`` (its online
metrics would count every decision as a negative).

Each file's Parquet footer is read once per (path, size, mtime): cheap (no data pages), and
a truncated file always fails there. A file whose footer reads but whose data pages are
corrupt still fails inside the query; the watch modules turn engine errors into a
ValueError carrying the engine's message (which names the file).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from offline.loop.training_set import _log_files

_CHECKED: set[tuple[str, int, int]] = set()


class LogFileError(ValueError):
    """A log file that cannot be read; the message names it."""


class NoOutcomesError(ValueError):
    """Decisions of a use case but no outcome log: nothing can be labelled."""


def check_readable(files: Iterable[Path]) -> list[Path]:
    """``files`` (as a list) once each has a readable Parquet footer.
    On failure: LogFileError naming the first unreadable file and why (one line)."""
    out = list(files)
    for f in out:
        try:
            st = Path(f).stat()
            key = (str(f), st.st_size, st.st_mtime_ns)
            if key in _CHECKED:
                continue
            pq.read_metadata(f)
        except (OSError, pa.ArrowException) as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LogFileError(f"unreadable log file {f}: {why}") from None
        _CHECKED.add(key)
    return out


def decision_files(log_root: str | Path, use_case: str) -> list[Path]:
    """The decision log's Parquet files of ``use_case`` (training_set.decision_files), checked."""
    return check_readable(_log_files(log_root, "decisions", use_case))


def outcome_files(log_root: str | Path, use_case: str) -> list[Path]:
    """The outcome log's Parquet files of ``use_case``, checked."""
    return check_readable(_log_files(log_root, "outcomes", use_case))


def shadow_files(log_root: str | Path, use_case: str) -> list[Path]:
    """The shadow log's Parquet files of ``use_case``, checked."""
    return check_readable(_log_files(log_root, "shadow", use_case))


def require_outcomes(log_root: str | Path, use_case: str) -> list[Path]:
    """The outcome files of ``use_case``. On failure: NoOutcomesError when there are none
    (a metric would read every decision as a negative: plausible numbers, all wrong)."""
    files = outcome_files(log_root, use_case)
    if not files:
        raise NoOutcomesError(
            f"{use_case}: decisions but no outcome log files under "
            f"{log_root}/outcomes/use_case={use_case}: every decision would count as a negative, "
            "so nothing is measured"
        )
    return files


__all__ = [
    "LogFileError",
    "NoOutcomesError",
    "check_readable",
    "decision_files",
    "outcome_files",
    "require_outcomes",
    "shadow_files",
]

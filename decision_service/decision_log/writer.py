"""An asynchronous, never-blocking Parquet log: bounded queue -> writer thread -> files.

* The request path only calls ``submit``: an append to a bounded deque, no lock and no
  wake-up (the writer thread polls every ``poll_interval_s``; a Queue's per-record notify
  woke the writer and moved the GIL between threads once per decision). When the queue is
  full the record is dropped and counted, never the request.
* The writer thread converts what it takes to Arrow at once and appends it, one row group
  per ``row_group_bytes`` of Arrow data, to an open file per Hive partition (e.g.
  ``use_case=…/date=…/hour=…``); the file is closed when it holds ``max_rows_per_file``
  rows or every ``flush_interval_s``. Encoding a whole file at once (~1,000 decisions, tens
  of ms of CPU and ~50 MB of buffers) was what the requests' p99 waited for (46-86 ms at
  400 rps on 2 cores; ~20 ms in row groups; 15 ms with no write at all; BENCHMARKS.md). A file is
  written under a hidden temporary name and renamed into place when closed, so readers
  (``**/*.parquet``) never see a partial file. After a SIGKILL at most the queue plus the
  open files are lost: bounded by configuration.
* A failed write (directory unwritable, disk full) loses only the records it could not write:
  those of the row group being written, dropped and counted (``dropped_write_error``). The row
  groups already written are kept (their Arrow tables, until the file is committed) and
  rewritten at once into a fresh file, after the broken one is deleted: deleting it freed the
  bytes they need. Only when that fails too are they dropped (counted). The next records
  open a new file. Memory: the Arrow data of each open file, at most ``max_rows_per_file``
  rows or ``flush_interval_s`` of records per partition (measured: 2,000 recommendation
  decisions of 100 candidates are 23 MB of Arrow, +20-40 MB of peak RSS over writing and
  forgetting each row group; half that at 200 decisions/s per worker and a 5 s interval).
  Lower those two knobs to hold less. No extra CPU unless a write fails.
* Temporary names carry their writer's host, pid and process start time. At start the writer
  thread removes the leftovers of killed writers under its log (or renames into place a
  complete one, killed between its footer and the rename), logs how many, and leaves alone
  the files of writers that are alive (another worker, another log of this process); files of
  another host or of unknown owner only once they are older than ``stale_temp_age_s``.
* ``close()`` drains the queue and flushes everything (graceful shutdown).

``root`` is a local directory or any URI pyarrow's filesystems understand (``s3://…``,
``gs://…``). On object stores a PUT is already atomic, so files are written in place.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decision_service.rate_limited_log import RateLimitedLog

log = logging.getLogger(__name__)

R = TypeVar("R")
_STOP = object()


@dataclass(frozen=True)
class LogWriterConfig:
    queue_size: int = 20_000
    max_rows_per_file: int = 2_000
    flush_interval_s: float = 5.0
    compression: str = "zstd"
    poll_interval_s: float = 0.05  # how often the writer thread takes what was submitted
    row_group_bytes: int = 2 << 20  # Arrow bytes per row group: bounds each encoding burst
    thread_nice: int = 10  # the writer thread's niceness above the process's (Linux); 0 = same
    # a temp file of another host's (or an unknown) writer is left alone until this old; a live
    # writer rewrites or commits its file at least every flush_interval_s
    stale_temp_age_s: float = 600.0


@dataclass
class LogWriterStats:
    """Counters since start. Written by one thread; reads may be a moment stale."""

    submitted: int = 0
    dropped_queue_full: int = 0
    dropped_write_error: int = 0
    written_records: int = 0
    written_files: int = 0
    write_errors: int = 0
    salvaged_records: int = 0  # rows of a failed file rewritten into a fresh one (in written_records)
    leftover_temp_files_removed: int = 0  # at start: killed writers' partial files deleted
    leftover_temp_files_recovered: int = 0  # at start: killed writers' complete files renamed

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_write_error


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


class ParquetLogWriter(Generic[R]):
    """One log (e.g. "decisions"): records of type R, converted in batches by ``to_batch``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        schema: pa.Schema,
        to_batch: Callable[[Sequence[R]], pa.RecordBatch],
        partition_of: Callable[[R], tuple[tuple[str, str], ...]],
        config: LogWriterConfig = LogWriterConfig(),
    ) -> None:
        self.name = name
        self.schema = schema
        self.config = config
        self.stats = LogWriterStats()
        self._to_batch = to_batch
        self._partition_of = partition_of
        self._fs, self._root = _filesystem(root)
        # Float columns (scores, served feature vectors) are continuous: dictionary encoding
        # and min/max statistics cost the writer a third of its CPU for nothing a reader
        # uses (measured on bench decision logs: 0.140 -> 0.091 ms per decision; files 8.0 ->
        # 10.3 KB per decision, traded for serving CPU). Offline compaction can re-encode.
        self._encoded_columns = [f.name for f in schema if not pa.types.is_floating(_leaf_type(f.type))]
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        # deque.append / popleft are atomic in CPython: the request path takes no lock
        self._queue: collections.deque[object] = collections.deque()
        self._wake = threading.Event()  # flush / stop markers are handled at once
        # True while the writer sleeps with nothing queued and nothing open: the next submit
        # wakes it (once per idle -> busy change, not per record). An idle writer that kept
        # polling cost every request a GIL hand-over to a niced thread 20 times a second
        # (a log with no traffic, e.g. a use case nobody calls; BENCHMARKS.md)
        self._idle = False
        self.wakeups = 0  # writer loop iterations (tests: an idle writer does not poll)
        # per partition: records taken this poll, and the open file they go to
        self._pending: dict[tuple[tuple[str, str], ...], list[R]] = {}
        self._files: dict[tuple[tuple[str, str], ...], _OpenFile] = {}
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0
        self._sweeper: threading.Thread | None = None
        # a record the writer cannot handle is logged with its traceback once per 5 s (with
        # the count suppressed), not once per record: a bad producer must not flood the log
        self._bad_records = RateLimitedLog(logger=log)

    @property
    def root(self) -> str:
        return f"{self._root}/{self.name}"

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> ParquetLogWriter[R]:
        if self._local:
            self._sweeper = threading.Thread(
                target=self._sweep_in_background, name=f"log-sweep-{self.name}", daemon=True
            )
            self._sweeper.start()
        self._thread = threading.Thread(target=self._run, name=f"log-writer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def submit(self, record: R) -> bool:
        """Enqueues without blocking. Returns False (and counts a drop) when the queue is full."""
        if len(self._queue) >= self.config.queue_size:
            self.stats.dropped_queue_full += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 5.0:
                self._last_drop_log = now
                log.warning(
                    "%s log queue full (%d): dropped %d records so far",
                    self.name,
                    self.config.queue_size,
                    self.stats.dropped_queue_full,
                )
            return False
        self._queue.append(record)
        self.stats.submitted += 1
        if self._idle:
            self._idle = False
            self._wake.set()
        return True

    def flush(self, timeout_s: float = 30.0) -> None:
        """Writes everything submitted so far and waits for it (tests, checkpoints)."""
        marker = _Flush()
        self._queue.append(marker)
        self._wake.set()
        if not marker.done.wait(timeout_s):
            raise TimeoutError(f"{self.name} log did not flush within {timeout_s}s")

    def close(self, timeout_s: float = 30.0) -> None:
        """Drains the queue, writes every buffer and stops the thread (and waits for the
        start-up sweep of leftovers, if it still runs)."""
        if self._sweeper is not None:
            self._sweeper.join(timeout_s)
            self._sweeper = None
        if self._thread is None:
            return
        self._queue.append(_STOP)
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("%s log writer did not stop within %.0fs", self.name, timeout_s)
        self._thread = None

    # ------------------------------------------------------------------ writer thread

    def _sweep_in_background(self) -> None:
        """The start-up sweep, on its own thread: walking a long log history must not hold up
        the writer (its queue would fill and drop records while requests are served)."""
        _lower_own_priority(self.config.thread_nice)
        try:
            self._sweep_leftovers()
        except Exception:  # noqa: BLE001 - a failed cleanup must not stop the log
            log.exception("%s log: cleaning leftover temp files under %s failed", self.name, self.root)

    def _run(self) -> None:
        _lower_own_priority(self.config.thread_nice)
        interval = self.config.flush_interval_s
        next_flush = time.monotonic() + interval
        while True:
            timeout: float | None = max(0.0, min(self.config.poll_interval_s, next_flush - time.monotonic()))
            if not self._files and not self._pending and not self._queue:
                self._idle = True  # before the last look: a submit from now on wakes us
                if self._queue:
                    self._idle = False
                else:
                    timeout = None  # nothing to write or flush: sleep until submit/flush/stop
            self._wake.wait(timeout)
            self._wake.clear()
            self.wakeups += 1
            if timeout is None:
                self._idle = False
                next_flush = time.monotonic() + interval  # a file opened now closes after a full interval
            if self._drain():
                self._flush_all()
                return
            if time.monotonic() >= next_flush:
                self._flush_all()
                next_flush = time.monotonic() + interval

    def _drain(self) -> bool:
        """Takes every queued record into the open files; True when a stop marker was seen."""
        stop = False
        while self._queue:
            item = self._queue.popleft()
            if item is _STOP:
                stop = True
            elif isinstance(item, _Flush):
                self._flush_all()
                item.done.set()
            else:
                self._add(item)  # type: ignore[arg-type]
        self._convert_pending()
        return stop

    def _add(self, record: R) -> None:
        try:
            key = self._partition_of(record)
        except Exception as exc:  # noqa: BLE001 - a bad record must not kill the writer
            self.stats.dropped_write_error += 1
            self._bad_records.error(
                "partition", f"{self.name} log: cannot partition a record; dropped", exc_info=exc
            )
            return
        self._pending.setdefault(key, []).append(record)

    def _convert_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for key, records in pending.items():
            start = 0
            while start < len(records):  # chunks that fill a file exactly: max_rows is a cap
                file = self._files.get(key)
                if file is None:
                    file = self._files[key] = self._new_file(key)
                chunk = records[start : start + self.config.max_rows_per_file - file.rows]
                start += len(chunk)
                try:
                    batch = self._to_batch(chunk)
                except Exception as exc:  # noqa: BLE001 - a bad record must not kill the writer
                    self.stats.dropped_write_error += len(chunk)
                    self._bad_records.error(
                        "convert",
                        f"{self.name} log: cannot convert {len(chunk)} records; dropped",
                        exc_info=exc,
                    )
                    continue
                file.batches.append(batch)
                file.rows += batch.num_rows
                if file.rows >= self.config.max_rows_per_file:
                    self._close(key)
                elif file.unwritten_bytes >= self.config.row_group_bytes:
                    self._write_row_group(key)

    def _flush_all(self) -> None:
        self._convert_pending()
        for key in list(self._files):
            self._close(key)

    def _new_file(self, key: tuple[tuple[str, str], ...]) -> _OpenFile:
        directory = "/".join([self.root, *(f"{k}={v}" for k, v in key)])
        name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = f"{directory}/.{name}.{_OWNER}.tmp" if self._local else f"{directory}/{name}"
        return _OpenFile(directory, tmp, f"{directory}/{name}")

    def _open(self, file: _OpenFile) -> pq.ParquetWriter:
        if file.writer is None:
            self._fs.create_dir(file.directory, recursive=True)
            file.writer = pq.ParquetWriter(
                file.tmp,
                self.schema,
                filesystem=self._fs,
                compression=self.config.compression,
                use_dictionary=self._encoded_columns,
                write_statistics=self._encoded_columns,
            )
        return file.writer

    def _write_row_group(self, key: tuple[tuple[str, str], ...]) -> bool:
        file = self._files[key]
        table = pa.Table.from_batches(file.batches, schema=self.schema) if file.batches else None
        try:
            writer = self._open(file)
            if table is not None:
                writer.write_table(table)
        except Exception as exc:  # noqa: BLE001 - disk full / unwritable: count, keep serving
            self._fail(key, exc, table.num_rows if table is not None else 0)
            return False
        if table is not None:
            file.written.append(table)  # kept until the file is committed: see _fail
        file.batches = []
        return True

    def _close(self, key: tuple[tuple[str, str], ...]) -> None:
        file = self._files[key]
        if not file.rows:
            del self._files[key]
            return
        if not self._write_row_group(key):
            return
        try:
            self._commit(file)
        except Exception as exc:  # noqa: BLE001
            self._fail(key, exc, 0)
            return
        del self._files[key]
        self.stats.written_records += file.rows
        self.stats.written_files += 1

    def _commit(self, file: _OpenFile) -> None:
        """Writes the footer and renames the file into place."""
        file.writer.close()  # type: ignore[union-attr]
        if file.tmp != file.final:
            self._fs.move(file.tmp, file.final)

    def _fail(self, key: tuple[tuple[str, str], ...], exc: Exception, unwritten: int) -> None:
        """A write of ``key``'s open file failed.

        Contract: the ``unwritten`` records (the row group whose write failed) are dropped and
        counted; the row groups written before it are rewritten into a fresh file once the
        broken one is deleted, and count as written if that succeeds, as dropped if not.
        On failure: never raises; the partition's next records open a new file.
        """
        file = self._files.pop(key)
        self.stats.write_errors += 1
        self.stats.dropped_write_error += unwritten
        self._discard(file)
        kept = sum(t.num_rows for t in file.written)
        salvaged = self._salvage(key, file.written, kept)
        log.error(
            "%s log: writing %s failed (%s: %s): %d records dropped, %d already written %s; "
            "%d records dropped so far",
            self.name,
            file.directory,
            type(exc).__name__,
            exc,
            unwritten,
            kept,
            "rewritten to a new file" if salvaged else "dropped too",
            self.stats.dropped_write_error,
        )

    def _salvage(self, key: tuple[tuple[str, str], ...], tables: list[pa.Table], rows: int) -> bool:
        if not rows:
            return True
        file = self._new_file(key)
        try:
            writer = self._open(file)
            for table in tables:
                writer.write_table(table)
            self._commit(file)
        except Exception as exc:  # noqa: BLE001 - still failing: these are lost too, counted
            self.stats.write_errors += 1
            self.stats.dropped_write_error += rows
            self._discard(file)
            log.debug("%s log: rewriting %d records failed: %s", self.name, rows, exc)
            return False
        self.stats.written_records += rows
        self.stats.written_files += 1
        self.stats.salvaged_records += rows
        return True

    def _discard(self, file: _OpenFile) -> None:
        """Best effort: deletes what a broken file wrote (frees its bytes) and closes its writer.

        A local temp is unlinked first, so a kill in between never leaves a broken file with a
        footer (the start-up sweep would take it for complete); on an object store the file is
        written in place and only exists once closed, so it is closed first, then deleted.
        """
        steps = [self._delete_quietly, self._close_quietly]
        for step in steps if self._local else reversed(steps):
            step(file)

    def _delete_quietly(self, file: _OpenFile) -> None:
        with contextlib.suppress(Exception):
            self._fs.delete_file(file.tmp)

    @staticmethod
    def _close_quietly(file: _OpenFile) -> None:
        with contextlib.suppress(Exception):
            if file.writer is not None:
                file.writer.close()

    def _sweep_leftovers(self) -> None:
        """Removes (or recovers) the temp files that killed writers left under this log.

        Contract: a temp file whose owner is alive is never touched: same host, its pid runs
        with the same start time (the pid alone may have been reused, e.g. pid 1 in a
        restarted container). Files of another host, or named before owners were recorded,
        only once their mtime is older than ``stale_temp_age_s``. A leftover with a valid
        footer (killed between footer and rename) is renamed into place; others are deleted.
        Cost: one directory walk of the log at start, in the writer thread.
        """
        removed = recovered = recovered_rows = 0
        removed_bytes = 0
        now = time.time()
        for directory, _dirs, names in os.walk(self.root):
            for name in names:
                match = _TEMP_RE.match(name)
                if match is None:
                    continue
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:  # another writer swept it first
                    continue
                if not _owner_gone(match, now - st.st_mtime, self.config.stale_temp_age_s):
                    continue
                try:
                    rows = pq.read_metadata(path).num_rows
                except Exception:  # noqa: BLE001 - no footer: a partial file
                    rows = None
                with contextlib.suppress(FileNotFoundError):
                    if rows is not None:
                        os.replace(path, os.path.join(directory, match.group("final")))
                        recovered += 1
                        recovered_rows += rows
                    else:
                        os.unlink(path)
                        removed += 1
                        removed_bytes += st.st_size
        self.stats.leftover_temp_files_removed += removed
        self.stats.leftover_temp_files_recovered += recovered
        if removed or recovered:
            log.warning(
                "%s log: removed %d leftover temp files (%.1f MB) from a killed writer; "
                "recovered %d complete files (%d records) under %s",
                self.name,
                removed,
                removed_bytes / 1e6,
                recovered,
                recovered_rows,
                self.root,
            )


@dataclass
class _OpenFile:
    """A partition's file being written: row groups so far, and batches for the next one."""

    directory: str
    tmp: str
    final: str
    writer: pq.ParquetWriter | None = None
    rows: int = 0
    batches: list[pa.RecordBatch] = field(default_factory=list)
    written: list[pa.Table] = field(default_factory=list)  # row groups in the file so far

    @property
    def unwritten_bytes(self) -> int:
        return sum(b.nbytes for b in self.batches)


def _process_start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, Linux); None if it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]


def _owner() -> str:
    return f"{_host_tag()}-{os.getpid()}-{_process_start_ticks(os.getpid()) or 0}"


# the owner is computed per process; a forked worker gets its own (see _refresh_owner)
_OWNER = _owner()
_TEMP_RE = re.compile(
    r"^\.(?P<final>part-[^/]*?\.parquet)"
    r"(?:\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+))?\.tmp$"
)


def _refresh_owner() -> None:
    global _OWNER
    _OWNER = _owner()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh_owner)


def _owner_gone(match: re.Match[str], age_s: float, stale_age_s: float) -> bool:
    """True when the writer that named this temp file cannot be writing it any more."""
    if match.group("host") != _host_tag() or match.group("pid") is None:
        return age_s > stale_age_s
    pid, start = int(match.group("pid")), int(match.group("start"))
    if start == 0:  # no /proc: the pid alone says it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return age_s > stale_age_s
    return _process_start_ticks(pid) != start


def _lower_own_priority(increment: int) -> None:
    """Lets request threads have the CPU first when both want it (Linux threads have their
    own niceness; elsewhere a no-op). Encoding a row group does not hold the GIL, so the
    event loop runs meanwhile if the scheduler lets it: at 400 rps on 2 cores the requests'
    p99 was 20 ms with niceness +10 and 28-37 ms without (BENCHMARKS.md). If the machine has
    no idle time at all the writer falls behind and the bounded queue drops (counted)."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))


def _leaf_type(t: pa.DataType) -> pa.DataType:
    while hasattr(t, "value_type"):  # list, large list, fixed-size list
        t = t.value_type
    return t


def _filesystem(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = os.fspath(root)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(text)

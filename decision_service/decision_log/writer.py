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
* A failed write (directory unwritable, disk full) drops and counts that file's records,
  logs it and keeps going; the next file tries again.
* ``close()`` drains the queue and flushes everything (graceful shutdown).

``root`` is a local directory or any URI pyarrow's filesystems understand (``s3://…``,
``gs://…``). On object stores a PUT is already atomic, so files are written in place.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
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


@dataclass
class LogWriterStats:
    """Counters since start. Written by one thread; reads may be a moment stale."""

    submitted: int = 0
    dropped_queue_full: int = 0
    dropped_write_error: int = 0
    written_records: int = 0
    written_files: int = 0
    write_errors: int = 0

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
        # per partition: records taken this poll, and the open file they go to
        self._pending: dict[tuple[tuple[str, str], ...], list[R]] = {}
        self._files: dict[tuple[tuple[str, str], ...], _OpenFile] = {}
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0

    @property
    def root(self) -> str:
        return f"{self._root}/{self.name}"

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> ParquetLogWriter[R]:
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
        return True

    def flush(self, timeout_s: float = 30.0) -> None:
        """Writes everything submitted so far and waits for it (tests, checkpoints)."""
        marker = _Flush()
        self._queue.append(marker)
        self._wake.set()
        if not marker.done.wait(timeout_s):
            raise TimeoutError(f"{self.name} log did not flush within {timeout_s}s")

    def close(self, timeout_s: float = 30.0) -> None:
        """Drains the queue, writes every buffer and stops the thread."""
        if self._thread is None:
            return
        self._queue.append(_STOP)
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("%s log writer did not stop within %.0fs", self.name, timeout_s)
        self._thread = None

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        _lower_own_priority(self.config.thread_nice)
        interval = self.config.flush_interval_s
        next_flush = time.monotonic() + interval
        while True:
            self._wake.wait(max(0.0, min(self.config.poll_interval_s, next_flush - time.monotonic())))
            self._wake.clear()
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
        except Exception:  # noqa: BLE001 - a bad record must not kill the writer
            log.exception("%s log: cannot partition a record; dropped", self.name)
            self.stats.dropped_write_error += 1
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
                except Exception:  # noqa: BLE001 - a bad record must not kill the writer
                    log.exception("%s log: cannot convert %d records; dropped", self.name, len(chunk))
                    self.stats.dropped_write_error += len(chunk)
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
        tmp = f"{directory}/.{name}.tmp" if self._local else f"{directory}/{name}"
        return _OpenFile(directory, tmp, f"{directory}/{name}")

    def _write_row_group(self, key: tuple[tuple[str, str], ...]) -> bool:
        file = self._files[key]
        try:
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
            if file.batches:
                file.writer.write_table(pa.Table.from_batches(file.batches, schema=self.schema))
            file.batches = []
            return True
        except Exception as exc:  # noqa: BLE001 - disk full / unwritable: count, keep serving
            self._abandon(key, exc)
            return False

    def _close(self, key: tuple[tuple[str, str], ...]) -> None:
        file = self._files[key]
        if not file.rows:
            del self._files[key]
            return
        if not self._write_row_group(key):
            return
        try:
            file.writer.close()  # type: ignore[union-attr]
            if file.tmp != file.final:
                self._fs.move(file.tmp, file.final)
        except Exception as exc:  # noqa: BLE001
            self._abandon(key, exc)
            return
        del self._files[key]
        self.stats.written_records += file.rows
        self.stats.written_files += 1

    def _abandon(self, key: tuple[tuple[str, str], ...], exc: Exception) -> None:
        """A file that failed to write: its rows are dropped and counted, its temp removed."""
        file = self._files.pop(key)
        self.stats.write_errors += 1
        self.stats.dropped_write_error += file.rows
        log.error(
            "%s log: writing %d records to %s failed (%s: %s); %d records dropped so far",
            self.name,
            file.rows,
            file.directory,
            type(exc).__name__,
            exc,
            self.stats.dropped_write_error,
        )
        with contextlib.suppress(Exception):  # best-effort cleanup
            if file.writer is not None:
                file.writer.close()
        if file.tmp != file.final:
            with contextlib.suppress(Exception):
                self._fs.delete_file(file.tmp)


@dataclass
class _OpenFile:
    """A partition's file being written: row groups so far, and batches for the next one."""

    directory: str
    tmp: str
    final: str
    writer: pq.ParquetWriter | None = None
    rows: int = 0
    batches: list[pa.RecordBatch] = field(default_factory=list)

    @property
    def unwritten_bytes(self) -> int:
        return sum(b.nbytes for b in self.batches)


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

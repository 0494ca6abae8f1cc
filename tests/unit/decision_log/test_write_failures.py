"""The log writer loses no more than it must: write faults and killed writers' leftovers.

Faults are injected by wrapping pyarrow's ParquetWriter (the only mock: a disk cannot be
filled portably); the writer thread, the files and the reads are real. Killed writers are
real processes killed with SIGKILL.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from decision_service.decision_log import writer as writer_module
from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter

SCHEMA = pa.schema([("n", pa.int64()), ("kind", pa.string())])


def to_batch(records):
    return pa.RecordBatch.from_arrays(
        [pa.array([n for n, _ in records]), pa.array([k for _, k in records])], schema=SCHEMA
    )


def make_writer(root, **config) -> ParquetLogWriter:
    config = {"flush_interval_s": 60, "row_group_bytes": 1, "poll_interval_s": 0.01, **config}
    return ParquetLogWriter(
        root, "events", SCHEMA, to_batch, lambda r: (("kind", r[1]),), LogWriterConfig(**config)
    )


def read_all(root: Path) -> list[int]:
    return sorted(
        ds.dataset(root / "events", format="parquet", partitioning="hive").to_table()["n"].to_pylist()
    )


def temp_files(root: Path) -> list[Path]:
    return [p for p in (root / "events").rglob(".*") if p.is_file()]


class Disk:
    """Wraps ParquetWriter.write_table: records which rows each write held, and fails writes
    (ENOSPC, after half of the row group reached the file) while ``full`` says so."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, full) -> None:
        self.written: set[int] = set()
        self.failed: list[int] = []
        self._full = full
        self._lock = threading.Lock()
        real = pq.ParquetWriter.write_table

        def write_table(writer, table, *args, **kwargs):
            rows = table["n"].to_pylist()
            if self._full(rows):
                real(writer, table.slice(0, table.num_rows // 2))  # part of it reached the disk
                with self._lock:
                    self.failed.extend(rows)
                raise OSError(errno.ENOSPC, "No space left on device")
            real(writer, table, *args, **kwargs)
            with self._lock:
                self.written.update(rows)

        monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)

    def wait_written(self, rows: range, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not set(rows) <= self.written | set(self.failed):
            assert time.monotonic() < deadline, f"rows {rows} never reached a write"
            time.sleep(0.005)


def submit_groups(w: ParquetLogWriter, disk: Disk, groups: int, size: int = 10) -> None:
    """Submits ``groups`` groups of records, each once the previous one reached a write: each
    group then lands in its own row group(s) of one open file."""
    for g in range(groups):
        rows = range(g * size, (g + 1) * size)
        for n in rows:
            assert w.submit((n, "a"))
        disk.wait_written(rows)


def test_kind_write_failure_loses_only_the_row_group_it_could_not_write(tmp_path, monkeypatch):
    # the disk is full for one write: the first row group holding a record of the third group
    fault_done = threading.Event()

    def full(rows):
        if not fault_done.is_set() and max(rows) >= 20:
            fault_done.set()
            return True
        return False

    disk = Disk(monkeypatch, full)
    w = make_writer(tmp_path, max_rows_per_file=1_000).start()
    submit_groups(w, disk, 4)
    w.close()

    assert disk.failed and min(disk.failed) >= 20  # the fault hit after groups 0 and 1 were written
    readable = read_all(tmp_path)
    assert set(range(20)) <= set(readable)  # written before the fault: still readable
    assert readable == sorted(set(range(40)) - set(disk.failed))  # lost: exactly what failed
    assert w.stats.dropped_write_error == len(disk.failed)
    assert w.stats.written_records == len(readable) and w.stats.write_errors == 1
    assert w.stats.salvaged_records >= 20
    assert w.stats.submitted == w.stats.written_records + w.stats.dropped_write_error
    assert temp_files(tmp_path) == []


def test_kind_write_failure_while_the_disk_stays_full_counts_every_lost_record(tmp_path, monkeypatch):
    # full from the third group's first write until the test frees space: the rewrite of
    # the already written row groups fails too, and those are counted as well
    space = threading.Event()

    def full(rows):
        return not space.is_set() and (max(rows) >= 20 or bool(disk.failed))

    disk = Disk(monkeypatch, full)
    w = make_writer(tmp_path, max_rows_per_file=1_000).start()
    submit_groups(w, disk, 3)
    deadline = time.monotonic() + 10
    while w.stats.dropped_write_error < 30:  # the third group, then the failed rewrite of two
        assert time.monotonic() < deadline, f"dropped {w.stats.dropped_write_error}"
        time.sleep(0.005)
    space.set()
    for n in range(30, 40):
        w.submit((n, "a"))
    w.close()

    readable = read_all(tmp_path)
    assert readable == list(range(30, 40))
    assert w.stats.dropped_write_error == 30 and w.stats.written_records == 10
    assert w.stats.write_errors >= 2
    assert w.stats.submitted == w.stats.written_records + w.stats.dropped_write_error
    assert temp_files(tmp_path) == []


def test_kind_write_failure_of_the_footer_keeps_every_row(tmp_path, monkeypatch):
    real_close = pq.ParquetWriter.close
    failures = []

    def close(writer):
        if not failures:
            failures.append(writer)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_close(writer)

    monkeypatch.setattr(pq.ParquetWriter, "close", close)
    w = make_writer(tmp_path, max_rows_per_file=1_000).start()
    for n in range(25):
        w.submit((n, "a"))
    w.close()

    assert failures and read_all(tmp_path) == list(range(25))
    assert w.stats.dropped_write_error == 0 and w.stats.salvaged_records == 25
    assert w.stats.written_records == 25 and w.stats.write_errors == 1
    assert temp_files(tmp_path) == []


CHILD = """
import sys, time
import pyarrow as pa
from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter
schema = pa.schema([("n", pa.int64()), ("kind", pa.string())])
def to_batch(rs):
    return pa.RecordBatch.from_arrays([pa.array([n for n, _ in rs]), pa.array([k for _, k in rs])], schema=schema)
w = ParquetLogWriter(sys.argv[1], "events", schema, to_batch, lambda r: (("kind", r[1]),),
                     LogWriterConfig(flush_interval_s=3600, row_group_bytes=1, poll_interval_s=0.01)).start()
for n in range(100):
    w.submit((n, "a"))
print("ready", flush=True)
time.sleep(600)
"""


def start_child_writer(root: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 20
    while not any(p.stat().st_size > 0 for p in temp_files(root)):
        assert time.monotonic() < deadline, "the child writer never wrote a row group"
        time.sleep(0.01)
    return child


def test_kind_leftover_temp_files_of_a_killed_writer_are_removed_at_start(tmp_path, caplog):
    child = start_child_writer(tmp_path)
    try:
        (live,) = temp_files(tmp_path)
        # another worker starting meanwhile leaves the live writer's open file alone
        w = make_writer(tmp_path).start()
        w.flush()
        w.close()
        assert live.exists() and w.stats.leftover_temp_files_removed == 0
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    size_mb = live.stat().st_size / 1e6

    # a complete file whose writer died between its footer and the rename: recovered
    complete = live.with_name(live.name.replace(".parquet.", "-complete.parquet.", 1))
    pq.write_table(pa.table({"n": [1000, 1001]}), complete)
    # a file named before owners were recorded (or by another host): removed only once stale
    partition = live.parent
    old_legacy = partition / ".part-20240101T000000-aaaaaaaaaaaa.parquet.tmp"
    new_legacy = partition / ".part-20240101T000000-bbbbbbbbbbbb.parquet.tmp"
    for path in (old_legacy, new_legacy):
        path.write_bytes(b"PAR1 partial")
    os.utime(old_legacy, (time.time() - 3_600, time.time() - 3_600))

    caplog.set_level(logging.WARNING, logger=writer_module.__name__)
    w = make_writer(tmp_path).start()
    w.flush()
    w.close()

    assert not live.exists() and not old_legacy.exists() and new_legacy.exists()
    assert w.stats.leftover_temp_files_removed == 2 and w.stats.leftover_temp_files_recovered == 1
    assert read_all(tmp_path) == [1000, 1001]
    (line,) = [r.getMessage() for r in caplog.records if "leftover" in r.getMessage()]
    assert "removed 2 leftover temp files" in line and "recovered 1 complete files (2 records)" in line
    assert f"({size_mb + 12 / 1e6:.1f} MB)" in line

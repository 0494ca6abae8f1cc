"""The asynchronous Parquet log writer: completeness, partitions, atomic files, drops, faults."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter

SCHEMA = pa.schema([("n", pa.int64()), ("kind", pa.string())])


@dataclass(frozen=True)
class Rec:
    n: int
    kind: str


def to_batch(records):
    return pa.RecordBatch.from_arrays(
        [pa.array([r.n for r in records]), pa.array([r.kind for r in records])], schema=SCHEMA
    )


def writer(root, **config) -> ParquetLogWriter[Rec]:
    return ParquetLogWriter(
        root, "events", SCHEMA, to_batch, lambda r: (("kind", r.kind),), LogWriterConfig(**config)
    )


def read_all(root: Path) -> pa.Table:
    return ds.dataset(root / "events", format="parquet", partitioning="hive").to_table()


def test_every_record_lands_in_its_partition_as_complete_files(tmp_path):
    w = writer(tmp_path, max_rows_per_file=7, flush_interval_s=60).start()
    for i in range(100):
        assert w.submit(Rec(i, "a" if i % 3 else "b"))
    w.close()
    table = read_all(tmp_path)
    assert sorted(table.column("n").to_pylist()) == list(range(100))
    by_kind = dict(zip(*[table.column(c).to_pylist() for c in ("n", "kind")], strict=True))
    assert all(by_kind[i] == ("a" if i % 3 else "b") for i in range(100))
    files = list((tmp_path / "events").rglob("*"))
    parquet = [f for f in files if f.is_file()]
    assert all(f.suffix == ".parquet" and not f.name.startswith(".") for f in parquet)
    assert all(pq.read_metadata(f).num_rows <= 7 for f in parquet)
    assert w.stats.written_records == 100 and w.stats.dropped == 0


def test_flush_interval_writes_without_close(tmp_path):
    w = writer(tmp_path, flush_interval_s=0.05).start()
    w.submit(Rec(1, "a"))
    deadline = time.monotonic() + 10
    while w.stats.written_records < 1:
        assert time.monotonic() < deadline, "interval flush never happened"
        time.sleep(0.02)
    assert read_all(tmp_path).num_rows == 1
    w.close()


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    w = writer(tmp_path, queue_size=10)   # not started: nothing consumes the queue
    start = time.perf_counter()
    results = [w.submit(Rec(i, "a")) for i in range(1_000)]
    elapsed = time.perf_counter() - start
    assert results.count(True) == 10 and w.stats.dropped_queue_full == 990
    assert elapsed < 1.0   # 1,000 non-blocking calls; a blocking put would hang here


def test_unwritable_directory_drops_counts_and_recovers(tmp_path):
    blocker = tmp_path / "events"
    blocker.write_text("a file where the log directory should be")   # root runs ignore chmod
    w = writer(tmp_path, flush_interval_s=60).start()
    w.submit(Rec(1, "a"))
    w.flush()
    assert w.stats.write_errors == 1 and w.stats.dropped_write_error == 1
    blocker.unlink()                                                   # writable again
    w.submit(Rec(2, "a"))
    w.close()
    assert read_all(tmp_path).column("n").to_pylist() == [2]
    assert w.stats.written_records == 1


def test_a_record_that_cannot_be_converted_does_not_kill_the_writer(tmp_path):
    w = ParquetLogWriter(
        tmp_path, "events", SCHEMA, to_batch, lambda r: 1 / 0, LogWriterConfig(flush_interval_s=60)
    ).start()
    w.submit(Rec(1, "a"))
    w.flush()
    assert w.stats.dropped_write_error == 1
    w.close()


def test_a_file_is_written_as_it_fills_one_row_group_at_a_time_and_appears_only_when_closed(tmp_path):
    w = writer(tmp_path, max_rows_per_file=1_000, flush_interval_s=60, row_group_bytes=1,
               poll_interval_s=0.01).start()
    for i in range(5):
        w.submit(Rec(i, "a"))
        time.sleep(0.05)  # about one poll each: a small row group each
    deadline = time.monotonic() + 10
    while not (files := [f for f in (tmp_path / "events").rglob("*") if f.is_file()]):
        assert time.monotonic() < deadline, "no file opened"
        time.sleep(0.01)
    assert all(f.name.startswith(".") for f in files)  # open: not visible to readers yet
    w.close()
    (only,) = [f for f in (tmp_path / "events").rglob("*.parquet") if not f.name.startswith(".")]
    meta = pq.read_metadata(only)
    assert meta.num_rows == 5 and meta.num_row_groups >= 2
    assert read_all(tmp_path).column("n").to_pylist() == list(range(5))


def test_the_writer_thread_runs_below_request_priority(tmp_path):
    import os
    import sys

    w = writer(tmp_path).start()
    try:
        deadline = time.monotonic() + 5
        tid = w._thread.native_id
        while os.getpriority(os.PRIO_PROCESS, tid) == os.getpriority(os.PRIO_PROCESS, 0):
            if not sys.platform.startswith("linux") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if sys.platform.startswith("linux"):
            assert os.getpriority(os.PRIO_PROCESS, tid) > os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        w.close()


def test_kind_bad_record_flood_logs_a_few_lines_not_a_traceback_each(tmp_path, caplog):
    """Records the writer cannot partition or convert are dropped and counted exactly, and
    logged with a traceback at most once per interval, not once per record."""

    def partition(r):
        if r.kind == "bad":
            raise ValueError("no partition for this record")
        return (("kind", r.kind),)

    def convert(records):
        if any(r.n < 0 for r in records):
            raise ValueError("cannot convert")
        return to_batch(records)

    w = ParquetLogWriter(
        tmp_path, "events", SCHEMA, convert, partition, LogWriterConfig(max_rows_per_file=1, flush_interval_s=60)
    ).start()
    with caplog.at_level("ERROR"):
        for i in range(500):
            w.submit(Rec(i, "bad"))
            w.submit(Rec(-1 - i, "a"))
        w.submit(Rec(7, "a"))
        w.close()
    assert w.stats.dropped_write_error == 1000
    assert read_all(tmp_path).column("n").to_pylist() == [7]
    lines = [r for r in caplog.records if "cannot" in r.getMessage()]
    assert 1 <= len(lines) <= 4, [r.getMessage() for r in lines]


def test_kind_an_idle_writer_sleeps_until_a_record_comes(tmp_path):
    """A log nobody writes to (a use case no one calls) must not poll: each poll of a niced
    thread costs the serving thread a GIL hand-over (BENCHMARKS.md). The first record wakes it
    and is written by the interval flush as usual."""
    w = writer(tmp_path, flush_interval_s=0.2, poll_interval_s=0.01).start()
    deadline = time.monotonic() + 10
    while not w._idle:
        assert time.monotonic() < deadline, "the writer never went idle"
        time.sleep(0.01)
    asleep = w.wakeups
    time.sleep(0.5)  # polling every 10 ms would be ~50 wake-ups
    assert w.wakeups == asleep
    w.submit(Rec(1, "a"))
    while w.stats.written_records < 1:
        assert time.monotonic() < deadline, "the first record after idling was never written"
        time.sleep(0.02)
    w.submit(Rec(2, "a"))
    w.close()
    assert sorted(read_all(tmp_path).column("n").to_pylist()) == [1, 2]

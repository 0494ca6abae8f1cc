"""The offline readers on object storage: the service's log writer writes to ``s3://`` (moto's
server, started by the tests), the training-set jobs list and read those logs and build
exactly the rows they build from the same records written to a local directory."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from decision_service.decision_log import outcome_log, recommendation_log
from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter
from decision_service.storage import list_files, location
from offline.loop.training_set import build_training_set, decision_files, outcome_files
from tests.offline.test_training_set import LABELS, MIN, T0, decision, outcome


def records():
    decisions = [
        decision(f"d{i}", T0 + i * 7 * MIN, ["a", "b", "c", "d"], shown=3, user=f"u{i % 3}")
        for i in range(12)
    ]
    outcomes = [
        outcome(f"d{i}", "abc"[i % 3], "click", T0 + i * 7 * MIN + (i % 5) * 9 * MIN) for i in range(12)
    ]
    outcomes += [outcome(f"d{i}", "a", "purchase", T0 + i * 7 * MIN + 60 * MIN) for i in range(0, 12, 4)]
    return decisions, outcomes


def write_with_the_service_writer(root: str | Path) -> None:
    """The records through the service's asynchronous Parquet writer, several files per log."""
    config = LogWriterConfig(max_rows_per_file=4, flush_interval_s=60)
    decisions, outcomes = records()
    for name, module, rows in (
        ("decisions", recommendation_log, decisions),
        ("outcomes", outcome_log, outcomes),
    ):
        writer = ParquetLogWriter(
            root, name, module.SCHEMA, module.to_batch, module.partition_of, config
        ).start()
        for row in rows:
            assert writer.submit(row)
        writer.close()
        assert writer.stats.written_records == len(rows) and writer.stats.dropped == 0


def test_training_set_from_s3_logs_equals_the_one_from_local_logs(s3_bucket, tmp_path, monkeypatch):
    local = tmp_path / "logs"
    remote = f"{s3_bucket}/logs"
    write_with_the_service_writer(local)
    write_with_the_service_writer(remote)

    listed = list_files(remote, "decisions/use_case=recommendation/date=*/hour=*/*.parquet")
    assert len(listed) == len(decision_files(local)) >= 3  # several files, as on local disk
    assert all(e.path.startswith(f"{remote}/decisions/use_case=recommendation/") for e in listed)
    assert len(outcome_files(remote)) == len(outcome_files(local)) >= 2

    as_of = T0 + 26 * 3600 * 1000
    want, want_report = build_training_set(local, None, LABELS, as_of_ms=as_of)
    got, got_report = build_training_set(remote, tmp_path / "train.parquet", LABELS, as_of_ms=as_of)
    assert want.num_rows == 36 and got.equals(want)
    assert got.schema.metadata == want.schema.metadata
    assert (got_report.decisions_read, got_report.rows, got_report.positives) == (
        want_report.decisions_read,
        want_report.rows,
        want_report.positives,
    )
    assert pq.read_table(tmp_path / "train.parquet").equals(want)

    # the local copies are reused: a second build downloads nothing
    monkeypatch.setattr(location, "_download", lambda *a: (_ for _ in ()).throw(AssertionError("downloaded")))
    again, _ = build_training_set(remote, None, LABELS, as_of_ms=as_of)
    assert again.equals(want)


def test_a_missing_s3_log_lists_nothing(s3_bucket):
    assert decision_files(f"{s3_bucket}/nothing-here") == []
    assert outcome_files(f"{s3_bucket}/nothing-here") == []
    table, report = build_training_set(f"{s3_bucket}/nothing-here", None, LABELS, as_of_ms=T0)
    assert table.num_rows == 0 and report.decisions_read == 0


def test_a_partial_download_is_never_used(s3_bucket, tmp_path, monkeypatch):
    remote = f"{s3_bucket}/logs"
    write_with_the_service_writer(remote)
    real_copy = location.copy_to_local

    def truncated(fs, path, local):
        real_copy(fs, path, local)
        local.write_bytes(local.read_bytes()[:100])

    with monkeypatch.context() as patched:
        patched.setattr(location, "copy_to_local", truncated)
        try:
            decision_files(remote)
        except location.StorageError as exc:
            assert "downloaded 100 bytes, listed" in str(exc)
        else:
            raise AssertionError("a truncated download was accepted")
    cache = Path(location.default_cache_dir())
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing partial left, nothing renamed in
    assert [pq.read_metadata(p).num_rows for p in decision_files(remote)]  # a clean retry works

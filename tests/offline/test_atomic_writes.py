"""Offline writers (training sets, feature history, registry pointers) write a temp file and
rename it: a failed write leaves neither a partial output nor its temp behind. The fault
(ENOSPC after part of the file reached the disk) is injected by wrapping the write."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.features.definitions import USER
from decision_service.models import version_store
from offline.features import feature_history
from offline.loop import training_set


@pytest.fixture
def disk_full(monkeypatch):
    real = pq.write_table

    def write_table(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 partial")  # part of it reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", write_table)
    return real


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_kind_failed_offline_write_leaves_no_temp_file_training_set(tmp_path, disk_full):
    with pytest.raises(OSError):
        training_set._write_atomic(pa.table({"x": [1]}), tmp_path / "out" / "rec.parquet")
    assert leftovers(tmp_path) == []


def test_kind_failed_offline_write_leaves_no_temp_file_feature_history(tmp_path, disk_full):
    with pytest.raises(OSError):
        feature_history.append_snapshot(
            tmp_path, USER, ["u1"], np.zeros((1, USER.width), np.float32), 1_700_000_000_000
        )
    assert leftovers(tmp_path) == []


def test_kind_failed_offline_write_leaves_no_temp_file_registry_pointer(tmp_path, monkeypatch):
    def write_bytes(self, data, *args, **kwargs):
        with open(self, "wb") as f:
            f.write(data[:1])  # part of it reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError):
        version_store.write_atomic(tmp_path / "CURRENT", b"v0002\n")
    assert leftovers(tmp_path) == []

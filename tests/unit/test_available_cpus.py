"""DS_WORKERS=0 takes the container's CPU quota, not the node's cores (kind: quota ignored:
a pod limited to 2 CPUs on a 64-core node forked 64 workers that fought for 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from decision_service.server.workers import available_cpus


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 2), ("50000 100000\n", 1)],
)
def test_cgroup_v2_quota_caps_the_workers(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert available_cpus(tmp_path) == (min(expected, _affinity()) if expected else _affinity())


def test_cgroup_v1_quota_caps_the_workers_and_minus_one_means_none(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(tmp_path) == _affinity()


def test_no_cgroup_files_is_the_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "missing") == _affinity()

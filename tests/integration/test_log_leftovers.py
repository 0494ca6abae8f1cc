"""A killed worker's open log files: its replacement removes them at start and says so, and
leaves alone the open file of a writer that is alive in the same log directory."""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter
from decision_service.devtools.server_process import ServerProcess

_OWNER_PID = re.compile(r"\.parquet\.[0-9a-f]{8}-(\d+)-\d+\.tmp$")
SCHEMA = pa.schema([("n", pa.int64())])


def open_files_by_pid(log_dir: Path) -> dict[int, Path]:
    """Temp files holding at least one row group, by the pid of the process writing them."""
    found = {}
    for path in log_dir.rglob(".part-*"):
        match = _OWNER_PID.search(path.name)
        if match and path.is_file() and path.stat().st_size > 0:
            found[int(match.group(1))] = path
    return found


def test_kind_leftover_temp_files_of_a_killed_worker_are_removed_at_its_restart(served_world, tmp_path):
    log_dir = tmp_path / "logs"
    # another live writer on this host sharing the directory (a replica, another deployment)
    other = ParquetLogWriter(
        log_dir,
        "decisions",
        SCHEMA,
        lambda rs: pa.RecordBatch.from_arrays([pa.array(rs, pa.int64())], schema=SCHEMA),
        lambda r: (("use_case", "other"),),
        LogWriterConfig(flush_interval_s=3600, row_group_bytes=1, poll_interval_s=0.01),
    ).start()
    other.submit(1)
    deadline = time.monotonic() + 10
    while os.getpid() not in open_files_by_pid(log_dir):
        assert time.monotonic() < deadline, "the other writer never wrote a row group"
        time.sleep(0.01)
    other_file = open_files_by_pid(log_dir)[os.getpid()]

    env = {
        "DS_LOG_DIR": str(log_dir),
        "DS_LOG_LEVEL": "WARNING",
        "DS_WORKERS": "2",
        "DS_LOG_FLUSH_INTERVAL_S": "3600",  # files stay open: only row groups reach the disk
        "DS_LOG_ROW_GROUP_BYTES": "20000",  # a row group every few decisions
    }
    users = itertools.cycle(str(u) for u in np.random.default_rng(5).choice(served_world.world.user_ids, 500))
    stderr = tmp_path / "server.stderr"
    with stderr.open("w") as err:
        server = ServerProcess(
            served_world.registry_root, served_world.redis.url, env=env, stderr=err
        ).start()
        try:
            assert server.process is not None
            workers = {
                int(pid)
                for pid in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
                .read_text()
                .split()
            }
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                deadline = time.monotonic() + 60
                while not workers & set(open_files_by_pid(log_dir)):  # until a worker has an open file
                    assert time.monotonic() < deadline, "no worker wrote a row group"
                    request = pb.GetDecisionRequest(
                        recommendation=pb.RecommendationRequest(user_id=next(users), num_items=5)
                    )
                    stub.GetDecision(request, timeout=10)
            files = open_files_by_pid(log_dir)
            killed = min(workers & set(files))
            os.kill(killed, signal.SIGKILL)  # the supervisor starts a replacement
            deadline = time.monotonic() + 60
            while files[killed].exists():
                assert time.monotonic() < deadline, "the killed worker's temp file was not removed"
                time.sleep(0.05)
            assert other_file.exists()  # a live writer's open file is left alone
        finally:
            server.terminate()
    text = stderr.read_text()
    assert re.search(r"removed [1-9]\d* leftover temp files \([\d.]+ MB\) from a killed writer", text), text[
        -3000:
    ]
    other.close()
    assert not other_file.exists() and other.stats.written_records == 1

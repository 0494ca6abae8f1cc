"""Shadow scoring: a shadow model version scores served decisions OFF the answer path.

``ShadowScore`` is the last side effect of a use case's pipeline. For a served decision it
only *enqueues* a job (the request's state, the decision, the shadow's artifacts) with the
process's ``ShadowRunner`` and returns: nothing is awaited, the answer is not delayed.

The runner scores jobs one at a time, and only while no gRPC call of the process is running
(``idle``: the server's drain gate, woken by the last call's status being sent), so a job
starts after the reply of its decision was sent and never while another request is in the
process. A job is the use case's scorer run on the EXACT features the decision was served
with (no store read), re-assembled for the shadow's model columns; for a ranker ~250 rows,
about a millisecond (measured: p50 0.64 ms, p99 1.4 ms, loadtests/bench_shadow.py); a
request that arrives while a job runs waits for it, which is all a shadow can cost an answer
(at 100 req/s no p99 difference showed within the machine's noise: BENCHMARKS.md). Under
load the process is rarely idle: the queue (``max_queue`` jobs) fills and its oldest jobs are
dropped, counted (``decision.shadow`` counter, outcome=skipped_queue_full), so it holds the
latest decisions and releases what old ones pin (request state, retired artifacts); a scoring
error is counted (failed) and never reaches the answer. Scores go to the shadow log
(decision_log/shadow_log.py) by decision id; the decision log itself is never delayed or
touched, so shadow scoring cannot drop a decision log row.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decision_service.decision_log.shadow_log import ShadowLogRecord
from decision_service.rate_limited_log import RateLimitedLog
from decision_service.telemetry import Telemetry

log = logging.getLogger(__name__)

SCORED = "scored"
SKIPPED_QUEUE_FULL = "skipped_queue_full"
SKIPPED_SHUTDOWN = "skipped_shutdown"
FAILED = "failed"
DEFAULT_MAX_QUEUE = 128

ScoreFn = Callable[[Any, Any], np.ndarray]
"""(the request's state, the shadow's artifacts) -> float32 scores, ordered as the decision
log's scores of the same decision. Raises when the shadow cannot score it."""


@dataclass
class ShadowStats:
    """Per process, over every use case: jobs by outcome."""

    by_outcome: dict[tuple[str, str], int] = field(default_factory=dict)  # (use case, outcome) -> n

    def count(self, use_case: str, outcome: str) -> None:
        key = (use_case, outcome)
        self.by_outcome[key] = self.by_outcome.get(key, 0) + 1

    def total(self, outcome: str) -> int:
        return sum(n for (_, o), n in self.by_outcome.items() if o == outcome)


@dataclass(frozen=True, slots=True)
class _Job:
    use_case: str
    score: ScoreFn
    state: Any
    decision: Any
    shadow: Any  # the shadow version's artifacts


class ShadowRunner:
    """The process's shadow scorer: a bounded queue worked off between requests."""

    def __init__(
        self,
        idle: Callable[[], Awaitable[None]],
        writer: Any | None,
        telemetry: Telemetry | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        """``idle``: returns once no call of the process is running (DrainGate.idle);
        ``writer``: the shadow log (a ParquetLogWriter of ShadowLogRecord; None: logging off,
        jobs are then not even queued); ``max_queue``: jobs waiting at most (>= 1)."""
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._idle = idle
        self._writer = writer
        self._telemetry = telemetry or Telemetry.disabled()
        self._max_queue = max_queue
        self._queue: collections.deque[_Job] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog()
        self.stats = ShadowStats()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def submit(self, use_case: str, score: ScoreFn, state: Any, decision: Any, shadow: Any) -> bool:
        """Queues one job without blocking. A full queue drops its OLDEST job (counted as
        skipped_queue_full): under sustained load the queue holds the latest decisions, and
        what an old job pins (its request state, the artifacts it was served and scored with,
        perhaps since retired by a reload) is released as new decisions arrive. False when
        logging is off (nothing queued)."""
        if self._writer is None:
            return False
        if len(self._queue) >= self._max_queue:
            dropped = self._queue.popleft()
            self._count(dropped.use_case, dropped.shadow.version, SKIPPED_QUEUE_FULL)
        self._queue.append(_Job(use_case, score, state, decision, shadow))
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._work(), name="shadow-scoring")
            self._task.add_done_callback(self._worker_ended)
        assert self._wake is not None
        self._wake.set()
        return True

    async def stop(self) -> None:
        """Stops the worker; jobs still queued are counted as skipped (shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            job = self._queue.popleft()
            self._count(job.use_case, job.shadow.version, SKIPPED_SHUTDOWN)

    async def drain(self, timeout_s: float) -> bool:
        """Waits until the queue is empty (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        """A worker that died (never expected: ``_run`` contains every scoring error) is
        logged and replaced at the next submit, so shadow scoring never silently stops."""
        if task is self._task and not task.cancelled():
            exc = task.exception()
            log.error("shadow scoring worker stopped: %r; restarting it at the next decision", exc)
            self._task = None

    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._idle()  # after the replies were sent, never beside a request
            if not self._queue:
                continue
            job = self._queue.popleft()
            # on the event loop, not a thread: a job is ~0.6 ms (p99 1.4 ms, loadtests/bench_shadow.py)
            # and a thread measured no better (GIL hand-offs made jobs slower, p99 2.7 ms)
            self._record(job, *_score(job))
            del job  # nothing of it (state, artifacts) outlives its scoring while the worker waits
            await asyncio.sleep(0)  # let a request that arrived meanwhile go first

    def _record(self, job: _Job, scores: np.ndarray | None, exc: Exception | None, ms: float) -> None:
        version = job.shadow.version
        if exc is not None or scores is None:
            self._count(job.use_case, version, FAILED)
            self._warn.warning(
                f"shadow:{job.use_case}:{version}",
                f"shadow {job.use_case} model {version} could not score a decision: "
                f"{type(exc).__name__}: {exc} [failed {self.stats.total(FAILED)} in all]",
            )
            return
        d = job.decision
        assert self._writer is not None
        self._writer.submit(
            ShadowLogRecord(
                decision_id=d.decision_id,
                decided_at_ms=d.decided_at_ms,
                use_case=job.use_case,
                model_version=d.model_version,
                arm=d.arm,
                shadow_model_version=version,
                shadow_scores=scores,
                shadow_ms=ms,
            )
        )
        self._count(job.use_case, version, SCORED)

    def _count(self, use_case: str, version: str, outcome: str) -> None:
        self.stats.count(use_case, outcome)
        self._telemetry.shadow(use_case, version, outcome)


def _score(job: _Job) -> tuple[np.ndarray | None, Exception | None, float]:
    """(scores, None, ms) or (None, the error, ms): the job's pure computation."""
    started = time.perf_counter()
    try:
        scores = np.asarray(job.score(job.state, job.shadow), np.float32).reshape(-1)
        if not np.all(np.isfinite(scores)):
            raise ValueError("the shadow model returned a non-finite score")
    except Exception as exc:  # noqa: BLE001 - a shadow never affects serving
        return None, exc, (time.perf_counter() - started) * 1000.0
    return scores, None, (time.perf_counter() - started) * 1000.0


class ShadowScore:
    """The side effect that hands a served decision to the shadow runner (when the use case
    has a shadow version loaded). Returns None: nothing is awaited."""

    name = "shadow_score"

    def __init__(self, use_case: str, runner: ShadowRunner, shadow: Callable[[], Any]) -> None:
        """``shadow``: the shadow version's artifacts now, or None (RolloutModels.shadow)."""
        self._use_case = use_case
        self._runner = runner
        self._shadow = shadow
        self.score: ScoreFn | None = None  # bound by the use case to its executor's shadow scorer

    def apply(self, state: Any, decision: Any) -> None:
        shadow = self._shadow()
        if shadow is None or self.score is None or getattr(decision, "replayed", False):
            return None  # a replayed fraud verdict was scored when it was first decided
        if shadow.version == decision.model_version:
            return None  # e.g. a shadow that is also the canary: its own decisions say nothing new
        self._runner.submit(self._use_case, self.score, state, decision, shadow)
        return None

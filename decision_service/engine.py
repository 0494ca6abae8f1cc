"""The execution engine every use case runs on: the request span, the deadline, stage timing,
degraded flags (counted, rate-limited logs), the decision envelope and side effects.

A use case's *pipeline* (its pipeline module) declares its stages, each with its failure
policy (a ``Step``: FAIL or DEGRADE, the flag, what is served instead); its *flow* (the
executor module) orders the stages and serves each DEGRADE step's fallback. What is the same
for every use case lives here, once:

  ``Engine.decide``               one request: span, deadline (event-loop time), a fresh ``Run``
  ``Step``, ``FAIL`` / ``DEGRADE``  a stage with its declared failure policy
  ``Run.attempt / Run.read``      apply a step's policy: a synchronous stage / a store read
                                  bounded by the deadline
  ``StageBook.degrade / timed``   flag + count + log a degradation; time a stage
  ``Run.envelope``                decision id, time, model version, degradations, stage timings
  ``StageBook.run_side_effects``  effects after the answer is built (awaited ones bounded)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from decision_service.domain.decision import Degradation, new_decision_id, now_ms
from decision_service.errors import STORE_TIMEOUTS
from decision_service.rate_limited_log import RateLimitedLog
from decision_service.telemetry import Telemetry

D = TypeVar("D")

FAIL = "fail"  # the request fails: the stage's exception propagates, the edge maps it to a status
DEGRADE = "degrade"  # the step's fallback is served, the answer flagged ``{flag}:{reason}``


@dataclass(frozen=True, slots=True)
class Step:
    """A stage with its declared failure policy.

    ``on_failure``: FAIL or DEGRADE. ``flag``: the ``Degradation.stage`` a DEGRADE step flags
    (required for DEGRADE). ``fallback``: what is served instead (documentation: the flow
    serves it when ``Run.attempt`` / ``Run.read`` return None).
    """

    stage: Any
    on_failure: str  # FAIL or DEGRADE
    flag: str = ""  # Degradation.stage when degraded
    fallback: str = ""  # what is served instead (documentation; the flow implements it)

    def __post_init__(self) -> None:
        if self.on_failure not in (FAIL, DEGRADE) or (self.on_failure == DEGRADE and not self.flag):
            raise ValueError(
                f"step {getattr(self.stage, 'name', self.stage)!r}: on_failure {self.on_failure!r} "
                f"must be {FAIL!r} or {DEGRADE!r}, and {DEGRADE!r} needs a flag"
            )

    @property
    def name(self) -> str:
        return self.stage.name  # type: ignore[no-any-return]


class OnFailure(NamedTuple):
    """A failure policy declared apart from its stage (``declared_steps`` pairs them)."""

    on_failure: str  # FAIL or DEGRADE
    flag: str = ""
    fallback: str = ""


def declared_steps(
    stages: Mapping[str, Any], on_failure: Mapping[str, OnFailure | Mapping[str, OnFailure]]
) -> dict[str, Any]:
    """Each pipeline field's stage (or tuple of stages) with its declared policy: a ``Step`` (or
    a tuple of them). A field's declaration is one ``OnFailure`` (for each of its stages), or
    one per stage name (e.g. filters: each guarantees something different).

    On failure: ValueError when a stage has no declared policy or its policy is invalid (a
    DEGRADE without a flag), so a pipeline with an undeclared stage cannot be built."""
    steps: dict[str, Any] = {}
    for role, stage in stages.items():
        if role not in on_failure:
            raise ValueError(f"pipeline field {role!r} has no declared failure policy")
        policy = on_failure[role]
        if isinstance(stage, tuple):
            steps[role] = tuple(_declared_step(role, s, policy) for s in stage)
        else:
            steps[role] = _declared_step(role, stage, policy)
    return steps


def require_fail(steps: Mapping[str, Step], *roles: str) -> None:
    """Refuses a DEGRADE declaration for a step its flow has no fallback for.

    On failure: ValueError naming the step."""
    for role in roles:
        if steps[role].on_failure != FAIL:
            raise ValueError(f"step {role!r} must be declared {FAIL!r}: its flow has no fallback for it")


def _declared_step(role: str, stage: Any, policy: OnFailure | Mapping[str, OnFailure]) -> Step:
    if not isinstance(policy, OnFailure):
        if stage.name not in policy:
            raise ValueError(f"{role} stage {stage.name!r} has no declared failure policy")
        policy = policy[stage.name]
    return Step(stage, *policy)


class StageBook:
    """Per use case: degraded counters, the rate-limited warnings, stage timing, side effects."""

    def __init__(self, use_case: str, telemetry: Telemetry | None = None) -> None:
        self.use_case = use_case
        self.telemetry = telemetry or Telemetry.disabled()
        self.degraded_counts: dict[tuple[str, str], int] = {}
        self._warn = RateLimitedLog()

    def degrade(
        self, degraded: list[Degradation], stage: str, reason: str, exc: BaseException | None = None
    ) -> None:
        """Flags the answer, counts it, and logs the cause (at most once per 5 s per kind)."""
        degraded.append(Degradation(stage, reason))
        key = (stage, reason)
        self.degraded_counts[key] = self.degraded_counts.get(key, 0) + 1
        self.telemetry.degraded(self.use_case, stage, reason)
        if exc is not None:
            self._warn.warning(
                f"{self.use_case}:{stage}:{reason}",
                f"degraded {self.use_case} {stage} ({reason}): {type(exc).__name__}: {exc} "
                f"[total {self.degraded_counts[key]}]",
            )

    @contextmanager
    def timed(self, stage_ms: dict[str, float], name: str) -> Iterator[None]:
        """Times a stage into ``stage_ms`` (and a span + histogram when telemetry is on)."""
        start = time.perf_counter()
        try:
            if self.telemetry.enabled:
                with self.telemetry.stage_span(self.use_case, name):
                    yield
            else:  # the hot path without telemetry: no span context manager at all
                yield
        finally:
            ms = (time.perf_counter() - start) * 1000.0
            stage_ms[name] = ms
            self.telemetry.stage_done(self.use_case, name, ms)

    async def run_side_effects(
        self, effects: Iterable[Any], state: Any, decision: Any, deadline: float
    ) -> None:
        """Runs each side effect in order; a failing one is counted and logged, never raised.

        An effect's ``apply`` may return an awaitable (a write the answer's guarantees depend
        on, e.g. the decision index): it is awaited here, before the next effect and before
        the answer is sent, until ``deadline`` (event-loop time: the request's budget); if it
        fails or is late, the answer is flagged ``{effect name}:{store failure}`` in
        ``decision.degraded`` (so the decision log records it too). The write itself is
        shielded: it still lands when the deadline passes or the caller goes away, and if
        the call is cancelled the remaining effects (e.g. the decision log) are still applied
        before the cancellation propagates: a decision is never left unlogged."""
        remaining = list(effects)
        while remaining:
            effect = remaining.pop(0)
            try:
                pending = effect.apply(state, decision)
            except Exception as exc:  # noqa: BLE001 - a side effect never fails the answer
                self._side_effect_failed(effect, exc)
                continue
            if pending is None:
                continue
            write = asyncio.ensure_future(pending)
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(write)
            except asyncio.CancelledError:
                for rest in remaining:  # the caller left: apply the rest without waiting
                    try:
                        later = rest.apply(state, decision)
                        if later is not None:
                            _background(asyncio.ensure_future(later))
                    except Exception as exc:  # noqa: BLE001
                        self._side_effect_failed(rest, exc)
                _background(write)
                raise
            except TimeoutError as exc:
                _background(write)
                self.degrade(decision.degraded, effect.name, "store_timeout", exc)
            except Exception as exc:  # noqa: BLE001 - flagged, never raised
                self.degrade(decision.degraded, effect.name, store_failure(exc.__cause__ or exc), exc)

    def _side_effect_failed(self, effect: Any, exc: Exception) -> None:
        key = ("side_effects", f"{effect.name}_failed")
        self.degraded_counts[key] = self.degraded_counts.get(key, 0) + 1
        self._warn.warning(key[1], f"side effect {effect.name} failed: {exc!r}")


_BACKGROUND: set[asyncio.Future[Any]] = set()


def _background(task: asyncio.Future[Any]) -> None:
    """Keeps a write that outlives its request referenced until it ends; its error (already
    counted by the store) is retrieved so asyncio does not report it as never retrieved."""
    if task.done():
        if not task.cancelled():
            task.exception()
        return
    _BACKGROUND.add(task)

    def done(t: asyncio.Future[Any]) -> None:
        _BACKGROUND.discard(t)
        if not t.cancelled():
            t.exception()

    task.add_done_callback(done)


def store_failure(exc: BaseException) -> str:
    """The degraded reason for a store error: too slow, or unreachable."""
    return "store_timeout" if isinstance(exc, STORE_TIMEOUTS) else "store_unavailable"


class Run:
    """One request on the engine: its deadline, timings and degradations.

    A flow builds its per-request state on the run's ``degraded`` and ``stage_ms`` so
    every stage's flags and timings end up in the decision's envelope. ``attempt`` / ``read``
    apply a step's declared policy: on the happy path one call and one ``try``, nothing
    allocated beyond the stage's own call (``call`` is the stage's bound method).
    """

    __slots__ = ("book", "request_id", "deadline", "stage_ms", "degraded")

    def __init__(self, book: StageBook, request_id: str, deadline: float) -> None:
        self.book = book
        self.request_id = request_id
        self.deadline = deadline  # event-loop time
        self.stage_ms: dict[str, float] = {}
        self.degraded: list[Degradation] = []

    def timed(self, name: str, stage_ms: dict[str, float] | None = None) -> Any:
        return self.book.timed(self.stage_ms if stage_ms is None else stage_ms, name)

    def attempt(
        self, step: Step, reason: str | Callable[[Exception], str], call: Callable[..., Any], *args: Any
    ) -> Any:
        """``call(*args)`` under ``step``'s policy. FAIL: its exception propagates. DEGRADE: an
        exception flags ``{step.flag}:{reason}`` (``reason(exc)`` when a function) and returns
        None; the flow serves the step's fallback."""
        if step.on_failure != DEGRADE:
            return call(*args)
        try:
            return call(*args)
        except Exception as exc:  # noqa: BLE001 - declared DEGRADE
            why = reason if isinstance(reason, str) else reason(exc)
            self.book.degrade(self.degraded, step.flag, why, exc)
            return None

    async def read(
        self, step: Step, call: Callable[..., Awaitable[Any]], *args: Any, fallback: Any = None
    ) -> Any:
        """Awaits ``call(*args)`` (a store read or write) until the run's deadline, under
        ``step``'s policy. FAIL: the timeout or the error propagates. DEGRADE: flags
        ``{step.flag}:deadline_exceeded`` or ``{step.flag}:{store_failure(exc)}`` and returns
        ``fallback`` (None unless the flow needs None for an answer, e.g. a commit)."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await call(*args)
        except TimeoutError as exc:
            if step.on_failure != DEGRADE:
                raise
            self.book.degrade(self.degraded, step.flag, "deadline_exceeded", exc)
        except Exception as exc:  # noqa: BLE001 - declared DEGRADE
            if step.on_failure != DEGRADE:
                raise
            self.book.degrade(self.degraded, step.flag, store_failure(exc), exc)
        return fallback

    def envelope(self, model_version: str, dedupe: bool = True, arm: str = "live") -> dict[str, Any]:
        """The fields every decision carries (``domain.decision.Decision``), stamped now.

        ``arm``: the rollout arm that served (the artifacts' ``arm``).
        ``dedupe``: the degradations once each (a repeated stage may flag the same again), a
        copy; False: the run's own list, so flags raised after the decision is built (e.g. by
        a commit step) reach it."""
        at = now_ms()
        return {
            "decision_id": new_decision_id(at),
            "request_id": self.request_id,
            "model_version": model_version,
            "decided_at_ms": at,
            "degraded": list(dict.fromkeys(self.degraded)) if dedupe else self.degraded,
            "stage_ms": self.stage_ms,  # the run's own: nothing is timed after the decision
            "arm": arm,  # the rollout arm of the artifacts that decided (models/rollout.py)
        }


class Engine:
    """Runs one use case's requests: the request span, the deadline, one ``Run`` each."""

    def __init__(self, use_case: str, telemetry: Telemetry | None = None) -> None:
        self.use_case = use_case
        self.telemetry = telemetry or Telemetry.disabled()
        self.book = StageBook(use_case, self.telemetry)

    @property
    def degraded_counts(self) -> dict[tuple[str, str], int]:
        return self.book.degraded_counts

    async def decide(
        self,
        request_id: str,
        budget_s: float,
        flow: Callable[[Run], Awaitable[D]],
        span_attributes: Callable[[], Mapping[str, Any]] | None = None,
        result_attributes: Callable[[D], Mapping[str, Any]] | None = None,
    ) -> D:
        """Runs ``flow`` for one request within ``budget_s`` seconds.

        ``span_attributes`` / ``result_attributes`` add the use case's own attributes to the
        request span (only called when telemetry is on). The flow's exceptions propagate
        (the edge maps them to a status).
        """
        run = Run(self.book, request_id, asyncio.get_running_loop().time() + budget_s)
        if not self.telemetry.enabled:
            return await flow(run)
        attributes = {"request_id": request_id, **(span_attributes() if span_attributes else {})}
        with self.telemetry.request_span(self.use_case, attributes) as span:
            decision = await flow(run)
            if span is not None:
                span.set_attribute("decision_id", decision.decision_id)  # type: ignore[attr-defined]
                span.set_attribute("model_version", decision.model_version)  # type: ignore[attr-defined]
                span.set_attribute(
                    "degraded", [f"{d.stage}:{d.reason}" for d in decision.degraded]  # type: ignore[attr-defined]
                )
                span.set_attribute("arm", decision.arm)  # type: ignore[attr-defined]
                for key, value in (result_attributes(decision) if result_attributes else {}).items():
                    span.set_attribute(key, value)
            self.telemetry.served(self.use_case, decision.model_version, decision.arm)  # type: ignore[attr-defined]
            return decision

    async def side_effects(self, run: Run, effects: Iterable[Any], state: Any, decision: Any) -> None:
        await self.book.run_side_effects(effects, state, decision, run.deadline)

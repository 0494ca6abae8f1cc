"""``decision-service rollout``: shadow, canary, promote and roll back, on a model registry.

  rollout status                                    CURRENT, canary (share), shadow per use case
  rollout shadow   --use-case U VERSION | --off     VERSION scores every decision off the answer path
  rollout canary   --use-case U VERSION --share S | --off
                                                    VERSION serves share S of the users (stable hash)
  rollout promote  --use-case U [VERSION] [--force] the canary (or VERSION) becomes CURRENT, the
                                                    canary is cleared; without --force only when the
                                                    promotion rule says PROMOTE on the logs' matured
                                                    outcomes per arm
  rollout rollback --use-case U                     the canary is cleared, CURRENT unchanged
  rollout decide   --use-case U [--final]           applies the rule: PROMOTE, ROLLBACK or WAIT
                                                    (--final: an undecided canary is rolled back)

Every version named is checked first the way a server's hot reload checks it (manifest,
checksums, the model files load and agree: ``UseCase.models(...).prepare``); a version that
does not exist or fails its checks is refused with one line naming it and nothing changes.
Pointers move with the registry's conditional writes (models/registry.py): a concurrent
change is refused, not overwritten. A running server picks the change up at its next reload
check (DS_MODEL_RELOAD_INTERVAL_S).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from decision_service.config import ServiceConfig
from decision_service.models.registry import ModelRegistry, RegistryError
from decision_service.models.rollout import Rollout, RolloutError
from decision_service.use_cases import USE_CASES
from decision_service.use_cases.base import UseCase
from offline.watch.online import CanaryRule, canary_verdict
from offline.watch.results import PROMOTE, ROLLBACK, WAIT, CanaryVerdict


class RolloutRefused(ValueError):
    """A rollout command that changes nothing: the message says why."""


@dataclass(frozen=True)
class Applied:
    """What ``promote`` / ``rollback`` / ``decide`` did."""

    action: str  # PROMOTE, ROLLBACK or WAIT
    use_case: str
    version: str | None  # the canary (or promoted version)
    current: str  # CURRENT afterwards
    verdict: CanaryVerdict | None
    message: str


def _use_case(name: str) -> UseCase:
    for u in USE_CASES:
        if u.name == name:
            return u
    raise RolloutRefused(
        f"unknown use case {name!r}; this project serves {', '.join(u.name for u in USE_CASES)}"
    )


def check_version(registry: ModelRegistry, config: ServiceConfig, use_case: str, name: str) -> None:
    """Loads and checks ``name`` as a server would before serving it.

    On failure: RolloutRefused naming the version and its problem (unknown, incomplete,
    corrupt, inconsistent)."""
    uc = _use_case(use_case)
    known = registry.versions(use_case)
    if name not in known:
        latest = ", ".join(known[-5:]) or "none"
        raise RolloutRefused(f"{use_case}: no published version {name!r} (latest: {latest})")
    if uc.models is None:
        return
    try:
        uc.models(registry, config).prepare(name)
    except (RegistryError, OSError, ValueError) as exc:
        raise RolloutRefused(f"{use_case}: version {name} fails its checks: {exc}") from None


def status(registry: ModelRegistry, use_cases: Sequence[str] | None = None) -> tuple[list[str], bool]:
    """One line per use case: CURRENT, its rollout, the number of versions; and whether every
    ROLLOUT was readable (an unreadable one is said on its use case's line)."""
    lines, readable = [], True
    for uc in USE_CASES:
        if use_cases and uc.name not in use_cases:
            continue
        versions = registry.versions(uc.name)
        if not versions:
            lines.append(f"{uc.name}: no version published")
            continue
        current = registry.current_name(uc.name) if registry.has_current(uc.name) else "none"
        try:
            rollout = registry.rollout(uc.name).describe()
        except RolloutError as exc:
            rollout, readable = f"ROLLOUT unreadable: {exc}", False
        lines.append(
            f"{uc.name}: CURRENT {current}; {rollout}; {len(versions)} versions (latest {versions[-1]})"
        )
    return lines, readable


def set_shadow(registry: ModelRegistry, config: ServiceConfig, use_case: str, version: str | None) -> Rollout:
    """Makes ``version`` the use case's shadow (None: no shadow).

    On failure: RolloutRefused (unknown / failing version, the version is CURRENT: a shadow is
    another version; no shadow to stop); nothing changes."""
    rollout = _read(registry, use_case)
    if version is None:
        if rollout.shadow is None:
            raise RolloutRefused(f"{use_case}: no shadow to stop")
    else:
        check_version(registry, config, use_case, version)
        if _current(registry, use_case) == version:
            raise RolloutRefused(f"{use_case}: {version} is CURRENT; a shadow is another version")
    rollout = rollout.with_shadow(version)
    _write(registry, use_case, rollout)
    return rollout


def set_canary(
    registry: ModelRegistry, config: ServiceConfig, use_case: str, version: str | None, share: float = 0.0
) -> Rollout:
    """Serves ``version`` to ``share`` of the users (a fresh hash salt); None: no canary.

    On failure: RolloutRefused (unknown / failing version, share outside (0, 1), the version
    is CURRENT already, no canary to stop); nothing changes."""
    rollout = _read(registry, use_case)
    if version is None:
        if rollout.canary is None:
            raise RolloutRefused(f"{use_case}: no canary to stop")
    else:
        if not 0.0 < share < 1.0:  # also NaN
            raise RolloutRefused(f"--share must be in (0, 1), got {share}")
        check_version(registry, config, use_case, version)
        if _current(registry, use_case) == version:
            raise RolloutRefused(f"{use_case}: {version} is CURRENT already; a canary is another version")
    rollout = rollout.with_canary(version, share)
    _write(registry, use_case, rollout)
    return rollout


def promote(
    registry: ModelRegistry,
    config: ServiceConfig,
    use_case: str,
    log_root: str | Path,
    version: str | None = None,
    force: bool = False,
    now_ms: int | None = None,
    window_s: float | None = None,
    rule: CanaryRule | None = None,
) -> Applied:
    """CURRENT := the canary (or ``version``); the canary is cleared when it is the promoted
    version (another canary keeps running, said), as is a shadow of the promoted version.

    Without ``force`` the target must be the canary and pass the promotion rule on the logs'
    matured outcomes per arm (offline/watch/online.py ``canary_verdict``; ``now_ms``,
    ``window_s``, ``rule``: as ``decide``). On failure: RolloutRefused (no canary and
    no version, a version failing its checks, already CURRENT, the rule did not say PROMOTE):
    nothing changes."""
    rollout = _read(registry, use_case)
    target = version or rollout.canary
    if target is None:
        raise RolloutRefused(f"{use_case}: no canary to promote (name a version, or start a canary first)")
    check_version(registry, config, use_case, target)
    if _current(registry, use_case) == target:
        raise RolloutRefused(f"{use_case}: {target} is CURRENT already")
    verdict = None
    if not force:
        if rollout.canary != target:
            raise RolloutRefused(
                f"{use_case}: {target} is not the canary ({rollout.describe()}): no online evidence "
                "for it; start a canary, or pass --force"
            )
        verdict = _verdict(registry, use_case, log_root, target, now_ms, False, window_s, rule)
        if verdict.action != PROMOTE:
            raise RolloutRefused(
                f"{use_case}: the promotion rule says {verdict.action.upper()} for {target}: "
                f"{verdict.reason} (roll back, wait for more matured outcomes, or pass --force)"
            )
    return _promote(registry, use_case, rollout, target, verdict)


def rollback(registry: ModelRegistry, use_case: str, verdict: CanaryVerdict | None = None) -> Applied:
    """Clears the canary (CURRENT unchanged). On failure: RolloutRefused when there is none."""
    rollout = _read(registry, use_case)
    if rollout.canary is None:
        raise RolloutRefused(f"{use_case}: no canary to roll back")
    _write(registry, use_case, rollout.with_canary(None))
    current = registry.current_name(use_case)
    return Applied(
        ROLLBACK,
        use_case,
        rollout.canary,
        current,
        verdict,
        f"{use_case}: canary {rollout.canary} rolled back; CURRENT stays {current}",
    )


def decide(
    registry: ModelRegistry,
    config: ServiceConfig,
    use_case: str,
    log_root: str | Path,
    final: bool = False,
    now_ms: int | None = None,
    window_s: float | None = None,
    rule: CanaryRule | None = None,
) -> Applied:
    """Applies the promotion rule to the canary: PROMOTE (CURRENT moves to it), ROLLBACK
    (cleared) or WAIT (nothing changes). ``final``: the canary period is over, an undecided
    canary is rolled back. ``now_ms`` / ``window_s``: maturity as of this time, with this label
    window (seconds; default each metric's declared one; the flywheel's are compressed);
    ``rule``: the rule's floors and tolerances (default ``CanaryRule()``: 500 matured decisions
    and 20 positives per arm; ``final`` is set from the argument).
    On failure: RolloutRefused when there is no canary."""
    rollout = _read(registry, use_case)
    if rollout.canary is None:
        raise RolloutRefused(f"{use_case}: no canary to decide on")
    verdict = _verdict(registry, use_case, log_root, rollout.canary, now_ms, final, window_s, rule)
    if verdict.action == PROMOTE:
        check_version(registry, config, use_case, rollout.canary)
        return _promote(registry, use_case, rollout, rollout.canary, verdict)
    if verdict.action == ROLLBACK:
        return rollback(registry, use_case, verdict)
    current = registry.current_name(use_case)
    return Applied(
        WAIT,
        use_case,
        rollout.canary,
        current,
        verdict,
        f"{use_case}: canary {rollout.canary}: wait ({verdict.reason})",
    )


def _promote(
    registry: ModelRegistry, use_case: str, rollout: Rollout, target: str, verdict: CanaryVerdict | None
) -> Applied:
    """ROLLOUT first (the canary / shadow of ``target`` stopped), then CURRENT: if CURRENT
    cannot move, the target is not served to anyone twice-labelled (never canary == CURRENT),
    and the message says what to retry."""
    before = _current(registry, use_case)
    after = rollout
    if rollout.canary == target:
        after = after.with_canary(None)
    if rollout.shadow == target:
        after = after.with_shadow(None)
    if after != rollout:
        _write(registry, use_case, after)
    try:
        registry.set_current(use_case, target)
    except RegistryError as exc:
        stopped = f" (its rollout was stopped: {after.describe()})" if after != rollout else ""
        raise RolloutRefused(f"{use_case}: CURRENT did not move to {target}{stopped}: {exc}") from None
    message = f"{use_case}: promoted {target} to CURRENT (was {before})"
    if after.canary is not None:
        message += f"; canary {after.canary} keeps running against it"
    return Applied(PROMOTE, use_case, target, target, verdict, message)


def _current(registry: ModelRegistry, use_case: str) -> str | None:
    return registry.current_name(use_case) if registry.has_current(use_case) else None


def _verdict(
    registry: ModelRegistry,
    use_case: str,
    log_root: str | Path,
    canary: str,
    now_ms: int | None,
    final: bool,
    window_s: float | None = None,
    rule: CanaryRule | None = None,
) -> CanaryVerdict:
    live = registry.current_name(use_case)
    rule = dataclasses.replace(rule or CanaryRule(), final=final)
    return canary_verdict(log_root, use_case, live, canary, rule, now_ms, window_s=window_s)


def _read(registry: ModelRegistry, use_case: str) -> Rollout:
    _use_case(use_case)
    try:
        return registry.rollout(use_case)
    except RolloutError as exc:
        raise RolloutRefused(f"{exc} (fix or delete it)") from None


def _write(registry: ModelRegistry, use_case: str, rollout: Rollout) -> None:
    try:
        registry.set_rollout(use_case, rollout)
    except RegistryError as exc:  # an unknown version, or another writer changed ROLLOUT first
        raise RolloutRefused(str(exc)) from None

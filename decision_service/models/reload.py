"""Hot reload: watch the registry's CURRENT pointer and swap in a newly published version.

The check reads one small file every ``interval_s``. When CURRENT names a version that is
not the one being served, the version is loaded and fully checked *off the event loop*
(checksums, LightGBM and FAISS files, features the registry can serve, consistent sizes);
only then is the serving reference swapped, in one assignment. Each request snapshots the
artifacts once (executor), so requests in flight finish on the version they started with
and none is dropped or failed by a swap.

A version that fails its checks is refused with one ERROR line naming it and the reason;
the old version keeps serving, and the refused one is not retried until CURRENT changes.
An object store that cannot be read (StorageError: unreachable, a download cut short) is
not the version's fault: one WARNING, and the next poll tries again.

Every use case the server serves (decision_service/use_cases) is watched the same way, each
with its own CURRENT pointer and refusal memory. A holder with a rollout (models/rollout.py
``RolloutModels``) has its ROLLOUT pointer watched too: the canary and shadow versions it names
are loaded with the same checks, off the event loop, then installed in one swap; a version
that fails them is refused (one ERROR line, counted in ``ReloadStats.refused``) and that arm
stays off until ROLLOUT names another version; a corrupt ROLLOUT file changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from decision_service.models.registry import ModelRegistry, RegistryError
from decision_service.models.rollout import RolloutError, RolloutModels
from decision_service.storage.location import StorageError

log = logging.getLogger(__name__)


class Reloadable(Protocol):
    """A use case's model holder, as hot reload sees it (e.g. RecommendationModels)."""

    @property
    def registry(self) -> ModelRegistry: ...

    def prepare(self, name: str) -> Any:
        """Loads and checks version ``name`` off the event loop; raises RegistryError."""
        ...

    def install(self, artifacts: Any) -> Any:
        """Serves ``artifacts`` from now on (one reference swap)."""
        ...

    def get(self) -> Any:
        """The artifacts new requests snapshot; has ``.version``."""
        ...


@dataclass
class ReloadStats:
    checks: int = 0
    swaps: int = 0
    refused: list[str] = field(default_factory=list)  # "version: reason", newest last (all use cases)
    swaps_by_use_case: dict[str, int] = field(default_factory=dict)
    refused_by_use_case: dict[str, list[str]] = field(default_factory=dict)


class ModelReloader:
    """Polls CURRENT and hot-swaps the artifacts of a running server, per use case."""

    def __init__(self, watched: Mapping[str, Reloadable], interval_s: float) -> None:
        """``watched``: use case name -> its model holder (the served use cases)."""
        self._watched: dict[str, Reloadable] = dict(watched)
        self._interval_s = interval_s
        self._refused: dict[str, str | None] = dict.fromkeys(self._watched)
        self._rollout_refused: dict[str, set[str]] = {name: set() for name in self._watched}
        self._rollout_said: dict[str, str] = {}
        self.stats = ReloadStats()

    @property
    def use_cases(self) -> tuple[str, ...]:
        return tuple(self._watched)

    async def check(self) -> bool:
        """One poll of every watched use case. Returns True when a new version is now serving.

        On failure: never raises for a bad version (refused, logged, old one keeps serving).
        """
        self.stats.checks += 1
        swapped = False
        for use_case in self._watched:
            swapped = await self._check_one(use_case) or swapped
            models = self._watched[use_case]
            if isinstance(models, RolloutModels):
                swapped = await self.check_rollout(use_case, models) or swapped
        return swapped

    async def check_rollout(self, use_case: str, models: RolloutModels[Any]) -> bool:
        """One poll of ``use_case``'s ROLLOUT: loads and installs the canary and shadow it
        names when it changed. True when a new rollout is now served. Never raises for a bad
        version or a corrupt ROLLOUT (logged, refused)."""
        try:
            rollout = await asyncio.to_thread(models.registry.rollout, use_case)
        except RolloutError as exc:
            self._say(use_case, logging.ERROR, f"model reload: {exc}; keeping {models.rollout.describe()}")
            return False
        except (RegistryError, OSError) as exc:
            log.warning("model reload: cannot read the %s ROLLOUT pointer: %s", use_case, exc)
            return False
        if rollout == models.rollout:
            return False
        refused = self._rollout_refused[use_case]
        named = {rollout.canary, rollout.shadow} - {None}
        refused &= named  # a version no longer named may be tried again when named again
        loaded: dict[str, Any] = {}
        for arm, name, have in (
            ("canary", rollout.canary, models.canary),
            ("shadow", rollout.shadow, models.shadow),
        ):
            if name is None or name in loaded or name in refused:
                continue
            if have is not None and have.version == name:
                loaded[name] = have
                continue
            try:
                loaded[name] = await asyncio.to_thread(models.prepare, name)
            except StorageError as exc:
                log.warning(
                    "model reload: cannot fetch %s %s model %s (%s); will retry", use_case, arm, name, exc
                )
                return False
            except (RegistryError, OSError, ValueError) as exc:
                refused.add(name)
                self.stats.refused.append(f"{name}: {exc}")
                self.stats.refused_by_use_case.setdefault(use_case, []).append(f"{name}: {exc}")
                log.error(
                    "model reload: REFUSED %s %s model %s (%s); that arm stays off", use_case, arm, name, exc
                )
        canary = loaded.get(rollout.canary) if rollout.canary else None
        shadow = loaded.get(rollout.shadow) if rollout.shadow else None
        models.install_rollout(rollout, canary, shadow)
        self._rollout_said.pop(use_case, None)
        return True

    def _say(self, use_case: str, level: int, message: str) -> None:
        """Logs ``message`` once until it changes (a corrupt file is polled every interval)."""
        if self._rollout_said.get(use_case) != message:
            self._rollout_said[use_case] = message
            log.log(level, message)

    async def _check_one(self, use_case: str) -> bool:
        models = self._watched[use_case]
        try:
            name = await asyncio.to_thread(models.registry.current_name, use_case)
        except (RegistryError, OSError) as exc:
            log.warning("model reload: cannot read the %s CURRENT pointer: %s", use_case, exc)
            return False
        serving = models.get().version
        if name == serving or name == self._refused[use_case]:
            return False
        try:
            artifacts = await asyncio.to_thread(models.prepare, name)
        except StorageError as exc:  # the object store is unreachable or a download broke: not the version
            log.warning("model reload: cannot fetch %s model %s (%s); will retry", use_case, name, exc)
            return False
        except (RegistryError, OSError, ValueError) as exc:
            self._refused[use_case] = name
            self.stats.refused.append(f"{name}: {exc}")
            self.stats.refused_by_use_case.setdefault(use_case, []).append(f"{name}: {exc}")
            log.error(
                "model reload: REFUSED %s model %s (%s); still serving %s", use_case, name, exc, serving
            )
            return False
        models.install(artifacts)
        self._refused[use_case] = None
        self.stats.swaps += 1
        self.stats.swaps_by_use_case[use_case] = self.stats.swaps_by_use_case.get(use_case, 0) + 1
        log.info("model reload: %s model %s -> %s", use_case, serving, name)
        return True

    async def run(self) -> None:
        """Polls until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("model reload: unexpected error; will retry")

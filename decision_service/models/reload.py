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
with its own CURRENT pointer and refusal memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from decision_service.models.registry import ModelRegistry, RegistryError
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
        return swapped

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

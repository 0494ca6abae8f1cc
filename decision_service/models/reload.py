"""Hot reload: watch the registry's CURRENT pointer and swap in a newly published version.

The check reads one small file every ``interval_s``. When CURRENT names a version that is
not the one being served, the version is loaded and fully checked *off the event loop*
(checksums, LightGBM and FAISS files, features the registry can serve, consistent sizes);
only then is the serving reference swapped, in one assignment. Each request snapshots the
artifacts once (executor), so requests in flight finish on the version they started with
and none is dropped or failed by a swap.

A version that fails its checks is refused with one ERROR line naming it and the reason;
the old version keeps serving, and the refused one is not retried until CURRENT changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from decision_service.models.registry import RegistryError
from decision_service.models.serving import RECOMMENDATION, RecommendationModels

log = logging.getLogger(__name__)


@dataclass
class ReloadStats:
    checks: int = 0
    swaps: int = 0
    refused: list[str] = field(default_factory=list)  # "version: reason", newest last


class ModelReloader:
    """Polls CURRENT and hot-swaps the recommendation artifacts of a running server."""

    def __init__(self, models: RecommendationModels, interval_s: float) -> None:
        self._models = models
        self._interval_s = interval_s
        self._refused: str | None = None
        self.stats = ReloadStats()

    async def check(self) -> bool:
        """One poll. Returns True when a new version is now serving.

        On failure: never raises for a bad version (refused, logged, old one keeps serving).
        """
        self.stats.checks += 1
        registry = self._models.registry
        try:
            name = await asyncio.to_thread(registry.current_name, RECOMMENDATION)
        except (RegistryError, OSError) as exc:
            log.warning("model reload: cannot read the CURRENT pointer: %s", exc)
            return False
        serving = self._models.get().version
        if name == serving or name == self._refused:
            return False
        try:
            artifacts = await asyncio.to_thread(self._models.prepare, name)
        except (RegistryError, OSError, ValueError) as exc:
            self._refused = name
            self.stats.refused.append(f"{name}: {exc}")
            log.error(
                "model reload: REFUSED recommendation model %s (%s); still serving %s", name, exc, serving
            )
            return False
        self._models.install(artifacts)
        self._refused = None
        self.stats.swaps += 1
        log.info("model reload: recommendation model %s -> %s", serving, name)
        return True

    async def run(self) -> None:
        """Polls until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("model reload: unexpected error; will retry")

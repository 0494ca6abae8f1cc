"""The model holder of a use case that may not be published yet (fraud, conversion).

It serves one loaded version (``get``); hot reload (models/reload.py) calls ``prepare`` off
the event loop and ``install`` to swap it: one reference assignment, requests in flight keep
the artifacts they started with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from decision_service.models.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)


class _Artifacts(Protocol):
    version: str
    warnings: tuple[str, ...]


A = TypeVar("A", bound=_Artifacts)


class PublishedModels(Generic[A]):
    """CURRENT of ``use_case``, or nothing when no version is published."""

    def __init__(
        self,
        registry: ModelRegistry,
        use_case: str,
        load: Callable[[ModelVersion], A],
        describe: Callable[[A], str] = lambda a: "",
    ) -> None:
        """``load``: a version -> its artifacts (raises RegistryError naming the problem);
        ``describe``: what the "serving ..." log line says about them."""
        self._registry = registry
        self._use_case = use_case
        self._load = load
        self._describe = describe
        self._current: A | None = None

    @property
    def registry(self) -> ModelRegistry:
        return self._registry

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def load_current(self) -> A | None:
        """CURRENT, or None when no version is published. On failure: RegistryError."""
        if not self._registry.has_current(self._use_case):
            log.info("no %s model published under %s: it is not served", self._use_case, self._registry.root)
            return None
        return self.install(self.prepare(self._registry.current_name(self._use_case)))

    def prepare(self, name: str) -> A:
        """Loads and checks a version without serving it (hot reload runs this off the event
        loop). On failure: RegistryError naming the version and the problem."""
        return self._load(self._registry.get(self._use_case, name))

    def install(self, artifacts: A) -> A:
        """Serves ``artifacts`` from now on: one reference swap; requests in flight keep theirs."""
        self._current = artifacts
        log.info("serving %s model %s %s", self._use_case, artifacts.version, self._describe(artifacts))
        for warning in artifacts.warnings:
            log.warning("%s model %s: %s", self._use_case, artifacts.version, warning)
        return artifacts

    def get(self) -> A:
        if self._current is None:
            raise RuntimeError(f"no {self._use_case} artifacts loaded")
        return self._current

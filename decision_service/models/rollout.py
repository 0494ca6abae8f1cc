"""Safe rollout of model versions: a canary arm and a shadow version per use case.

The registry keeps, next to a use case's CURRENT pointer, a ``ROLLOUT`` pointer (JSON text,
written with the same conditional write as CURRENT, models/registry.py):

  shadow        a published version that scores every served decision OFF the answer path
                (after the reply is sent, only while no call is running in the process,
                bounded, skipped and counted under load; server/shadow.py); its scores go to
                the shadow log, next to the served ones by decision id
  canary        a published version that serves ``canary_share`` of the use case's units
                (users: ``UseCase``'s randomisation unit), chosen by a stable hash of
                ``salt`` + unit id: a person sees one model for the whole canary, on every
                replica and across restarts; every decision log row records its ``arm``
  salt          a new one per canary, so consecutive canaries do not hit the same users

``decision-service rollout`` (offline/cli.py) sets and clears them, promotes a canary (CURRENT
moves to it, the canary is cleared) or rolls it back (cleared; CURRENT unchanged). Hot reload
(models/reload.py) loads the versions ROLLOUT names with the same checks as CURRENT; a version
that fails them is refused (logged, counted) and the use case serves on without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

ROLLOUT_POINTER = "ROLLOUT"
VERSION_NAME = re.compile(r"v\d{4,}")
"""A published version's name (models/version_store.py); never a path."""
LIVE = "live"
CANARY = "canary"
SHADOW = "shadow"
_SCALE = float(2**64)


class RolloutError(ValueError):
    """A rollout that cannot be: an unknown version, a bad share, a corrupt ROLLOUT file."""


@dataclass(frozen=True)
class Rollout:
    """What a use case runs besides CURRENT. Empty (the default) = CURRENT alone."""

    shadow: str | None = None
    canary: str | None = None
    canary_share: float = 0.0  # in (0, 1) when ``canary`` is set
    salt: str = ""
    changed_at: str = ""  # UTC, ISO 8601, when it was last written

    def __post_init__(self) -> None:
        for key in ("shadow", "canary"):
            name = getattr(self, key)
            if name is not None and (not isinstance(name, str) or not VERSION_NAME.fullmatch(name)):
                raise RolloutError(f"{key} must be a version name like v0004, got {name!r}")
        for key in ("salt", "changed_at"):
            if not isinstance(getattr(self, key), str):
                raise RolloutError(f"{key} must be a string, got {getattr(self, key)!r}")
        share = self.canary_share
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise RolloutError(f"canary share must be a number, got {share!r}")
        if self.canary is not None and not 0.0 < share < 1.0:
            raise RolloutError(f"canary share must be in (0, 1), got {share}")

    @property
    def empty(self) -> bool:
        return self.shadow is None and self.canary is None

    def with_canary(self, version: str | None, share: float = 0.0) -> Rollout:
        """This rollout with a new canary (a fresh salt) or none."""
        if version is None:
            return dataclasses.replace(self, canary=None, canary_share=0.0, salt="", changed_at=_now())
        return dataclasses.replace(
            self, canary=version, canary_share=float(share), salt=os.urandom(8).hex(), changed_at=_now()
        )

    def with_shadow(self, version: str | None) -> Rollout:
        return dataclasses.replace(self, shadow=version, changed_at=_now())

    def to_text(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, text: str | None, where: str = "ROLLOUT") -> Rollout:
        """The ROLLOUT pointer's text (None or blank: no rollout). On failure: RolloutError
        naming ``where`` and the problem."""
        if text is None or not text.strip():
            return cls()
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise TypeError(f"unknown keys {unknown}")
            return cls(**raw)
        except RolloutError as exc:
            raise RolloutError(f"{where}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise RolloutError(f"{where} is not a valid rollout: {exc}") from None

    def describe(self) -> str:
        parts = []
        if self.canary:
            parts.append(f"canary {self.canary} at {self.canary_share:.0%}")
        if self.shadow:
            parts.append(f"shadow {self.shadow}")
        return ", ".join(parts) or "no canary, no shadow"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def in_canary(unit: str, share: float, salt: str) -> bool:
    """True when ``unit`` (a user id) falls in the canary: the first 8 bytes of
    BLAKE2b(salt + NUL + unit) read as a fraction of 2**64, below ``share``. Stable across
    processes, replicas and restarts (unlike Python's ``hash``); ~1 µs."""
    digest = hashlib.blake2b(f"{salt}\0{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE < share


A = TypeVar("A")


@dataclass(frozen=True)
class _Arms(Generic[A]):
    """One consistent snapshot: the canary's artifacts with its share and salt, the shadow's."""

    rollout: Rollout
    canary: A | None = None
    shadow: A | None = None


class RolloutModels(Generic[A]):
    """A use case's model holder with its rollout: CURRENT (the wrapped holder, swapped by hot
    reload as before), the canary and the shadow. ``pick(request)`` is what each request
    snapshots; ``shadow`` what the shadow scorer uses.

    Implements ``Reloadable`` (models/reload.py) by delegating to the wrapped holder, plus
    ``install_rollout`` for the versions ROLLOUT names."""

    def __init__(self, live: Any, use_case: str, unit_of: Callable[[Any], str]) -> None:
        """``live``: the use case's holder of CURRENT (``registry``, ``prepare``, ``install``,
        ``get``); ``unit_of``: a domain request -> its randomisation unit (the user id; ""
        when unknown: the request id is used, so anonymous requests spread over both arms)."""
        self._live = live
        self.use_case = use_case
        self._unit_of = unit_of
        self._arms: _Arms[A] = _Arms(Rollout())

    # Reloadable: CURRENT
    @property
    def registry(self) -> Any:
        return self._live.registry

    def prepare(self, name: str) -> A:
        return self._live.prepare(name)  # type: ignore[no-any-return]

    def install(self, artifacts: A) -> A:
        return self._live.install(artifacts)  # type: ignore[no-any-return]

    def get(self) -> A:
        return self._live.get()  # type: ignore[no-any-return]

    # the rollout
    @property
    def rollout(self) -> Rollout:
        return self._arms.rollout

    @property
    def shadow(self) -> A | None:
        return self._arms.shadow

    @property
    def canary(self) -> A | None:
        return self._arms.canary

    def install_rollout(self, rollout: Rollout, canary: A | None, shadow: A | None) -> None:
        """Serves ``rollout`` from now on, with the prepared artifacts of its versions (None:
        that arm is off, e.g. refused). One reference swap, like ``install``."""
        if canary is not None:
            canary = dataclasses.replace(canary, arm=CANARY)  # type: ignore[type-var]
        if shadow is not None:
            shadow = dataclasses.replace(shadow, arm=SHADOW)  # type: ignore[type-var]
        self._arms = _Arms(rollout, canary, shadow)
        log.info("%s rollout: %s", self.use_case, _served(rollout, canary, shadow))

    def pick(self, request: Any) -> A:
        """The artifacts that serve ``request``: the canary's when its unit falls in the
        canary share, else CURRENT's. A canary that has become CURRENT (promoted, hot-reloaded
        before ROLLOUT was cleared) serves as live: its rows never say "canary" for CURRENT."""
        arms = self._arms
        live = self._live.get()
        if arms.canary is not None and arms.canary.version != live.version:  # never "canary" == CURRENT
            unit = self._unit_of(request) or getattr(request, "request_id", "")
            if in_canary(unit, arms.rollout.canary_share, arms.rollout.salt):
                return arms.canary
        return live  # type: ignore[no-any-return]


def _served(rollout: Rollout, canary: Any, shadow: Any) -> str:
    parts = []
    if rollout.canary:
        state = "serving" if canary is not None else "NOT loaded"
        parts.append(f"canary {rollout.canary} at {rollout.canary_share:.0%} ({state})")
    if rollout.shadow:
        parts.append(f"shadow {rollout.shadow} ({'scoring' if shadow is not None else 'NOT loaded'})")
    return ", ".join(parts) or "none (CURRENT alone)"

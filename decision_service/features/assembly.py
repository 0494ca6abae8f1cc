"""Builds the model's input matrix, in the model's feature order, from registry groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from decision_service.features.definitions import REGISTRY


class UnservableFeatures(ValueError):
    """The model asks for features the registry cannot serve."""


class FeatureAssembler:
    """Maps model columns to (user | item | cross) slots once; assembles batches per request.

    Contract: ``assemble`` returns float32 [n_items, len(columns)] in ``columns`` order.
    On failure: the constructor raises UnservableFeatures naming every missing column.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        missing = REGISTRY.missing_columns(list(columns))
        if missing:
            raise UnservableFeatures(
                f"model needs features the registry {REGISTRY.version} cannot serve: " + ", ".join(missing)
            )
        # the recommendation groups, imported here: a project serving only fraud declares none
        from decision_service.features.definitions import ITEM, USER, USER_ITEM

        self.columns = list(columns)
        self._parts: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, group_columns in (
            ("user", USER.columns),
            ("item", ITEM.columns),
            ("cross", USER_ITEM.columns),
        ):
            pos = [i for i, c in enumerate(self.columns) if c in group_columns]
            slots = [group_columns.index(self.columns[i]) for i in pos]
            self._parts.append((name, np.asarray(pos, np.int64), np.asarray(slots, np.int64)))
        used = sum(len(p) for _, p, _ in self._parts)
        if used != len(self.columns):
            raise UnservableFeatures("recommendation models may use only user, item and user_item features")

    def assemble(self, user: np.ndarray, items: np.ndarray, cross: np.ndarray) -> np.ndarray:
        """``user`` is [user width] (one user) or [n, user width] (row-aligned, offline)."""
        n = len(items)
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        for name, pos, slots in self._parts:
            if not len(pos):
                continue
            if name == "user":
                out[:, pos] = user[..., slots]
            elif name == "item":
                out[:, pos] = items[:, slots]
            else:
                out[:, pos] = cross[:, slots]
        return out


class RowAssembler:
    """Places columns of named feature groups into a model's feature order (fraud models).

    Contract: ``assemble`` returns float32 [n, len(columns)] in ``columns`` order from a
    mapping group name -> [n, group width] (or [group width], broadcast).
    On failure: the constructor raises UnservableFeatures naming every column that the
    registry cannot serve or that none of ``groups`` provides.
    """

    def __init__(self, columns: Sequence[str], groups: Sequence[tuple[str, Sequence[str]]]) -> None:
        missing = REGISTRY.missing_columns(list(columns))
        if missing:
            raise UnservableFeatures(
                f"model needs features the registry {REGISTRY.version} cannot serve: " + ", ".join(missing)
            )
        self.columns = list(columns)
        self._parts: list[tuple[str, np.ndarray, np.ndarray]] = []
        placed: set[str] = set()
        for name, group_columns in groups:
            index = {c: i for i, c in enumerate(group_columns)}
            pos = [i for i, c in enumerate(self.columns) if c in index]
            if pos:
                slots = [index[self.columns[i]] for i in pos]
                self._parts.append((name, np.asarray(pos, np.int64), np.asarray(slots, np.int64)))
                placed.update(self.columns[i] for i in pos)
        unplaced = [c for c in self.columns if c not in placed]
        if unplaced:
            raise UnservableFeatures("no input group provides: " + ", ".join(unplaced))
        by_column = REGISTRY.features_by_column
        self._defaults = np.array([by_column[c].default for c in self.columns], np.float32)
        self._group_of = np.empty(len(self.columns), dtype=object)
        for name, pos, _ in self._parts:
            self._group_of[pos] = name

    def replace_non_finite(self, row: np.ndarray) -> list[str]:
        """Replaces every NaN / inf of ``row`` ([n, len(columns)]) in place by its column's
        declared default; returns the names of the groups that held one (sorted, unique).

        Contract: the model never sees a non-finite value, whichever path produced it
        (a stored profile, velocity events, request-time arithmetic that overflowed).
        """
        bad = ~np.isfinite(row)
        if not bad.any():
            return []
        cols = np.flatnonzero(bad.any(axis=0))
        row[bad] = np.broadcast_to(self._defaults, row.shape)[bad]
        return sorted({str(self._group_of[c]) for c in cols})

    @property
    def groups(self) -> list[str]:
        return [name for name, _, _ in self._parts]

    def assemble(self, blocks: dict[str, np.ndarray], n: int = 1) -> np.ndarray:
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        for name, pos, slots in self._parts:
            out[:, pos] = np.atleast_2d(blocks[name])[:, slots]
        return out

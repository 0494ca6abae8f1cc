"""Probability -> action at a threshold, with the top reasons.

The threshold is the request's when it gives one, else the configured one; with neither,
the action is UNSPECIFIED (the caller uses the probability). No score (the model failed)
is SKIP: the service never targets on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decision_service.domain.conversion import ConversionAction
from decision_service.domain.decision import ReasonCode
from decision_service.features.conversion import reason_code
from decision_service.features.registry import reads_low
from decision_service.stages.conversion_base import ConversionState, Verdict


@dataclass(frozen=True)
class ThresholdConfig:
    threshold: float | None = None  # in [0, 1]; None: no action
    max_reasons: int = 3
    min_reason_contribution: float = 0.02  # calibrated log-odds

    def validate(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"the conversion threshold must be in [0, 1], got {self.threshold}")
        if self.max_reasons < 0:
            raise ValueError(f"max_reasons must be >= 0, got {self.max_reasons}")


class Threshold:
    name = "policy"

    def __init__(self, config: ThresholdConfig) -> None:
        config.validate()
        self._c = config

    def decide(self, state: ConversionState) -> Verdict:
        threshold = state.request.threshold if state.request.threshold is not None else self._c.threshold
        if threshold is None:
            action = ConversionAction.UNSPECIFIED
        elif state.score is None:
            action = ConversionAction.SKIP
        else:
            action = (
                ConversionAction.TARGET if state.score.probability >= threshold else ConversionAction.SKIP
            )
        return Verdict(action, threshold, self._reasons(state))

    def _reasons(self, state: ConversionState) -> tuple[ReasonCode, ...]:
        """The largest |contributions|, most important first; direction from the training median."""
        if state.score is None or state.row is None or self._c.max_reasons == 0:
            return ()
        contrib = state.score.contributions
        a = state.artifacts
        columns, medians, minima = a.columns, a.medians, a.minima
        out = []
        for j in np.argsort(-np.abs(contrib), kind="stable")[: self._c.max_reasons]:
            c = float(contrib[j])
            if abs(c) < self._c.min_reason_contribution:
                break
            value = float(state.row[0, j])
            code, text = reason_code(columns[j], value, reads_low(value, float(medians[j]), float(minima[j])))
            direction = "raises" if c > 0 else "lowers"
            out.append(ReasonCode(code, columns[j], round(c, 4), f"{text} ({direction} the probability)"))
        return tuple(out)

"""Rules and thresholds -> APPROVE / REVIEW / DECLINE, with the rules that fired and reasons.

Every rule is evaluated; the strictest action wins and every rule that fired is reported,
the deciding ones first. Rules work without a model score and without the store (then the
configured fallback applies), so an outage never silently approves everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decision_service.domain.fraud import FiredRule, FraudAction, Reason
from decision_service.features.definitions import REGISTRY
from decision_service.features.registry import reads_low
from decision_service.stages.fraud_base import FraudState, Verdict

FALLBACK_REVIEW = "review"
FALLBACK_OPEN = "open"


@dataclass(frozen=True)
class PolicyConfig:
    review_score: int = 40  # risk score (0..99) at or above which a payment is reviewed
    decline_score: int = 85
    max_amount_eur: float = 10_000.0  # hard limit: above it, decline
    max_user_txn_10m: int = 12  # hard limit on a user's payments in 10 minutes (card testing)
    degraded_fallback: str = FALLBACK_REVIEW  # "review" (fail to review) or "open"
    fail_open_max_amount_eur: float = 200.0  # with "open": larger amounts still go to review
    max_reasons: int = 3
    min_reason_contribution: float = 0.05  # log-odds

    def validate(self) -> None:
        if not 0 < self.review_score <= self.decline_score <= 99:
            raise ValueError(
                f"need 0 < review_score <= decline_score <= 99, got {self.review_score}, {self.decline_score}"
            )
        if self.degraded_fallback not in (FALLBACK_REVIEW, FALLBACK_OPEN):
            raise ValueError(f"degraded_fallback must be 'review' or 'open', got {self.degraded_fallback!r}")


def risk_score(probability: float) -> int:
    """Probability -> 0..99 (percent, floored; the 1e-9 keeps 0.57 from flooring to 56)."""
    return int(min(99, max(0, np.floor(probability * 100.0 + 1e-9))))


class RulesAndThresholds:
    name = "policy"

    def __init__(self, config: PolicyConfig) -> None:
        config.validate()
        self._c = config

    def decide(self, state: FraudState) -> Verdict:
        c, t = self._c, state.request.transaction
        fired: list[tuple[FraudAction, FiredRule]] = []
        ctx = state.context
        for kind in sorted(ctx.blocked) if ctx is not None else ():
            fired.append(
                (
                    FraudAction.DECLINE,
                    FiredRule(f"BLOCKLIST_{kind.upper()}", f"the payment's {kind} is on the block list"),
                )
            )
        if t.amount_eur > c.max_amount_eur:
            fired.append(
                (
                    FraudAction.DECLINE,
                    FiredRule(
                        "HARD_LIMIT_AMOUNT",
                        f"amount {t.amount_eur:,.2f} EUR exceeds the limit {c.max_amount_eur:,.0f}",
                    ),
                )
            )
        columns = state.artifacts.assembler.columns
        if state.row is not None and ctx is not None and "v_user_count_10m" in columns:
            recent = int(state.row[0, columns.index("v_user_count_10m")])
            if recent >= c.max_user_txn_10m:
                fired.append(
                    (
                        FraudAction.DECLINE,
                        FiredRule(
                            "VELOCITY_LIMIT_USER_10M",
                            f"{recent} payments by this user in 10 minutes (limit {c.max_user_txn_10m})",
                        ),
                    )
                )
        score = risk_score(state.score.probability) if state.score is not None else -1
        if state.score is not None:
            if score >= c.decline_score:
                fired.append(
                    (
                        FraudAction.DECLINE,
                        FiredRule(
                            "THRESHOLD_DECLINE", f"risk score {score} >= decline threshold {c.decline_score}"
                        ),
                    )
                )
            elif score >= c.review_score:
                fired.append(
                    (
                        FraudAction.REVIEW,
                        FiredRule(
                            "THRESHOLD_REVIEW", f"risk score {score} >= review threshold {c.review_score}"
                        ),
                    )
                )
            elif not state.store_degraded:
                fired.append(
                    (
                        FraudAction.APPROVE,
                        FiredRule(
                            "THRESHOLD_APPROVE", f"risk score {score} < review threshold {c.review_score}"
                        ),
                    )
                )
        if state.store_degraded or state.score is None:
            fired.append(self._fallback(state, score))
        action = max(a for a, _ in fired)
        rules = [r for a, r in fired if a == action] + [r for a, r in fired if a != action]
        return Verdict(action, max(score, 0), rules, self._reasons(state))

    def _fallback(self, state: FraudState, score: int) -> tuple[FraudAction, FiredRule]:
        c, t = self._c, state.request.transaction
        what = "the feature store" if state.store_degraded else "the model"
        if c.degraded_fallback == FALLBACK_REVIEW:
            return FraudAction.REVIEW, FiredRule("FALLBACK_REVIEW", f"{what} was unavailable: fail to review")
        if t.amount_eur > c.fail_open_max_amount_eur:
            return FraudAction.REVIEW, FiredRule(
                "FALLBACK_AMOUNT_CAP",
                f"{what} was unavailable and amount {t.amount_eur:,.2f} EUR exceeds the "
                f"fail-open cap {c.fail_open_max_amount_eur:,.0f}",
            )
        if score >= 0:
            return FraudAction.APPROVE, FiredRule(
                "FALLBACK_OPEN", f"{what} was unavailable: fail open on request-time features (risk {score})"
            )
        return FraudAction.APPROVE, FiredRule("FALLBACK_OPEN", f"{what} was unavailable: fail open on rules")

    def _reasons(self, state: FraudState) -> list[Reason]:
        if state.score is None or state.row is None:
            return []
        columns = state.artifacts.assembler.columns
        contrib = state.score.contributions[: len(columns)]
        out: list[Reason] = []
        seen: set[str] = set()
        for j in np.argsort(-contrib, kind="stable").tolist():
            value = float(contrib[j])
            if value < self._c.min_reason_contribution or len(out) >= self._c.max_reasons:
                break
            feature = REGISTRY.features_by_column[columns[j]]
            if feature.reason is None:
                continue
            a = state.artifacts
            minimum = float(a.minima[j]) if a.minima is not None else float("-inf")
            low = reads_low(float(state.row[0, j]), float(a.medians[j]), minimum)
            code, text = feature.reason.pick(low)
            if code in seen:
                continue
            seen.add(code)
            out.append(Reason(code, columns[j], round(value, 4), text))
        return out

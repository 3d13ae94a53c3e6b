"""The promotion gate: a new version becomes champion only if it beats the current
champion on the same, new holdout (or, for a first version, the naive baseline)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    alias: str              # "champion" or "challenger"
    reason: str
    metric: str
    direction: str          # "higher" or "lower" is better
    new_score: float
    champion_score: float | None
    baseline_score: float

    def tags(self) -> dict[str, str]:
        return {
            "gate.decision": self.alias,
            "gate.reason": self.reason,
            "gate.metric": self.metric,
            "gate.direction": f"{self.direction} is better",
            "gate.new_score": f"{self.new_score:.6g}",
            "gate.champion_score": "" if self.champion_score is None else f"{self.champion_score:.6g}",
            "gate.baseline_score": f"{self.baseline_score:.6g}",
        }


def _better(a: float, b: float, direction: str) -> bool:
    if a is None or math.isnan(a):
        return False
    if b is None or math.isnan(b):
        return True
    return a > b if direction == "higher" else a < b


def decide(metric: str, direction: str, new_score: float, baseline_score: float,
           champion_score: float | None) -> GateDecision:
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if champion_score is None:
        if _better(new_score, baseline_score, direction):
            return GateDecision("champion", "first version, beats the naive baseline", metric, direction,
                                new_score, None, baseline_score)
        return GateDecision("challenger", "first version, does not beat the naive baseline: no champion",
                            metric, direction, new_score, None, baseline_score)
    if _better(new_score, champion_score, direction):
        return GateDecision("champion", "beats the current champion on the same holdout", metric, direction,
                            new_score, champion_score, baseline_score)
    return GateDecision("challenger", "does not beat the current champion on the same holdout", metric,
                        direction, new_score, champion_score, baseline_score)

"""The promotion gate: a version becomes ``champion`` only on evidence.

On the holdout, the new version must beat (a) every naive baseline of its family
and (b) the current champion, if there is one, each *with statistical support*:
the paired moving-block bootstrap (``evaluation.py``) of the score difference
gives a one-sided 95 % interval, and the version passes a comparison only when
the interval's lower bound is above the family's minimum improvement (margin).
Anything else is ``challenger``, with the reason. Improvement is always
"positive = the new version is better": new − other when higher is better,
other − new when lower is better.

The same code serves every family; what differs is the metric and the baselines:
classifiers (``classifier.gate``: ROC AUC against the best untrained rule, log
loss against the base rate), the regime model (``regime.train_and_gate``: the
held-out predictive log-likelihood of the next return against a Gaussian VAR(1)),
and the forecasters to come (MAE relative to the naive forecasts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InvalidInput
from . import evaluation as ev
from .common import check_int, check_number

MetricFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (prediction, W) -> score per replicate


@dataclass(frozen=True)
class GatePolicy:
    """How much evidence a family's gate asks for (the margins are in the metric's units)."""

    metric: str                       # the family's gate metric (vs the champion, and vs its ranking baseline)
    direction: str                    # "higher" or "lower" is better
    margins: dict = field(default_factory=dict)  # comparison key -> minimum improvement (metric units)
    confidence: float = 0.95          # one-sided
    n_boot: int = 1000
    seed: int = 0

    def margin(self, key: str) -> float:
        if key not in self.margins:
            raise KeyError(f"the gate policy has no margin for {key!r} (has {sorted(self.margins)})")
        return float(self.margins[key])

    def __post_init__(self):
        if not isinstance(self.metric, str) or not self.metric:
            raise InvalidInput(f"gate metric: {self.metric!r} must name the metric", field="metric")
        if self.direction not in ("higher", "lower"):
            raise InvalidInput(f"gate direction must be 'higher' or 'lower', got {self.direction!r}",
                               field="direction")
        check_number("gate", "confidence", self.confidence, 0.5, 1, low_open=True, high_open=True)
        check_n_boot(self.n_boot)
        check_int("gate", "seed", self.seed, 0)
        if not isinstance(self.margins, Mapping):
            raise InvalidInput(f"gate margins: {self.margins!r} must map comparisons to minimum improvements",
                               field="margins")
        for key, value in self.margins.items():
            check_margin(value, f"margins.{key}")


# a comparison's minimum improvement may be negative down to -1: a test or a demo switches a comparison off
# with -1 (an AUC or macro-F1 difference is never below it), but a margin below that, -inf or NaN promotes
# versions far worse than the baseline (or, NaN, silently none): refused
MIN_MARGIN = -1.0
# fewer replicates cannot place the 5 % quantile of a one-sided 95 % interval with any precision
MIN_BOOT = 100


def check_margin(value, name: str) -> float:
    """A gate margin (minimum improvement, in the metric's units) as a float: finite and at least
    ``MIN_MARGIN``; else InvalidInput naming ``name`` (the config field that set it)."""
    check_number("gate margin", name, value, MIN_MARGIN)
    return float(value)


def check_n_boot(value, name: str = "n_boot") -> int:
    """Bootstrap replicates: an integer >= ``MIN_BOOT``; else InvalidInput naming ``name``."""
    check_int("gate", name, value, MIN_BOOT)
    return int(value)


@dataclass(frozen=True)
class Comparison:
    key: str              # vs_base_rate, vs_best_rule, vs_var1, vs_naive, vs_champion
    against: str          # what the new version was compared with, in words
    metric: str
    direction: str
    new_score: float
    other_score: float
    improvement: float    # point estimate, positive = the new version is better
    lower: float          # one-sided lower bound of the improvement at the policy's confidence
    upper: float          # the matching upper quantile (lower, upper) is the central interval
    margin: float
    rows: int

    @property
    def passed(self) -> bool:
        return math.isfinite(self.lower) and self.lower > self.margin

    def interval(self) -> str:
        return f"[{self.lower:+.4g}, {self.upper:+.4g}]"

    def text(self) -> str:
        return (f"{self.metric} {self.new_score:.4g} vs {self.other_score:.4g} ({self.against}): improvement "
                f"{self.improvement:+.4g}, interval {self.interval()}, margin {self.margin:g}"
                f" -> {'pass' if self.passed else 'fail'}")

    def tags(self) -> dict[str, str]:
        p = f"gate.{self.key}"
        return {f"{p}.against": self.against, f"{p}.metric": self.metric, f"{p}.score": f"{self.other_score:.6g}",
                f"{p}.improvement": f"{self.improvement:.6g}", f"{p}.interval": self.interval(),
                f"{p}.lower_bound": f"{self.lower:.6g}", f"{p}.margin": f"{self.margin:g}",
                f"{p}.rows": str(self.rows), f"{p}.passed": str(self.passed).lower()}


def compare(key: str, against: str, metric: str, direction: str, fn: MetricFn, new_pred, other_pred,
            boot: ev.Bootstrap, margin: float, confidence: float) -> Comparison:
    """Paired comparison: both predictions scored on the same bootstrap replicates.

    ``other_pred`` may be a list of predictions: the baseline is then the best of them *in each
    replicate* (and the best of their point scores), so picking the best rule on the holdout does
    not make the comparison look surer than it is."""
    one = ev.ones(boot.rows)
    others = other_pred if isinstance(other_pred, list) else [other_pred]
    best = np.nanmax if direction == "higher" else np.nanmin
    new_pt = float(fn(new_pred, one)[0])
    other_pt = float(best([fn(o, one)[0] for o in others]))
    new_b = boot.apply(fn, new_pred)
    with np.errstate(all="ignore"):
        other_b = best(np.vstack([boot.apply(fn, o) for o in others]), axis=0)
    sign = 1.0 if direction == "higher" else -1.0
    imp_b = sign * (new_b - other_b)
    imp_b = imp_b[np.isfinite(imp_b)]
    alpha = 1 - confidence
    if len(imp_b) < 0.9 * boot.n_boot:  # most replicates could not score (one class only): no support
        lo = hi = float("nan")
    else:
        lo, hi = (float(q) for q in np.quantile(imp_b, [alpha, 1 - alpha]))
    return Comparison(key, against, metric, direction, new_pt, other_pt, sign * (new_pt - other_pt), lo, hi,
                      float(margin), boot.rows)


@dataclass
class GateDecision:
    alias: str                  # "champion" or "challenger" ("blocked": a blocking check failed, no alias moves)
    reason: str
    metric: str
    direction: str
    new_score: float
    comparisons: list[Comparison] = field(default_factory=list)
    champion_mode: str = "none"  # none | scored | refit | unavailable | blocked (the champion could not be compared)
    champion_note: str = ""
    block_len: int = 0
    n_boot: int = 0
    confidence: float = 0.95
    holdout_rows: int = 0

    def get(self, key: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.key == key), None)

    @property
    def champion_score(self) -> float | None:
        c = self.get("vs_champion")
        return None if c is None else c.other_score

    @property
    def baseline_score(self) -> float:
        """The gate metric's baseline (the ranking baseline, or the only one)."""
        for c in self.comparisons:
            if c.key != "vs_champion" and c.metric == self.metric:
                return c.other_score
        return float("nan")

    def tags(self) -> dict[str, str]:
        out = {"gate.decision": self.alias, "gate.reason": self.reason, "gate.metric": self.metric,
               "gate.direction": f"{self.direction} is better", "gate.new_score": f"{self.new_score:.6g}",
               "gate.baseline_score": f"{self.baseline_score:.6g}",
               "gate.champion_score": "" if self.champion_score is None else f"{self.champion_score:.6g}",
               "gate.champion_comparison": self.champion_mode + (f": {self.champion_note}" if self.champion_note
                                                                 else ""),
               "gate.bootstrap": f"moving blocks of {self.block_len} bars, {self.n_boot} replicates, "
                                 f"one-sided {self.confidence:.0%}",
               "gate.holdout_rows": str(self.holdout_rows)}
        for c in self.comparisons:
            out.update(c.tags())
        return out

    def metrics(self) -> dict[str, float]:
        """What MLflow logs of the decision: each comparison's improvement and lower bound, and the
        baselines' scores."""
        out = {}
        for c in self.comparisons:
            out[f"gate_{c.key}_improvement"] = c.improvement
            out[f"gate_{c.key}_lower_bound"] = c.lower
            if c.key != "vs_champion":
                out[f"baseline_{c.metric}_{c.key[3:]}"] = c.other_score
        return out

    def metadata(self) -> dict:
        return {"gate_decision": self.alias, "gate_reason": self.reason,
                "gate_metric": f"{self.metric} ({self.direction} is better)", "new_score": self.new_score,
                "baseline_score": self.baseline_score,
                "champion_score": self.champion_score if self.champion_score is not None else float("nan"),
                "gate_champion_comparison": self.champion_mode + (f": {self.champion_note}" if self.champion_note
                                                                  else ""),
                "gate_comparisons": {c.key: {"against": c.against, "metric": c.metric, "new": c.new_score,
                                             "other": c.other_score, "improvement": c.improvement,
                                             "interval": [c.lower, c.upper], "margin": c.margin,
                                             "passed": c.passed} for c in self.comparisons}}


def decide(metric: str, direction: str, new_score: float, baselines: list[Comparison],
           champion: Comparison | None, *, champion_mode: str = "none", champion_note: str = "",
           block_len: int = 0, n_boot: int = 0, confidence: float = 0.95, holdout_rows: int = 0) -> GateDecision:
    """Champion only if every baseline comparison and the champion comparison (if any) pass."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if not baselines:
        raise ValueError("the gate needs at least one naive baseline")
    kw = dict(metric=metric, direction=direction, new_score=new_score,
              comparisons=[*baselines, *([champion] if champion else [])], champion_mode=champion_mode,
              champion_note=champion_note, block_len=block_len, n_boot=n_boot, confidence=confidence,
              holdout_rows=holdout_rows)
    failed = [c for c in baselines if not c.passed]
    if failed:
        c = failed[0]
        return GateDecision("challenger", f"does not beat {c.against} with support: {c.metric} improvement "
                                          f"{c.improvement:+.4g}, lower bound {c.lower:+.4g} <= margin {c.margin:g}",
                            **kw)
    if champion is not None and not champion.passed:
        return GateDecision("challenger", f"beats the baselines but not {champion.against} with support: "
                                          f"{champion.metric} improvement {champion.improvement:+.4g}, lower bound "
                                          f"{champion.lower:+.4g} <= margin {champion.margin:g}", **kw)
    if champion is not None:
        return GateDecision("champion", f"beats the baselines and {champion.against} with support", **kw)
    if champion_mode != "none":
        return GateDecision("champion", f"beats every naive baseline with support ({champion_note})", **kw)
    return GateDecision("champion", "first champion: beats every naive baseline with support", **kw)


def keep_incumbent(decision: GateDecision, version: str, why: str) -> GateDecision:
    """A decision that would promote without having compared the new version with the champion in place (it
    could not be loaded or scored): the champion keeps its alias, the new version is a challenger, and the
    reason says why and how to force it."""
    from dataclasses import replace

    return replace(decision, alias="challenger", champion_mode="blocked", champion_note=why,
                   reason=f"not compared with champion version {version} ({why}): the champion keeps its alias; "
                          f"`tp models promote` forces this version without the comparison")


def blocked(decision: GateDecision, why: str) -> GateDecision:
    """A decision a blocking check refused before any alias moved: the version is registered, no alias moves."""
    from dataclasses import replace

    return replace(decision, alias="blocked", reason=f"a blocking check failed ({why}): no alias moved")


def iso(ts_us: int | None) -> str:
    if ts_us is None or ts_us < 0:
        return ""
    return np.datetime64(int(ts_us), "us").astype(str) + "Z"


def min_rows(block_len: int) -> int:
    """A holdout (or the part of it a champion never saw) needs two bootstrap blocks and 100 rows."""
    return max(100, 2 * int(block_len))


def against_champion(policy: GatePolicy, *, version: str, ts_holdout: np.ndarray, block_len: int,
                     data_end_us: int | None, usable: Callable[[np.ndarray], bool],
                     scored: Callable[[np.ndarray], tuple], refit: Callable[[], tuple] | None,
                     same_config: bool = False):
    """The champion comparison, like for like, for any family.

    The fitted champion is scored on the holdout rows after its own training data end
    (``scored(mask) -> (metric_fn, new_pred, champion_pred)`` on those rows). When that leaves
    too few rows (``usable(mask)`` false), its configuration is refit on the new version's
    training rows and both are scored on the whole holdout (``refit() -> (...)``) — unless its
    configuration is this version's (``same_config``): the refit would be this version itself, so
    the baselines decide. A champion that records neither its training window nor its
    configuration (registered before they were recorded) cannot be compared: the baselines decide,
    and the note says so. Returns (Comparison | None, mode, note)."""
    after = np.zeros(len(ts_holdout), bool) if data_end_us is None else ts_holdout > data_end_us
    n_after, since, label = int(after.sum()), iso(data_end_us), f"champion version {version}"
    if n_after >= min_rows(block_len) and usable(after):
        fn, new, other = scored(after)
        boot = ev.Bootstrap(ts_holdout[after], block_len, policy.n_boot, policy.seed + 1)
        c = compare("vs_champion", label, policy.metric, policy.direction, fn, new, other, boot,
                    policy.margin("vs_champion"), policy.confidence)
        return c, "scored", f"the fitted champion on the {n_after} holdout rows after its training data end {since}"
    why = (f"only {n_after} holdout rows after the champion's training data end {since} (need {min_rows(block_len)}, "
           "scorable)" if data_end_us is not None else "the champion records no training window")
    if same_config:
        return None, "refit", (f"{why}; its configuration is this version's, so the refit would be this version: "
                               "decided on the baselines")
    if refit is None:
        return None, "unavailable", f"{why} and no configuration to refit: decided on the baselines"
    fn, new, other = refit()
    boot = ev.Bootstrap(ts_holdout, block_len, policy.n_boot, policy.seed + 1)
    c = compare("vs_champion", f"{label} refit on this training window", policy.metric, policy.direction, fn, new,
                other, boot, policy.margin("vs_champion"), policy.confidence)
    return c, "refit", (f"{why}: its configuration was refit on this version's training rows and both were scored "
                        f"on the whole holdout ({len(ts_holdout)} rows)")

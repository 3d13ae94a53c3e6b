"""The chart-pattern family's promotion gate, on the shared gate (``models/gate.py``).

The metric is the macro F1 on the frozen evaluation set (``evaluate.frozen_set``), higher is
better. Its windows are drawn independently, so the paired bootstrap resamples single
windows (blocks of length 1).

- ``vs_floor``: the baseline comparison. A version passes when the one-sided 95 % lower
  bound of (its macro F1 - the floor 0.85) is above the margin (0): it reaches the floor
  with support, not only as a point estimate.
- ``vs_champion``: when there is a champion, both versions' predictions on the same frozen
  windows; the lower bound of (new - champion) must be above the margin (0.005 macro F1).
  Neither version trained on a frozen window, so the champion is always scored as it is.
- ``vs_no_edge`` (when the asset passes the edges of ``edge.measure``): the TCN's detections in
  held-out stored history must be borne out by what follows them, the one-sided lower bound of
  the mean edge above its margin (0), from at least ``min_detections`` detections; the bound is
  the bootstrap's or, when wider, the null's (a random walk's forward returns have sd 1 in these
  units), so a few detections that agree by chance do not pass. Recognizing
  drawn patterns is not enough for a champion: in a market where patterns complete no particular
  way (a random walk) the detector has nothing to offer, and this comparison says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .. import evaluation as ev
from ..gate import Comparison, GateDecision, GatePolicy, compare, decide
from .evaluate import macro_f1

FLOOR = 0.85
METRIC = "macro_f1"


MIN_DETECTIONS = 10


def default_policy(**overrides) -> GatePolicy:
    kw = {"metric": METRIC, "direction": "higher",
          "margins": {"vs_floor": 0.0, "vs_no_edge": 0.0, "vs_champion": 0.005}}
    kw.update(overrides)
    return GatePolicy(**kw)


class _Constant:
    """A baseline whose score is the same number in every replicate (the floor)."""

    def __init__(self, value: float):
        self.value = float(value)


def _scorer(y_true):
    def fn(pred, W):
        if isinstance(pred, _Constant):
            return np.full(len(W), pred.value)
        return macro_f1(y_true, pred, W)
    return fn


def gate(y_true: Sequence, new_pred: Sequence, policy: GatePolicy | None = None, *,
         champion_pred: Sequence | None = None, champion_version: str | None = None,
         floor: float = FLOOR, edge: np.ndarray | None = None,
         min_detections: int = MIN_DETECTIONS) -> GateDecision:
    """The decision for a new version from its predicted classes on the frozen set (and the
    champion's on the same windows, if there is one), and, when ``edge`` is given (the asset always
    gives it), the edges of its detections in held-out stored history."""
    policy = policy or default_policy()
    y_true, new_pred = np.asarray(y_true), np.asarray(new_pred)
    n = len(y_true)
    if len(new_pred) != n or (champion_pred is not None and len(champion_pred) != n):
        raise ValueError("predictions and labels must cover the same windows")
    fn = _scorer(y_true)
    ids = np.arange(n)  # frozen windows are independent: blocks of one window
    base = compare("vs_floor", f"the floor macro F1 {floor:g}", METRIC, "higher", fn, new_pred, _Constant(floor),
                   ev.Bootstrap(ids, 1, policy.n_boot, policy.seed), policy.margin("vs_floor"), policy.confidence)
    baselines = [base]
    if edge is not None:
        baselines.append(edge_comparison(np.asarray(edge, dtype=np.float64), policy, min_detections))
    champ: Comparison | None = None
    mode, note = "none", ""
    if champion_pred is not None:
        champ = compare("vs_champion", f"champion version {champion_version or '?'}", METRIC, "higher", fn, new_pred,
                        np.asarray(champion_pred), ev.Bootstrap(ids, 1, policy.n_boot, policy.seed + 1),
                        policy.margin("vs_champion"), policy.confidence)
        mode, note = "scored", f"both versions scored on the same {n} frozen windows"
    return decide(METRIC, "higher", base.new_score, baselines, champ, champion_mode=mode, champion_note=note,
                  block_len=1, n_boot=policy.n_boot, confidence=policy.confidence, holdout_rows=n)


def edge_comparison(edge: np.ndarray, policy: GatePolicy, min_detections: int = MIN_DETECTIONS) -> Comparison:
    """``vs_no_edge``: the mean edge of the detections against none (0); detections are episodes far
    enough apart to be resampled one by one. Too few detections: no support (a NaN bound fails)."""
    n = len(edge)
    if n < min_detections:
        nan = float("nan")
        return Comparison("vs_no_edge", f"no edge: {n} detection(s) in held-out stored history, the gate needs "
                          f"{min_detections}", "directional_edge", "higher",
                          float(edge.mean()) if n else nan, 0.0, nan, nan, nan, policy.margin("vs_no_edge"), n)
    c = compare("vs_no_edge", f"no edge ({n} detections in held-out stored history)", "directional_edge",
                "higher", ev.weighted_mean, edge, np.zeros(n), ev.Bootstrap(np.arange(n), 1, policy.n_boot,
                                                                            policy.seed + 2),
                policy.margin("vs_no_edge"), policy.confidence)
    # Without an edge, a detection's forward return is a draw of the market's own (its sd is 1 in these
    # units, measured on every held-out bar, not on the few detections): the bound is never narrower than
    # that null's. A handful of detections whose returns happen to agree (a small sample's spread) do
    # not make a random walk look predictable.
    from statistics import NormalDist

    half = NormalDist().inv_cdf(policy.confidence) / math.sqrt(n)
    mean = float(edge.mean())
    return replace(c, lower=min(c.lower, mean - half), upper=max(c.upper, mean + half))

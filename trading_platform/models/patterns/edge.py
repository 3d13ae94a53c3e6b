"""Do the TCN's detections say anything about what follows, in stored history it never trained on?

The frozen set says whether the TCN *recognizes* the patterns as they are drawn; it says
nothing about a market. A detector worth a champion's place must also find, in the
managed symbols' own history, patterns whose textbook direction (``DIRECTION``) is
borne out by what follows. So each stored series is cut at ``1 - holdout_frac`` of its
bars: the TCN trains on the windows before the cut, and after it:

- every ``stride`` bars, the windows of each length ending there are scored; the most
  probable class over the lengths is a detection when it is a directional pattern at or
  above ``threshold``; a detection within ``horizon`` bars of the last one kept in the
  series (of any pattern) is dropped, so no two detections share a bar of their forward
  returns and the bootstrap may resample them one by one;
- a detection's *edge* is its direction times the ``horizon``-bar log return that
  follows its window's last candle, less the series' mean ``horizon``-bar return over
  the held-out bars, in units of their standard deviation (comparable across symbols).

The gate's ``vs_no_edge`` comparison asks for the one-sided lower bound of the mean edge
above its margin; with fewer than ``min_detections`` detections it fails for want of
evidence. In a market without patterns that complete their way (a random walk: the
demo's control) it fails, as it should.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import CLASSES, DIRECTION, NONE


@dataclass
class EdgeResult:
    values: np.ndarray                      # one edge per detection (standard deviations of the forward return)
    detections: dict = field(default_factory=dict)   # series -> pattern -> count
    held_bars: dict = field(default_factory=dict)    # series -> held-out bars scanned

    @property
    def n(self) -> int:
        return len(self.values)

    def summary(self) -> dict:
        return {"detections": int(self.n), "mean_edge": float(self.values.mean()) if self.n else float("nan"),
                "per_series": {s: sum(c.values()) for s, c in self.detections.items()},
                "held_out_bars": self.held_bars}


def split(series: Mapping[str, np.ndarray], holdout_frac: float) -> tuple[dict, dict]:
    """(training part, cut index) per series: the TCN trains on the bars before the cut."""
    train, cuts = {}, {}
    for name, ohlc in series.items():
        cut = int(len(ohlc) * (1 - holdout_frac))
        train[name], cuts[name] = ohlc[:cut], cut
    return train, cuts


def measure(model, series: Mapping[str, np.ndarray], cuts: Mapping[str, int], *, windows=(64, 128), stride: int = 4,
            horizon: int = 24, threshold: float = 0.5) -> EdgeResult:
    """The edges of the TCN's detections after each series' cut (see the module's docstring)."""
    values, detections, held = [], {}, {}
    for name in sorted(series):
        ohlc = np.asarray(series[name], dtype=np.float64)
        cut, n = int(cuts[name]), len(ohlc)
        ends = np.arange(max(cut, min(windows) - 1), n - horizon, stride)
        held[name] = max(n - cut, 0)
        if len(ends) == 0:
            continue
        logc = np.log(ohlc[:, 3])
        fwd_all = logc[cut + horizon:] - logc[cut:n - horizon] if n - horizon > cut else np.array([])
        if len(fwd_all) < 2 or not np.std(fwd_all) > 0:
            continue
        mu, sd = float(np.mean(fwd_all)), float(np.std(fwd_all))
        best_p = np.zeros(len(ends))
        best_k = np.full(len(ends), CLASSES.index(NONE))
        for w in windows:
            ok = ends >= w - 1
            if not ok.any():
                continue
            proba = model.predict_proba([ohlc[e - w + 1:e + 1] for e in ends[ok]])
            k = proba.argmax(axis=1)
            p = proba[np.arange(len(k)), k]
            idx = np.flatnonzero(ok)
            better = p > best_p[idx]
            best_p[idx[better]], best_k[idx[better]] = p[better], k[better]
        last = None
        for e, k, p in zip(ends, best_k, best_p):
            c = CLASSES[k]
            if c == NONE or p < threshold or not DIRECTION[c]:
                continue
            if last is not None and e - last < horizon:  # its forward return would overlap the last one's
                continue
            last = int(e)
            values.append(DIRECTION[c] * (logc[e + horizon] - logc[e] - mu) / sd)
            detections.setdefault(name, {}).setdefault(c, 0)
            detections[name][c] += 1
    return EdgeResult(np.asarray(values, dtype=np.float64), detections, held)

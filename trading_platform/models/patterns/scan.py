"""A point-in-time pattern scan of one series.

For each window end t (every ``stride``-th candle counted back from the last one) and each
window length, the model scores the candles that end at t, so a pattern reported at t uses
only candles closed by t (the candle whose ``ts`` is t closes at t + timeframe: that is when
the row becomes known). Per end and pattern the row keeps the highest probability over the
window lengths (and the length that gave it); rows below ``threshold`` and "none" are dropped.
All the windows of a series go to the model in one call (per ``chunk`` of window ends).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import CLASSES, NONE
from . import windows as win

COLUMNS = ("ts", "pattern", "probability", "bars")
DEFAULT_WINDOWS = (64, 128, 256)


def _arrays(candles) -> tuple[pd.Index, np.ndarray]:
    """(ts, (n, 4) OHLC) from a pandas or polars frame with ts, open, high, low, close (or a
    pandas frame indexed by time); candles in time order."""
    cols = {c.lower(): c for c in candles.columns}
    missing = [c for c in ("open", "high", "low", "close") if c not in cols]
    if missing:
        raise ValueError(f"candles lack column(s) {', '.join(missing)}")
    ohlc = np.column_stack([np.asarray(candles[cols[c]], dtype=np.float64) for c in ("open", "high", "low", "close")])
    if "ts" in cols:
        col = candles[cols["ts"]]
        ts = pd.Index(col if isinstance(col, pd.Series) else np.asarray(col))
    else:
        ts = pd.Index(candles.index)
    if not (ts.is_monotonic_increasing and ts.is_unique):
        raise ValueError("candles must be in increasing ts order, one per ts")
    if not np.all(np.isfinite(ohlc)) or np.any(ohlc <= 0):
        raise ValueError("candles must have finite, positive prices")
    return ts, ohlc


def scan(candles, model, *, windows: Sequence[int] = DEFAULT_WINDOWS, stride: int = 1, threshold: float = 0.5,
         since=None, chunk: int = 4096) -> pd.DataFrame:
    """Rows (ts: the window's last candle, pattern, probability, bars: the window length) for
    the patterns at or above ``threshold``; only window ends after ``since`` when given."""
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    windows = sorted({int(w) for w in windows})
    if not windows or windows[0] < 16:
        raise ValueError(f"window lengths must be at least 16 bars, got {windows}")
    ts, ohlc = _arrays(candles)
    n = len(ohlc)
    ends = np.arange(n - 1, windows[0] - 2, -stride)[::-1]  # index of each window's last candle
    if since is not None:
        ends = ends[np.asarray(ts[ends] > since)]
    best = np.zeros((len(ends), len(CLASSES)))
    bars = np.zeros((len(ends), len(CLASSES)), dtype=np.int64)
    views = {w: np.lib.stride_tricks.sliding_window_view(ohlc, w, axis=0) for w in windows if w <= n}  # (., 4, w)
    for i in range(0, len(ends), chunk):  # every window of a chunk of ends, all lengths: one model call
        part = np.arange(i, min(i + chunk, len(ends)))
        rows = {w: part[ends[part] >= w - 1] for w in views}
        X = np.concatenate([win.features(views[w][ends[r] - w + 1].transpose(0, 2, 1), model.config.length)
                            for w, r in rows.items()])
        p = model.predict_features(X)
        at = 0
        for w, r in rows.items():  # per class, the window length that gives it the highest probability
            pw = p[at:at + len(r)]
            at += len(r)
            better = pw > best[r]
            best[r] = np.where(better, pw, best[r])
            bars[r] = np.where(better, w, bars[r])
    keep = best >= threshold
    keep[:, CLASSES.index(NONE)] = False
    e, k = np.nonzero(keep)
    return pd.DataFrame({"ts": ts.take(ends[e]), "pattern": np.array(CLASSES, dtype=object)[k],
                         "probability": best[e, k], "bars": bars[e, k]})

"""A window of candles as the TCN's input: normalized per window and resampled to a fixed
length (numpy only).

Normalization: log prices relative to the window's last close, divided by the window's
high-to-low range in log price, so every input lies in [-1, 1] and ends at close 0 whatever
the price level or the volatility.

Length: windows of any length are resampled to ``length`` bars. Chart patterns are shapes,
not bar counts (a double top over 40 bars and over 200 is the same pattern), and the frozen
set's patterns span 32 to 256 bars; resampling puts every pattern at roughly the same scale
in the input, so one fixed receptive field sees it whole, compute per window is constant
and windows batch without padding. Longer windows are binned (open of the first bar, the
highest high, the lowest low, close of the last bar: nothing between bars is lost); shorter
ones repeat bars (nothing is invented).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHANNELS = ("open", "high", "low", "close")


def _bins(n: int, length: int) -> np.ndarray:
    """Start index of each of ``length`` bins over n bars (n >= length: every bin non-empty)."""
    return (np.arange(length) * n) // length


def features(windows: np.ndarray, length: int) -> np.ndarray:
    """(batch, n, 4) OHLC windows of one length n -> (batch, 4, length) float32 inputs."""
    w = np.log(np.asarray(windows, dtype=np.float64))
    if w.ndim != 3 or w.shape[2] != 4:
        raise ValueError(f"windows must be (batch, bars, 4) open/high/low/close, got shape {w.shape}")
    n = w.shape[1]
    ref = w[:, -1, 3][:, None, None]
    span = (w[:, :, 1].max(axis=1) - w[:, :, 2].min(axis=1))[:, None, None]
    x = (w - ref) / np.maximum(span, 1e-12)
    if n >= length:
        starts = _bins(n, length)
        ends = np.r_[starts[1:], n] - 1
        x = np.stack([x[:, starts, 0], np.maximum.reduceat(x[:, :, 1], starts, axis=1),
                      np.minimum.reduceat(x[:, :, 2], starts, axis=1), x[:, ends, 3]], axis=1)
    else:
        x = x[:, (np.arange(length) * n) // length, :].transpose(0, 2, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def batch(windows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Windows of any lengths -> (len(windows), 4, length), in their order."""
    out = np.empty((len(windows), 4, length), dtype=np.float32)
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_len.setdefault(len(w), []).append(i)
    for rows in by_len.values():
        out[rows] = features(np.stack([windows[i] for i in rows]), length)
    return out

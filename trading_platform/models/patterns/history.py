"""Real market history for the pattern family: the ``backtesting`` package's EURUSD hourly
(5,000 bars, 2017-2018) and GOOG daily (2,148 bars, 2004-2013) candles.

The first ``TRAIN_FRACTION`` of each series may be labelled for training; the rest is what
detection counts are reported on, so the counts come from bars the TCN never saw.
"""

from __future__ import annotations

import numpy as np

TRAIN_FRACTION = 0.7


def backtesting_series() -> dict[str, object]:
    """{"EURUSD_1h": frame, "GOOG_1d": frame}: pandas frames indexed by time with Open, High,
    Low, Close, Volume (needs the ``backtesting`` package)."""
    try:
        from backtesting.test import EURUSD, GOOG
    except ImportError as e:  # a dev dependency of the platform
        raise ImportError("the pattern family's real history comes from the 'backtesting' package: "
                          "pip install backtesting") from e
    return {"EURUSD_1h": EURUSD, "GOOG_1d": GOOG}


def ohlc(frame) -> np.ndarray:
    return frame[["Open", "High", "Low", "Close"]].to_numpy(dtype=np.float64)


def split(part: str) -> dict[str, np.ndarray]:
    """``part`` "train": the first TRAIN_FRACTION of each series; "report": the rest; "all"."""
    out = {}
    for name, frame in backtesting_series().items():
        a = ohlc(frame)
        cut = int(len(a) * TRAIN_FRACTION)
        out[name] = {"train": a[:cut], "report": a[cut:], "all": a}[part]
    return out

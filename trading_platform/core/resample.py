"""Higher timeframes from closed lower-timeframe candles.

A bucket [T, T + tf) is emitted only once it is complete: its end has passed
and every lower candle that could fall in it has closed (the last stored lower
candle closes at or after the bucket's end, or the market is closed for the rest
of the bucket). A bucket still forming is never written, so nothing downstream
sees a candle whose values may change.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .candles import Normalized

US = 1_000_000


def resample(
    lower: Normalized,
    lower_tf_s: int,
    tf_s: int,
    *,
    now_us: int,
    horizon_us: int,
    market_open: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> Normalized:
    """OHLCV of complete buckets; ``horizon_us`` is the close time of the last lower candle stored."""
    if tf_s % lower_tf_s:
        raise ValueError(f"{tf_s}s is not a multiple of {lower_tf_s}s")
    if len(lower) == 0:
        return lower
    step = tf_s * US
    bucket = lower.ts_us // step * step
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    b = bucket[starts]
    ends = b + step
    complete = ends <= min(now_us, max(horizon_us, 0)) if market_open is None else ends <= now_us
    if market_open is not None:
        # past the horizon, a bucket is still complete if the market is closed for the rest of it
        pending = np.flatnonzero(complete & (ends > horizon_us))
        for i in pending:
            first = (max(horizon_us, b[i]) + lower_tf_s * US - 1) // (lower_tf_s * US) * (lower_tf_s * US)
            slots = np.arange(first, ends[i], lower_tf_s * US, dtype="int64")
            complete[i] = not market_open(slots, lower_tf_s).any()
    o = lower.open[starts]
    c = lower.close[np.r_[starts[1:] - 1, len(lower) - 1]]
    h = np.maximum.reduceat(lower.high, starts)
    low = np.minimum.reduceat(lower.low, starts)
    v = np.add.reduceat(lower.volume, starts)
    return Normalized(b[complete], o[complete], h[complete], low[complete], c[complete], v[complete])

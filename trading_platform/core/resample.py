"""Higher timeframes from closed lower-timeframe candles.

A bucket [T, T + tf) is emitted only once it is complete: its end has passed and
every lower candle of it is stored, except those of slots where the market was
closed (a weekend, a holiday, a lunch break, after an early close). A bucket
with a lower candle missing while the market was open, at its end or in its
middle, is not written: it is counted as incomplete, and a later run writes it
once the candle arrives. A bucket still forming is never written, so nothing
downstream sees a candle whose values may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .candles import Normalized

US = 1_000_000


@dataclass
class Resampled:
    candles: Normalized  # the complete buckets
    incomplete: int  # ended buckets not written: a lower candle is missing while the market was open
    incomplete_first_ts: int | None = None  # open time (µs) of the first of them, for the metadata


def resample(
    lower: Normalized,
    lower_tf_s: int,
    tf_s: int,
    *,
    now_us: int,
    market_open: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> Resampled:
    """OHLCV of the complete buckets of ``lower`` (sorted, unique ts); ``market_open(slots, lower_tf_s)``
    says which lower slots trade (None: always open)."""
    if tf_s % lower_tf_s:
        raise ValueError(f"{tf_s}s is not a multiple of {lower_tf_s}s")
    if len(lower) == 0:
        return Resampled(lower, 0)
    step, lstep = tf_s * US, lower_tf_s * US
    per_bucket = tf_s // lower_tf_s
    bucket = lower.ts_us // step * step
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    b = bucket[starts]
    ended = b + step <= now_us
    counts = np.diff(np.r_[starts, len(lower)])
    complete = ended & (counts == per_bucket)
    short = np.flatnonzero(ended & (counts < per_bucket))
    if len(short):
        # a bucket lacking candles is complete only if the market was closed in every missing slot
        slots = (b[short, None] + np.arange(per_bucket, dtype="int64") * lstep).ravel()
        missing = ~np.isin(slots, lower.ts_us)
        if market_open is not None:
            missing[missing] = market_open(slots[missing], lower_tf_s)
        complete[short] = ~missing.reshape(len(short), per_bucket).any(axis=1)
    incomplete = ended & ~complete
    o = lower.open[starts]
    c = lower.close[np.r_[starts[1:] - 1, len(lower) - 1]]
    h = np.maximum.reduceat(lower.high, starts)
    low = np.minimum.reduceat(lower.low, starts)
    v = np.add.reduceat(lower.volume, starts)
    out = Normalized(b[complete], o[complete], h[complete], low[complete], c[complete], v[complete])
    return Resampled(out, int(incomplete.sum()), int(b[incomplete][0]) if incomplete.any() else None)

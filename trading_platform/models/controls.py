"""Random-walk markets: the control every model family must fail to beat.

A geometric random walk has no predictable direction, regime or pump by
construction, so a gate that promotes a model on one is promoting noise. The
candles follow the market's calendar (forex closes at the weekend, stocks
outside their session) so the controls exercise the gapped-series code too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from ..core.calendars import slot_open

# hourly log-return volatility: EURUSD ~ 0.1 %, a large crypto pair ~ 0.6 %
HOURLY_VOL = {"forex": 0.0010, "crypto": 0.0060, "stock": 0.0040}


def random_walk_candles(symbol: str, category: str, start: datetime, end: datetime, seed: int,
                        timeframe_s: int = 3600, vol: float | None = None, exchange: str | None = None,
                        price: float = 100.0) -> pl.DataFrame:
    """Candles of a geometric random walk on the market's open slots in [start, end).

    Each candle's close is the previous close times exp(N(0, vol)); high and low
    add independent excursions; volume is log-normal and independent of price."""
    rng = np.random.default_rng(seed)
    step = timeframe_s * 1_000_000
    t0 = int(start.timestamp() * 1_000_000)
    n = int((end - start) / timedelta(seconds=timeframe_s))
    ts = t0 + np.arange(n, dtype=np.int64) * step
    ts = ts[slot_open(category, exchange, ts, timeframe_s)]
    sd = (vol if vol is not None else HOURLY_VOL[category]) * np.sqrt(timeframe_s / 3600)
    close = price * np.exp(np.cumsum(rng.normal(0, sd, len(ts))))
    open_ = np.r_[price, close[:-1]]
    hi = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, sd / 2, len(ts))))
    lo = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, sd / 2, len(ts))))
    return pl.DataFrame({"ts": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")), "open": open_,
                         "high": hi, "low": lo, "close": close, "volume": rng.lognormal(3, 0.5, len(ts))})

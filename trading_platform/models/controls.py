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


# ---- markets with planted structure: what the gate must be able to find ---------------------
def garch_candles(start: datetime, n: int, seed: int, omega: float = 2e-7, alpha: float = 0.08,
                  beta: float = 0.9, timeframe_s: int = 3600) -> pl.DataFrame:
    """A GARCH(1,1) market (24/7): volatility clusters, the direction does not. A regime model that
    predicts the next return's spread should beat a constant-variance baseline here."""
    rng = np.random.default_rng(seed)
    r, s2 = np.empty(n), omega / (1 - alpha - beta)
    for i in range(n):
        r[i] = rng.normal(0, np.sqrt(s2))
        s2 = omega + alpha * r[i] ** 2 + beta * s2
    return _candles(start, timeframe_s, r, rng.lognormal(3, 0.5, n))


def wick_signal_candles(start: datetime, n: int, seed: int, strength: float = 1.0, vol: float = 0.006,
                        timeframe_s: int = 3600) -> pl.DataFrame:
    """A random walk (24/7) whose next bar drifts by ``strength`` standard deviations times the current
    candle's wick imbalance (a long lower wick: up; a long upper one: down). Every row carries a
    little information that only a model reading candle shapes can use; no momentum or reversal rule
    can."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n)
    r = rng.normal(0, vol, n)
    r[1:] += strength * vol * w[:-1]
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + vol * 0.5 * np.exp(-w))
    low = np.minimum(open_, close) * (1 - vol * 0.5 * np.exp(w) / (1 + vol * np.exp(w)))
    ts = int(start.timestamp() * 1_000_000) + np.arange(n, dtype=np.int64) * timeframe_s * 1_000_000
    return pl.DataFrame({"ts": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")), "open": open_,
                         "high": high, "low": low, "close": close, "volume": rng.lognormal(3, 0.5, n)})


def _candles(start: datetime, timeframe_s: int, r: np.ndarray, volume: np.ndarray, price: float = 100.0):
    n = len(r)
    close = price * np.exp(np.cumsum(r))
    open_ = np.r_[price, close[:-1]]
    spread = np.abs(r).mean() / 2
    ts = int(start.timestamp() * 1_000_000) + np.arange(n, dtype=np.int64) * timeframe_s * 1_000_000
    return pl.DataFrame({"ts": pl.Series(ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")), "open": open_,
                         "high": np.maximum(open_, close) * (1 + spread),
                         "low": np.minimum(open_, close) * (1 - spread), "close": close, "volume": volume})

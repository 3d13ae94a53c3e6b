"""A deterministic synthetic market: seeded, regime-switching, with occasional
pump-and-dump episodes and volume that follows activity.

Every candle depends only on (seed, symbol, timeframe, its time): the path is
generated in one-day chunks from a fixed origin, each chunk from its own seeded
generator, so fetching January and then February gives exactly the candles that
fetching both at once gives. Closed-market periods (forex weekends, stock
sessions) produce no candles, as a real feed would.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from ..core.calendars import slot_open
from ..core.symbols import SymbolInfo
from ..core.timeframes import TIMEFRAMES, parse_timeframe
from .base import CandleSource

ORIGIN = datetime(2018, 1, 1, tzinfo=timezone.utc)  # a Monday: weekly candles open on Mondays
DAY = 86_400
US = 1_000_000
# regime -> (annualized drift, annualized volatility)
REGIMES = {
    "bull": (0.8, 0.5),
    "bear": (-0.7, 0.6),
    "sideways": (0.0, 0.3),
    "volatile": (0.0, 1.2),
}
_REGIME_NAMES = list(REGIMES)
_REGIME_P = [0.3, 0.25, 0.3, 0.15]
YEAR_S = 365 * DAY


def _key(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


def _start_price(symbol: str, category: str) -> float:
    k = _key(symbol)
    if category == "forex":
        return 0.6 + (k % 1000) / 1000
    if category == "stock":
        return 20.0 + k % 400
    return float(10 ** (k % 5)) * (1 + (k >> 8) % 9)


_CACHE: dict[tuple, tuple[int, list, list, list]] = {}


def _path(seed: int, symbol: str, category: str, tf_s: int, n_days: int):
    """Log-returns, volume and wick noise for every bar from ORIGIN over n_days.

    Chunks already generated in this process are reused (the cache only grows
    forward in time), so fetching month after month costs one pass in all.
    """
    key = (seed, symbol, category, tf_s)
    done, rets, vols, wicks = _CACHE.get(key, (0, [], [], []))
    if done < n_days:
        _extend(seed, symbol, category, tf_s, done, n_days, rets, vols, wicks)
        _CACHE[key] = (n_days, rets, vols, wicks)
        done = n_days
    per_day = max(DAY // tf_s, 1)
    n = n_days * per_day if tf_s <= DAY else n_days // (tf_s // DAY)
    return (np.concatenate(rets)[:n], np.concatenate(vols)[:n], np.concatenate(wicks, axis=1)[:, :n])


def _extend(seed, symbol, category, tf_s, from_day, n_days, rets, vols, wicks):
    per_day = max(DAY // tf_s, 1)
    step_days = 1 if tf_s <= DAY else tf_s // DAY
    k = _key(symbol)
    dt = tf_s / YEAR_S
    for day in range(from_day, n_days, step_days):
        rng = np.random.default_rng([seed, k, tf_s, day])
        week_rng = np.random.default_rng([seed, k, 7, day // 7])
        regime = _REGIME_NAMES[week_rng.choice(len(_REGIME_NAMES), p=_REGIME_P)]
        mu, sigma = REGIMES[regime]
        if category == "forex":
            mu, sigma = mu * 0.1, sigma * 0.15
        elif category == "stock":
            mu, sigma = mu * 0.4, sigma * 0.5
        n = per_day if tf_s <= DAY else 1
        z = rng.standard_t(5, n) / np.sqrt(5 / 3)
        r = mu * dt + sigma * np.sqrt(dt) * z
        act = np.abs(z)
        vol_mult = np.ones(n)
        if category == "crypto" and tf_s < DAY and rng.random() < 0.04 and n > 80:
            # a pump: a sharp rise over a few bars on heavy volume, then a dump
            start = int(rng.integers(0, n - 80))
            up = int(rng.integers(4, 13))
            down = int(rng.integers(20, 60))
            rise = float(rng.uniform(0.08, 0.35))
            r[start:start + up] += rise / up
            r[start + up:start + up + down] -= rise * 0.9 / down
            vol_mult[start:start + up] *= rng.uniform(5, 20)
            vol_mult[start + up:start + up + down] *= rng.uniform(2, 5)
        rets.append(r)
        vols.append(np.exp(rng.normal(0, 0.35, n)) * (1 + 0.8 * act) * vol_mult)
        wicks.append(np.abs(rng.normal(0, 0.5, (2, n))) * sigma * np.sqrt(dt))


class SyntheticSource(CandleSource):
    def __init__(self, seed: int = 7):
        self.seed = int(seed)
        self.name = f"synthetic:{self.seed}"

    def fetch(self, info: SymbolInfo, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        tf = parse_timeframe(timeframe)
        tf_s = TIMEFRAMES[tf]
        origin_us = int(ORIGIN.timestamp()) * US
        start_us = max(int(start.timestamp() * US), origin_us)
        end_us = int(end.timestamp() * US)
        if end_us <= start_us:
            return _empty()
        n_days = (end_us - origin_us) // (DAY * US) + 1
        n_days += (-n_days) % max(tf_s // DAY, 1)
        rets, vols, wicks = _path(self.seed, info.symbol, info.category, tf_s, int(n_days))
        ts = origin_us + np.arange(len(rets), dtype="int64") * tf_s * US
        log_close = np.log(_start_price(info.symbol, info.category)) + np.cumsum(rets)
        close = np.exp(log_close)
        open_ = np.exp(np.r_[log_close[0] - rets[0], log_close[:-1]])
        high = np.maximum(open_, close) * np.exp(wicks[0])
        low = np.minimum(open_, close) * np.exp(-wicks[1])
        base_volume = 1_000.0 * (1 + _key(info.symbol) % 50)
        volume = base_volume * vols * (tf_s / 3600)
        sel = (ts >= start_us) & (ts < end_us)
        sel &= slot_open(info.category, info.exchange, ts, tf_s) if sel.any() else sel
        return pd.DataFrame({
            "ts": pd.to_datetime(ts[sel], unit="us", utc=True),
            "open": open_[sel], "high": high[sel], "low": low[sel], "close": close[sel],
            "volume": np.round(volume[sel], 4),
        })


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.to_datetime([], utc=True), **{c: [] for c in ("open", "high", "low", "close", "volume")}})

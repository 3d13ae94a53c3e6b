"""A deterministic synthetic market, and its control.

The market (``synthetic[:SEED]``) plants the structure each model family of the
platform looks for, at the size of the demo, so a family earns its champion there
on evidence a user can name:

- **regimes** (the HMM): a weekly regime (bull, bear, sideways, volatile) sets the
  drift and volatility, so volatility switches persistently;
- **pumps** (the pump classifier, crypto): about one a day, announced: for 6-14 bars
  volume builds to 2.5-4x while the price hardly moves (0.2-0.6 %: volume tells the
  build-up, a momentum rule cannot), then it rises 6-14 % within 3-8 bars on 6-15x
  volume and dumps back over 2-6 hours;
- **a daily season** (the signal model, NHITS): log price swings by 1.5 hourly
  standard deviations over the day, at a phase of its own per symbol;
- **flows** (the signal model): about one and a half a day, for 12 hours the price
  drifts 6-9 hourly standard deviations one way, on heavy volume (4x) when it rises
  and thin volume (0.3x) when it falls: price alone cannot tell a flow from noise;
- **chart patterns** (the TCN): six weeks in ten, one of the directional patterns
  the TCN knows, drawn by its generator over 2-5 days of hourly bars (8-16 % high for
  crypto) with quieter noise, then completed the textbook way: a move of half its
  amplitude in the direction it announces over the next day;
- volume that follows activity (larger moves, larger volume).

The control (``control[:SEED]``) has the same symbols, calendars and average
volatility and none of the structure: a Gaussian random walk with volume that
follows the size of each move. No family should earn a champion on it.

Every candle depends only on (seed, symbol, timeframe, its time): the path is
generated in one-day chunks from a fixed origin, each chunk from its own seeded
generator, and what spans days (regimes, patterns) from generators of its own week
or slot, so fetching January and then February gives exactly the candles that
fetching both at once gives. Closed-market periods (forex weekends, stock
sessions) produce no candles, as a real feed would.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np
import pandas as pd

from ..core.calendars import slot_open
from ..core.symbols import SymbolInfo
from ..core.timeframes import TIMEFRAMES, parse_timeframe
from .base import CandleSource

ORIGIN = datetime(2018, 1, 1, tzinfo=timezone.utc)  # a Monday: weekly candles open on Mondays
DAY = 86_400
HOUR = 3_600
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
# the control's volatility: the regimes' average (root mean square)
_SIGMA_RMS = float(np.sqrt(sum(p * REGIMES[r][1] ** 2 for r, p in zip(_REGIME_NAMES, _REGIME_P))))
# category -> (drift scale, volatility scale) of the regimes
_CATEGORY = {"forex": (0.1, 0.15), "stock": (0.4, 0.5)}

PUMPS_PER_DAY = 1.0
PUMP_RISE = (0.06, 0.14)
PUMP_CREEP = (0.002, 0.006)  # the build-up: volume tells it, price hardly (a momentum rule cannot)
SHOCKS_PER_DAY = 1.5
SHOCK_SIZE = (6, 9)           # in hourly standard deviations (the category's average)
SEASON_AMPLITUDE = 1.5        # in hourly standard deviations (the category's average)
PATTERN_SLOT_S = 7 * DAY      # at most one planted pattern per slot
PATTERN_P = 0.6               # the chance a slot holds one
PATTERN_HOURS = (48, 120)     # its length
PATTERN_AMP = (0.08, 0.16)     # its height (log price, crypto; scaled by category)
PATTERN_NOISE = 0.35          # the random walk's volatility while it forms (x)
BREAKOUT_S = DAY              # its completion: half its amplitude the way it announces


def _key(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


def _start_price(symbol: str, category: str) -> float:
    k = _key(symbol)
    if category == "forex":
        return 0.6 + (k % 1000) / 1000
    if category == "stock":
        return 20.0 + k % 400
    return float(10 ** (k % 5)) * (1 + (k >> 8) % 9)


def _hourly_sigma(category: str) -> float:
    """The category's average volatility over one hour (log units)."""
    return _SIGMA_RMS * _CATEGORY.get(category, (1.0, 1.0))[1] * np.sqrt(HOUR / YEAR_S)


_CACHE: dict[tuple, tuple[int, list, list, list]] = {}


def _path(seed: int, symbol: str, category: str, tf_s: int, n_days: int, structure: bool = True):
    """Log-returns, volume and wick noise for every bar from ORIGIN over n_days.

    Chunks already generated in this process are reused (the cache only grows
    forward in time), so fetching month after month costs one pass in all.
    """
    key = (seed, symbol, category, tf_s, structure)
    done, rets, vols, wicks = _CACHE.get(key, (0, [], [], []))
    if done < n_days:
        _extend(seed, symbol, category, tf_s, done, n_days, rets, vols, wicks, structure)
        _CACHE[key] = (n_days, rets, vols, wicks)
        done = n_days
    per_day = max(DAY // tf_s, 1)
    n = n_days * per_day if tf_s <= DAY else n_days // (tf_s // DAY)
    return (np.concatenate(rets)[:n], np.concatenate(vols)[:n], np.concatenate(wicks, axis=1)[:, :n])


# ---- planted patterns: a function of absolute time -------------------------------------------
@lru_cache(maxsize=4096)
def _slot_pattern(seed: int, k: int, slot: int):
    """(start_s, length_s, amplitude in units of the category's scale, direction, knots x, knots y) of the
    pattern planted in this slot, or None."""
    from ..models.patterns import DIRECTION
    from ..models.patterns.generator import SKELETONS

    if slot < 0:
        return None
    rng = np.random.default_rng([seed, k, 5, slot])
    if rng.random() >= PATTERN_P:
        return None
    # as many patterns announce a fall as a rise: their breakouts stay, and plant no drift
    side = 1 if rng.random() < 0.5 else -1
    names = [p for p, d in DIRECTION.items() if d == side]
    name = names[int(rng.integers(len(names)))]
    length = int(rng.integers(PATTERN_HOURS[0], PATTERN_HOURS[1] + 1)) * HOUR
    start = slot * PATTERN_SLOT_S + int(rng.integers(0, (PATTERN_SLOT_S - length - BREAKOUT_S) // HOUR + 1)) * HOUR
    x = np.linspace(0, 1, 257)
    y = SKELETONS[name](rng)(x)
    y = (y - y.min()) / max(float(y.max() - y.min()), 1e-12)
    amp = float(rng.uniform(*PATTERN_AMP))
    return start, length, amp, DIRECTION[name], name, x, y - y[0]


def _pattern_level(seed: int, k: int, t_s: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(log-price level of the planted patterns at times t_s, whether a pattern is forming at t_s). A
    pattern's level is 0 before it, its skeleton while it forms, and after it the breakout, which stays."""
    level = np.zeros(len(t_s))
    forming = np.zeros(len(t_s), bool)
    slots = t_s // PATTERN_SLOT_S
    for slot in np.unique(slots):
        p = _slot_pattern(seed, k, int(slot))
        if p is None:
            continue
        start, length, amp, direction, _, x, y = p
        m = slots == slot
        u = (t_s[m] - start) / length
        inside = (u >= 0) & (u <= 1)
        after = u > 1
        v = np.zeros(m.sum())
        v[inside] = np.interp(u[inside], x, y)
        b = np.clip((t_s[m][after] - start - length) / BREAKOUT_S, 0, 1)
        v[after] = y[-1] + 0.5 * direction * b
        level[m] += amp * scale * v
        forming[m] = inside
        # the breakout stays: the slot's final level carries into the later slots (no jump back at its end)
        level[slots > slot] += amp * scale * (y[-1] + 0.5 * direction)
    return level, forming


def _extend(seed, symbol, category, tf_s, from_day, n_days, rets, vols, wicks, structure=True):
    per_day = max(DAY // tf_s, 1)
    step_days = 1 if tf_s <= DAY else tf_s // DAY
    k = _key(symbol)
    dt = tf_s / YEAR_S
    mu_scale, sigma_scale = _CATEGORY.get(category, (1.0, 1.0))
    h_sigma = _hourly_sigma(category)
    bars_per_hour = max(HOUR // tf_s, 1)
    for day in range(from_day, n_days, step_days):
        rng = np.random.default_rng([seed, k, tf_s, day])
        n = per_day if tf_s <= DAY else 1
        if not structure:  # the control: a Gaussian random walk with the market's average volatility
            z = rng.standard_normal(n)
            rets.append(_SIGMA_RMS * sigma_scale * np.sqrt(dt) * z)
            vols.append(np.exp(rng.normal(0, 0.35, n)) * (1 + 0.8 * np.abs(z)))
            wicks.append(np.abs(rng.normal(0, 0.5, (2, n))) * _SIGMA_RMS * sigma_scale * np.sqrt(dt))
            continue
        week_rng = np.random.default_rng([seed, k, 7, day // 7])
        regime = _REGIME_NAMES[week_rng.choice(len(_REGIME_NAMES), p=_REGIME_P)]
        mu, sigma = REGIMES[regime]
        mu, sigma = mu * mu_scale, sigma * sigma_scale
        z = rng.standard_t(5, n) / np.sqrt(5 / 3)
        vol_mult = np.ones(n)
        if tf_s >= DAY:  # daily and longer bars: regimes only
            r = mu * dt + sigma * np.sqrt(dt) * z
        else:
            # the previous bar's stamp, then each bar's (seconds from ORIGIN): the close of the bar stamped t
            # carries the levels at t
            t_s = day * DAY + np.arange(n + 1) * tf_s - tf_s
            level, forming = _pattern_level(seed, k, t_s, _scale(category))
            forming = forming[1:]
            noise = np.where(forming, PATTERN_NOISE, 1.0)
            r = mu * dt + sigma * np.sqrt(dt) * z * noise
            r += np.diff(level)
            r += np.diff(season_level(symbol, category, t_s))
            free = ~forming  # pumps and shocks land where no pattern is forming
            if category == "crypto":
                for _ in range(rng.poisson(PUMPS_PER_DAY)):
                    _pump(rng, r, vol_mult, free, bars_per_hour)
            for _ in range(rng.poisson(SHOCKS_PER_DAY)):
                _shock(rng, r, vol_mult, free, bars_per_hour, h_sigma)
        act = np.abs(z)
        rets.append(r)
        vols.append(np.exp(rng.normal(0, 0.35, n)) * (1 + 0.8 * act) * vol_mult)
        wicks.append(np.abs(rng.normal(0, 0.5, (2, n))) * sigma * np.sqrt(dt))


def season_level(symbol: str, category: str, t_s: np.ndarray) -> np.ndarray:
    """The daily season's log-price level at times ``t_s`` (seconds, from the epoch or from ORIGIN: a whole number
    of days apart). The close of the candle stamped t (its open time) carries the level at t, so a forecaster that
    knew the season exactly would move the last close by ``season_level(t') - season_level(t)``
    (``benchmarks/nhits_demo.py``'s oracle)."""
    phase = 2 * np.pi * (_key(symbol) % 97) / 97
    return SEASON_AMPLITUDE * _hourly_sigma(category) * np.sin(2 * np.pi * (np.asarray(t_s) % DAY) / DAY + phase)


def _scale(category: str) -> float:
    """Planted pattern amplitudes relative to crypto's."""
    return _CATEGORY.get(category, (1.0, 1.0))[1]


def _pump(rng, r, vol_mult, free, bph):
    """An announced pump: volume and price build up, then a sharp rise on heavy volume, then the dump."""
    n = len(r)
    pre, up, down = int(rng.integers(6, 15)), int(rng.integers(3, 9)), int(rng.integers(2 * bph, 6 * bph + 1))
    if n <= pre + up + down:
        return
    s = int(rng.integers(0, n - pre - up - down))
    if not free[s:s + pre + up].all():
        return
    creep, rise = float(rng.uniform(*PUMP_CREEP)), float(rng.uniform(*PUMP_RISE))
    r[s:s + pre] += creep / pre
    vol_mult[s:s + pre] *= np.linspace(1.5, rng.uniform(2.5, 4.0), pre)
    a = s + pre
    r[a:a + up] += rise / up
    vol_mult[a:a + up] *= rng.uniform(6, 15)
    r[a + up:a + up + down] -= (rise + creep) / down
    vol_mult[a + up:a + up + down] *= rng.uniform(1.5, 2.5)


def _shock(rng, r, vol_mult, free, bph, h_sigma):
    """Flow: for 12 hours the price drifts one way, on heavy volume (x4) when it rises and on thin volume
    (x0.3) when it falls. Price alone cannot tell a flow from noise; volume with it can."""
    n = len(r)
    follow = 12 * bph
    s = int(rng.integers(0, max(n - follow, 1)))
    if not free[s]:
        return
    up = rng.random() < 0.5
    size = float(rng.uniform(SHOCK_SIZE[0], SHOCK_SIZE[1])) * h_sigma * (1 if up else -1)
    part = slice(s, min(s + follow, n))
    r[part] += size / follow
    vol_mult[part] *= 4.0 if up else 0.3


class SyntheticSource(CandleSource):
    """The synthetic market (``structure=True``) or its control (a random walk of the same shape)."""

    def __init__(self, seed: int = 7, structure: bool = True):
        self.seed = int(seed)
        self.structure = bool(structure)
        self.name = f"{'synthetic' if structure else 'control'}:{self.seed}"

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
        rets, vols, wicks = _path(self.seed, info.symbol, info.category, tf_s, int(n_days), self.structure)
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

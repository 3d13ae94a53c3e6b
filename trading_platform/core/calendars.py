"""When a market trades: crypto never closes, forex closes at the weekend,
stocks trade in their exchange's sessions.

Stock sessions come from the ``exchange-calendars`` package: holidays, early
closes and lunch breaks (TSE, HKEX) included. A calendar is built once per
process and exchange (``exchange_calendars`` is imported on first use, never at
definitions load). Used to tell a real gap in candles from a closed market, by
the resampler (a bucket is complete when every open slot has its candle) and by
the synthetic generator (its markets close when the checks expect them to).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

US = 1_000_000
DAY_US = 86_400 * US
# the platform's exchange names -> exchange-calendars codes; any other name the package
# knows (XNYS, XLON, ...) is used as it is; unknown exchanges trade like the NYSE
EXCHANGES = {
    "NYSE": "XNYS",
    "NASDAQ": "XNAS",
    "AMEX": "XASE",
    "LSE": "XLON",
    "XETRA": "XETR",
    "EURONEXT": "XPAR",
    "TSE": "XTKS",
    "JPX": "XTKS",
    "HKEX": "XHKG",
}
DEFAULT_CALENDAR = "XNYS"
CALENDAR_START = "2000-01-01"  # sessions before it (and past the package's horizon) follow the regular hours
# forex: Sunday 17:00 to Friday 17:00, New York time
FX_TZ, FX_ROLL_MIN = "America/New_York", 17 * 60


def calendar_code(exchange: str | None) -> str:
    """The exchange-calendars code used for a stock listed on ``exchange``."""
    name = (exchange or "").strip().upper()
    if name in EXCHANGES:
        return EXCHANGES[name]
    if name and name in _known_names():
        return name
    return DEFAULT_CALENDAR


@lru_cache(maxsize=1)
def _known_names() -> frozenset:
    import exchange_calendars as xcals

    return frozenset(n.upper() for n in xcals.get_calendar_names(include_aliases=True))


@dataclass(frozen=True)
class _Sessions:
    starts: np.ndarray  # trading intervals [start, end) in Unix µs, sorted; a lunch break splits a session
    ends: np.ndarray
    days: np.ndarray  # session dates as UTC midnight µs (daily candles are stamped so)
    first_us: int  # the calendar covers [first_us, last_us); outside it, the regular hours apply
    last_us: int
    tz: str
    open_min: int
    close_min: int


@lru_cache(maxsize=None)
def _sessions(code: str) -> _Sessions:
    import warnings

    with warnings.catch_warnings():  # the package's own pandas deprecation warnings
        warnings.simplefilter("ignore")
        import exchange_calendars as xcals

        cal = xcals.get_calendar(code, start=CALENDAR_START)
    s = cal.schedule

    def us(col):
        return s[col].dt.tz_convert(None).astype("datetime64[us]").to_numpy().astype("int64")

    opens, closes = us("open"), us("close")
    has_break = s["break_start"].notna().to_numpy() & s["break_end"].notna().to_numpy()
    starts, ends = opens, closes
    if has_break.any():  # a lunch break splits the session in two intervals
        b_start, b_end = us("break_start"), us("break_end")  # NaT where no break: masked below
        starts = np.concatenate([opens, b_end[has_break]])
        ends = np.concatenate([np.where(has_break, b_start, closes), closes[has_break]])
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
    days = s.index.to_numpy().astype("datetime64[us]").astype("int64")
    open_t, close_t = cal.open_times[-1][1], cal.close_times[0][1]
    return _Sessions(starts, ends, days, int(days[0]), int(days[-1] + DAY_US), str(cal.tz),
                     open_t.hour * 60 + open_t.minute, close_t.hour * 60 + close_t.minute)


def _regular_hours(sess: _Sessions, ts_us: np.ndarray, tf_seconds: int) -> np.ndarray:
    local = pd.DatetimeIndex(pd.to_datetime(ts_us, unit="us", utc=True)).tz_convert(sess.tz)
    dow = local.day_of_week.to_numpy()
    start = (local.hour * 60 + local.minute).to_numpy()
    end = start + tf_seconds // 60
    return (dow < 5) & (start < sess.close_min) & (end > sess.open_min)


def _stock_open(exchange: str | None, ts_us: np.ndarray, tf_seconds: int) -> np.ndarray:
    sess = _sessions(calendar_code(exchange))
    inside = (ts_us >= sess.first_us) & (ts_us < sess.last_us)
    out = np.empty(len(ts_us), dtype=bool)
    if tf_seconds >= 86_400:
        # daily candles are stamped at UTC midnight of the trading day: open on session days
        out[inside] = np.isin(ts_us[inside], sess.days)
        outside = ~inside
        out[outside] = ((ts_us[outside] // DAY_US) + 3) % 7 < 5
        return out
    t = ts_us[inside]
    # the last interval starting before the candle ends; the candle trades if that interval is
    # still open when the candle starts
    i = np.searchsorted(sess.starts, t + tf_seconds * US, side="left") - 1
    out[inside] = (i >= 0) & (sess.ends[np.maximum(i, 0)] > t)
    if not inside.all():
        out[~inside] = _regular_hours(sess, ts_us[~inside], tf_seconds)
    return out


def open_between(category: str, exchange: str | None, start_us: int, end_us: int, tf_seconds: int) -> bool:
    """Whether the market trades during any candle of [start, end)."""
    step = tf_seconds * US
    first = -(-int(start_us) // step) * step
    if first >= end_us:
        return False
    return bool(slot_open(category, exchange, np.arange(first, int(end_us), step, dtype="int64"), tf_seconds).any())


def slot_open(category: str, exchange: str | None, ts_us: np.ndarray, tf_seconds: int) -> np.ndarray:
    """Whether the market trades during each candle [ts, ts + timeframe)."""
    ts_us = np.asarray(ts_us, dtype="int64")
    if category == "crypto" or len(ts_us) == 0:
        return np.ones(len(ts_us), dtype=bool)
    if tf_seconds >= 604_800:  # weekly candles: every week trades
        return np.ones(len(ts_us), dtype=bool)
    if category == "stock":
        return _stock_open(exchange, ts_us, tf_seconds)
    if tf_seconds >= 86_400:
        # daily candles are stamped at UTC midnight of the trading day
        return ((ts_us // DAY_US) + 3) % 7 < 5  # Monday = 0
    # forex
    local = pd.DatetimeIndex(pd.to_datetime(ts_us, unit="us", utc=True)).tz_convert(FX_TZ)
    dow = local.day_of_week.to_numpy()
    minute = (local.hour * 60 + local.minute).to_numpy()
    closed = (dow == 5) | ((dow == 4) & (minute >= FX_ROLL_MIN)) | ((dow == 6) & (minute < FX_ROLL_MIN))
    return ~closed


def find_gaps(category: str, exchange: str | None, ts_us: np.ndarray, tf_seconds: int,
              max_slots: int = 5_000_000) -> dict:
    """Missing candles while the market was open, between the first and last candle.

    Returns ``missing`` (open candles absent), ``gaps`` (runs with at least one such
    candle), ``longest_gap_s`` (calendar length of the longest of them) and
    ``longest_gap_start`` (ISO time of the candle before it).
    """
    ts = np.unique(np.asarray(ts_us, dtype="int64"))
    step = tf_seconds * US
    out = {"missing": 0, "gaps": 0, "longest_gap_s": 0, "longest_gap_start": None}
    if len(ts) < 2:
        return out
    diffs = np.diff(ts)
    where = np.flatnonzero(diffs > step)
    if not len(where):
        return out
    n_missing = diffs[where] // step - 1
    if n_missing.sum() > max_slots:  # bound the work; a gap that long is reported in calendar time only
        keep = np.cumsum(n_missing) <= max_slots
        where, n_missing = where[keep], n_missing[keep]
    gap_id = np.repeat(np.arange(len(where)), n_missing)
    offs = np.arange(len(gap_id)) - np.repeat(np.cumsum(n_missing) - n_missing, n_missing) + 1
    slots = ts[where][gap_id] + offs * step
    is_open = slot_open(category, exchange, slots, tf_seconds)
    open_per_gap = np.bincount(gap_id[is_open], minlength=len(where))
    real = open_per_gap > 0
    if not real.any():
        return out
    lengths = diffs[where][real]
    i = int(np.argmax(lengths))
    start = pd.Timestamp(int(ts[where][real][i]), unit="us", tz="UTC")
    return {
        "missing": int(open_per_gap.sum()),
        "gaps": int(real.sum()),
        "longest_gap_s": int(lengths[i] // US),
        "longest_gap_start": start.isoformat(),
    }

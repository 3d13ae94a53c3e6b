"""When a market trades: crypto never closes, forex closes at the weekend,
stocks trade in sessions on weekdays.

Used to tell a real gap in candles from a closed market. Exchange holidays are
not modelled: a gap over a holiday is reported (as a warning) like any other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

US = 1_000_000
# exchange -> (time zone, session open minute, session close minute), local time
SESSIONS = {
    "NYSE": ("America/New_York", 9 * 60 + 30, 16 * 60),
    "NASDAQ": ("America/New_York", 9 * 60 + 30, 16 * 60),
    "AMEX": ("America/New_York", 9 * 60 + 30, 16 * 60),
    "LSE": ("Europe/London", 8 * 60, 16 * 60 + 30),
    "XETRA": ("Europe/Berlin", 9 * 60, 17 * 60 + 30),
    "EURONEXT": ("Europe/Paris", 9 * 60, 17 * 60 + 30),
    "TSE": ("Asia/Tokyo", 9 * 60, 15 * 60),
    "JPX": ("Asia/Tokyo", 9 * 60, 15 * 60),
    "HKEX": ("Asia/Hong_Kong", 9 * 60 + 30, 16 * 60),
}
DEFAULT_SESSION = SESSIONS["NYSE"]
# forex: Sunday 17:00 to Friday 17:00, New York time
FX_TZ, FX_ROLL_MIN = "America/New_York", 17 * 60


def slot_open(category: str, exchange: str | None, ts_us: np.ndarray, tf_seconds: int) -> np.ndarray:
    """Whether the market trades during each candle [ts, ts + timeframe)."""
    ts_us = np.asarray(ts_us, dtype="int64")
    if category == "crypto" or len(ts_us) == 0:
        return np.ones(len(ts_us), dtype=bool)
    if tf_seconds >= 86_400:
        # daily/weekly candles are stamped at UTC midnight of the trading day
        dow = ((ts_us // (86_400 * US)) + 3) % 7  # Monday = 0
        return dow < 5 if tf_seconds < 604_800 else np.ones(len(ts_us), dtype=bool)
    if category == "forex":
        local = pd.DatetimeIndex(pd.to_datetime(ts_us, unit="us", utc=True)).tz_convert(FX_TZ)
        dow = local.day_of_week.to_numpy()
        minute = (local.hour * 60 + local.minute).to_numpy()
        closed = (dow == 5) | ((dow == 4) & (minute >= FX_ROLL_MIN)) | ((dow == 6) & (minute < FX_ROLL_MIN))
        return ~closed
    tz, open_min, close_min = SESSIONS.get((exchange or "").upper(), DEFAULT_SESSION)
    local = pd.DatetimeIndex(pd.to_datetime(ts_us, unit="us", utc=True)).tz_convert(tz)
    dow = local.day_of_week.to_numpy()
    start = (local.hour * 60 + local.minute).to_numpy()
    end = start + tf_seconds // 60
    return (dow < 5) & (start < close_min) & (end > open_min)


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

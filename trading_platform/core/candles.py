"""Normalization and validation of incoming candles.

Turns whatever a file or source gives (any column case, a time column or the
index, mixed time zones, strings) into clean, sorted, unique candles, and puts
every row it cannot use into ``rejects`` with a reason. Nothing is dropped
silently: each input row ends up clean, collapsed (an identical duplicate,
counted), skipped as still forming (counted), or rejected (with its reason).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from ..errors import InvalidInput
from .timeframes import EARLIEST_YEAR, LATEST_YEAR, TIMEFRAMES, parse_timeframe

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
TIME_NAMES = ("ts", "time", "timestamp", "date", "datetime", "date_time", "open_time", "opentime")
COLUMN_ALIASES = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vol": "volume"}
US = 1_000_000
DAY_US = 86_400 * US


@dataclass
class Reject:
    raw: dict
    reason: str


@dataclass
class Normalized:
    """Clean candles as aligned numpy arrays (ts in microseconds since the Unix epoch, UTC)."""

    ts_us: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    duplicates_collapsed: int = 0
    was_unsorted: bool = False
    forming_skipped: int = 0

    def __len__(self) -> int:
        return len(self.ts_us)

    def to_frame(self) -> pd.DataFrame:
        return candles_frame(self.ts_us, self.open, self.high, self.low, self.close, self.volume)

    def take(self, mask: np.ndarray) -> "Normalized":
        return Normalized(
            self.ts_us[mask], self.open[mask], self.high[mask], self.low[mask],
            self.close[mask], self.volume[mask],
        )


def candles_frame(ts_us, o, h, l, c, v) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "ts": pd.to_datetime(np.asarray(ts_us, dtype="int64"), unit="us", utc=True),
            "open": o, "high": h, "low": l, "close": c, "volume": v,
        }
    )


def standardize_columns(df: pd.DataFrame, where: str = "input") -> pd.DataFrame:
    """Columns ``ts, open, high, low, close, volume`` from any casing and layout.

    The time may be a column (ts, time, timestamp, date, datetime, open_time),
    the index, or the first unnamed column of a ``df.to_csv()`` export.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InvalidInput(f"{where}: expected a table of candles, got {type(df).__name__}")
    cols = {}
    for c in df.columns:
        key = str(c).strip().lower().replace(" ", "_")
        key = COLUMN_ALIASES.get(key, key)
        if key in cols and key in (*VALUE_COLUMNS, *TIME_NAMES):  # close and Close: which one is the close?
            raise InvalidInput(f"{where}: ambiguous columns {cols[key]!r} and {c!r} (both read as {key})",
                               field="columns")
        cols.setdefault(key, c)
    if "date" in cols and "time" in cols and not any(n in cols for n in ("ts", "timestamp", "datetime",
                                                                          "date_time", "open_time", "opentime")) \
            and _times_of_day(df[cols["time"]]):
        # separate Date and Time columns: one time is both (the time alone was read as today's); a Time column
        # that holds whole times (or epoch numbers) is the time itself, as before
        both = df[cols["date"]].astype("string").str.strip() + " " + df[cols["time"]].astype("string").str.strip()
        df = df.assign(**{"__ts": both})
        cols = {k: v for k, v in cols.items() if k not in ("date", "time")}
        cols["ts"] = "__ts"
    time_col = next((cols[n] for n in TIME_NAMES if n in cols), None)
    if time_col is None:
        unnamed = [c for c in df.columns
                   if str(c).startswith("Unnamed: 0") or str(c).strip() in ("", "index")]
        if unnamed:
            time_col = unnamed[0]
    missing = [c for c in VALUE_COLUMNS if c not in cols]
    if missing:
        raise InvalidInput(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns)) or 'none'})",
            field="columns",
        )
    if time_col is not None:
        ts = df[time_col]
    elif isinstance(df.index, pd.DatetimeIndex) or not isinstance(df.index, pd.RangeIndex) or (
        df.index.name and str(df.index.name).lower() in TIME_NAMES
    ):  # a time index (e.g. read_csv(..., index_col=0)); rows it cannot parse are quarantined
        ts = pd.Series(df.index, index=df.index)
    else:
        raise InvalidInput(
            f"{where}: no time column (one of {', '.join(TIME_NAMES)}) and no time index",
            field="columns",
        )
    out = {"ts": ts.reset_index(drop=True)}
    for name in VALUE_COLUMNS:
        out[name] = df[cols[name]].reset_index(drop=True)
    return pd.DataFrame(out)


# a numeric date with the year last (11/03/2024): the day may come first or second
_YEAR_LAST = r"^\s*(\d{1,2})[./-](\d{1,2})[./-](\d{2,4})(?!\d)"
# a time of day with no date ("00:00", "9:30 PM"): pandas reads it as today
_TIME_ONLY = r"^\s*\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*([AaPp]\.?[Mm]\.?)?\s*$"
# the times the market store takes (core.timeframes.EARLIEST_YEAR .. LATEST_YEAR), in microseconds
MIN_TS_US = int(datetime(EARLIEST_YEAR, 1, 1, tzinfo=timezone.utc).timestamp()) * US
END_TS_US = int(datetime(LATEST_YEAR + 1, 1, 1, tzinfo=timezone.utc).timestamp()) * US


def _times_of_day(col: pd.Series) -> bool:
    """Whether every value of a column is a time of day with no date (``00:00``, ``9:30 PM``)."""
    import re

    values = col.dropna()
    return len(values) > 0 and all(isinstance(v, str) and re.match(_TIME_ONLY, v) for v in values)


def parse_timestamps(col: pd.Series, reasons: dict[int, str] | None = None) -> np.ndarray:
    """Microseconds since the epoch (UTC) as int64, or -1 where unparseable.

    Naive times are taken as UTC; aware times in any (mixed) zone are converted;
    integers are epoch seconds, milliseconds, microseconds or nanoseconds by
    magnitude. Text is ISO 8601, or one format for the whole column: numeric dates
    with the year last (11/03/2024) are read day first when some row's first number
    is over 12, month first when some row's second is, and are unparseable when
    nothing in the column says which (or it says both); ``reasons`` (row -> text)
    gets why for those rows. A time of day with no date is unparseable.
    """
    import pandas as pd

    s = pd.Series(col).reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        num = pd.to_numeric(s, errors="coerce").astype("float64")
        # the unit is read from the largest plausible value: past 1e19 (nanoseconds in 2286) is no time at all
        plausible = num.abs() < 1e19
        mag = np.nanmax(np.abs(num[plausible].to_numpy())) if plausible.any() else 0
        unit_us = 1e6 if mag < 1e11 else 1e3 if mag < 1e14 else 1.0 if mag < 1e17 else 1e-3
        vals = num.to_numpy() * unit_us
        ok = np.isfinite(vals) & plausible.to_numpy()  # past int64 it cast to garbage
        return np.where(ok, np.round(np.where(ok, vals, 0)), -1).astype("int64")
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        parsed = s.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(s):
        parsed = s.dt.tz_localize("UTC")
    else:
        parsed = _parse_text_times(s, reasons)
    parsed = parsed.dt.as_unit("us")
    vals = parsed.array.asi8.copy() if hasattr(parsed.array, "asi8") else parsed.astype("int64").to_numpy()
    vals[parsed.isna().to_numpy()] = -1
    return vals


def _parse_text_times(s: pd.Series, reasons: dict[int, str] | None) -> pd.Series:
    import pandas as pd

    text = s.astype("string")
    out = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    rest = out.isna() & text.notna()
    if not rest.any():
        return out
    year_last = text.str.extract(_YEAR_LAST).astype("float64")
    numeric = rest & year_last[0].notna().to_numpy()
    if numeric.any():
        first, second = year_last[0][numeric], year_last[1][numeric]
        day_first, month_first = bool((first > 12).any()), bool((second > 12).any())
        if day_first != month_first:
            out[numeric] = pd.to_datetime(text[numeric], utc=True, errors="coerce", format="mixed",
                                          dayfirst=day_first)
        elif reasons is not None:
            why = ("mixes day-first and month-first dates" if day_first else
                   "does not say whether the day or the month comes first (no day over 12)")
            for i in np.flatnonzero(numeric.to_numpy()):
                reasons[int(i)] = f"ambiguous date {text.iloc[i]!r}: the column {why}; write YYYY-MM-DD"
    other = rest & ~numeric & ~text.str.match(_TIME_ONLY).fillna(False).astype(bool)
    if other.any():  # other formats ("Jan 2 2026 14:00"): pandas' reading, row by row
        out[other] = pd.to_datetime(text[other], utc=True, errors="coerce", format="mixed")
    return out


def _plain(v):
    """A numpy scalar as the Python value it holds (its repr is ``np.float64(1e+30)``)."""
    return v.item() if isinstance(v, np.generic) else v


def _raw_row(df: pd.DataFrame, i: int) -> dict:
    import pandas as pd

    def clean(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating, float)):
            return float(v) if math.isfinite(v) else str(v)
        if isinstance(v, (pd.Timestamp, datetime)):
            return v.isoformat()
        return v if isinstance(v, (str, int, bool)) else str(v)

    return {k: clean(v) for k, v in df.iloc[i].items()}


def normalize_candles(
    df: pd.DataFrame,
    timeframe: str,
    *,
    now: datetime | None = None,
    forming: str = "reject",
    where: str = "input",
) -> Normalized:
    """Validate and normalize candles of one symbol and timeframe.

    forming: what to do with candles not closed at ``now`` (``ts + timeframe > now``):
    ``"reject"`` quarantines them (a file should not hold the future), ``"skip"``
    counts and leaves them out (a source's still-forming last candle, fetched again
    once closed).
    """
    import pandas as pd

    tf = parse_timeframe(timeframe)
    tf_us = TIMEFRAMES[tf] * US
    std = standardize_columns(df, where)
    n = len(std)
    if n == 0:
        return Normalized(np.empty(0, dtype="int64"), *(np.empty(0) for _ in VALUE_COLUMNS))

    # reason per row: code 0 is "fine"; messages[code] is the text, or a per-row text
    codes = np.zeros(n, dtype=np.int32)
    messages: list[str] = [""]
    per_row: dict[int, str] = {}

    def flag(mask, reason):
        hit = mask & (codes == 0)
        if not hit.any():
            return
        messages.append(reason if isinstance(reason, str) else "")
        codes[hit] = len(messages) - 1
        if callable(reason):
            for i in np.flatnonzero(hit):
                per_row[int(i)] = reason(i)

    why: dict[int, str] = {}
    ts = parse_timestamps(std["ts"], why)
    flag(ts == -1, lambda i: why.get(int(i)) or f"unparseable timestamp {_plain(std['ts'].iloc[i])!r}")
    # before 1970 or after 2200: a typo or a wrong unit (1e30) that would move every symbol's history start
    flag((ts != -1) & ((ts < MIN_TS_US) | (ts >= END_TS_US)), f"timestamp outside {EARLIEST_YEAR}-{LATEST_YEAR} (UTC)")
    if tf_us >= DAY_US:
        # daily/weekly bars are often stamped at local midnight (e.g. 05:00 UTC for
        # New York); the nearest UTC midnight is the trading day they stand for
        ts = np.where(ts == -1, ts, (ts + DAY_US // 2) // DAY_US * DAY_US)
        if tf == "1w":
            monday = ((ts // DAY_US) - 4) % 7 == 0
            flag((ts != -1) & ~monday, "weekly candle does not open on a Monday (UTC)")
    else:
        flag((ts != -1) & (ts % tf_us != 0), f"timestamp not aligned to a {tf} boundary")

    values = {}
    for name in VALUE_COLUMNS:
        raw = std[name]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            num = raw.to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(num)
        else:
            num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan).copy()
            missing = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
            # True and False are not prices or volumes (to_numeric read them as 1 and 0)
            num[raw.map(lambda x: isinstance(x, (bool, np.bool_))).to_numpy(dtype=bool)] = np.nan
        flag(missing, f"missing {name}")
        flag(np.isnan(num) & ~missing, lambda i, name=name: f"non-numeric {name} {_plain(std[name].iloc[i])!r}")
        flag(np.isinf(num), f"{name} is not finite")
        values[name] = num
    o, h, l, c, v = (values[k] for k in VALUE_COLUMNS)
    with np.errstate(invalid="ignore"):
        for name in PRICE_COLUMNS:
            flag(values[name] <= 0, f"{name} is not positive")
        flag(v < 0, "negative volume")
        flag(h < l, "high < low")
        flag((o < l) | (o > h) | (c < l) | (c > h), "open or close outside [low, high]")

    forming_skipped = 0
    now_us = int((now or datetime.now(timezone.utc)).timestamp() * US)
    not_closed = (ts != -1) & (ts + tf_us > now_us) & (codes == 0)
    if forming == "skip":
        forming_skipped = int(not_closed.sum())
        keep_forming = ~not_closed
    else:
        flag(not_closed, f"candle not closed yet (ts + {tf} is after now)")
        keep_forming = np.ones(n, dtype=bool)

    valid = (codes == 0) & keep_forming
    idx = np.flatnonzero(valid)
    # duplicates among valid rows: identical ones collapse, conflicting ones are all quarantined
    collapsed = 0
    if len(idx):
        vts = ts[idx]
        order = np.argsort(vts, kind="stable")
        was_unsorted = bool((np.diff(vts) < 0).any())
        sidx, sts = idx[order], vts[order]
        dup_start = np.flatnonzero(np.diff(sts) == 0)
        if len(dup_start):
            keep = np.ones(len(sidx), dtype=bool)
            groups = np.split(np.arange(len(sts)), np.flatnonzero(np.diff(sts) != 0) + 1)
            for g in groups:
                if len(g) < 2:
                    continue
                rows = np.column_stack([values[k][sidx[g]] for k in VALUE_COLUMNS])
                if (rows == rows[0]).all():
                    keep[g[1:]] = False
                    collapsed += len(g) - 1
                else:
                    keep[g] = False
                    flag(np.isin(np.arange(n), sidx[g]),
                         f"conflicting duplicate timestamp ({len(g)} rows with different values)")
            sidx = sidx[keep]
    else:
        was_unsorted = False
        sidx = idx

    rejects = [
        Reject(_raw_row(std, int(i)), per_row.get(int(i)) or messages[codes[i]])
        for i in np.flatnonzero(codes)
    ]
    return Normalized(
        ts_us=ts[sidx],
        open=o[sidx], high=h[sidx], low=l[sidx], close=c[sidx], volume=v[sidx],
        rejects=rejects,
        duplicates_collapsed=collapsed,
        was_unsorted=was_unsorted,
        forming_skipped=forming_skipped,
    )


def reject_json(r: Reject) -> str:
    return json.dumps(r.raw, default=str)

"""The fixed list of timeframes and their aliases.

A candle's ``ts`` is its open time in UTC; it is closed from ``ts + timeframe``.
"""

from __future__ import annotations

import re

from ..errors import InvalidInput

# canonical name -> length in seconds, finest first
TIMEFRAMES: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
    "1w": 604800,
}
# timeframes derived by resampling when a symbol lists them above its base timeframe
# (weekly candles are not: weeks straddle months)
RESAMPLED = ("5m", "15m", "30m", "1h", "4h", "1d")

_ALIASES: dict[str, str] = {}
for _name, _secs in TIMEFRAMES.items():
    _ALIASES[_name] = _name
for _minutes, _name in [(1, "1m"), (5, "5m"), (15, "15m"), (30, "30m"), (60, "1h"), (240, "4h")]:
    for form in (f"{_minutes}m", f"{_minutes}min", f"{_minutes}mins", f"{_minutes}t", f"m{_minutes}"):
        _ALIASES[form] = _name
_ALIASES.update(
    {
        "1hr": "1h", "1hour": "1h", "h1": "1h", "60": "1h",
        "4hr": "4h", "h4": "4h",
        "1day": "1d", "d1": "1d", "d": "1d", "day": "1d", "daily": "1d", "24h": "1d",
        "1wk": "1w", "w1": "1w", "w": "1w", "week": "1w", "weekly": "1w", "7d": "1w",
    }
)


def parse_timeframe(value: str, field: str = "timeframe") -> str:
    """Canonical name for ``value`` (case-insensitive, aliases allowed).

    ``1M`` is refused outright: exchanges use it for one *month*, which is not
    on the list, and reading it as one minute would silently mix data.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} is empty; use one of {', '.join(TIMEFRAMES)}", field=field)
    raw = value.strip()
    if raw in ("1M", "1mo", "1mon", "1month", "M1"):
        raise InvalidInput(
            f"unknown {field} {value!r}: monthly candles are not supported; "
            f"use one of {', '.join(TIMEFRAMES)}",
            field=field,
        )
    key = re.sub(r"\s+", "", raw.lower())
    if key in _ALIASES:
        return _ALIASES[key]
    raise InvalidInput(
        f"unknown {field} {value!r}; use one of {', '.join(TIMEFRAMES)} "
        "(aliases such as 60m, 1wk, H1, D1 are accepted)",
        field=field,
    )


def seconds(timeframe: str) -> int:
    return TIMEFRAMES[parse_timeframe(timeframe)]


def finest(timeframes: list[str]) -> str:
    return min((parse_timeframe(t) for t in timeframes), key=lambda t: TIMEFRAMES[t])


# a numeric date with the year last (1/2/2026, 02.01.2026, 01-02-26): which of the first two is the day is a guess
_DAY_MONTH_ORDER = re.compile(r"\s*\d{1,2}[./-]\d{1,2}[./-]\d{2,4}(?!\d)")


def parse_time(value, field: str, label: str | None = None):
    """A date or time from the user as an aware UTC datetime (naive means UTC); None for an empty value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    import pandas as pd

    what = f"{label or field} {value!r}"
    if isinstance(value, str) and _DAY_MONTH_ORDER.match(value):
        raise InvalidInput(f"{what} is ambiguous: which number is the day? Write it as YYYY-MM-DD "
                           f"(pandas would read 02.01.2026 as 1 February)", field=field)
    try:
        t = pd.Timestamp(value)
        if t is pd.NaT:  # 'NaN', 'NaT', 'null': no time at all
            raise ValueError
    except ValueError:
        raise InvalidInput(f"{what} is not a date or time", field=field) from None
    try:
        t = (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).to_pydatetime()
    except (ValueError, OverflowError):  # a time whose UTC leaves the calendar (9999-12-31T23:59-14:00)
        t = None
    return check_time_range(t, field, what)


# the times the platform stores: candles are microseconds since the epoch, and a year outside this range is a typo
# (0050 for 2050) that would otherwise move a symbol's history start or queue centuries of months
EARLIEST_YEAR, LATEST_YEAR = 1970, 2199


def check_time_range(t, field: str, what: str):
    """``t`` (a date or datetime) if its year is within [EARLIEST_YEAR, LATEST_YEAR], else InvalidInput naming
    ``what`` (None: a time past the end of the calendar)."""
    if t is None or not EARLIEST_YEAR <= t.year <= LATEST_YEAR:
        raise InvalidInput(f"{what} is out of range: the platform takes times from {EARLIEST_YEAR}-01-01 to "
                           f"{LATEST_YEAR}-12-31 (UTC)", field=field)
    return t

"""From per-symbol frames to neuralforecast's long frame, and back to prices and real times.

Time is the series' own rows: ``ds`` is the row number of each candle within its
symbol (0, 1, 2, ...), never a clock time. A forex series closed for the weekend
or a stock closed at night simply has no rows there, so a forecast "k steps
ahead" means the k-th next candle the market will print, and no timestamp is
ever invented for it. Forecasts are mapped back to the real timestamp of their
origin (the last candle they read) and a step number.

The target can be the close itself (``level``), its logarithm (``log``: scaled
prices, quantiles map back exactly through ``exp``) or the one-bar log return
(``log_return``; the median path is the cumulated median returns, and the band
combines the per-step half-widths as if the steps were independent:
sqrt of the sum of their squares).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ...errors import InvalidInput

TARGETS = ("level", "log", "log_return")
US = 1_000_000


@dataclass
class Series:
    """One symbol's model rows: row i is ``ds = i``."""

    symbol: str
    ts_us: np.ndarray     # int64: each row's candle open time (UTC µs)
    close: np.ndarray     # float64: each row's close
    y: np.ndarray         # float64: the model's target on each row
    exog: np.ndarray      # float64 (rows, len(hist_exog)): historic exogenous features, known at the row
    dropped_head: int     # leading candles dropped (the first return, warm-up of the exogenous features)

    def __len__(self) -> int:
        return len(self.ts_us)

    def head(self, n: int) -> "Series":
        """The first ``n`` rows (the rows before a cutoff)."""
        return Series(self.symbol, self.ts_us[:n], self.close[:n], self.y[:n], self.exog[:n], self.dropped_head)


# ---- input frames ---------------------------------------------------------------------
def symbol_frames(data: Any) -> dict[str, pd.DataFrame]:
    """``{symbol: pandas frame}`` from a mapping of frames (pandas or polars) or one long frame
    with a ``symbol`` column (what ``training_frame`` returns)."""
    if isinstance(data, Mapping):
        out = {str(s): _pandas(f) for s, f in data.items()}
    else:
        df = _pandas(data)
        if "symbol" not in df.columns:
            raise InvalidInput("a frame of several series needs a 'symbol' column (or pass {symbol: frame})",
                               field="symbol")
        out = {str(s): g for s, g in df.groupby("symbol", sort=True)}
    for s, f in out.items():
        for col in ("ts", "close"):
            if col not in f.columns:
                raise InvalidInput(f"{s}: the frame has no {col!r} column", field=col)
    return out


def _pandas(frame) -> pd.DataFrame:
    if isinstance(frame, pd.DataFrame):
        return frame
    if hasattr(frame, "to_pandas"):  # polars
        return frame.to_pandas()
    raise InvalidInput(f"expected a pandas or polars frame, got {type(frame).__name__}", field="frame")


def ts_us(col) -> np.ndarray:
    """Epoch microseconds of a time column (datetimes, naive taken as UTC, or integers already in µs)."""
    s = pd.Series(col)
    if pd.api.types.is_integer_dtype(s):
        return s.to_numpy(dtype="int64")
    return pd.DatetimeIndex(pd.to_datetime(s, utc=True)).as_unit("us").asi8


def prepare(data: Any, target: str, hist_exog: tuple[str, ...] = ()) -> list[Series]:
    """Each symbol's rows for the model, sorted by time, in symbol order.

    Rows without a close are dropped. Exogenous features are carried forward within
    the symbol (a value stays known until the next one: nothing from later rows), and the
    leading rows where one is still unknown (indicator warm-up) are dropped, as is the
    first row of a ``log_return`` target (it has no previous close)."""
    if target not in TARGETS:
        raise InvalidInput(f"target {target!r} is not one of {', '.join(TARGETS)}", field="target")
    out = []
    for symbol, f in sorted(symbol_frames(data).items()):
        missing = [c for c in hist_exog if c not in f.columns]
        if missing:
            raise InvalidInput(f"{symbol}: exogenous feature(s) {', '.join(missing)} not in the features "
                               f"(has {len(f.columns)} columns)", field="hist_exog")
        f = f.assign(_ts=ts_us(f["ts"])).sort_values("_ts").drop_duplicates("_ts", keep="last")
        close = pd.to_numeric(f["close"], errors="coerce").to_numpy(dtype="float64")
        keep = np.isfinite(close)
        f, close = f[keep], close[keep]
        if target != "level" and len(close) and close.min() <= 0:
            raise InvalidInput(f"{symbol}: a {target} target needs positive closes (min {close.min():g})",
                               field="target")
        exog = (f[list(hist_exog)].apply(pd.to_numeric, errors="coerce").ffill().to_numpy(dtype="float64")
                if hist_exog else np.empty((len(f), 0)))
        if target == "level":
            y = close.copy()
        elif target == "log":
            y = np.log(close)
        else:
            y = np.r_[np.nan, np.diff(np.log(close))]
        known = np.isfinite(y) & np.isfinite(exog).all(axis=1)
        first = int(np.argmax(known)) if known.any() else len(y)
        # after the first fully known row, a value can only be missing if the feature itself is
        # (ffill covers gaps): such rows keep the last known value, or zero before any
        exog = np.nan_to_num(exog[first:], nan=0.0, posinf=0.0, neginf=0.0)
        out.append(Series(symbol, f["_ts"].to_numpy(dtype="int64")[first:], close[first:], y[first:], exog,
                          first))
    return out


def long_frame(series: list[Series], hist_exog: tuple[str, ...] = (), tail: int | None = None) -> pd.DataFrame:
    """neuralforecast's frame: ``unique_id``, ``ds`` (row number), ``y`` and the exogenous columns.
    ``tail`` keeps only each series' last rows (their ``ds`` stay the row numbers)."""
    parts = []
    for s in series:
        start = 0 if tail is None else max(0, len(s) - tail)
        cols = {"unique_id": s.symbol, "ds": np.arange(start, len(s), dtype="int64"), "y": s.y[start:]}
        for j, c in enumerate(hist_exog):
            cols[c] = s.exog[start:, j]
        parts.append(pd.DataFrame(cols))
    return pd.concat(parts, ignore_index=True)


# ---- back to prices -------------------------------------------------------------------------
def to_prices(pred: np.ndarray, quantiles: tuple[float, ...], origin_close: np.ndarray, target: str) -> np.ndarray:
    """Model outputs (origins, horizon, quantiles) on the target's scale -> prices, each row's
    quantiles sorted (a quantile forecast that crosses is rearranged, which never hurts it)."""
    pred = np.asarray(pred, dtype="float64")
    if target == "level":
        out = pred
    elif target == "log":
        out = np.exp(pred)
    elif target == "log_return":
        qs = np.asarray(quantiles, dtype="float64")
        mid = int(np.argmin(np.abs(qs - 0.5)))
        med = np.cumsum(pred[:, :, mid], axis=1)
        spread = np.sqrt(np.cumsum((pred - pred[:, :, mid:mid + 1]) ** 2, axis=1))
        out = np.exp(med[:, :, None] + np.sign(qs - 0.5)[None, None, :] * spread) * origin_close[:, None, None]
    else:
        raise InvalidInput(f"target {target!r} is not one of {', '.join(TARGETS)}", field="target")
    return np.sort(out, axis=2)


# ---- the season of a market, in rows ---------------------------------------------------------
def market_of(value) -> tuple[str, str | None]:
    """(category, exchange) from a category name, a (category, exchange) pair or a SymbolInfo."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, tuple):
        return value[0], (value[1] if len(value) > 1 else None)
    return value.category, getattr(value, "exchange", None)


def season_rows(timeframe: str, category: str, exchange: str | None = None) -> int:
    """The season in rows of the series, from the market calendar (not the clock).

    Intraday bars: a trading day (crypto and forex: 24 h of bars; stocks: the candles of one
    session on the exchange's calendar, 7 one-hour candles for a NYSE session). Daily bars: a
    trading week (7 for crypto, 5 for stocks and forex). Weekly bars: a year (52)."""
    from ...core.timeframes import seconds

    tf_s = seconds(timeframe)
    if category not in ("crypto", "forex", "stock"):
        raise InvalidInput(f"category {category!r} is not one of crypto, forex, stock", field="category")
    if tf_s >= 7 * 86_400:
        return 52
    if tf_s >= 86_400:
        return 7 if category == "crypto" else 5
    if category in ("crypto", "forex"):
        return max(1, 86_400 // tf_s)
    from ...core.calendars import calendar_code

    return _session_rows(calendar_code(exchange), tf_s)


@lru_cache(maxsize=None)
def _session_rows(code: str, tf_s: int) -> int:
    """Median number of open candles per trading day over four reference weeks (June 2023)."""
    from ...core.calendars import slot_open

    t0 = int(pd.Timestamp("2023-06-05", tz="UTC").value // 1000)
    ts = t0 + np.arange(0, 28 * 86_400, tf_s, dtype="int64") * US
    open_ = slot_open("stock", code, ts, tf_s)
    per_day = np.bincount(((ts - t0) // (86_400 * US))[open_], minlength=28)
    return max(1, int(np.median(per_day[per_day > 0]))) if per_day.any() else max(1, 86_400 // tf_s)

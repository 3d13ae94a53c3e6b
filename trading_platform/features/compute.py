"""The feature computation: one pipeline for training, backfills and the live path.

Polars holds the frames (and does the multi-timeframe as-of join); each indicator
is one pass of a compiled kernel (kernels.py) over the contiguous series.

Input: candles with ``symbol, timeframe, ts, open, high, low, close, volume``,
sorted by (symbol, timeframe, ts), ``ts`` being each candle's open time. A row
uses only its own candle and earlier ones (it is available once the candle
closes, at ``ts + timeframe``), so nothing here can look ahead.

Recursive indicators (EMA, RSI, ATR, MACD) follow TA-Lib's definitions: seeded
with the simple average of their first window, then smoothed (EMA with
2/(n+1), Wilder with 1/n). Warm-up rows are null.

Two modes share every kernel:
- full: from the first stored candle (backfills, training);
- incremental (``state=``): only the candles after the last computed row, seeded
  from that row's stored values (EMAs, Wilder averages, OBV, the ATH tracker) plus
  a tail of candles for the windowed indicators. It gives the same numbers as the
  full mode, without recomputing history.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..errors import InvalidInput
from .spec import FeatureSpec


def _fmt(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x).replace(".", "p")


def state_columns(spec: FeatureSpec) -> list[str]:
    """Values kept beside the features so the next candle can continue the recursions."""
    cols = []
    for n in spec.rsi:
        cols += [f"state_rsi_{n}_gain", f"state_rsi_{n}_loss"]
    for f, s, g in spec.macd:
        cols += [f"state_macd_{f}_{s}_{g}_fast", f"state_macd_{f}_{s}_{g}_slow"]
    return cols


def _starts(df: pl.DataFrame) -> np.ndarray:
    """First row of each (symbol, timeframe) series in a frame sorted by them, then len(df)."""
    if len(df) == 0:
        return np.zeros(1, dtype=np.int64)
    change = df.select((pl.col("symbol") != pl.col("symbol").shift(1))
                       | (pl.col("timeframe") != pl.col("timeframe").shift(1))).to_series()
    change = change.fill_null(True).to_numpy()
    return np.append(np.flatnonzero(change), len(df)).astype(np.int64)


def compute_features(candles: pl.DataFrame, spec: FeatureSpec | None = None, *,
                     state: dict | None = None, keep_state: bool = True) -> pl.DataFrame:
    """Features of every row (full mode), or of the rows after row ``state["_row"]`` (incremental).

    ``candles`` must be sorted by (symbol, timeframe, ts). In incremental mode it
    holds one series: a tail ending with the new candles, and ``state`` is the
    stored feature row of the candle at index ``_row``.
    """
    from . import kernels

    spec = spec or FeatureSpec()
    starts = _starts(candles)
    groups = len(starts) - 1
    K = kernels.parallel if groups > 1 else kernels.serial
    inc = state is not None
    if inc:
        if groups != 1:
            raise ValueError("incremental features take one series at a time")
        row = int(state["_row"])
    o, h, low, c, v = (candles[x].cast(pl.Float64).to_numpy() for x in ("open", "high", "low", "close", "volume"))

    def seed(name: str, full_pos: int):
        if inc:
            val = state.get(name)
            if val is None:
                raise ValueError(f"incremental features need the stored value of {name}")
            return np.array([row], dtype=np.int64), np.array([float(val)])
        return np.full(groups, full_pos, dtype=np.int64), np.full(groups, np.nan)

    cols: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio1 = K.lag_ratio(c, starts, 1)
        lr1 = np.log(ratio1)
        for n in spec.returns:
            r = ratio1 if n == 1 else K.lag_ratio(c, starts, n)
            cols[f"ret_{n}"] = r - 1
            cols[f"logret_{n}"] = np.log(r)
        for n in spec.volatility:
            cols[f"vol_{n}"] = K.rolling_std(lr1, starts, n, 1, 1)
        for n in spec.change:
            cols[f"change_{n}"] = K.lag_ratio(c, starts, n) - 1
        if spec.candle:
            rng = np.where(h > low, h - low, np.nan)
            cols["hl_range"] = (h - low) / c
            cols["body"] = np.abs(c - o) / rng
            cols["upper_wick"] = (h - np.maximum(o, c)) / rng
            cols["lower_wick"] = (np.minimum(o, c) - low) / rng
        for n in spec.sma:
            cols[f"sma_{n}"] = sma = K.rolling_mean(c, starts, n, 0)
            cols[f"dist_sma_{n}"] = c / sma - 1
        for n in spec.ema:
            e = K.ema(c, starts, 2 / (n + 1), n, *seed(f"ema_{n}", n - 1))
            cols[f"ema_{n}"] = e
            cols[f"dist_ema_{n}"] = c / e - 1
        for n in spec.rsi:
            pos, sg = seed(f"state_rsi_{n}_gain", n)
            _, sl = seed(f"state_rsi_{n}_loss", n)
            cols[f"rsi_{n}"], cols[f"state_rsi_{n}_gain"], cols[f"state_rsi_{n}_loss"] = K.rsi(c, starts, n, pos, sg, sl)
        for f, s, g in spec.macd:
            key = f"{f}_{s}_{g}"
            pos, sf = seed(f"state_macd_{key}_fast", 0)
            _, ss = seed(f"state_macd_{key}_slow", 0)
            _, sgn = seed(f"macd_signal_{key}", 0)
            line, signal, hist, fast, slow = K.macd(c, starts, f, s, g, pos, sf, ss, sgn)
            cols[f"macd_{key}"], cols[f"macd_signal_{key}"], cols[f"macd_hist_{key}"] = line, signal, hist
            cols[f"state_macd_{key}_fast"], cols[f"state_macd_{key}_slow"] = fast, slow
        for n, k in spec.bbands:
            key = f"{n}_{_fmt(k)}"
            (cols[f"bb_upper_{key}"], cols[f"bb_middle_{key}"], cols[f"bb_lower_{key}"],
             cols[f"bb_width_{key}"], cols[f"bb_pctb_{key}"]) = K.bbands(c, starts, n, float(k))
        for n in spec.atr:
            cols[f"atr_{n}"] = K.atr(h, low, c, starts, n, *seed(f"atr_{n}", n))
        for n, s in spec.stoch:
            fastk = K.stoch_fastk(h, low, c, starts, n)
            slowk = K.rolling_mean(fastk, starts, s, n - 1)
            cols[f"stoch_k_{n}_{s}"] = slowk
            cols[f"stoch_d_{n}_{s}"] = K.rolling_mean(slowk, starts, s, n + s - 2)
        if spec.vwap:
            tpv = (h + low + c) / 3 * v
        for n in spec.vwap:
            vw = K.rolling_mean(tpv, starts, n, 0) / K.rolling_mean(v, starts, n, 0)
            cols[f"vwap_{n}"], cols[f"dist_vwap_{n}"] = vw, c / vw - 1
        for n in spec.volume_z:
            sd = K.rolling_std(v, starts, n, 0, 1)
            cols[f"volume_z_{n}"] = np.where(sd > 0, (v - K.rolling_mean(v, starts, n, 0)) / sd, np.nan)
        for n in spec.volume_spike:
            med = K.median_of_previous(v, starts, n)
            cols[f"volume_spike_{n}"] = np.where(med > 0, v / med, np.nan)
        for n in spec.max_rise:
            cols[f"max_rise_{n}"] = K.max_rise(h, low, starts, n)
        if spec.obv:
            cols["obv"] = K.obv(c, v, starts, *seed("obv", 0))
        if spec.ath:
            if inc:
                pos, top = seed("ath", 0)
                _, bars = seed("bars_since_ath", 0)
            else:
                pos, top, bars = np.zeros(groups, np.int64), np.full(groups, np.nan), np.full(groups, np.nan)
            a, b = K.ath(h, starts, pos, top, bars)
            cols["ath"], cols["ath_dist"], cols["bars_since_ath"] = a, c / a - 1, b

    if not keep_state:
        for name in state_columns(spec):
            cols.pop(name, None)
    out = candles.with_columns([pl.Series(name, arr, dtype=pl.Float64, nan_to_null=True)
                                for name, arr in cols.items()])
    if inc:
        out = out.slice(row + 1)
    return out


def feature_columns(df: pl.DataFrame) -> list[str]:
    """The feature columns of a computed frame (not keys, candles or state)."""
    skip = {"symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"}
    return [c for c in df.columns if c not in skip and not c.startswith("state_")]


def join_context(lower: pl.DataFrame, higher: pl.DataFrame, lower_tf_s: int, higher_tf_s: int,
                 columns: tuple[str, ...]) -> pl.DataFrame:
    """Add the features of the last *closed* higher-timeframe candle to each lower row.

    A lower row at open time ts is available at ts + lower_tf; a higher candle at
    open time T is closed at T + higher_tf. The row gets the latest higher candle
    with T + higher_tf <= ts + lower_tf, never the one still forming.
    """
    missing = [c for c in columns if c not in higher.columns]
    if missing:  # a misspelt name dropped its htf_ column silently
        known = ", ".join(feature_columns(higher)[:12])
        raise InvalidInput(f"features.context: {missing[0]!r} is not a feature this spec computes "
                           f"(such as {known}, ...)", field="features.context")
    cols = list(columns)
    right = higher.select(
        "symbol",
        (pl.col("ts") + pl.duration(seconds=higher_tf_s)).alias("_avail"),
        pl.col("ts").alias("htf_ts"),
        *[pl.col(c).alias(f"htf_{c}") for c in cols],
    ).sort("symbol", "_avail")
    left = lower.with_columns((pl.col("ts") + pl.duration(seconds=lower_tf_s)).alias("_avail"))
    out = left.sort("symbol", "_avail").join_asof(right, on="_avail", by="symbol", strategy="backward",
                                                  check_sortedness=False)
    return out.drop("_avail").sort("symbol", "timeframe", "ts")

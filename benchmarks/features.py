"""Feature computation: the platform (polars) vs TA-Lib and vs pandas, in the same run.

Data: 10 symbols x 100,000 5m candles from the synthetic generator.
- talib_s: a TA-Lib loop over the symbols computing SMA(20), EMA(20), RSI(14),
  MACD(12,26,9), BBANDS(20,2), ATR(14), from the same polars frame to the same
  kind of result (a frame with the indicator columns, warm-up as nulls), as the
  platform call does; talib_kernels_s is the TA-Lib calls alone on prepared arrays;
- platform_common_s: the platform computing the same indicators (one polars frame,
  all symbols); ratio_vs_talib = platform_common_s / talib_s;
- platform_s / pandas_s: the whole feature set (single timeframe), platform vs a
  straightforward pandas implementation (per-symbol loop of rolling/ewm);
  speedup_vs_pandas = pandas_s / platform_s;
- one_candle_ms: features of one new candle of one symbol given its history
  (incremental mode: a tail of candles plus the stored state of the last row).
Best of --repeat runs each. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trading_platform.core.candles import normalize_candles  # noqa: E402
from trading_platform.core.symbols import SymbolInfo  # noqa: E402
from trading_platform.features.compute import compute_features  # noqa: E402
from trading_platform.features.pipeline import to_polars  # noqa: E402
from trading_platform.features.spec import FeatureSpec  # noqa: E402
from trading_platform.sources.synthetic import SyntheticSource  # noqa: E402

COMMON = FeatureSpec(returns=(), volatility=(), sma=(20,), ema=(20,), rsi=(14,), macd=((12, 26, 9),),
                     bbands=((20, 2.0),), atr=(14,), stoch=(), vwap=(), volume_z=(), volume_spike=(),
                     change=(), max_rise=(), obv=False, ath=False, candle=False, context=())
FULL = FeatureSpec(context=())


def data(n_symbols: int, n: int) -> pl.DataFrame:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    frames = []
    for i in range(n_symbols):
        sym = f"S{i}/USDT"
        raw = SyntheticSource(seed=i).fetch(SymbolInfo.create(sym), "5m", start, start + timedelta(minutes=5 * n))
        frames.append(to_polars(normalize_candles(raw, "5m", now=datetime(2030, 1, 1, tzinfo=timezone.utc)),
                                sym, "5m"))
    return pl.concat(frames)


def talib_calls(o, h, low, c, v) -> dict:
    import talib

    out = {"sma_20": talib.SMA(c, 20), "ema_20": talib.EMA(c, 20), "rsi_14": talib.RSI(c, 14),
           "atr_14": talib.ATR(h, low, c, 14)}
    out["macd_12_26_9"], out["macd_signal_12_26_9"], out["macd_hist_12_26_9"] = talib.MACD(c, 12, 26, 9)
    out["bb_upper_20_2"], out["bb_middle_20_2"], out["bb_lower_20_2"] = talib.BBANDS(c, 20, 2, 2)
    return out


def talib_kernels(groups):
    for g in groups:
        talib_calls(*g)


def talib_frame(df: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for part in df.partition_by("symbol", "timeframe", maintain_order=True):
        arrays = [part[x].to_numpy() for x in ("open", "high", "low", "close", "volume")]
        res = talib_calls(*arrays)
        parts.append(part.with_columns([pl.Series(k, a, nan_to_null=True) for k, a in res.items()]))
    return pl.concat(parts)


def pandas_features(df: pd.DataFrame) -> pd.DataFrame:
    """The whole single-timeframe set written the straightforward pandas way."""
    out = []
    for _, g in df.groupby("symbol", sort=False):
        c, h, low, o, v = g["close"], g["high"], g["low"], g["open"], g["volume"]
        f = pd.DataFrame(index=g.index)
        lr = np.log(c / c.shift(1))
        for n in (1, 5, 15, 60):
            f[f"ret_{n}"] = c.pct_change(n)
            f[f"logret_{n}"] = np.log(c / c.shift(n))
        for n in (20, 60):
            f[f"vol_{n}"] = lr.rolling(n).std()
        f["change_12"] = c.pct_change(12)
        rng = (h - low).where(h > low)
        f["hl_range"] = (h - low) / c
        f["body"] = (c - o).abs() / rng
        f["upper_wick"] = (h - np.maximum(o, c)) / rng
        f["lower_wick"] = (np.minimum(o, c) - low) / rng
        for n in (10, 20, 50, 200):
            f[f"sma_{n}"] = c.rolling(n).mean()
            f[f"ema_{n}"] = c.ewm(span=n, adjust=False).mean()
            f[f"dist_sma_{n}"] = c / f[f"sma_{n}"] - 1
            f[f"dist_ema_{n}"] = c / f[f"ema_{n}"] - 1
        d = c.diff()
        ag = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
        al = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
        f["rsi_14"] = 100 * ag / (ag + al)
        macd = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
        f["macd_12_26_9"] = macd
        f["macd_signal_12_26_9"] = macd.ewm(span=9, adjust=False).mean()
        f["macd_hist_12_26_9"] = macd - f["macd_signal_12_26_9"]
        mid, sd = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
        f["bb_upper_20_2"], f["bb_middle_20_2"], f["bb_lower_20_2"] = mid + 2 * sd, mid, mid - 2 * sd
        f["bb_width_20_2"] = 4 * sd / mid
        f["bb_pctb_20_2"] = (c - f["bb_lower_20_2"]) / (4 * sd)
        pc = c.shift(1)
        tr = pd.concat([h - low, (h - pc).abs(), (low - pc).abs()], axis=1).max(axis=1)
        f["atr_14"] = tr.ewm(alpha=1 / 14, adjust=False).mean()
        ll, hh = low.rolling(14).min(), h.rolling(14).max()
        fastk = 100 * (c - ll) / (hh - ll)
        f["stoch_k_14_3"] = fastk.rolling(3).mean()
        f["stoch_d_14_3"] = f["stoch_k_14_3"].rolling(3).mean()
        tp = (h + low + c) / 3
        f["vwap_20"] = (tp * v).rolling(20).sum() / v.rolling(20).sum()
        f["dist_vwap_20"] = c / f["vwap_20"] - 1
        f["volume_z_20"] = (v - v.rolling(20).mean()) / v.rolling(20).std()
        f["volume_spike_48"] = v / v.shift(1).rolling(48).median()
        f["max_rise_12"] = pd.concat([(h / low.shift(k)).rolling(12 - k).max() for k in range(12)],
                                     axis=1).max(axis=1) - 1
        f["obv"] = (np.sign(d).fillna(0) * v).cumsum() + v.iloc[0]
        f["ath"] = h.cummax()
        f["ath_dist"] = c / f["ath"] - 1
        idx = pd.Series(np.arange(len(g)), index=g.index)
        f["bars_since_ath"] = idx - idx.where(h >= f["ath"]).ffill()
        out.append(f)
    return pd.concat(out)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--candles", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    df = data(args.symbols, args.candles)
    groups = [tuple(g[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))
              for _, g in df.group_by("symbol", maintain_order=True)]
    pdf = df.to_pandas()
    compute_features(df.head(1000), FULL)  # warm polars up

    talib_s = best(lambda: talib_frame(df), args.repeat)
    talib_kernels_s = best(lambda: talib_kernels(groups), args.repeat)
    common_s = best(lambda: compute_features(df, COMMON, keep_state=False), args.repeat)
    platform_s = best(lambda: compute_features(df, FULL, keep_state=False), args.repeat)
    pandas_s = best(lambda: pandas_features(pdf), max(1, args.repeat - 1))

    one = df.filter(pl.col("symbol") == "S0/USDT")
    full = compute_features(one, FULL)
    k = FULL.max_window
    s = len(one) - 2
    tail = one.slice(s - k, k + 2)
    state = full.row(s, named=True)
    state["_row"] = k
    compute_features(tail, FULL, state=state)
    ms = []
    for _ in range(50):
        t = time.perf_counter()
        compute_features(tail, FULL, state=state)
        ms.append((time.perf_counter() - t) * 1000)

    figures = {
        "symbols": args.symbols,
        "candles_per_symbol": args.candles,
        "talib_s": round(talib_s, 4),
        "talib_kernels_s": round(talib_kernels_s, 4),
        "platform_common_s": round(common_s, 4),
        "ratio_vs_talib": round(common_s / talib_s, 3),
        "platform_s": round(platform_s, 4),
        "pandas_s": round(pandas_s, 4),
        "speedup_vs_pandas": round(pandas_s / platform_s, 2),
        "feature_columns": len(compute_features(df.head(500), FULL, keep_state=False).columns) - 8,
        "one_candle_ms": round(float(np.median(ms)), 2),
        "one_candle_p95_ms": round(float(np.percentile(ms, 95)), 2),
    }
    print(f"TA-Lib loop {talib_s * 1000:.0f} ms (calls alone {talib_kernels_s * 1000:.0f} ms); platform, same indicators {common_s * 1000:.0f} ms "
          f"({figures['ratio_vs_talib']}x TA-Lib); whole set: platform {platform_s * 1000:.0f} ms, "
          f"pandas {pandas_s * 1000:.0f} ms ({figures['speedup_vs_pandas']}x faster); "
          f"one new candle {figures['one_candle_ms']} ms (p95 {figures['one_candle_p95_ms']} ms)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

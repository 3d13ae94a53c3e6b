"""The feature computation: one polars pipeline for training, backfills and the live path.

Input: candles with ``symbol, timeframe, ts, open, high, low, close, volume``,
sorted by (symbol, timeframe, ts), ``ts`` being each candle's open time. A row
uses only its own candle and earlier ones (it is available once the candle
closes, at ``ts + timeframe``), so nothing here can look ahead.

Recursive indicators (EMA, RSI, ATR, MACD) follow TA-Lib's definitions: seeded
with the simple average of their first window, then smoothed (EMA with
2/(n+1), Wilder with 1/n). Warm-up rows are null.

Two modes share every expression:
- full: from the first stored candle (backfills, training);
- incremental (``state=``): only the candles after the last computed row, seeded
  from that row's stored values (EMAs, Wilder averages, OBV, the ATH tracker) plus
  a tail of candles for the windowed indicators. It gives the same numbers as the
  full mode, without recomputing history.
"""

from __future__ import annotations

import math
from functools import lru_cache

import polars as pl

from .spec import FeatureSpec

G = ["symbol", "timeframe"]
_IDX = "_i"


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


def _seeded_ewm(x: pl.Expr, alpha: float, seed_idx, seed_val: pl.Expr) -> pl.Expr:
    """EMA that starts at row seed_idx from seed_val, then x_t*alpha + prev*(1-alpha)."""
    i = pl.col(_IDX)
    started = pl.when(i < seed_idx).then(None).when(i == seed_idx).then(seed_val).otherwise(x)
    return started.ewm_mean(alpha=alpha, adjust=False, min_samples=1).over(G)


def compute_features(candles: pl.DataFrame, spec: FeatureSpec | None = None, *,
                     state: dict | None = None, keep_state: bool = True) -> pl.DataFrame:
    """Features of every row (full mode), or of the rows after row ``state["_row"]`` (incremental).

    In incremental mode ``candles`` holds one series: a tail that ends with the new
    candles, and ``state`` the stored feature row of the candle at index ``_row``.
    """
    spec = spec or FeatureSpec()
    inc = state is not None
    stages, seeds = _plan(spec, inc)
    # a few hundred rows (the live path) run faster eagerly; history runs lazily
    df = (candles if inc else candles.lazy()).with_columns(pl.int_range(pl.len()).over(G).alias(_IDX))
    if inc:
        missing = [n for n in seeds if state.get(n) is None]
        if missing:
            raise ValueError(f"incremental features need stored values for {missing}")
        df = df.with_columns(pl.lit(int(state["_row"]), dtype=pl.Int64).alias("_srow"),
                             *[pl.lit(float(state[n]), dtype=pl.Float64).alias(f"_seed_{n}") for n in seeds])
    for stage in stages:
        df = df.with_columns(stage)
    if inc:
        df = df.filter(pl.col(_IDX) > pl.col("_srow"))
    drop = [col for col in df.collect_schema().names() if col.startswith("_")]
    if not keep_state:
        drop += state_columns(spec)
    df = df.drop(drop)
    return df if inc else df.collect()


@lru_cache(maxsize=16)
def _plan(spec: FeatureSpec, inc: bool) -> tuple[list[list[pl.Expr]], tuple[str, ...]]:
    """The expression stages for a spec (built once: building them costs more than running them)."""
    c, h, low, o, v = (pl.col(x) for x in ("close", "high", "low", "open", "volume"))
    stages: list[list[pl.Expr]] = []
    seeds: list[str] = []
    s_row = pl.col("_srow")

    def seed(name: str, default_idx: int, default_val: pl.Expr):
        if inc:
            seeds.append(name)
            return s_row, pl.col(f"_seed_{name}")
        return default_idx, default_val

    # stage 1: helpers
    prev_c = c.shift(1).over(G)
    stage1 = [
        (c - prev_c).alias("_diff"),
        pl.max_horizontal(h - low, (h - prev_c).abs(), (low - prev_c).abs()).alias("_tr"),
        (c / prev_c).log().alias("logret_1") if 1 in spec.returns else (c / prev_c).log().alias("_logret_1"),
        ((h + low + c) / 3 * v).alias("_tpv"),
    ]
    stages.append(stage1)
    lr1 = pl.col("logret_1") if 1 in spec.returns else pl.col("_logret_1")
    gain = pl.col("_diff").clip(lower_bound=0)
    loss = (-pl.col("_diff")).clip(lower_bound=0)
    tr = pl.when(pl.col(_IDX) == 0).then(None).otherwise(pl.col("_tr"))

    out: list[pl.Expr] = []
    # returns and volatility
    for n in spec.returns:
        out.append((c / c.shift(n).over(G) - 1).alias(f"ret_{n}"))
        if n != 1:
            out.append((c / c.shift(n).over(G)).log().alias(f"logret_{n}"))
    for n in spec.volatility:
        out.append(lr1.rolling_std(n).over(G).alias(f"vol_{n}"))
    for n in spec.change:
        out.append((c / c.shift(n).over(G) - 1).alias(f"change_{n}"))
    if spec.candle:
        rng = pl.when(h > low).then(h - low)
        out += [
            ((h - low) / c).alias("hl_range"),
            ((c - o).abs() / rng).alias("body"),
            ((h - pl.max_horizontal(o, c)) / rng).alias("upper_wick"),
            ((pl.min_horizontal(o, c) - low) / rng).alias("lower_wick"),
        ]
    # moving averages
    for n in spec.sma:
        out.append(c.rolling_mean(n).over(G).alias(f"sma_{n}"))
    for n in spec.ema:
        si, sv = seed(f"ema_{n}", n - 1, c.rolling_mean(n).over(G))
        out.append(_seeded_ewm(c, 2 / (n + 1), si, sv).alias(f"ema_{n}"))
    # RSI, ATR (Wilder)
    for n in spec.rsi:
        si, sg = seed(f"state_rsi_{n}_gain", n, gain.rolling_mean(n).over(G))
        _, sl = seed(f"state_rsi_{n}_loss", n, loss.rolling_mean(n).over(G))
        out.append(_seeded_ewm(gain, 1 / n, si, sg).alias(f"state_rsi_{n}_gain"))
        out.append(_seeded_ewm(loss, 1 / n, si, sl).alias(f"state_rsi_{n}_loss"))
    for n in spec.atr:
        si, sv = seed(f"atr_{n}", n, tr.rolling_mean(n).over(G))
        out.append(_seeded_ewm(tr, 1 / n, si, sv).alias(f"atr_{n}"))
    # MACD lines (the signal comes in the next stage)
    for f, s, g in spec.macd:
        key = f"{f}_{s}_{g}"
        si, sv = seed(f"state_macd_{key}_fast", f - 1, c.rolling_mean(f).over(G))
        fast = _seeded_ewm(c, 2 / (f + 1), si, sv)
        si, sv = seed(f"state_macd_{key}_slow", s - 1, c.rolling_mean(s).over(G))
        slow = _seeded_ewm(c, 2 / (s + 1), si, sv)
        out += [fast.alias(f"state_macd_{key}_fast"), slow.alias(f"state_macd_{key}_slow")]
    # Bollinger bands (population standard deviation, as TA-Lib)
    for n, k in spec.bbands:
        key = f"{n}_{_fmt(k)}"
        mid = c.rolling_mean(n).over(G)
        sd = c.rolling_std(n, ddof=0).over(G)
        out += [(mid + k * sd).alias(f"bb_upper_{key}"), mid.alias(f"bb_middle_{key}"),
                (mid - k * sd).alias(f"bb_lower_{key}")]
    # stochastic: fast %K over n, slow %K = SMA(s) of it, %D = SMA(s) of slow %K
    for n, s in spec.stoch:
        ll, hh = low.rolling_min(n).over(G), h.rolling_max(n).over(G)
        out.append(pl.when(hh > ll).then(100 * (c - ll) / (hh - ll)).when(hh.is_not_null()).then(0.0)
                   .alias(f"_fastk_{n}_{s}"))
    for n in spec.vwap:
        out.append((pl.col("_tpv").rolling_sum(n).over(G) / v.rolling_sum(n).over(G)).alias(f"vwap_{n}"))
    for n in spec.volume_z:
        sd = v.rolling_std(n).over(G)
        out.append(pl.when(sd > 0).then((v - v.rolling_mean(n).over(G)) / sd).alias(f"volume_z_{n}"))
    for n in spec.volume_spike:
        med = v.shift(1).over(G).rolling_median(n).over(G)
        out.append(pl.when(med > 0).then(v / med).alias(f"volume_spike_{n}"))
    for n in spec.max_rise:
        rises = [(h / low.shift(k).over(G)).rolling_max(n - k).over(G) for k in range(n)]
        out.append((pl.max_horizontal(rises) - 1).alias(f"max_rise_{n}"))
    # cumulative: OBV, all-time high
    if spec.obv:
        signed = (pl.col("_diff").sign() * v).fill_null(0)
        si, sv = seed("obv", 0, v.first().over(G))
        out.append((sv + pl.when(pl.col(_IDX) > si).then(signed).otherwise(0.0).cum_sum().over(G)).alias("obv"))
    if spec.ath:
        si, sv = seed("ath", -1, pl.lit(-math.inf))
        run_max = pl.when(pl.col(_IDX) > si).then(h).otherwise(-math.inf).cum_max().over(G)
        out.append(pl.max_horizontal(sv, run_max).alias("ath"))
    stages.append(out)

    # stage 3: what builds on stage 2
    out2: list[pl.Expr] = []
    for n in spec.sma:
        out2.append((c / pl.col(f"sma_{n}") - 1).alias(f"dist_sma_{n}"))
    for n in spec.ema:
        out2.append((c / pl.col(f"ema_{n}") - 1).alias(f"dist_ema_{n}"))
    for n in spec.rsi:
        ag, al = pl.col(f"state_rsi_{n}_gain"), pl.col(f"state_rsi_{n}_loss")
        out2.append(pl.when(ag + al > 0).then(100 * ag / (ag + al)).otherwise(
            pl.when(ag.is_not_null()).then(0.0)).alias(f"rsi_{n}"))
    for f, s, g in spec.macd:
        key = f"{f}_{s}_{g}"
        line = pl.col(f"state_macd_{key}_fast") - pl.col(f"state_macd_{key}_slow")
        out2.append(line.alias(f"macd_{key}"))
    for n, k in spec.bbands:
        key = f"{n}_{_fmt(k)}"
        u, m, lo = pl.col(f"bb_upper_{key}"), pl.col(f"bb_middle_{key}"), pl.col(f"bb_lower_{key}")
        out2 += [((u - lo) / m).alias(f"bb_width_{key}"),
                 pl.when(u > lo).then((c - lo) / (u - lo)).alias(f"bb_pctb_{key}")]
    for n, s in spec.stoch:
        out2.append(pl.col(f"_fastk_{n}_{s}").rolling_mean(s).over(G).alias(f"stoch_k_{n}_{s}"))
    for n in spec.vwap:
        out2.append((c / pl.col(f"vwap_{n}") - 1).alias(f"dist_vwap_{n}"))
    if spec.ath:
        i = pl.col(_IDX)
        at_high = pl.when((i > (s_row if inc else -1)) & (h >= pl.col("ath"))).then(i)
        last_high = at_high.forward_fill().over(G)
        if inc:
            seeds.append("bars_since_ath")
            last_high = last_high.fill_null(s_row - pl.col("_seed_bars_since_ath").cast(pl.Int64))
        out2 += [(c / pl.col("ath") - 1).alias("ath_dist"), (i - last_high).cast(pl.Float64).alias("bars_since_ath")]
    stages.append(out2)

    # stage 4: signals of signals
    out3: list[pl.Expr] = []
    for f, s, g in spec.macd:
        key = f"{f}_{s}_{g}"
        line = pl.col(f"macd_{key}")
        si, sv = seed(f"macd_signal_{key}", s + g - 2, line.rolling_mean(g).over(G))
        out3.append(_seeded_ewm(line, 2 / (g + 1), si, sv).alias(f"macd_signal_{key}"))
    for n, s in spec.stoch:
        out3.append(pl.col(f"stoch_k_{n}_{s}").rolling_mean(s).over(G).alias(f"stoch_d_{n}_{s}"))
    stages.append(out3)
    stages.append([(pl.col(f"macd_{f}_{s}_{g}") - pl.col(f"macd_signal_{f}_{s}_{g}"))
                   .alias(f"macd_hist_{f}_{s}_{g}") for f, s, g in spec.macd])
    return stages, tuple(dict.fromkeys(seeds))


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
    cols = [c for c in columns if c in higher.columns]
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

"""Features: TA-Lib parity, warm-up nulls, no look-ahead, incremental = full."""

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from conftest import utc
from trading_platform.core.candles import normalize_candles
from trading_platform.core.resample import resample
from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import InvalidInput
from trading_platform.features.compute import compute_features, feature_columns, join_context
from trading_platform.features.pipeline import to_polars
from trading_platform.features.spec import FeatureSpec
from trading_platform.sources.synthetic import SyntheticSource

talib = pytest.importorskip("talib")
US = 1_000_000


def real(name: str, symbol: str, tf: str) -> pl.DataFrame:
    import backtesting

    df = pd.read_csv(Path(backtesting.__file__).parent / "test" / f"{name}.csv", index_col=0)
    n = normalize_candles(df, tf, now=utc(2030, 1, 1))
    assert not n.rejects and len(n) > 2000
    return to_polars(n, symbol, tf)


def synthetic(symbol="BTC/USDT", tf="5m", start=utc(2025, 1, 1), end=utc(2025, 2, 15)) -> pl.DataFrame:
    info = SymbolInfo.create(symbol)
    n = normalize_candles(SyntheticSource().fetch(info, tf, start, end), tf, now=utc(2030, 1, 1))
    return to_polars(n, symbol, tf)


def talib_reference(df: pl.DataFrame) -> dict[str, np.ndarray]:
    o, h, low, c, v = (df[x].to_numpy() for x in ("open", "high", "low", "close", "volume"))
    ref = {"sma_20": talib.SMA(c, 20), "sma_200": talib.SMA(c, 200), "ema_20": talib.EMA(c, 20),
           "ema_200": talib.EMA(c, 200), "rsi_14": talib.RSI(c, 14), "atr_14": talib.ATR(h, low, c, 14),
           "obv": talib.OBV(c, v)}
    ref["macd_12_26_9"], ref["macd_signal_12_26_9"], ref["macd_hist_12_26_9"] = talib.MACD(c, 12, 26, 9)
    ref["bb_upper_20_2"], ref["bb_middle_20_2"], ref["bb_lower_20_2"] = talib.BBANDS(c, 20, 2, 2)
    ref["stoch_k_14_3"], ref["stoch_d_14_3"] = talib.STOCH(h, low, c, 14, 3, 0, 3, 0)
    return ref


@pytest.mark.parametrize("data", ["EURUSD hourly (real)", "GOOG daily (real)", "BTC 5m (synthetic)"])
def test_parity_with_talib_from_bar_300(data):
    df = {"EURUSD hourly (real)": lambda: real("EURUSD", "EURUSD=X", "1h"),
          "GOOG daily (real)": lambda: real("GOOG", "GOOG", "1d"),
          "BTC 5m (synthetic)": lambda: synthetic()}[data]()
    ours = compute_features(df)
    for name, ref in talib_reference(df).items():
        a, b = ours[name].to_numpy()[300:], ref[300:]
        assert not np.isnan(a).any(), name
        scale = np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12 * scale, err_msg=f"{name} on {data}")


def test_warmup_rows_are_null_never_filled():
    df = synthetic(end=utc(2025, 1, 3))
    f = compute_features(df)
    first_valid = {c: f[c].is_not_null().arg_max() for c in feature_columns(f) if not c.startswith("htf")}
    assert first_valid["sma_20"] == 19 and first_valid["ema_200"] == 199 and first_valid["rsi_14"] == 14
    assert first_valid["atr_14"] == 14 and first_valid["macd_signal_12_26_9"] == 33
    assert first_valid["ret_60"] == 60 and first_valid["volume_spike_48"] == 48
    for c in feature_columns(f):
        col = f[c]
        assert col.is_nan().sum() == 0, c  # missing is null, never NaN
        if f[c].null_count():
            n = col.null_count()
            assert col[:n].null_count() == n and col[n:].null_count() == 0, f"{c}: nulls only in warm-up"


def test_too_little_history_gives_nulls_not_errors():
    df = synthetic(end=utc(2025, 1, 1, 2))  # 24 candles
    f = compute_features(df)
    assert len(f) == 24 and f["sma_200"].null_count() == 24 and f["sma_20"].null_count() == 19


def _assert_same_before(a: pl.DataFrame, b: pl.DataFrame, t):
    a, b = a.filter(pl.col("ts") <= t), b.filter(pl.col("ts") <= t)
    assert len(a) == len(b) > 0
    for c in a.columns:
        x, y = a[c], b[c]
        if x.dtype == pl.Float64:
            np.testing.assert_array_equal(x.to_numpy(), y.to_numpy(), err_msg=c)
        else:
            assert x.to_list() == y.to_list(), c


def test_no_look_ahead_single_timeframe():
    df = synthetic()
    t = utc(2025, 1, 20, 13, 35)
    base = compute_features(df)
    future = pl.col("ts") > t
    altered = df.with_columns([pl.when(future).then(pl.col(c) * 1.7).otherwise(pl.col(c)).alias(c)
                               for c in ("open", "high", "low", "close", "volume")])
    _assert_same_before(base, compute_features(altered), t)
    _assert_same_before(base, compute_features(df.filter(~future)), t)


def _mtf(five: pl.DataFrame) -> pl.DataFrame:
    from trading_platform.core.candles import Normalized

    n = Normalized(five["ts"].dt.epoch("us").to_numpy(), *(five[c].to_numpy() for c in
                                                           ("open", "high", "low", "close", "volume")))
    horizon = int(n.ts_us[-1] + 300 * US)
    hour = to_polars(resample(n, 300, 3600, now_us=horizon).candles, "BTC/USDT", "1h")
    return join_context(compute_features(five), compute_features(hour), 300, 3600, FeatureSpec().context)


def test_no_look_ahead_multi_timeframe():
    five = synthetic()
    t = utc(2025, 1, 20, 13, 35)  # in the middle of the 13:00 hour, which is still forming at t
    base = _mtf(five)
    avail = base.filter(pl.col("htf_ts").is_not_null())
    assert avail.select((pl.col("htf_ts") + pl.duration(hours=1) <= pl.col("ts") + pl.duration(minutes=5)).all()).item()
    row = base.filter(pl.col("ts") == t)
    assert row["htf_ts"][0] == utc(2025, 1, 20, 12)  # the last closed hour, not 13:00
    future = pl.col("ts") > t
    altered = five.with_columns([pl.when(future).then(pl.col(c) * 0.5).otherwise(pl.col(c)).alias(c)
                                 for c in ("open", "high", "low", "close")])
    _assert_same_before(base, _mtf(altered), t)
    _assert_same_before(base, _mtf(five.filter(~future)), t)


@pytest.mark.parametrize("new_rows", [1, 5])
def test_incremental_equals_full(new_rows):
    df = synthetic()
    spec = FeatureSpec()
    full = compute_features(df, spec)
    n = len(df)
    s = n - new_rows - 1
    tail = df.slice(s - spec.max_window, spec.max_window + 1 + new_rows)
    state = full.row(s, named=True)
    state["_row"] = spec.max_window
    inc = compute_features(tail, spec, state=state)
    expected = full.slice(n - new_rows, new_rows)
    assert inc["ts"].to_list() == expected["ts"].to_list()
    for c in expected.columns:
        if expected[c].dtype == pl.Float64:
            np.testing.assert_allclose(inc[c].to_numpy(), expected[c].to_numpy(), rtol=1e-9, err_msg=c)


def test_bad_feature_specs_name_the_field():
    with pytest.raises(InvalidInput) as e:
        FeatureSpec.from_dict({"rsi": [14], "ichimoku": [9]})
    assert e.value.field == "features.ichimoku"
    with pytest.raises(InvalidInput) as e:
        FeatureSpec.from_dict({"sma": [20, 0]})
    assert e.value.field == "features.sma" and "positive" in e.value.message
    with pytest.raises(InvalidInput) as e:
        FeatureSpec(macd=((26, 12, 9),))
    assert e.value.field == "features.macd"


@pytest.mark.parametrize("d,field,says", [
    ({"bbands": [[20, float("nan")]]}, "features.bbands", "positive"),  # written, every row reported warm-up
    ({"bbands": [[20, float("inf")]]}, "features.bbands", "positive"),
    ({"macd": [[12, 26]]}, "features.macd", "[fast, slow, signal]"),  # the signal period missing: accepted
    ({"macd": [[12]]}, "features.macd", "[fast, slow, signal]"),  # IndexError
    ({"stoch": [[14, 3, 3, 3]]}, "features.stoch", "[window, smoothing]"),  # too many values to unpack
    ({"rsi": [[14, 2]]}, "features.rsi", "one window"),
])
def test_non_finite_windows_and_the_wrong_number_of_parameters_name_the_field(d, field, says):
    with pytest.raises(InvalidInput) as e:
        FeatureSpec.from_dict(d)
    assert e.value.field == field and says in e.value.message


def test_a_context_column_the_spec_does_not_compute_is_named():
    """A misspelt context name dropped its htf_ column silently (59 columns became 53)."""
    five = synthetic(end=utc(2025, 1, 3))
    hour = five.group_by_dynamic("ts", every="1h").agg(
        pl.col("symbol").first(), pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
        pl.col("close").last(), pl.col("volume").sum()).with_columns(pl.lit("1h").alias("timeframe"))
    with pytest.raises(InvalidInput) as e:
        join_context(compute_features(five), compute_features(hour), 300, 3600, ("rsi_14", "nope"))
    assert e.value.field == "features.context" and "'nope'" in e.value.message


def test_column_names_are_readable():
    cols = set(compute_features(synthetic(end=utc(2025, 1, 2))).columns)
    assert {"sma_20", "ema_20", "rsi_14", "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9",
            "bb_upper_20_2", "bb_lower_20_2", "atr_14", "obv", "stoch_k_14_3", "stoch_d_14_3", "vwap_20",
            "volume_z_20", "ath", "ath_dist", "bars_since_ath", "volume_spike_48", "change_12",
            "max_rise_12", "vol_20", "ret_60", "logret_5", "hl_range", "body", "upper_wick",
            "lower_wick", "symbol", "timeframe", "ts"} <= cols


def test_pump_features_see_a_pump():
    df = compute_features(synthetic(end=utc(2025, 7, 1)))
    spike = df.filter(pl.col("max_rise_12") > 0.08)
    assert len(spike) > 0 and spike["volume_spike_48"].max() > 3
    # max_rise_N is the largest low-to-later-high rise inside the last N bars, checked by brute force
    i = spike.row(0, named=True)
    k = df["ts"].to_list().index(i["ts"])
    hi, lo = df["high"].to_numpy()[k - 11:k + 1], df["low"].to_numpy()[k - 11:k + 1]
    brute = max(hi[j] / lo[: j + 1].min() for j in range(12)) - 1
    assert i["max_rise_12"] == pytest.approx(brute, rel=1e-12)

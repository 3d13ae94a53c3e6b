"""The features asset, its storage, staleness and the live-path update, on real Dagster and PostgreSQL."""

import numpy as np
import polars as pl
import pytest
from dagster import build_sensor_context, materialize

from conftest import utc
from trading_platform.assets.features import features
from trading_platform.assets.market_data import market_assets
from trading_platform.assets.partitions import market_key
from trading_platform.core.symbols import SymbolInfo
from trading_platform.features.compute import compute_features
from trading_platform.features.pipeline import export, stale_months, to_polars, update_latest
from trading_platform.features.storage import read_features
from trading_platform.resources import MarketDB, MarketSource
from trading_platform.sensors.features import features_stale_sensor
from trading_platform.sources.synthetic import SyntheticSource
from trading_platform.symbols import sync_partitions

BTC = SymbolInfo.create("BTC/USDT", timeframes=["15m", "1h", "1d"])


@pytest.fixture
def run(store, instance, dsn):
    store.add_symbol(BTC)
    sync_partitions(instance, store)
    resources = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec="synthetic:7")}

    def go(month, assets=None, config=None, raise_on_error=True):
        return materialize(assets or [*market_assets, features], instance=instance, resources=resources,
                           partition_key=str(market_key("BTC/USDT", month)), run_config=config,
                           raise_on_error=raise_on_error)

    return go


def feature_md(r):
    [m] = r.asset_materializations_for_node("features")
    return {k: v.value for k, v in m.metadata.items()}


def test_features_are_stored_per_partition_and_idempotent(run, store):
    r = run("2025-03-01")
    checks = {c.check_name: c.passed for c in r.get_asset_check_evaluations()
              if c.asset_key.to_user_string() == "features"}
    assert checks == {"rows_match_candles": True, "values_finite": True}
    md = feature_md(r)
    assert md["rows"] == {"BTC/USDT": {"15m": 31 * 96, "1h": 31 * 24, "1d": 31}}
    assert "sma_200" in md["too_little_history"]["BTC/USDT"]["1d"]  # 31 daily candles: reported, not an error
    first = read_features(store.conn, "BTC/USDT", "15m")
    run("2025-03-01", assets=[features])
    again = read_features(store.conn, "BTC/USDT", "15m")
    assert len(again) == len(first) == 31 * 96
    assert first.drop("computed_at").equals(again.drop("computed_at"))
    # what is stored is what the pure computation gives
    candles = to_polars(store.read_candles("BTC/USDT", "15m"), "BTC/USDT", "15m")
    pure = compute_features(candles)
    np.testing.assert_allclose(again["rsi_14"].to_numpy()[100:], pure["rsi_14"].to_numpy()[100:], rtol=1e-12)
    assert again["htf_ts"].null_count() < len(again)  # context from 1h is there


def test_a_bad_window_in_run_config_fails_naming_the_indicator(run):
    r = run("2025-03-01", assets=[features], config={"ops": {"features": {"config": {"rsi": [0]}}}},
            raise_on_error=False)
    assert not r.success
    failure = [e for e in r.all_events if e.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")]
    assert any("features.rsi" in str(e.event_specific_data) for e in failure)


def test_revised_history_makes_later_features_stale_and_they_are_recomputed(run, store, instance, dsn):
    run("2025-03-01")
    run("2025-04-01")
    assert stale_months(store, BTC, "15m") == []
    # a correction of a March candle: volume (hence OBV) changes for every later row
    row = store.read_candles("BTC/USDT", "15m", utc(2025, 3, 10), utc(2025, 3, 10, 0, 15))
    fixed = row.to_frame().assign(volume=row.volume * 10)
    r = store.ingest_frame("BTC/USDT", "15m", fixed, "correction")
    assert r.updated == 1
    months = [m.strftime("%Y-%m") for m in stale_months(store, BTC, "15m")]
    assert months == ["2025-03", "2025-04"]
    # the sensor asks for one run covering the stored feature months from March on
    with build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        result = features_stale_sensor(ctx)
    [req] = result.run_requests
    assert (req.tags["dagster/asset_partition_range_start"], req.tags["dagster/asset_partition_range_end"]) == (
        str(market_key("BTC/USDT", "2025-03-01")), str(market_key("BTC/USDT", "2025-04-01")))
    cursor = result.cursor
    with build_sensor_context(instance=instance, cursor=cursor,
                              resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        again = features_stale_sensor(ctx)
    assert not getattr(again, "run_requests", None)  # the same revision is not requested twice
    before = read_features(store.conn, "BTC/USDT", "15m", utc(2025, 4, 1), utc(2025, 5, 1))["obv"]
    r = materialize([features], instance=instance, resources={"market_db": MarketDB(database_url=dsn)},
                    tags=req.tags)  # what the sensor's run does: both months, one run
    assert r.success
    after = read_features(store.conn, "BTC/USDT", "15m", utc(2025, 4, 1), utc(2025, 5, 1))["obv"]
    assert np.allclose(after - before, row.volume[0] * 9) or np.allclose(before - after, row.volume[0] * 9)
    assert stale_months(store, BTC, "15m") == []


def test_live_update_of_one_new_candle_matches_a_full_recompute(run, store):
    run("2025-03-01")
    new = SyntheticSource(7).fetch(BTC, "15m", utc(2025, 4, 1), utc(2025, 4, 1, 0, 15))
    store.ingest_frame("BTC/USDT", "15m", new, "live")
    rows = update_latest(store, BTC, "15m")
    assert rows["ts"].to_list() == [utc(2025, 4, 1)]
    full = compute_features(to_polars(store.read_candles("BTC/USDT", "15m"), "BTC/USDT", "15m"))
    last = full.filter(pl.col("ts") == utc(2025, 4, 1))
    for c in ("rsi_14", "ema_200", "macd_hist_12_26_9", "obv", "ath", "bars_since_ath", "atr_14", "sma_200"):
        assert rows[c][0] == pytest.approx(last[c][0], rel=1e-9), c
    stored = read_features(store.conn, "BTC/USDT", "15m", utc(2025, 4, 1), None)
    assert len(stored) == 1 and stored["htf_ts"][0] == utc(2025, 3, 31, 23)  # the last closed hour


def test_export_writes_parquet_and_fills_what_is_missing(run, store, tmp_path):
    run("2025-03-01", assets=list(market_assets))  # candles only: no features stored yet
    out = tmp_path / "btc.parquet"
    summary = export(store, BTC, "1h", out)
    assert summary["recomputed_months"] == ["2025-03-01"] and summary["rows"] == 31 * 24
    df = pl.read_parquet(out)
    assert {"rsi_14", "macd_12_26_9", "bb_upper_20_2", "htf_rsi_14"} <= set(df.columns)
    assert not [c for c in df.columns if c.startswith("state_")]
    assert export(store, BTC, "1h", out)["recomputed_months"] == []


def test_a_gap_in_candles_is_reported_not_bridged(run, store):
    run("2025-03-01", assets=list(market_assets))
    store.conn.execute("DELETE FROM ohlcv WHERE timeframe = '15m' AND ts >= '2025-03-12 00:00+00' "
                       "AND ts < '2025-03-12 06:00+00'")
    md = feature_md(run("2025-03-01", assets=[features]))
    gap = md["gaps"]["BTC/USDT"]["15m"]
    assert gap["missing"] == 24 and gap["gaps"] == 1
    stored = read_features(store.conn, "BTC/USDT", "15m", utc(2025, 3, 12), utc(2025, 3, 12, 7))
    assert stored["ts"][0] == utc(2025, 3, 12, 6)  # no invented rows inside the gap
    assert md["rows"]["BTC/USDT"]["15m"] == 31 * 96 - 24


FEATURE_CHECK = ("rsi_14", "ema_200", "sma_200", "macd_hist_12_26_9", "atr_14", "obv", "ath", "ath_dist",
                 "bars_since_ath", "vol_60", "stoch_d_14_3", "max_rise_12", "volume_spike_48", "htf_rsi_14",
                 "htf_atr_14", "htf_ts")


def _same_as_full(store, month_start, month_end):
    """Stored features of every timeframe in the month equal the full computation from the first candle."""
    from trading_platform.features.pipeline import compute_series
    from trading_platform.features.spec import FeatureSpec

    full = compute_series(store, BTC, FeatureSpec(), month_end)
    for tf, ref in full.items():
        ref = ref.filter((pl.col("ts") >= month_start) & (pl.col("ts") < month_end))
        got = read_features(store.conn, "BTC/USDT", tf, month_start, month_end)
        assert got["ts"].to_list() == ref["ts"].to_list(), tf
        for c in FEATURE_CHECK:
            if c not in ref.columns:
                continue
            a, b = got[c].to_numpy(), ref[c].to_numpy()
            if c == "htf_ts":
                assert got[c].to_list() == ref[c].to_list(), (tf, c)
            else:
                np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-9, atol=1e-9, err_msg=f"{tf} {c}")


def test_a_month_continues_from_the_stored_state_and_equals_the_full_computation(run, store):
    for month in ("2025-01-01", "2025-02-01", "2025-03-01"):
        md = feature_md(run(month))
    # March read its own candles and a tail of max_window, not January and February
    assert md["mode"]["BTC/USDT"]["15m"] == md["mode"]["BTC/USDT"]["1h"] == "incremental"
    assert "warm-up" in md["mode"]["BTC/USDT"]["1d"]  # 59 daily candles: EMA 200 has no state yet
    march_15m = store.candle_stats("BTC/USDT", "15m", utc(2025, 3, 1), utc(2025, 4, 1))["rows"]
    assert march_15m < md["candles_read"]["BTC/USDT"]["15m"] <= march_15m + 202
    _same_as_full(store, utc(2025, 3, 1), utc(2025, 4, 1))
    # a correction of a January candle: February's state is stale, so February and March are recomputed
    row = store.read_candles("BTC/USDT", "15m", utc(2025, 1, 20), utc(2025, 1, 20, 0, 15))
    store.ingest_frame("BTC/USDT", "15m", row.to_frame().assign(volume=row.volume * 50, high=row.high * 1.3),
                       "correction")
    md = feature_md(run("2025-03-01", assets=[features]))
    assert md["mode"]["BTC/USDT"]["15m"].startswith("full: candles before it were revised")
    _same_as_full(store, utc(2025, 3, 1), utc(2025, 4, 1))
    feature_md(run("2025-02-01", assets=[features]))  # what the stale sensor requests
    md = feature_md(run("2025-03-01", assets=[features]))
    assert md["mode"]["BTC/USDT"]["15m"] == "incremental"  # February's state is fresh again
    _same_as_full(store, utc(2025, 3, 1), utc(2025, 4, 1))
    # asked for: the full computation, whatever the state
    md = feature_md(run("2025-03-01", assets=[features],
                        config={"ops": {"features": {"config": {"full_recompute": True}}}}))
    assert md["mode"]["BTC/USDT"]["1h"] == "full: full_recompute asked"

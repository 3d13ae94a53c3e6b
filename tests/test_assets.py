"""The OHLCV assets on real Dagster (materialize) against a real PostgreSQL store."""

from datetime import datetime, timezone

import pytest
from dagster import AssetKey, materialize

from conftest import utc
from trading_platform.assets.market_data import market_assets, ohlcv
from trading_platform.assets.partitions import market_key
from trading_platform.core.symbols import SymbolInfo
from trading_platform.resources import MarketDB, MarketSource
from trading_platform.sources.synthetic import SyntheticSource
from trading_platform.symbols import sync_partitions

BTC = SymbolInfo.create("BTC/USDT", timeframes=["5m", "1h", "1d"])
EUR = SymbolInfo.create("EURUSD=X", timeframes=["1h", "1d"])


@pytest.fixture
def market(store, instance, dsn):
    for info in (BTC, EUR):
        store.add_symbol(info)
    sync_partitions(instance, store)
    resources = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec="synthetic:7")}

    def run(symbol, month, assets=None, config=None, raise_on_error=True, **kw):
        return materialize(assets or market_assets, instance=instance, resources=resources,
                           partition_key=str(market_key(symbol, month)) if month else None,
                           raise_on_error=raise_on_error,
                           run_config=config, **kw)

    return run


def checks(result, asset="market/ohlcv"):
    return {c.check_name: c for c in result.get_asset_check_evaluations()
            if c.asset_key.to_user_string() == asset}


def md(result, asset="market/ohlcv"):
    ms = result.asset_materializations_for_node(asset.replace("/", "__"))
    assert ms, f"no materialization of {asset}"
    return {k: v.value for k, v in ms[0].metadata.items()}


def test_a_month_is_ingested_resampled_and_checked(market, store):
    r = market("BTC/USDT", "2025-03-01")
    assert r.success
    assert store.candle_stats("BTC/USDT", "5m")["rows"] == 31 * 288
    assert store.candle_stats("BTC/USDT", "1h")["rows"] == 31 * 24
    assert store.candle_stats("BTC/USDT", "1d")["rows"] == 31
    m = md(r)
    assert (m["inserted"], m["stored_rows"], m["rejected"]) == (31 * 288, 31 * 288, 0)
    assert m["first_ts"].startswith("2025-03-01T00:00") and m["last_ts"].startswith("2025-03-31T23:55")
    assert all(c.passed for c in checks(r).values()) and len(checks(r)) == 5
    assert all(c.passed for c in checks(r, "market/ohlcv_1h").values())
    assert md(r, "market/ohlcv_15m")["skipped_symbols"] == ["BTC/USDT"]  # 15m is not listed
    # 1h candles are exactly the aggregates of the stored 5m candles
    five = store.read_candles("BTC/USDT", "5m", utc(2025, 3, 10), utc(2025, 3, 10, 1))
    hour = store.read_candles("BTC/USDT", "1h", utc(2025, 3, 10), utc(2025, 3, 10, 1))
    assert (hour.open[0], hour.close[0], hour.high[0], hour.low[0]) == (
        five.open[0], five.close[-1], five.high.max(), five.low.min())


def test_rematerializing_is_idempotent_and_incremental(market, store):
    market("BTC/USDT", "2025-03-01", assets=[ohlcv])
    again = md(market("BTC/USDT", "2025-03-01", assets=[ohlcv]))
    assert (again["fetched_rows"], again["inserted"], again["stored_rows"]) == (0, 0, 31 * 288)
    refetch = md(market("BTC/USDT", "2025-03-01", assets=[ohlcv],
                        config={"ops": {"market__ohlcv": {"config": {"refetch": True}}}}))
    assert (refetch["inserted"], refetch["updated"], refetch["unchanged"]) == (0, 0, 31 * 288)
    n, distinct = store.conn.execute("SELECT count(*), count(DISTINCT (timeframe, ts)) FROM ohlcv").fetchone()
    assert n == distinct


def test_only_what_the_store_lacks_is_fetched(market, store):
    first_half = SyntheticSource(7).fetch(BTC, "5m", utc(2025, 4, 1), utc(2025, 4, 16))
    store.ingest_frame("BTC/USDT", "5m", first_half, "test")
    m = md(market("BTC/USDT", "2025-04-01", assets=[ohlcv]))
    assert m["fetched_rows"] == 15 * 288 and m["inserted"] == 15 * 288
    assert store.candle_stats("BTC/USDT", "5m")["rows"] == 30 * 288


def test_the_current_month_stores_closed_candles_only(market, store):
    now = datetime.now(timezone.utc)
    r = market("EURUSD=X", now.strftime("%Y-%m-01"), assets=[ohlcv])
    last = store.candle_stats("EURUSD=X", "1h")["last_ts"]
    if last is not None:  # (on the 1st of the month at a weekend there may be none yet)
        assert last.timestamp() + 3600 <= now.timestamp() + 1
    assert md(r)["rejected"] == 0


def test_a_partition_for_an_unknown_symbol_fails_with_its_name(market, instance):
    instance.add_dynamic_partitions("symbol", ["GHOST/USDT"])
    r = market("GHOST/USDT", "2025-03-01", assets=[ohlcv], raise_on_error=False)
    assert not r.success
    failure = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "GHOST/USDT" in str(failure.event_specific_data.error)
    assert "not in the symbols table" in str(failure.event_specific_data.error)


def test_checks_fail_on_inconsistent_candles_and_block_downstream(market, store):
    market("BTC/USDT", "2025-03-01", assets=[ohlcv])
    store.conn.execute("UPDATE ohlcv SET high = low * 0.5 WHERE ts = '2025-03-05 10:00+00'")
    r = market("BTC/USDT", "2025-03-01", raise_on_error=False)
    c = checks(r)
    assert not c["ohlc_consistent"].passed and c["ohlc_consistent"].severity.value == "ERROR"
    assert c["ohlc_consistent"].metadata["inconsistent"].value == 1
    assert c["no_duplicate_keys"].passed
    # the check is blocking: nothing downstream ran on the bad data
    assert not [m for m in r.get_asset_materialization_events() if m.asset_key == AssetKey(["market", "ohlcv_1h"])]


def test_duplicate_keys_are_caught_where_the_table_lacks_its_key(market, store):
    market("BTC/USDT", "2025-03-01", assets=[ohlcv])
    store.conn.execute("ALTER TABLE ohlcv DROP CONSTRAINT ohlcv_pkey")
    store.conn.execute("INSERT INTO ohlcv SELECT * FROM ohlcv WHERE ts = '2025-03-07 00:00+00'")
    c = checks(market("BTC/USDT", "2025-03-01", assets=[ohlcv], raise_on_error=False))
    assert not c["no_duplicate_keys"].passed and c["no_duplicate_keys"].metadata["duplicates"].value == 1


def test_gaps_warn_for_crypto_but_a_forex_weekend_passes(market, store):
    market("BTC/USDT", "2025-03-01", assets=[ohlcv])
    store.conn.execute("DELETE FROM ohlcv WHERE ts >= '2025-03-10 00:00+00' AND ts < '2025-03-10 02:00+00'")
    c = checks(market("BTC/USDT", "2025-03-01", assets=[ohlcv]))
    gap = c["no_unexpected_gaps"]
    assert not gap.passed and gap.severity.value == "WARN"
    assert gap.metadata["missing_candles"].value == 24 and gap.metadata["longest_gap_hours"].value == 2.08
    fx = checks(market("EURUSD=X", "2025-03-01", assets=[ohlcv]))
    assert fx["no_unexpected_gaps"].passed  # five weekends in March, none of them a gap


def test_freshness_is_checked_for_live_symbols_only(market, store):
    c = checks(market("BTC/USDT", "2025-03-01", assets=[ohlcv]))
    assert c["fresh_if_live"].passed and "not checked" in c["fresh_if_live"].metadata["note"].value
    store.update_symbol("BTC/USDT", live=True)
    c = checks(market("BTC/USDT", "2025-03-01", assets=[ohlcv]))
    assert not c["fresh_if_live"].passed and c["fresh_if_live"].severity.value == "WARN"


def test_a_backfill_covers_many_months_in_one_bounded_run(market, store):
    assert ohlcv.backfill_policy.max_partitions_per_run == 24
    r = market(None, None, assets=[ohlcv], tags={
        "dagster/asset_partition_range_start": str(market_key("BTC/USDT", "2025-01-01")),
        "dagster/asset_partition_range_end": str(market_key("BTC/USDT", "2025-03-01")),
    })
    assert r.success
    assert store.candle_stats("BTC/USDT", "5m")["rows"] == (31 + 28 + 31) * 288
    parts = {m.partition for m in r.asset_materializations_for_node("market__ohlcv")}
    assert parts == {str(market_key("BTC/USDT", m)) for m in ("2025-01-01", "2025-02-01", "2025-03-01")}
    assert md(r)["first_ts"].startswith("2025-01-01") and md(r)["last_ts"].startswith("2025-03-31")


def test_a_missing_first_candle_of_the_month_is_fetched(market, store):
    month = SyntheticSource(7).fetch(BTC, "5m", utc(2025, 4, 1), utc(2025, 5, 1))
    store.ingest_frame("BTC/USDT", "5m", month.iloc[1:], "test")  # everything but 00:00 on the 1st
    m = md(market("BTC/USDT", "2025-04-01", assets=[ohlcv]))
    assert (m["fetched_rows"], m["inserted"]) == (1, 1)
    assert store.candle_stats("BTC/USDT", "5m")["first_ts"] == utc(2025, 4, 1)


def test_a_resampled_bucket_with_a_hole_is_not_written_until_the_candle_arrives(market, store):
    from trading_platform.assets.market_data import resampled_assets

    one_h = next(a for a in resampled_assets if a.key == AssetKey(["market", "ohlcv_1h"]))
    five = SyntheticSource(7).fetch(BTC, "5m", utc(2025, 3, 1), utc(2025, 4, 1)).set_index("ts")
    hole = five.index == "2025-03-10 10:20+00:00"
    store.ingest_frame("BTC/USDT", "5m", five[~hole].reset_index(), "test")
    m = md(market("BTC/USDT", "2025-03-01", assets=[one_h]), "market/ohlcv_1h")
    assert m["incomplete_buckets"] == 1 and m["incomplete_first"] == {"BTC/USDT": "2025-03-10T10:00:00+00:00"}
    hours = store.read_candles("BTC/USDT", "1h", utc(2025, 3, 1), utc(2025, 4, 1)).to_frame().set_index("ts")
    assert len(hours) == 31 * 24 - 1 and utc(2025, 3, 10, 10) not in hours.index
    # the candle arrives: the next materialization writes the bucket, from all twelve candles
    store.ingest_frame("BTC/USDT", "5m", five[hole].reset_index(), "test")
    m = md(market("BTC/USDT", "2025-03-01", assets=[one_h]), "market/ohlcv_1h")
    assert (m["incomplete_buckets"], m["inserted"]) == (0, 1)
    bucket = store.read_candles("BTC/USDT", "1h", utc(2025, 3, 10, 10), utc(2025, 3, 10, 11))
    lower = five.loc["2025-03-10 10:00+00:00":"2025-03-10 10:55+00:00"]
    assert (bucket.high[0], bucket.low[0]) == (lower.high.max(), lower.low.min())
    assert bucket.volume[0] == pytest.approx(lower.volume.sum())


def test_an_exchange_holiday_is_not_a_gap(market, store, instance):
    aapl = SymbolInfo.create("AAPL", exchange="NASDAQ", timeframes=["1h", "1d"])
    store.add_symbol(aapl)
    sync_partitions(instance, store)
    # what a real feed gives: nothing on Independence Day, nothing after 13:00 New York the day before
    july = SyntheticSource(7).fetch(aapl, "1h", utc(2025, 7, 1), utc(2025, 8, 1))
    ts = july.ts
    real = july[~((ts.dt.day == 4) | ((ts.dt.day == 3) & (ts.dt.hour >= 17)))]
    store.ingest_frame("AAPL", "1h", real, "test")
    r = market("AAPL", "2025-07-01", assets=market_assets[:1] + [
        a for a in market_assets if a.key == AssetKey(["market", "ohlcv_1d"])])
    gap = checks(r)["no_unexpected_gaps"]
    assert gap.passed, gap.metadata
    assert md(r)["fetched_rows"] == 0  # the synthetic market is closed on the holiday too
    days = store.read_candles("AAPL", "1d", utc(2025, 7, 1), utc(2025, 8, 1)).to_frame()
    assert len(days) == 22 and utc(2025, 7, 4) not in set(days.ts)  # 23 weekdays, one holiday
    assert checks(r, "market/ohlcv_1d")["no_unexpected_gaps"].passed


def _candle_table(conn, table, rows, extra_col=None):
    cols = "symbol text, ts timestamptz, open float8, high float8, low float8, close float8, volume float8"
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols}{', ' + extra_col + ' text' if extra_col else ''})")
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def test_the_postgres_source_reads_the_requested_timeframe(store, instance, dsn):
    import psycopg

    store.add_symbol(BTC)  # base timeframe 5m
    sync_partitions(instance, store)
    five = SyntheticSource(7).fetch(BTC, "5m", utc(2025, 3, 1), utc(2025, 3, 3))
    hour = SyntheticSource(7).fetch(BTC, "1h", utc(2025, 3, 1), utc(2025, 3, 3))

    def rows(df, *extra):
        return [("BTC/USDT", *r, *extra) for r in df.itertuples(index=False)]

    with psycopg.connect(dsn, autocommit=True) as conn:  # another system's tables, in a schema of their own
        conn.execute("CREATE SCHEMA feed")
        _candle_table(conn, "feed.ohlcv_5m", rows(five))
        _candle_table(conn, "feed.ohlcv_1h", rows(hour))
        _candle_table(conn, "feed.candles", rows(five, "5m") + rows(hour, "1h"), extra_col="tf")

    for spec in ("postgres:feed.ohlcv_{timeframe}", "postgres:feed.candles?timeframe_column=tf"):
        store.conn.execute("DELETE FROM ohlcv")
        r = materialize([ohlcv], instance=instance, partition_key=str(market_key("BTC/USDT", "2025-03-01")),
                        resources={"market_db": MarketDB(database_url=dsn),
                                   "market_source": MarketSource(spec=spec, source_dsn=dsn)})
        assert md(r)["fetched_rows"] == 2 * 288, spec
        stored = store.read_candles("BTC/USDT", "5m").to_frame()
        assert len(stored) == 2 * 288 and stored.close.tolist() == five.close.tolist()
    # a table named for one timeframe serves only that one, and says so
    r = materialize([ohlcv], instance=instance, partition_key=str(market_key("BTC/USDT", "2025-04-01")),
                    resources={"market_db": MarketDB(database_url=dsn),
                               "market_source": MarketSource(spec="postgres:feed.ohlcv_1h", source_dsn=dsn)},
                    raise_on_error=False)
    failure = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "holds 1h candles, not 5m" in str(failure.event_specific_data.error)
    assert store.candle_stats("BTC/USDT", "5m", utc(2025, 4, 1))["rows"] == 0


def test_a_file_is_parsed_once_per_load(store, instance, dsn, tmp_path, monkeypatch):
    import trading_platform.sources.files as files

    store.add_symbol(BTC)
    sync_partitions(instance, store)
    SyntheticSource(7).fetch(BTC, "5m", utc(2025, 1, 1), utc(2025, 4, 1)).to_csv(
        tmp_path / "BTC-USDT_5m.csv", index=False)
    reads = []
    real = files.read_ohlcv_file
    monkeypatch.setattr(files, "read_ohlcv_file", lambda p: reads.append(p) or real(p))
    r = materialize([ohlcv], instance=instance,
                    resources={"market_db": MarketDB(database_url=dsn),
                               "market_source": MarketSource(spec=f"files:{tmp_path}")},
                    tags={"dagster/asset_partition_range_start": str(market_key("BTC/USDT", "2025-01-01")),
                          "dagster/asset_partition_range_end": str(market_key("BTC/USDT", "2025-03-01"))})
    assert md(r)["inserted"] == (31 + 28 + 31) * 288
    assert len(reads) == 1  # three months, one parse


def test_until_stops_the_fetch_at_a_time_and_a_bad_one_is_named(store, instance, dsn):
    """`market/ohlcv`'s `until` (what tp demo pins its sample with): nothing after it is fetched, whatever the
    month's end; a value that is not a time fails the run naming it."""
    store.add_symbol(BTC)
    sync_partitions(instance, store)
    res = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec="synthetic:7")}
    key = str(market_key("BTC/USDT", "2025-03-01"))
    r = materialize([ohlcv], instance=instance, partition_key=key, resources=res,
                    run_config={"ops": {"market__ohlcv": {"config": {"until": "2025-03-10T06:00:00Z"}}}})
    assert r.success
    st = store.candle_stats("BTC/USDT", "5m")
    assert st["last_ts"] == utc(2025, 3, 10, 5, 55) and st["rows"] == (9 * 24 + 6) * 12
    bad = materialize([ohlcv], instance=instance, partition_key=key, resources=res, raise_on_error=False,
                      run_config={"ops": {"market__ohlcv": {"config": {"until": "yesterday-ish"}}}})
    failure = [e for e in bad.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "until 'yesterday-ish' is not a date or time" in str(failure.event_specific_data.error)

"""The symbols -> partitions sensor and the ingestion schedule, on a real instance."""

from datetime import datetime, timezone

from dagster import (
    DagsterInstance,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from trading_platform.assets.partitions import market_key
from trading_platform.core.symbols import SymbolInfo
from trading_platform.resources import MarketDB
from trading_platform.sensors.market_data import cycle_schedules, market_data_hourly, symbol_partitions_sensor
from trading_platform.symbols import Symbols


def test_sensor_adds_and_removes_partitions_to_match_the_table(store, dsn, instance: DagsterInstance):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    store.add_symbol(SymbolInfo.create("EURUSD=X"))
    instance.add_dynamic_partitions("symbol", ["OLD/USDT"])
    with build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        result = symbol_partitions_sensor(ctx)
    reqs = {type(r).__name__: sorted(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert reqs == {"AddDynamicPartitionsRequest": ["BTC/USDT", "EURUSD=X"],
                    "DeleteDynamicPartitionsRequest": ["OLD/USDT"]}
    assert result.cursor


def test_sensor_keeps_the_strategy_partitions_equal_to_the_strategies_table(store, dsn, instance):
    """A strategy stored straight in SQL (or by another process) gets its paper_backtest partition."""
    from trading_platform.paper.spec import parse
    from trading_platform.store.paper import save_strategy

    save_strategy(store.conn, parse({"name": "trend", "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}],
                                     "cash": 1000, "rules": {"signal": {"model": "signal_lgbm", "min": 0.6}}}))
    instance.add_dynamic_partitions("strategy", ["gone"])
    with build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        result = symbol_partitions_sensor(ctx)
    reqs = {(type(r).__name__, r.partitions_def_name): sorted(r.partition_keys)
            for r in result.dynamic_partitions_requests}
    assert reqs == {("AddDynamicPartitionsRequest", "strategy"): ["trend"],
                    ("DeleteDynamicPartitionsRequest", "strategy"): ["gone"]}


def test_sensor_tick_applies_requests_and_then_skips(store, dsn, instance):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    with build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        data = symbol_partitions_sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    assert instance.get_dynamic_partitions("symbol") == ["BTC/USDT"]
    with build_sensor_context(instance=instance, cursor=data.cursor,
                              resources={"market_db": MarketDB(database_url=dsn)}) as ctx2:
        again = symbol_partitions_sensor.evaluate_tick(ctx2)
    assert not again.dynamic_partitions_requests and again.skip_message.startswith("1 symbols")


def test_api_changes_reach_the_partitions_without_a_restart(store, instance):
    api = Symbols(store, instance)
    api.add("SOL/USDT", timeframes=["5m"])
    assert "SOL/USDT" in instance.get_dynamic_partitions("symbol")
    api.remove("SOL/USDT")
    assert "SOL/USDT" not in instance.get_dynamic_partitions("symbol")


def test_schedule_targets_the_current_month_of_enabled_symbols(store, dsn):
    with instance_for_test() as instance:
        _schedule_case(store, dsn, instance)


def _schedule_case(store, dsn, instance):
    api = Symbols(store, instance)
    api.add("BTC/USDT")
    api.add("ETH/USDT", enabled=False)
    when = datetime(2026, 5, 17, 10, 5, tzinfo=timezone.utc)
    with build_schedule_context(instance=instance, scheduled_execution_time=when,
                                resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        [req] = list(market_data_hourly(ctx))
    assert _range(req) == (str(market_key("BTC/USDT", "2026-05-01")),) * 2  # the disabled ETH is not in it
    assert req.run_key.startswith("2026-05-01|BTC/USDT..BTC/USDT|")


def _range(req):
    return req.tags["dagster/asset_partition_range_start"], req.tags["dagster/asset_partition_range_end"]


def test_the_hourly_schedule_batches_symbols_by_work_not_one_run_each(store, dsn, monkeypatch):
    """120 hourly symbols: 3 runs of at most 50 (ceil(120 / 50)); a 5m symbol gets its own run from the 5m
    cycle, whose assets are exactly the timeframes it lists; a disabled one is in none."""
    import math

    from dagster import AssetKey

    with instance_for_test() as instance:
        api = Symbols(store, instance)
        names = [f"S{i:03d}/USDT" for i in range(120)]
        for n in names:
            api.add(n, timeframes=["1h", "4h", "1d"])
        api.add("FIVE/USDT", timeframes=["5m", "15m", "1h"])
        api.add("OFF/USDT", timeframes=["1h", "4h", "1d"], enabled=False)
        when = datetime(2026, 5, 17, 10, 5, tzinfo=timezone.utc)
        with build_schedule_context(instance=instance, scheduled_execution_time=when,
                                    resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
            hourly = list(market_data_hourly(ctx))
        assert all(AssetKey(["market", "ohlcv_4h"]) in r.asset_selection for r in hourly)
        assert len(hourly) == math.ceil(120 / 50)
        from dagster import PartitionKeyRange

        from trading_platform.assets.partitions import market_partitions

        covered = []
        for r in hourly:
            covered += [k.keys_by_dimension["symbol"] for k in market_partitions.get_partition_keys_in_range(
                PartitionKeyRange(*_range(r)), dynamic_partitions_store=instance)]
        assert sorted(covered) == names  # every enabled symbol once, in <= 50-symbol runs; OFF/USDT in none
        [five] = list(next(c for c in cycle_schedules if c.name == "market_data_5m")(ctx))  # its own cycle
        assert _range(five) == (str(market_key("FIVE/USDT", "2026-05-01")),) * 2
        assert {k.to_user_string() for k in five.asset_selection} == {
            "market/ohlcv", "market/ohlcv_15m", "market/ohlcv_1h", "features", "predictions", "forecasts", "patterns"}
        monkeypatch.setenv("TP_SYMBOLS_PER_RUN", "200")
        assert len(list(market_data_hourly(ctx))) == 1
        monkeypatch.setenv("TP_SYMBOLS_PER_RUN", "zero")
        import pytest

        with pytest.raises(Exception, match="TP_SYMBOLS_PER_RUN"):
            list(market_data_hourly(ctx))

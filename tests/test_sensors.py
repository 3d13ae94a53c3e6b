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
from trading_platform.sensors.market_data import market_data_hourly, symbol_partitions_sensor
from trading_platform.symbols import Symbols


def test_sensor_adds_and_removes_partitions_to_match_the_table(store, dsn, instance: DagsterInstance):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    store.add_symbol(SymbolInfo.create("EURUSD=X"))
    instance.add_dynamic_partitions("symbol", ["OLD/USDT"])
    ctx = build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)})
    result = symbol_partitions_sensor(ctx)
    reqs = {type(r).__name__: sorted(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert reqs == {"AddDynamicPartitionsRequest": ["BTC/USDT", "EURUSD=X"],
                    "DeleteDynamicPartitionsRequest": ["OLD/USDT"]}
    assert result.cursor


def test_sensor_tick_applies_requests_and_then_skips(store, dsn, instance):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    ctx = build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)})
    data = symbol_partitions_sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    assert instance.get_dynamic_partitions("symbol") == ["BTC/USDT"]
    ctx2 = build_sensor_context(instance=instance, cursor=data.cursor,
                                resources={"market_db": MarketDB(database_url=dsn)})
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
    ctx = build_schedule_context(instance=instance, scheduled_execution_time=when,
                                 resources={"market_db": MarketDB(database_url=dsn)})
    reqs = list(market_data_hourly(ctx))
    assert [r.partition_key for r in reqs] == [str(market_key("BTC/USDT", "2026-05-01"))]
    assert reqs[0].run_key.startswith("BTC/USDT|2026-05-01|")

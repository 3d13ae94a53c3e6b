"""The partitioned model outputs, backfills with pinned versions, in-sample flags, the
per-timeframe schedules and the weekly retraining, on real Dagster, MLflow and PostgreSQL."""

from datetime import datetime, timezone

import psycopg
import pytest
from dagster import build_schedule_context, instance_for_test, materialize

from trading_platform.assets.models import predictions, pump_xgb, regime_hmm, signal_lgbm
from trading_platform.assets.partitions import market_key
from trading_platform.models.registry import promote
from trading_platform.resources import MarketDB

ANY_BASELINE = {"min_improvement_auc": -1.0, "min_improvement_log_loss": -1.0}
PUMP = {"n_estimators": 30, "rise": 0.01, **ANY_BASELINE}


def md(result, node):
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def _rows(dsn, where=""):
    with psycopg.connect(dsn) as c:
        return sorted(c.execute(
            "SELECT model_name, model_version, symbol, timeframe, ts, value, label, in_sample FROM predictions "
            f"WHERE symbol = 'BTC/USDT' {where}").fetchall())


def test_a_chunked_backfill_gives_each_partitions_rows_and_pins_its_versions(model_env, model_market):
    run, res, dsn = model_env
    _, instance = model_market
    client = res["mlflow"].client()
    run(pump_xgb, PUMP)  # champion v1 (the baselines are taken out of this decision)
    run(regime_hmm, {"n_iter": 5}, partition_key="BTC/USDT")
    promote(client, "regime_hmm.BTC_USDT", "1")
    feb, mar = (str(market_key("BTC/USDT", m)) for m in ("2025-02-01", "2025-03-01"))
    # each partition on its own...
    for key in (feb, mar):
        run(predictions, partition_key=key)
    alone = _rows(dsn)
    assert {r[0] for r in alone} == {"pump_xgb", "regime_hmm.BTC_USDT"}
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM predictions")
        c.execute("DELETE FROM output_series WHERE output_table = 'predictions'")
    # ...and the two months in one chunk of a backfill: the same rows, to the last bit
    chunk = materialize([predictions], instance=instance, resources=res, tags={
        "dagster/asset_partition_range_start": feb, "dagster/asset_partition_range_end": mar,
        "dagster/backfill": "bf-test"})
    assert _rows(dsn) == alone
    assert md(chunk, "predictions")["versions"] == {"pump_xgb": {"champion": "1"},
                                                    "regime_hmm.BTC_USDT": {"champion": "1"}}
    # a new champion mid-backfill: the backfill's later chunks keep its pinned versions, other runs move on
    run(pump_xgb, {**PUMP, "n_estimators": 40, "min_improvement_vs_champion": -1.0})
    assert str(client.get_model_version_by_alias("pump_xgb", "champion").version) == "2"
    apr = str(market_key("BTC/USDT", "2025-04-01"))
    later = materialize([predictions], instance=instance, resources=res, partition_key=apr,
                        tags={"dagster/backfill": "bf-test"})
    assert md(later, "predictions")["versions"]["pump_xgb"] == {"champion": "1"}
    assert {r[1] for r in _rows(dsn, "AND model_name = 'pump_xgb'")} == {"1"}
    fresh = md(run(predictions, partition_key=apr), "predictions")
    assert fresh["versions"]["pump_xgb"] == {"champion": "2"}
    # in_sample: exactly the rows inside the version's own training window
    end = datetime.fromisoformat(client.get_model_version("pump_xgb", "1").tags["tp.train_data_end"].replace(
        "Z", "+00:00"))
    flags = [(r[4] <= end, r[7]) for r in _rows(dsn, "AND model_name = 'pump_xgb' AND model_version = '1'")]
    assert {f for f in flags} == {(True, True), (False, False)}  # February in, April out


def test_each_base_timeframe_has_its_cycle_and_the_runs_include_the_outputs(store, dsn):
    from trading_platform.sensors.market_data import cycle_schedules
    from trading_platform.symbols import Symbols

    by_name = {s.name: s for s in cycle_schedules}
    assert {"market_data_5m", "market_data_15m", "market_data_hourly", "market_data_daily"} <= set(by_name)
    assert by_name["market_data_5m"].cron_schedule == "1-59/5 * * * *"
    with instance_for_test() as instance:
        api = Symbols(store, instance)
        api.add("BTC/USDT", timeframes=["5m", "1h"])
        api.add("EURUSD=X", timeframes=["1h", "4h"])
        when = datetime(2026, 5, 17, 10, 5, tzinfo=timezone.utc)
        with build_schedule_context(instance=instance, scheduled_execution_time=when,
                                    resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
            [five] = by_name["market_data_5m"](ctx)
            [hour] = by_name["market_data_hourly"](ctx)
        assert five.tags["dagster/asset_partition_range_start"] == str(market_key("BTC/USDT", "2026-05-01"))
        assert hour.tags["dagster/asset_partition_range_start"] == str(market_key("EURUSD=X", "2026-05-01"))
        assert {k.to_user_string() for k in five.asset_selection} == {
            "market/ohlcv", "market/ohlcv_1h", "features", "predictions", "forecasts", "patterns"}
        assert five.tags["tp/run_kind"] == "schedule"


def test_the_weekly_retraining_trains_every_symbol_in_one_run(model_env, model_market):
    from trading_platform.sensors.models import weekly_symbol_retraining

    run, res, dsn = model_env
    _, instance = model_market
    when = datetime(2026, 5, 17, 3, tzinfo=timezone.utc)
    with instance_for_test() as schedule_instance:  # a schedule needs an instance it can reach from its ticks
        schedule_instance.add_dynamic_partitions("symbol", instance.get_dynamic_partitions("symbol"))
        with build_schedule_context(instance=schedule_instance, scheduled_execution_time=when,
                                    resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
            [req] = weekly_symbol_retraining(ctx)
        assert (req.tags["dagster/asset_partition_range_start"], req.tags["dagster/asset_partition_range_end"]) == (
            "BTC/USDT", "ETH/USDT")
        r = materialize([regime_hmm, signal_lgbm], instance=instance, resources=res, tags=req.tags,
                        run_config={"ops": {"models__regime_hmm": {"config": {"n_iter": 5}},
                                            "models__signal_lgbm": {"config": {"n_estimators": 20}}}})
    assert r.success
    client = res["mlflow"].client()
    for name in ("regime_hmm.BTC_USDT", "regime_hmm.ETH_USDT", "signal_lgbm.BTC_USDT", "signal_lgbm.ETH_USDT"):
        assert client.get_registered_model(name).name == name
    assert set(md(r, "models__regime_hmm")["models"]) == {"BTC/USDT", "ETH/USDT"}


def test_tp_backfill_creates_an_asset_backfill_with_pinned_versions(model_env, model_market):
    from trading_platform.backfill import create_backfill
    from trading_platform.errors import InvalidInput
    from trading_platform.store.db import connect

    run, res, dsn = model_env
    _, instance = model_market
    client = res["mlflow"].client()
    run(pump_xgb, PUMP)
    with connect(dsn) as store:
        out = create_backfill(instance, store, client, "BTC/USDT", datetime(2025, 2, 10).date(),
                              datetime(2025, 4, 2).date())
        with pytest.raises(InvalidInput, match="before"):
            create_backfill(instance, store, client, "BTC/USDT", datetime(2025, 4, 2).date(),
                            datetime(2025, 2, 1).date())
    assert out["months"] == ["2025-02", "2025-03", "2025-04"] and out["pinned"] == {"pump_xgb": {"champion": "1"}}
    backfill = instance.get_backfill(out["backfill_id"])
    assert backfill.tags["tp/run_kind"] == "backfill"
    assert {k.to_user_string() for k in backfill.asset_selection} == {"predictions", "forecasts", "patterns"}
    target = backfill.asset_backfill_data.target_subset
    keys = {str(k.partition_key) for k in target.iterate_asset_partitions()}
    assert keys == {str(market_key("BTC/USDT", m)) for m in ("2025-02-01", "2025-03-01", "2025-04-01")}
    with psycopg.connect(dsn) as c:  # pinned at creation: every chunk will read these
        pins = c.execute("SELECT model_name, role, model_version FROM prediction_pins WHERE pin_key = %s",
                         (out["backfill_id"],)).fetchall()
    assert pins == [("pump_xgb", "champion", "1")]

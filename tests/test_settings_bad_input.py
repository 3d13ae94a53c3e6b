"""Bad settings and a bad sensor cursor, against real PostgreSQL and real Dagster: a number setting that is not
finite (nan, inf, 1e400) or out of its bounds is refused naming its variable before any work, and a cursor that
cannot be read is reset with a warning instead of failing every tick of the live sensor."""

import json
import time

import pandas as pd
import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, materialize

from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import InvalidInput
from trading_platform.resources import MarketDB
from trading_platform.sensors.live import live_predictions_sensor
from test_live import empty_registry, live_env  # noqa: F401 (fixtures)

NOT_FINITE = ("nan", "inf", "-inf", "1e400")


def refused(fn, name):
    with pytest.raises(InvalidInput) as e:
        fn()
    assert e.value.field == name and name in e.value.message
    return e.value


# ---- the live sensor's cursor ----------------------------------------------------------------------
@pytest.fixture
def live_sensor(store, dsn, empty_registry, live_env):
    live_env.delenv("TP_LIVE_RETENTION_H", raising=False)
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))
    with instance_for_test() as instance:
        yield store, instance, {"market_db": MarketDB(database_url=dsn), "mlflow": empty_registry}


def tick(instance, resources, cursor=None):
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        return live_predictions_sensor(ctx)


def candle(ts):
    return pd.DataFrame({"ts": pd.to_datetime([ts], utc=True), "open": 100.0, "high": 101.0, "low": 99.0,
                         "close": 100.0, "volume": 10.0})


def test_a_cursor_that_cannot_be_read_is_reset_and_the_tick_goes_on(live_sensor):
    store, instance, res = live_sensor
    # an event is pending: a garbage cursor must not keep it from its batch
    [event] = store.write_live("BTC/USDT", "5m", candle("2025-01-01")).events
    first = tick(instance, res, "hello I edited this")
    assert [r.run_key for r in first.run_requests] == ["batch-1-attempt-1"]
    assert first.run_requests[0].run_config["ops"]["predict_live_events"]["config"]["event_ids"] == [event]
    # whatever the cursor holds, the tick answers and writes a cursor it can read next time
    for raw in ("[]", "5", "null", '"text"', "{", '{"pruned_at": "yesterday"}', '{"pruned_at": null}',
                '{"pruned_at": NaN, "champions_at": [1]}', '{"pruned_at": 1e300, "champions_at": true}',
                "[" * 100_000):
        before = time.time()
        got = tick(instance, res, raw)
        assert not got.run_requests and got.skip_reason.skip_message == "no live event pending", raw
        cursor = json.loads(got.cursor)
        # reset, so the pruning and the registry read were done now (a time in the far future would put them off)
        assert before <= cursor["pruned_at"] <= time.time() and before <= cursor["champions_at"] <= time.time(), raw
    # a good field is kept, a bad one beside it reset
    recent = time.time() - 10
    got = tick(instance, res, json.dumps({"pruned_at": recent, "champions_at": "soon"}))
    cursor = json.loads(got.cursor)
    assert cursor["pruned_at"] == recent and cursor["champions_at"] > recent


def test_an_infinite_live_retention_is_refused_before_the_tick_does_anything(live_sensor, monkeypatch):
    store, instance, res = live_sensor
    store.write_live("BTC/USDT", "5m", candle("2025-01-01"))
    for raw in ("inf", "nan", "1e400", "1e9"):
        monkeypatch.setenv("TP_LIVE_RETENTION_H", raw)
        refused(lambda: tick(instance, res), "TP_LIVE_RETENTION_H")
    # nothing claimed meanwhile
    assert store.conn.execute("SELECT count(*) FROM market_event_queue WHERE status = 'pending'").fetchone()[0] >= 1
    assert store.conn.execute("SELECT count(*) FROM live_batches").fetchone()[0] == 0


# ---- live and collector settings -------------------------------------------------------------------
LIVE = {  # variable -> (a value too large, the largest accepted)
    "TP_LIVE_WAIT_S": ("31", "30"),  # well under Dagster's 60 s sensor timeout
    "TP_LIVE_POLL_S": ("1e6", "30"),
    "TP_LIVE_RETRY_AFTER_S": ("1e9", "86400"),
    "TP_LIVE_MAX_RUNTIME_S": ("1e9", "86400"),
    "TP_LIVE_RETENTION_H": ("1e9", "876000"),
    "TP_LIVE_BATCH_MAX": ("100000000", "100000"),
    "TP_LIVE_MAX_RUNS": ("100000", "1000"),
}
COLLECT = {
    "TP_COLLECT_GRACE_S": ("1e9", "3600"),
    "TP_COLLECT_REFRESH_S": ("1e9", "3600"),
    "TP_COLLECT_POLL_S": ("1e9", "3600"),
    "TP_COLLECT_HEAL_MAX": ("10000000000", "1000000"),
    "TP_COLLECT_STREAMS_PER_CONNECTION": ("10000000", "10000"),
}


@pytest.mark.parametrize("table", ["live", "collector"])
def test_live_and_collector_numbers_are_finite_and_bounded(monkeypatch, table):
    from trading_platform.live.collector import collector_settings
    from trading_platform.live.settings import live_settings

    read, names = (live_settings, LIVE) if table == "live" else (collector_settings, COLLECT)
    for name in (*LIVE, *COLLECT):
        monkeypatch.delenv(name, raising=False)
    for name, (too_large, largest) in names.items():
        for raw in (*NOT_FINITE, too_large, "-1", "x"):
            monkeypatch.setenv(name, raw)
            assert repr(raw) in refused(read, name).message
        monkeypatch.setenv(name, largest)
        read()
        monkeypatch.delenv(name)
    monkeypatch.setenv("TP_LIVE_WAIT_S", "1e6")  # the tick would never return
    refused(live_settings, "TP_LIVE_WAIT_S")


# ---- retentions in days ----------------------------------------------------------------------------
RETENTIONS = ("TP_RUN_RETENTION_DAYS", "TP_SUPERSEDED_RETENTION_DAYS", "TP_ALERT_DELIVERY_RETENTION_DAYS")


def _readers():
    from trading_platform.alerts import delivery
    from trading_platform.maintenance import retention_days
    from trading_platform.store.outputs import superseded_retention_days

    return dict(zip(RETENTIONS, (retention_days, superseded_retention_days, delivery.retention_days)))


def test_retentions_in_days_are_finite_and_at_most_a_century(monkeypatch):
    for name, read in _readers().items():
        for raw in (*NOT_FINITE, "1e10", "1e300", "36501", "0.5", "x"):
            monkeypatch.setenv(name, raw)
            refused(read, name)
        monkeypatch.setenv(name, "36500")
        assert read() == 36500


def test_a_bad_retention_is_refused_where_it_is_used(store, monkeypatch):
    from trading_platform.alerts import delivery
    from trading_platform.maintenance import purge_runs
    from trading_platform.store.outputs import compact_superseded

    with DagsterInstance.ephemeral() as instance:
        for raw in ("nan", "1e10"):
            monkeypatch.setenv("TP_RUN_RETENTION_DAYS", raw)
            refused(lambda: purge_runs(instance), "TP_RUN_RETENTION_DAYS")
    for days in (float("inf"), 1e10, float("nan")):
        refused(lambda: compact_superseded(store.conn, days), "TP_SUPERSEDED_RETENTION_DAYS")
    for raw in ("inf", "1e300"):
        monkeypatch.setenv("TP_ALERT_DELIVERY_RETENTION_DAYS", raw)
        refused(lambda: delivery.prune(store.conn), "TP_ALERT_DELIVERY_RETENTION_DAYS")
    monkeypatch.setenv("TP_ALERT_DELIVERY_RETENTION_DAYS", "36500")
    assert delivery.prune(store.conn) == 0


# ---- the alerts asset's backlog warning ------------------------------------------------------------
def test_a_bad_backlog_warning_fails_the_alerts_run_naming_it(store, dsn, monkeypatch):
    from trading_platform.assets.alerts import alerts_asset

    with DagsterInstance.ephemeral() as instance:
        for raw in ("abc", "nan", "-5"):
            monkeypatch.setenv("TP_ALERT_BACKLOG_WARN_S", raw)
            result = materialize([alerts_asset], instance=instance, raise_on_error=False,
                                 resources={"market_db": MarketDB(database_url=dsn)})
            assert not result.success
            [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            error = failure.event_specific_data.error
            error = error.cause or error
            assert error.cls_name == "InvalidInput" and f"TP_ALERT_BACKLOG_WARN_S={raw!r}" in error.message, raw


# ---- the embedding batch ---------------------------------------------------------------------------
def test_a_bad_embedding_batch_is_refused_before_the_model_loads(monkeypatch, tmp_path):
    from trading_platform.rag.embed import Embedder, get_embedder

    missing = str(tmp_path / "no-such-model")  # never loaded: the batch size is refused first
    for raw in ("abc", "1.5", "0", "-3", "nan", "1e400", "100000000"):
        monkeypatch.setenv("TP_EMBED_BATCH", raw)
        refused(lambda: Embedder(missing, "cpu"), "TP_EMBED_BATCH")
        refused(lambda: get_embedder(missing, "cpu"), "TP_EMBED_BATCH")
    from trading_platform.rag.settings import embed_batch

    monkeypatch.setenv("TP_EMBED_BATCH", "128")
    assert embed_batch() == 128
    monkeypatch.delenv("TP_EMBED_BATCH")
    assert embed_batch() == 64

"""The live path against real PostgreSQL, a real Dagster instance and a real MLflow store: the outbox
written with the candle, NOTIFY as a wake-up only, claims by processing state, bounded batches, re-requests
under new keys, exactly-once done marks, and predictions for the event's candle."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pandas as pd
import psycopg
import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, materialize

from trading_platform.core.symbols import SymbolInfo
from trading_platform.live import outbox
from trading_platform.live.feed import next_closed
from trading_platform.resources import MarketDB, MLflowResource, ModelServer
from trading_platform.sensors.live import live_predictions_job, live_predictions_sensor
from trading_platform.sources.synthetic import SyntheticSource
from trading_platform.store.db import connect

from conftest import copy_database, drop_database, utc

FAST = {"TP_LIVE_WAIT_S": "0", "TP_LIVE_POLL_S": "0.1"}


@pytest.fixture
def live_env(monkeypatch):
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TP_LIVE_MAX_RUNS", raising=False)
    monkeypatch.delenv("TP_LIVE_LISTEN", raising=False)
    monkeypatch.delenv("TP_LIVE_BATCH_MAX", raising=False)
    monkeypatch.delenv("TP_LIVE_RETRY_AFTER_S", raising=False)
    return monkeypatch


def candles(start, n, tf_min=5, price=100.0):
    ts = pd.date_range(start, periods=n, freq=f"{tf_min}min", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": price, "high": price * 1.01, "low": price * 0.99, "close": price,
                         "volume": 10.0})


def events(dsn):
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT e.id, e.symbol, e.timeframe, e.ts, e.change, q.status, q.batch_id "
                         "FROM market_events e JOIN market_event_queue q ON q.event_id = e.id ORDER BY e.id").fetchall()


# ---- the outbox --------------------------------------------------------------------------------
def test_a_live_write_records_its_event_and_notifies_a_historical_load_does_not(store, dsn):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))
    store.add_symbol(SymbolInfo.create("ETH/USDT", timeframes=["5m"]))  # not live
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute(f"LISTEN {outbox.CHANNEL}")
    # a year of history through the bulk path: candles stored, no event, no notification
    hist = candles("2024-01-01", 1000)
    store.ingest_frame("BTC/USDT", "5m", hist, source="file")
    assert store.candle_stats("BTC/USDT", "5m")["rows"] == 1000
    assert events(dsn) == [] and list(listener.notifies(timeout=0.3)) == []
    # live writes: each candle with its event in the same transaction, and a NOTIFY
    r = store.write_live("BTC/USDT", "5m", candles("2025-01-01", 2))
    assert (r.inserted, len(r.events)) == (2, 2)
    got = events(dsn)
    assert [(g[1], g[3], g[4], g[5]) for g in got] == [("BTC/USDT", utc(2025, 1, 1), "inserted", "pending"),
                                                      ("BTC/USDT", utc(2025, 1, 1, 0, 5), "inserted", "pending")]
    assert sorted(int(n.payload) for n in listener.notifies(timeout=1, stop_after=2)) == r.events
    # the same candle again: unchanged and already seen, no new event; a corrected one: an event
    assert store.write_live("BTC/USDT", "5m", candles("2025-01-01", 1)).events == []
    fixed = store.write_live("BTC/USDT", "5m", candles("2025-01-01", 1, price=101.0))
    assert fixed.updated == 1 and len(fixed.events) == 1 and events(dsn)[-1][4] == "updated"
    # a candle the bulk path stored but the live path never saw: an event (the live path predicts it)
    seen = store.write_live("BTC/USDT", "5m", hist.iloc[-1:])
    assert seen.unchanged == 1 and len(seen.events) == 1
    # a symbol that is not live: the candle is stored, no event
    assert store.write_live("ETH/USDT", "5m", candles("2025-01-01", 1)).inserted == 1
    assert len(events(dsn)) == 4
    assert len(list(listener.notifies(timeout=0.5, stop_after=2))) == 2  # the correction's and the unseen one's
    # an external writer through the documented function, in its own transaction: event and NOTIFY at commit
    with psycopg.connect(dsn) as ext:
        out = ext.execute("SELECT * FROM tp_live_candle('BTC/USDT', '5m', '2025-01-01 00:10+00', 100, 101, 99, "
                          "100, 5, 'poller')").fetchone()
        assert out[0] == "inserted" and out[1] is not None
        assert list(listener.notifies(timeout=0.3)) == []  # not before the commit
    assert [int(n.payload) for n in listener.notifies(timeout=1, stop_after=1)] == [out[1]]
    # rolled back: neither the candle nor its event
    with psycopg.connect(dsn) as ext:
        ext.execute("SELECT * FROM tp_live_candle('BTC/USDT', '5m', '2025-01-01 00:15+00', 100, 101, 99, 100, 5)")
        ext.rollback()
    assert len(events(dsn)) == 5 and store.candle_stats("BTC/USDT", "5m")["rows"] == 1003
    listener.close()


def test_a_candle_for_a_symbol_not_in_symbols_is_quarantined_with_its_reason(store, dsn):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m", "1h"], live=True))
    r = store.write_live("DOGE/USDT", "5m", candles("2025-01-01", 2))
    assert (r.inserted, r.rejected, r.events) == (0, 2, [])
    with psycopg.connect(dsn) as ext:
        bad = [ext.execute(f"SELECT outcome, event_id FROM tp_live_candle({args})").fetchone() for args in (
            "'XRP/USDT', '5m', '2025-01-01', 1, 2, 0.5, 1, 1",           # not in symbols
            "'BTC/USDT', '1h', '2025-01-01', 1, 2, 0.5, 1, 1",           # derived by resampling
            "'BTC/USDT', '5m', '2025-01-01 00:01+00', 1, 2, 0.5, 1, 1",  # misaligned
            "'BTC/USDT', '5m', '2025-01-01', 1, 2, 0.5, 'NaN', 1",       # NaN
            "'BTC/USDT', '5m', '2025-01-01', 1, 0.4, 0.5, 1, 1",         # high < low
            "'BTC/USDT', '5m', date_trunc('day', now()) + interval '1 day', 1, 2, 0.5, 1, 1")]  # not closed
        ext.commit()
    assert bad == [("quarantined", None)] * 6
    with psycopg.connect(dsn) as c:
        reasons = [r[0] for r in c.execute("SELECT reason FROM ingest_rejects ORDER BY id")]
    assert len(reasons) == 8
    assert all(r.startswith("symbol DOGE/USDT is not in the symbols table") for r in reasons[:2])
    assert reasons[2].startswith("symbol XRP/USDT is not in the symbols table (tp symbols add XRP/USDT --live)")
    assert reasons[3] == "BTC/USDT derives 1h by resampling 5m: write 5m candles (the live path resamples them)"
    assert reasons[4:] == ["timestamp not aligned to a 5m boundary", "a value is NaN", "high < low",
                           "candle not closed yet (ts + 5m is after now)"]
    assert events(dsn) == [] and store.candle_stats("BTC/USDT", "5m")["rows"] == 0


def test_an_outside_writers_bad_source_or_time_is_quarantined_and_its_transaction_goes_on(store, dsn):
    """A NULL source raised (ingest_rejects.source is NOT NULL) and aborted the caller's transaction; a 3 MB source
    overflowed the quarantine's index; a candle of 1900 was stored, moving every symbol's month partitions."""
    import secrets

    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))
    with psycopg.connect(dsn) as ext:
        out = [ext.execute(f"SELECT outcome FROM tp_live_candle({args})", params).fetchone()[0] for args, params in (
            ("'BTC/USDT', '5m', '1900-01-01', 1, 2, 0.5, 1, 1", None),
            ("'BTC/USDT', '5m', '2250-01-01', 1, 2, 0.5, 1, 1", None),
            ("'BTC/USDT', '5m', '2025-01-01 00:01+00', 1, 2, 0.5, 1, 1, NULL", None),  # misaligned, no source
            ("'BTC/USDT', '5m', '2025-01-01 00:02+00', 1, 2, 0.5, 1, 1, %s", ("x" * 3_000_000,)),
            ("%s, '5m', '2025-01-01', 1, 2, 0.5, 1, 1", (secrets.token_hex(50_000),)),  # its index row too big: raised
            ("'BTC/USDT', '5m', '2025-01-01', 1, 2, 0.5, 1, 1, NULL", None))]  # a good candle, no source
        ext.execute("SELECT 1")  # the transaction is still usable
        ext.commit()
    assert out == ["quarantined"] * 5 + ["inserted"]
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT source, reason FROM ingest_rejects ORDER BY id").fetchall()
    assert [r[1] for r in rows] == ["timestamp outside 1970-2199 (UTC)"] * 2 + ["timestamp not aligned to a 5m "
                                                                                 "boundary"] * 2 + [
        "symbol or timeframe too long to be one (cut to 200 and 20 characters here)"]
    assert [r[0] for r in rows[:3]] == ["sql"] * 3 and rows[3][0] == "x" * 200
    assert store.candle_stats("BTC/USDT", "5m")["rows"] == 1


def test_a_late_committing_lower_id_is_not_lost(store, dsn):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))
    store.add_symbol(SymbolInfo.create("ETH/USDT", timeframes=["5m"], live=True))
    # the period's chunk exists before the two writers (on a TimescaleDB hypertable, the transaction creating a
    # chunk holds back another writer needing it, and both writers are driven from this one thread)
    store.ingest_frame("BTC/USDT", "5m", candles("2024-12-31 23:55", 1), source="file")
    slow, fast = psycopg.connect(dsn), psycopg.connect(dsn)
    low = slow.execute("SELECT event_id FROM tp_live_candle('BTC/USDT', '5m', '2025-01-01', 1, 2, 0.5, 1, 1)"
                       ).fetchone()[0]
    high = fast.execute("SELECT event_id FROM tp_live_candle('ETH/USDT', '5m', '2025-01-01', 1, 2, 0.5, 1, 1)"
                        ).fetchone()[0]
    assert low < high
    fast.commit()  # the higher id is visible first
    first = outbox.claim(store.conn, 500, {}, [])
    assert first.event_ids == [high]
    store.conn.execute("UPDATE market_event_queue SET status = 'done' WHERE event_id = %s", (high,))
    slow.commit()  # the lower id commits after the higher one was processed: a cursor would have passed it
    second = outbox.claim(store.conn, 500, {}, [])
    assert second is not None and second.event_ids == [low]
    assert outbox.claim(store.conn, 500, {}, []) is None
    slow.close()
    fast.close()


def test_pruning_removes_old_processed_events_only(store, dsn):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))
    store.write_live("BTC/USDT", "5m", candles("2025-01-01", 4))
    b = outbox.claim(store.conn, 2, {}, [])
    store.conn.execute("UPDATE market_event_queue SET status = 'done' WHERE batch_id = %s", (b.id,))
    store.conn.execute("UPDATE market_events SET created_at = created_at - interval '100 hours'")
    assert outbox.prune(store.conn, retention_h=72)["events"] == 2
    left = events(dsn)
    assert [e[5] for e in left] == ["pending", "pending"]  # never pruned before it is processed
    assert outbox.status(store.conn)["backlog"] == 2


# ---- the sensor and the live job ------------------------------------------------------------------
@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live-empty-mlflow")
    mlflow = MLflowResource(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=str(tmp / "artifacts"))
    mlflow.client().search_registered_models()  # create the store once (its migrations take seconds)
    return mlflow


@pytest.fixture
def outbox_only(store, dsn, empty_registry, live_env):
    """Live symbols, no model registered: the sensor's protocol without the cost of models."""
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True))
    store.add_symbol(SymbolInfo.create("ETH/USDT", timeframes=["5m"], live=True))
    with instance_for_test() as instance:
        yield store, instance, {"market_db": MarketDB(database_url=dsn), "mlflow": empty_registry}


def tick(instance, resources, cursor=None):
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        return live_predictions_sensor(ctx)


def test_batches_are_bounded_and_only_as_many_as_free_live_slots(outbox_only, live_env):
    from dagster._core.storage.dagster_run import DagsterRunStatus

    store, instance, res = outbox_only
    live_env.setenv("TP_LIVE_BATCH_MAX", "3")
    ids = store.write_live("BTC/USDT", "5m", candles("2025-01-01", 4)).events + \
        store.write_live("ETH/USDT", "5m", candles("2025-01-01", 4)).events
    first = tick(instance, res)
    assert [r.run_key for r in first.run_requests] == ["batch-1-attempt-1", "batch-2-attempt-1"]  # 2 live slots
    cfgs = [r.run_config["ops"]["predict_live_events"]["config"] for r in first.run_requests]
    # the 6 oldest events, split by symbol over the two slots (to run side by side), at most 3 a batch
    assert [c["event_ids"] for c in cfgs] == [ids[:3], ids[4:6]] and all(c["pins"] == {} for c in cfgs)
    assert first.run_requests[0].tags["tp/live_batch"] == "1"
    # both runs created, not finished: the slots are busy, the last two events wait (pending, not claimed) for the next batch
    runs = [instance.create_run_for_job(live_predictions_job, run_config=r.run_config,
                                        tags={**live_predictions_job.tags, **r.tags}) for r in first.run_requests]
    assert {r.status for r in runs} == {DagsterRunStatus.NOT_STARTED}
    busy = tick(instance, res, first.cursor)
    assert not busy.run_requests and "slot(s) are busy" in busy.skip_reason.skip_message
    assert [e[5] for e in events(store.dsn)] == ["claimed"] * 3 + ["pending"] + ["claimed"] * 2 + ["pending"] * 2
    # BTC's run commits (its events done, its batch closed) and frees its slot; a new BTC event arrives
    late = store.write_live("BTC/USDT", "5m", candles("2025-01-01 00:20", 1)).events
    with store.conn.transaction():
        store.conn.execute("UPDATE market_event_queue SET status = 'done', done_at = now() WHERE batch_id = 1")
        store.conn.execute("UPDATE live_batches SET status = 'done', done_at = now() WHERE id = 1")
    instance.delete_run(runs[0].run_id)
    nxt = tick(instance, res, busy.cursor)
    # a slot is free: BTC's events go, ETH's wait for ETH's batch, still in flight (it holds ETH's lock: a
    # second ETH batch would only wait on it, and hold BTC's events up meanwhile)
    assert [r.run_key for r in nxt.run_requests] == ["batch-3-attempt-1"]
    assert nxt.run_requests[0].run_config["ops"]["predict_live_events"]["config"]["event_ids"] == [ids[3], *late]
    assert [e[5] for e in events(store.dsn)][6:8] == ["pending"] * 2
    # ETH's batch commits: its waiting events are claimed at the next tick
    with store.conn.transaction():
        store.conn.execute("UPDATE market_event_queue SET status = 'done', done_at = now() WHERE batch_id = 2")
        store.conn.execute("UPDATE live_batches SET status = 'done', done_at = now() WHERE id = 2")
    instance.delete_run(runs[1].run_id)
    eth = tick(instance, res, nxt.cursor)
    assert [r.run_config["ops"]["predict_live_events"]["config"]["event_ids"] for r in eth.run_requests] == [ids[6:]]
    # a repeated tick requests nothing new: every event is claimed, no batch is overdue
    again = tick(instance, res, eth.cursor)
    assert not again.run_requests and again.skip_reason.skip_message == "no live event pending"


def test_a_symbol_with_a_batch_in_flight_waits_for_it_unless_the_batch_is_overdue(outbox_only, live_env):
    store, instance, res = outbox_only
    live_env.setenv("TP_LIVE_WAIT_S", "0.5")
    store.write_live("BTC/USDT", "5m", candles("2025-01-01", 1))
    first = tick(instance, res)
    assert [r.run_key for r in first.run_requests] == ["batch-1-attempt-1"]
    [req] = first.run_requests  # its run is queued (one of the two live slots), not finished
    instance.create_run_for_job(live_predictions_job, run_config=req.run_config,
                                tags={**live_predictions_job.tags, **req.tags})
    more = store.write_live("BTC/USDT", "5m", candles("2025-01-01 00:05", 1)).events
    held = tick(instance, res, first.cursor)
    assert not held.run_requests  # a slot is free, but BTC's batch holds BTC
    assert held.skip_reason.skip_message == "events pending for symbols whose batch is still running"
    # the batch is overdue (its run is still there, so it is not re-requested): it no longer holds BTC back
    store.conn.execute("UPDATE live_batches SET requested_at = now() - interval '1 hour' WHERE id = 1")
    late = tick(instance, res, held.cursor)
    assert [r.run_key for r in late.run_requests] == ["batch-2-attempt-1"]
    assert late.run_requests[0].run_config["ops"]["predict_live_events"]["config"]["event_ids"] == more


@pytest.mark.parametrize("listen", [True, False])
def test_an_event_arriving_while_the_tick_waits_is_claimed_at_once_with_or_without_notify(outbox_only, live_env,
                                                                                           listen):
    store, instance, res = outbox_only
    # a long wait; re-checks only every 5 s with NOTIFY (so only the NOTIFY can wake it early), every 0.3 s without
    live_env.setenv("TP_LIVE_WAIT_S", "8")
    live_env.setenv("TP_LIVE_POLL_S", "5" if listen else "0.3")
    live_env.setenv("TP_LIVE_LISTEN", "1" if listen else "0")
    out = {}

    def run():
        out["result"] = tick(instance, res)
        out["returned"] = time.monotonic()

    th = threading.Thread(target=run)
    th.start()
    time.sleep(1.5)  # the tick found nothing and waits
    with connect(store.dsn) as writer:
        written = time.monotonic()
        ids = writer.write_live("BTC/USDT", "5m", candles("2025-01-01", 1)).events
    th.join(timeout=15)
    assert [r.run_config["ops"]["predict_live_events"]["config"]["event_ids"] for r in out["result"].run_requests] \
        == [ids]
    assert out["returned"] - written < (1.0 if listen else 1.5)


# ---- with models: the live job ----------------------------------------------------------------------
PUMP = {"n_estimators": 60, "max_depth": 4, "rise": 0.01, "min_improvement_auc": -1.0,
        "min_improvement_log_loss": -1.0}


@pytest.fixture(scope="module")
def trained(model_market, tmp_path_factory):
    """A pump champion (5m, pooled over the crypto symbols) and a BTC/USDT regime champion (1h), trained on
    the shared model market, in a module's own MLflow store."""
    from trading_platform.assets.models import pump_xgb, regime_hmm
    from trading_platform.models.registry import promote
    from trading_platform.resources import serving

    dsn, instance = model_market
    tmp = tmp_path_factory.mktemp("live-models")
    uri = f"sqlite:///{tmp}/mlflow.db"
    serving._MEMORY.clear()
    serving._ALIASES.clear()
    mlflow = MLflowResource(tracking_uri=uri, artifact_root=str(tmp / "artifacts"))
    res = {"market_db": MarketDB(database_url=dsn), "mlflow": mlflow,
           "model_server": ModelServer(tracking_uri=uri, cache_dir=str(tmp / "cache"), device="cpu")}
    materialize([pump_xgb], instance=instance, resources=res,
                run_config={"ops": {"models__pump_xgb": {"config": PUMP}}})
    materialize([regime_hmm], instance=instance, resources=res, partition_key="BTC/USDT",
                run_config={"ops": {"models__regime_hmm": {"config": {"n_iter": 10}}}})
    promote(mlflow.client(), "regime_hmm.BTC_USDT", "1")
    return {"mlflow": mlflow, "model_server": res["model_server"], "market": dsn}


@pytest.fixture
def live(trained, pg_server, live_env):
    """A copy of the model market (BTC/USDT live), a Dagster instance and the resources of the live job."""
    dsn = copy_database(pg_server, trained["market"])
    with connect(dsn) as store:
        store.update_symbol("BTC/USDT", live=True)
    res = {"market_db": MarketDB(database_url=dsn), "mlflow": trained["mlflow"],
           "model_server": trained["model_server"]}
    with instance_for_test() as instance:
        yield dsn, instance, res
    drop_database(pg_server, dsn)


def feed_next(dsn, n, symbol="BTC/USDT"):
    """The next n synthetic 5m candles of the series (the ones an ingestion would store), written live."""
    with connect(dsn) as store:
        info = store.get_symbol(symbol)
        new = next_closed(SyntheticSource(7), info, "5m", store.candle_stats(symbol, "5m")["last_ts"], n)
        return store.write_live(symbol, "5m", new).events, [pd.Timestamp(t, unit="us", tz="UTC") for t in new.ts_us]


def run_request(result, **kw):
    return live_predictions_job.execute_in_process(run_config=result.run_config, tags=result.tags, **kw)


def predict_next(live, n):
    """The next n candles fed live, and the one live run the sensor requests for them, run: (event ids, times)."""
    dsn, instance, res = live
    ids, ts = feed_next(dsn, n)
    [req] = tick(instance, res).run_requests
    assert run_request(req, instance=instance, resources=res).success
    return ids, ts


def test_the_live_run_predicts_the_event_candles_and_marks_them_done_in_one_transaction(live):

    from trading_platform.features.pipeline import materialize as features_materialize
    from trading_platform.features.spec import FeatureSpec
    from trading_platform.features.storage import read_features
    from trading_platform.models.scoring import Version, score_range

    dsn, instance, res = live
    ids, ts = feed_next(dsn, 12)  # 00:00 ... 00:55 of a new day: they complete its first hour
    assert ts[0].hour == 0 and ts[0].minute == 0 and len(ids) == 12
    [req] = tick(instance, res).run_requests
    cfg = req.run_config["ops"]["predict_live_events"]["config"]
    assert cfg["event_ids"] == ids
    assert cfg["pins"] == {"pump_xgb": {"champion": "1"}, "regime_hmm.BTC_USDT": {"champion": "1"}}
    result = run_request(req, instance=instance, resources=res)
    assert result.success
    with psycopg.connect(dsn) as c:
        preds = c.execute("SELECT model_name, timeframe, ts, value FROM predictions ORDER BY 1, 3").fetchall()
        ev = c.execute("SELECT e.symbol, e.timeframe, e.ts, e.source, q.status FROM market_events e "
                       "JOIN market_event_queue q ON q.event_id = e.id ORDER BY e.id").fetchall()
        commits = c.execute("SELECT batch_id, run_id, event_ids FROM live_commits").fetchall()
    # the 12 candles, and the hour they complete: resampled through the live path, predicted in the same run
    assert [e[4] for e in ev] == ["done"] * 13
    assert ev[-1][:4] == ("BTC/USDT", "1h", ts[0].to_pydatetime(), "resample:5m")
    assert [(p[0], p[1], p[2]) for p in preds] == \
        [("pump_xgb", "5m", t.to_pydatetime()) for t in ts] + [("regime_hmm.BTC_USDT", "1h", ts[0].to_pydatetime())]
    assert commits == [(1, result.run_id, sorted(ids + [max(ids) + 1]))]
    # the rows are the scoring core's rows, and the live features are the batch computation's (the hour's
    # context joined to the 5m rows was computed before them)
    with connect(dsn) as store:
        info = store.get_symbol("BTC/USDT")
        pump = Version("pump_xgb", "1", "champion", dict(res["mlflow"].client().get_model_version("pump_xgb", "1").tags))
        again = score_range(store, res["model_server"], pump, info, "5m", ts[0].to_pydatetime(),
                            ts[-1].to_pydatetime() + timedelta(minutes=5))
        assert [r[5] for r in again] == pytest.approx([p[3] for p in preds[:12]], abs=1e-12)
        live_f = read_features(store.conn, "BTC/USDT", "5m", ts[0].to_pydatetime())
        features_materialize(store, info, FeatureSpec(), [(ts[0].to_pydatetime(), ts[-1].to_pydatetime()
                                                           + timedelta(minutes=5))])
        batch_f = read_features(store.conn, "BTC/USDT", "5m", ts[0].to_pydatetime())
    cols = [c for c in batch_f.columns if c not in ("computed_at",)]
    assert len(live_f) == 12 and live_f["htf_ts"].null_count() == 0
    for c in cols:
        a, b = live_f[c], batch_f[c]
        if a.dtype.is_numeric():
            assert (a - b).abs().max() is None or (a - b).abs().max() <= 1e-9 * max(1.0, b.abs().max()), c
        else:
            assert a.to_list() == b.to_list(), c
    # a repeated tick requests nothing new
    assert not tick(instance, res).run_requests


def test_a_backfill_of_a_live_symbol_adds_nothing_to_what_the_live_path_scored(live):
    """A backfill (or a hand run) over a live symbol's month scores the candles before its first live event;
    the candles the live path scored are computed again when asked to recompute, but their values are the
    same, so no row is added: one row per version and candle, whichever path came first."""
    from trading_platform.assets.models import predictions
    from trading_platform.assets.partitions import market_key

    from trading_platform.symbols import sync_partitions

    dsn, instance, res = live
    with connect(dsn) as store:
        sync_partitions(instance, store)
    ids, ts = predict_next(live, 12)
    month = ts[0].strftime("%Y-%m-01")
    result = materialize([predictions], instance=instance, resources=res,
                         partition_key=str(market_key("BTC/USDT", month)), tags={"dagster/backfill": "bf-live"},
                         run_config={"ops": {"predictions": {"config": {"recompute": True}}}})
    meta = result.asset_materializations_for_node("predictions")[0].metadata
    with psycopg.connect(dsn) as c:
        before = {tf: c.execute("SELECT count(*) FROM features WHERE symbol = 'BTC/USDT' AND timeframe = %s "
                                "AND ts >= %s AND ts < %s", (tf, f"{month} 00:00+00", ts[0].to_pydatetime())
                                ).fetchone()[0] for tf in ("5m", "1h")}
    assert meta["live_series"].value == ["BTC/USDT 1h", "BTC/USDT 5m"]
    assert meta["by_model"].value.get("pump_xgb", 0) == before["5m"]
    assert meta["by_model"].value.get("regime_hmm.BTC_USDT", 0) == before["1h"]
    with psycopg.connect(dsn) as c:
        dup = c.execute("SELECT count(*) FROM (SELECT 1 FROM predictions GROUP BY model_name, symbol, timeframe, ts "
                        "HAVING count(*) > 1) d").fetchone()[0]
    assert dup == 0


def test_a_failed_batch_is_rerequested_under_a_new_key_and_its_events_are_predicted_once(live, live_env):
    import trading_platform.live.process as process

    dsn, instance, res = live
    ids, ts = feed_next(dsn, 2)
    [req1] = tick(instance, res).run_requests
    assert req1.run_key == "batch-1-attempt-1"
    real = process.score_candles

    def broken(*a, **k):
        raise RuntimeError("model server fell over")

    live_env.setattr(process, "score_candles", broken)
    failed = run_request(req1, instance=instance, resources=res, raise_on_error=False)
    assert not failed.success
    live_env.setattr(process, "score_candles", real)
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM predictions").fetchone()[0] == 0  # nothing half-done
    # not overdue yet: a repeated tick requests nothing (Dagster would also skip the same key forever)
    live_env.setenv("TP_LIVE_RETRY_AFTER_S", "3600")
    assert not tick(instance, res).run_requests
    # overdue, and its run is not queued or running: the same batch, the same pins, a new key
    live_env.setenv("TP_LIVE_RETRY_AFTER_S", "0")
    [req2] = tick(instance, res).run_requests
    assert req2.run_key == "batch-1-attempt-2"
    assert req2.run_config == req1.run_config and req2.tags["tp/live_attempt"] == "2"
    with connect(dsn) as store:
        st = outbox.status(store.conn)
    assert st["backlog"] == 2 and st["batches_retried"] == 1 and "model server fell over" in st["last_error"]["error"]
    ok = run_request(req2, instance=instance, resources=res)
    assert ok.success
    # a late duplicate of attempt 1 (a run retry that raced the re-request) finds nothing to do
    late = run_request(req1, instance=instance, resources=res)
    assert late.success
    assert not tick(instance, res).run_requests
    with psycopg.connect(dsn) as c:
        commits = c.execute("SELECT run_id, event_ids FROM live_commits").fetchall()
        preds = c.execute("SELECT ts, count(*) FROM predictions GROUP BY 1 ORDER BY 1").fetchall()
        status = [r[0] for r in c.execute("SELECT status FROM market_event_queue")]
    assert commits == [(ok.run_id, ids)]  # each event marked done by exactly one committed run
    assert preds == [(t.to_pydatetime(), 1) for t in ts] and status == ["done", "done"]
    with connect(dsn) as store:
        st = outbox.status(store.conn)
    assert st["backlog"] == 0 and st["batches_in_flight"] == 0


def test_a_run_killed_between_writing_and_committing_leaves_nothing_half_done(live, trained):
    dsn, instance, res = live
    ids, ts = feed_next(dsn, 1)
    [req] = tick(instance, res).run_requests
    cfg = req.run_config["ops"]["predict_live_events"]["config"]
    server = trained["model_server"]
    code = (
        "import sys, time\n"
        "from trading_platform.store.db import connect\n"
        "from trading_platform.resources import ModelServer\n"
        "from trading_platform.live.process import process_batch\n"
        f"server = ModelServer(tracking_uri={server.tracking_uri!r}, cache_dir={server.cache_dir!r}, device='cpu')\n"
        "def pause():\n"
        "    n = store.conn.execute('SELECT count(*) FROM predictions').fetchone()[0]\n"
        "    print('written', n, flush=True)\n"
        "    time.sleep(120)\n"
        f"store = connect({dsn!r})\n"
        f"process_batch(store, server, {cfg['batch_id']}, {cfg['event_ids']!r}, {cfg['pins']!r}, run_id='doomed', "
        "before_commit=pause)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    line = proc.stdout.readline()
    assert line.split() == ["written", "1"]  # its transaction holds the row...
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM predictions").fetchone()[0] == 0  # ...which nobody else sees
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM predictions").fetchone()[0] == 0
        assert c.execute("SELECT status FROM market_event_queue").fetchall() == [("claimed",)]
        assert c.execute("SELECT count(*) FROM live_commits").fetchone()[0] == 0
    assert run_request(req, instance=instance, resources=res).success  # the retry does the whole batch
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT ts FROM predictions").fetchall() == [(ts[0].to_pydatetime(),)]
        assert c.execute("SELECT status FROM market_event_queue").fetchall() == [("done",)]


def test_tp_live_feed_and_status(store, dsn, tp_env, tmp_path):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m", "1h"], live=True))
    store.add_symbol(SymbolInfo.create("ETH/USDT", timeframes=["5m"], live=True))
    store.add_symbol(SymbolInfo.create("SOL/USDT", timeframes=["5m"]))
    store.ingest_frame("BTC/USDT", "5m", candles("2025-01-01", 10), source="file")

    def tp(*args):
        p = subprocess.run([sys.executable, "-m", "trading_platform.cli", *args, "--json"], env=tp_env,
                           capture_output=True, text=True)
        return p.returncode, json.loads(p.stdout.strip().splitlines()[-1])

    code, out = tp("live", "feed", "--symbols", "BTC/USDT,ETH/USDT", "--rate", "20", "--count", "10")
    assert code == 0 and out["fed"] == 10 and out["per_symbol"] == {"BTC/USDT": 5, "ETH/USDT": 5}
    assert out["events"] == 10 and out["written"] == {"inserted": 10, "updated": 0, "unchanged": 0, "rejected": 0}
    assert 0.3 < out["duration_s"] < 3  # 10 candles at 20 per second
    # each series continues after its last stored candle (ETH has none: it starts 1,000 candles back)
    fed = {s: ts for s, ts in store.conn.execute("SELECT symbol, min(ts) FROM market_events GROUP BY 1")}
    assert fed["BTC/USDT"] == utc(2025, 1, 1, 0, 50)
    assert timedelta(hours=83) < pd.Timestamp.now(tz="UTC") - fed["ETH/USDT"] < timedelta(hours=84)
    code, st = tp("live", "status")
    assert code == 0 and st["backlog"] == 10 and st["pending"] == 10 and st["lag_s"] > 0
    assert st["batches_retried"] == 0 and st["last_error"] is None
    # replayed from a file; a symbol that is not live or not known is refused, naming it
    f = tmp_path / "replay.csv"
    candles("2025-02-01", 3).assign(symbol="ETH/USDT").to_csv(f, index=False)
    code, out = tp("live", "feed", "--symbols", "ETH/USDT", "--rate", "50", "--file", str(f))
    assert code == 0 and out["fed"] == 3 and out["events"] == 3
    code, err = tp("live", "feed", "--symbols", "SOL/USDT", "--rate", "5", "--count", "1")
    assert code == 2 and err["field"] == "symbols" and "not an enabled live symbol" in err["error"]
    code, err = tp("live", "feed", "--symbols", "XRP/USDT", "--rate", "5", "--count", "1")
    assert code == 2 and err["field"] == "symbols" and "not in the symbols table" in err["error"]


NICE_SCRIPT = r'''
import os, sys
from dagster import asset, materialize
from trading_platform.resources import MarketDB

@asset
def probe(market_db: MarketDB) -> int:
    return os.nice(0)

for tags in ({"tp/run_kind": "live"}, {"tp/run_kind": "schedule"}, {"tp/run_kind": "retrain"},
             {"dagster/backfill": "abc"}):
    r = materialize([probe], resources={"market_db": MarketDB(database_url=sys.argv[1])}, tags=tags)
    print(r.output_for_node("probe"), flush=True)
'''


def test_backfill_and_retraining_steps_yield_the_cpu_to_live_runs(dsn, tmp_path):
    """On a small machine a backfill's steps take a lower CPU priority (nice 10), so the live runs that share
    the CPU with them keep theirs; live and scheduled runs keep the normal priority. In a child process: a
    niceness cannot be lowered again."""
    script = tmp_path / "nice.py"
    script.write_text(NICE_SCRIPT)
    import trading_platform

    root = os.path.dirname(os.path.dirname(trading_platform.__file__))  # this checkout, not an installed copy
    env = {**os.environ, "TP_BACKGROUND_NICE": "12", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, str(script), dsn], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    base = os.nice(0)
    assert [int(x) for x in out.stdout.split()] == [base, base, max(base, 12), max(base, 12)]
    bad = subprocess.run([sys.executable, str(script), dsn], capture_output=True, text=True,
                         env={**env, "TP_BACKGROUND_NICE": "loud"}, timeout=120)
    assert bad.returncode != 0 and "TP_BACKGROUND_NICE='loud' is not a niceness from 0 to 19" in bad.stderr


TINY_LOCATION = r'''
import os
from dagster import Definitions, in_process_executor, job, op

@op
def stamp():
    with open(os.environ["TP_TEST_STAMPS"], "a") as f:
        f.write(f"{os.getpid()} {os.getppid()}\n")

@job(executor_def=in_process_executor)
def tiny_job():
    stamp()

defs = Definitions(jobs=[tiny_job])
'''


def test_live_runs_are_forked_from_the_warm_process_and_the_others_launched_the_default_way(tmp_path, monkeypatch):
    """The run launcher of dagster.yaml, through a real code server: the first run of a listed job starts the
    warm process and is launched the default way; once it is warm, the next runs are its children (their
    parent is the warm process, not the code server), run to success with their events, and are tagged
    with their pid; a job not listed is always launched the default way."""
    from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context, \
        poll_for_finished_run
    from dagster._core.workspace.load_target import PythonFileTarget

    from trading_platform.live.prefork import PID_TAG

    loc = tmp_path / "tiny_location.py"
    loc.write_text(TINY_LOCATION)
    stamps = tmp_path / "stamps"
    monkeypatch.setenv("TP_TEST_STAMPS", str(stamps))
    launcher = {"module": "trading_platform.live.prefork", "class": "PreforkRunLauncher",
                "config": {"jobs": ["tiny_job"], "preload": []}}
    with instance_for_test(overrides={"run_launcher": launcher}) as instance, \
            create_test_daemon_workspace_context(PythonFileTarget(str(loc), None, str(tmp_path), "tiny"),
                                                 instance) as wpc:
        ws = wpc.create_request_context()
        location = ws.get_code_location("tiny")
        rjob = next(iter(location.get_repositories().values())).get_full_job("tiny_job")
        plan = location.get_execution_plan(rjob, {}, None, None, instance=instance)

        def launch():
            run = create_run_for_test(instance, job_name="tiny_job", job_snapshot=rjob.job_snapshot,
                                      execution_plan_snapshot=plan.execution_plan_snapshot,
                                      remote_job_origin=rjob.get_remote_origin(),
                                      job_code_origin=rjob.get_python_origin())
            instance.launch_run(run.run_id, ws)
            return poll_for_finished_run(instance, run.run_id, timeout=90)

        first = launch()
        assert first.status.value == "SUCCESS" and PID_TAG not in first.tags  # the default way: not warm yet
        warm = instance.run_launcher._warm
        deadline = time.monotonic() + 60
        while not warm.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert warm.alive(), "the warm process did not come up"
        forked = [launch() for _ in range(2)]
        assert [r.status.value for r in forked] == ["SUCCESS", "SUCCESS"]
        lines = [tuple(map(int, ln.split())) for ln in stamps.read_text().splitlines()]
        assert [pid for pid, _ in lines[1:]] == [int(r.tags[PID_TAG]) for r in forked]
        assert all(ppid == warm.proc.pid for _, ppid in lines[1:]) and lines[0][1] != warm.proc.pid
        logs = " ".join(e.message or "" for e in instance.all_logs(forked[0].run_id))
        assert "forked from the warm live process" in logs


LIVE_LOCATION = r'''
import os
from dagster import Definitions
from trading_platform.resources import MarketDB, MLflowResource, ModelServer
from trading_platform.sensors.live import live_predictions_job

defs = Definitions(jobs=[live_predictions_job], resources={
    "market_db": MarketDB(database_url=os.environ["TP_TEST_DSN"]),
    "mlflow": MLflowResource(tracking_uri=os.environ["TP_TEST_MLFLOW"], artifact_root=os.environ["TP_TEST_ARTIFACTS"]),
    "model_server": ModelServer(tracking_uri=os.environ["TP_TEST_MLFLOW"], cache_dir=os.environ["TP_TEST_CACHE"],
                                device="cpu"),
})
'''


def test_a_sigkilled_live_run_is_failed_by_run_monitoring_and_its_batch_done_once(live, trained, tmp_path, live_env):
    """A forked live run SIGKILLed mid-batch (waiting on its symbol's lock) cannot report its end. At once it holds
    no live slot; the daemon's run monitoring marks it failed; the next tick re-requests its batch under a new key
    with the same pins, and every event is predicted exactly once."""
    import logging

    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context, \
        poll_for_finished_run
    from dagster._core.workspace.load_target import PythonFileTarget
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    from trading_platform.live.prefork import PID_TAG
    from trading_platform.sensors.live import RUN_KIND_TAG, _in_flight

    dsn, _, res = live
    server = trained["model_server"]
    for k, v in {"TP_TEST_DSN": dsn, "TP_TEST_MLFLOW": server.tracking_uri, "TP_TEST_CACHE": server.cache_dir,
                 "TP_TEST_ARTIFACTS": trained["mlflow"].artifact_root}.items():
        live_env.setenv(k, v)
    loc = tmp_path / "live_location.py"
    loc.write_text(LIVE_LOCATION)
    overrides = {"run_launcher": {"module": "trading_platform.live.prefork", "class": "PreforkRunLauncher",
                                  "config": {"preload": ["xgboost", "hmmlearn.hmm", "trading_platform.live.process"]}},
                 "run_monitoring": {"enabled": True, "poll_interval_seconds": 1}}
    with instance_for_test(overrides=overrides) as instance, \
            create_test_daemon_workspace_context(PythonFileTarget(str(loc), None, str(tmp_path), "live"),
                                                 instance) as wpc:
        ws = wpc.create_request_context()
        location = ws.get_code_location("live")
        rjob = next(iter(location.get_repositories().values())).get_full_job("live_predictions_job")

        def launch(req):
            plan = location.get_execution_plan(rjob, req.run_config, None, None, instance=instance)
            run = create_run_for_test(instance, job_name=rjob.name, run_config=req.run_config,
                                      tags={**rjob.tags, **req.tags}, job_snapshot=rjob.job_snapshot,
                                      execution_plan_snapshot=plan.execution_plan_snapshot,
                                      remote_job_origin=rjob.get_remote_origin(),
                                      job_code_origin=rjob.get_python_origin())
            instance.launch_run(run.run_id, ws)
            return run.run_id

        def monitor():
            list(execute_run_monitoring_iteration(wpc, logging.getLogger("run_monitoring")))

        # the first live run starts the warm process (and is launched the default way)
        first_ids, first_ts = feed_next(dsn, 1)
        [req] = tick(instance, res).run_requests
        assert req.tags["dagster/max_runtime"] == "120"
        assert poll_for_finished_run(instance, launch(req), timeout=120).status == DagsterRunStatus.SUCCESS
        warm = instance.run_launcher._warm
        deadline = time.monotonic() + 90
        while not warm.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert warm.alive(), "the warm process did not come up"
        # the next batch is forked, and blocks on the symbol's lock that this test holds
        ids, ts = feed_next(dsn, 2)
        holder = psycopg.connect(dsn, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(hashtextextended('live|BTC/USDT', 0))")
        [req] = tick(instance, res).run_requests
        doomed = launch(req)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0]:
            time.sleep(0.2)
        run = instance.get_run_by_id(doomed)
        assert run.status == DagsterRunStatus.STARTED and PID_TAG in run.tags
        assert _in_flight(instance, {RUN_KIND_TAG: "live"}) == 1
        monitor()
        assert instance.get_run_by_id(doomed).status == DagsterRunStatus.STARTED  # alive: left alone
        os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
        time.sleep(0.5)
        # dead: no slot held, even before run monitoring has looked
        assert _in_flight(instance, {RUN_KIND_TAG: "live"}) == 0
        monitor()
        dead = instance.get_run_by_id(doomed)
        assert dead.status == DagsterRunStatus.FAILURE
        assert "is gone" in " ".join(e.message or "" for e in instance.all_logs(doomed))
        holder.close()
        # overdue: the same batch, the same pins, a new key
        live_env.setenv("TP_LIVE_RETRY_AFTER_S", "0")
        [again] = tick(instance, res).run_requests
        assert again.run_key == req.run_key.replace("attempt-1", "attempt-2")
        assert again.run_config == req.run_config
        done = poll_for_finished_run(instance, launch(again), timeout=120)
        assert done.status == DagsterRunStatus.SUCCESS and PID_TAG in done.tags
        live_env.setenv("TP_LIVE_RETRY_AFTER_S", "60")
        assert not tick(instance, res).run_requests
        assert _in_flight(instance, {RUN_KIND_TAG: "live"}) == 0
    with psycopg.connect(dsn) as c:
        preds = c.execute("SELECT ts, count(*) FROM predictions WHERE model_name = 'pump_xgb' AND timeframe = '5m' "
                          "GROUP BY 1 ORDER BY 1").fetchall()
        status = [r[0] for r in c.execute("SELECT status FROM market_event_queue ORDER BY event_id")]
    assert preds == [(t.to_pydatetime(), 1) for t in first_ts + ts]
    assert status == ["done"] * 3


SLOW_LOCATION = TINY_LOCATION.replace("defs = Definitions(jobs=[tiny_job])", '''
@op
def wait_a_while():
    import time
    stamp()
    time.sleep(120)

@job(executor_def=in_process_executor)
def slow_job():
    wait_a_while()

defs = Definitions(jobs=[tiny_job, slow_job])
''')


def test_a_deployed_live_runner_forks_the_runs_it_is_sent_and_nothing_else(tmp_path, monkeypatch):
    """`tp live runner --listen` as the deployment runs it (its own process, its own DAGSTER_HOME instance, TCP):
    the launcher's live runs are its children, their health and termination go through it, a request for a
    run that is not STARTING is refused, and its SIGTERM ends the runs in flight as reported runs."""
    import socket as socket_

    from dagster._core.launcher.base import WorkerStatus
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context, \
        poll_for_finished_run
    from dagster._core.workspace.load_target import PythonFileTarget

    from trading_platform.live.prefork import PID_TAG, RUNNER_TAG, request

    with socket_.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\n"
        "run_launcher:\n  module: trading_platform.live.prefork\n  class: PreforkRunLauncher\n"
        f"  config:\n    address: {address}\n    jobs: [tiny_job, slow_job]\n")
    loc = tmp_path / "slow_location.py"
    loc.write_text(SLOW_LOCATION)
    stamps = tmp_path / "stamps"
    monkeypatch.setenv("TP_TEST_STAMPS", str(stamps))
    env = {**os.environ, "DAGSTER_HOME": str(home), "TP_EMBEDDED": "1", "TP_HOME": str(tmp_path / "tp")}
    runner = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "live", "runner", "--listen", address,
                               "--jobs", "tiny_job,slow_job", "--preload", ""], env=env, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and runner.poll() is None:
            try:
                assert request(address, {"op": "ping"}, timeout=2)["ok"]
                break
            except OSError:
                time.sleep(0.3)
        assert runner.poll() is None, runner.stderr.read()
        with DagsterInstance.from_config(str(home)) as instance, \
                create_test_daemon_workspace_context(PythonFileTarget(str(loc), None, str(tmp_path), "slow"),
                                                     instance) as wpc:
            ws = wpc.create_request_context()
            location = ws.get_code_location("slow")
            repo = next(iter(location.get_repositories().values()))

            def launch(name):
                rjob = repo.get_full_job(name)
                plan = location.get_execution_plan(rjob, {}, None, None, instance=instance)
                run = create_run_for_test(instance, job_name=name, job_snapshot=rjob.job_snapshot,
                                          execution_plan_snapshot=plan.execution_plan_snapshot,
                                          remote_job_origin=rjob.get_remote_origin(),
                                          job_code_origin=rjob.get_python_origin())
                instance.launch_run(run.run_id, ws)
                return run.run_id

            def started(run_id):
                deadline = time.monotonic() + 60
                while instance.get_run_by_id(run_id).status != DagsterRunStatus.STARTED:
                    assert time.monotonic() < deadline, instance.get_run_by_id(run_id).status
                    time.sleep(0.2)
                return instance.get_run_by_id(run_id)

            done = poll_for_finished_run(instance, launch("tiny_job"), timeout=60)
            assert done.status == DagsterRunStatus.SUCCESS and done.tags[RUNNER_TAG] == address
            pid, ppid = map(int, stamps.read_text().split())
            assert (pid, ppid) == (int(done.tags[PID_TAG]), runner.pid)  # a child of the runner
            # what a client sends is checked against the runner's own instance
            assert "not STARTING" in request(address, {"op": "launch", "run_id": done.run_id})["error"]
            assert "no run" in request(address, {"op": "launch", "run_id": "not-a-run"})["error"]
            # a malformed request is answered with an error; the runner (and its runs) go on
            assert "error" in request(address, {"op": "health"})
            assert "error" in request(address, {"op": "health", "pid": "x"})
            with socket_.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=5) as raw:
                raw.sendall(b"[[[[not json\n")
            assert request(address, {"op": "ping"})["ok"]
            # health and termination, through the runner
            slow = started(launch("slow_job"))
            assert instance.run_launcher.check_run_worker_health(slow).status == WorkerStatus.RUNNING
            assert instance.run_launcher.terminate(slow.run_id)
            assert poll_for_finished_run(instance, slow.run_id, timeout=60).status == DagsterRunStatus.CANCELED
            # the runner stopped (docker stop): the run in flight ends reported, not STARTED
            slow = started(launch("slow_job"))
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(timeout=60) == 0
            assert poll_for_finished_run(instance, slow.run_id, timeout=30).is_finished
            assert instance.run_launcher.check_run_worker_health(slow).status == WorkerStatus.RUNNING  # can't tell
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.wait()


def test_the_repository_dagster_yaml_gives_live_runs_their_lanes(tmp_path, live_env):
    """The instance `tp up` runs: the warm-fork launcher, threaded sensors, run retries, and two live slots the
    sensor reads from the run queue's tag limits (no TP_LIVE_MAX_RUNS)."""
    import shutil
    from pathlib import Path

    from trading_platform.live.prefork import PreforkRunLauncher
    from trading_platform.sensors.live import live_run_limit

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, PreforkRunLauncher)
        assert live_run_limit(instance) == 2
        assert instance.run_retries_enabled
        assert instance.get_settings("sensors").get("use_threads") is True
        live_env.setenv("TP_LIVE_MAX_RUNS", "3")
        assert live_run_limit(instance) == 3


def test_a_live_series_refilled_by_the_hourly_schedule_has_every_candle_scored_once(live):
    """An outage: candles the live writer never got are refilled by the hourly ingestion (the bulk path). The
    scheduled run scores them (the live path never sees them), corrects what they changed, and leaves nothing
    unscored or doubled; a candle whose live event is pending meanwhile is scored once too."""
    from trading_platform.assets.features import features
    from trading_platform.assets.models import predictions
    from trading_platform.assets.partitions import market_key
    from trading_platform.symbols import sync_partitions

    dsn, instance, res = live
    with connect(dsn) as store:
        sync_partitions(instance, store)
    _, ts = predict_next(live, 3)
    with connect(dsn) as store:
        info = store.get_symbol("BTC/USDT")
        nxt = next_closed(SyntheticSource(7), info, "5m", store.candle_stats("BTC/USDT", "5m")["last_ts"], 6)
        frame = nxt.to_frame()
        store.write_live("BTC/USDT", "5m", frame.iloc[4:])  # the exchange came back after 4 candles
    [req] = tick(instance, res).run_requests
    assert run_request(req, instance=instance, resources=res).success
    _, pending = feed_next(dsn, 1)  # its event is pending while the schedule runs
    with connect(dsn) as store:  # the hourly ingestion fetches what is missing: the 4 candles
        assert store.ingest_frame("BTC/USDT", "5m", frame.iloc[:4], "synthetic").inserted == 4
    month = str(market_key("BTC/USDT", ts[0].strftime("%Y-%m-01")))
    scheduled = materialize([features, predictions], instance=instance, resources=res, partition_key=month,
                            tags={"dagster/schedule_name": "market_data_hourly"})
    assert scheduled.success
    [req] = tick(instance, res).run_requests  # the pending candle, by the live path
    assert run_request(req, instance=instance, resources=res).success
    gap = [pd.Timestamp(t, unit="us", tz="UTC").to_pydatetime() for t in nxt.ts_us[:4]]
    with psycopg.connect(dsn) as c:
        candles = [r[0] for r in c.execute("SELECT ts FROM ohlcv WHERE symbol = 'BTC/USDT' AND timeframe = '5m' "
                                           "AND ts >= %s ORDER BY ts", (ts[0].to_pydatetime(),))]
        total = dict(c.execute("SELECT ts, count(*) FROM predictions WHERE model_name = 'pump_xgb' "
                               "AND symbol = 'BTC/USDT' AND ts >= %s GROUP BY ts", (ts[0].to_pydatetime(),)).fetchall())
        current = dict(c.execute("SELECT ts, count(*) FROM predictions WHERE model_name = 'pump_xgb' "
                                 "AND symbol = 'BTC/USDT' AND ts >= %s AND superseded_at IS NULL GROUP BY ts",
                                 (ts[0].to_pydatetime(),)).fetchall())
    assert len(candles) == 3 + 6 + 1
    assert current == {t: 1 for t in candles}  # every closed candle, one current row
    assert all(total[t] == 1 for t in gap + [pending[0].to_pydatetime()])  # scored once, by one of the paths


def test_an_alias_moved_in_the_mlflow_client_is_in_the_champion_history_after_the_next_tick(live):
    dsn, instance, res = live
    client = res["mlflow"].client()
    tick(instance, res)  # the history as it stands (a model without one is seeded from its alias)
    v1 = client.get_model_version("pump_xgb", "1")
    v2 = client.create_model_version("pump_xgb", v1.source, v1.run_id, tags=v1.tags)
    try:
        client.set_registered_model_alias("pump_xgb", "champion", v2.version)  # as a user in the MLflow UI would
        with psycopg.connect(dsn) as c:
            before = c.execute("SELECT clock_timestamp()").fetchone()[0]
        tick(instance, res)
        with psycopg.connect(dsn) as c:
            got = c.execute("SELECT version, moved_by, valid_from, valid_to FROM model_champions "
                            "WHERE model_name = 'pump_xgb' AND alias = 'champion' ORDER BY valid_from").fetchall()
    finally:
        client.set_registered_model_alias("pump_xgb", "champion", "1")
        client.delete_model_version("pump_xgb", v2.version)
    assert got[-1][:2] == (str(v2.version), "registry") and got[-1][2] >= before and got[-1][3] is None
    assert got[-2][0] == "1" and got[-2][3] == got[-1][2]  # the old stretch ends where the new one starts


def test_an_updated_live_candle_supersedes_what_it_changed_in_the_same_run(live):
    """The live path applies the correction rule too: an exchange's corrected candle (an ``updated`` event)
    supersedes the outputs of the later candles that read it, in the batch that recomputes its features, and
    what was known before stays readable."""
    from trading_platform.models.scoring import Version, score_range
    from trading_platform.store.outputs import known_at

    dsn, instance, res = live
    _, ts = predict_next(live, 6)
    with psycopg.connect(dsn) as c:
        before = c.execute("SELECT clock_timestamp()").fetchone()[0]
    with connect(dsn) as store:  # the exchange corrects the second candle: a new close and volume
        c2 = store.read_candles("BTC/USDT", "5m", ts[1].to_pydatetime(), ts[2].to_pydatetime()).to_frame()
        fixed = c2.assign(close=c2["high"], volume=c2["volume"] * 30)
        w = store.write_live("BTC/USDT", "5m", fixed)
        assert w.updated == 1 and len(w.events) == 1
    [req] = tick(instance, res).run_requests
    assert run_request(req, instance=instance, resources=res).success
    client = res["mlflow"].client()
    with connect(dsn) as store:
        info = store.get_symbol("BTC/USDT")
        pump = Version("pump_xgb", "1", "champion", dict(client.get_model_version("pump_xgb", "1").tags))
        fresh = {r[4]: r[5] for r in score_range(store, res["model_server"], pump, info, "5m",
                                                 ts[0].to_pydatetime(), None)}
        then = {r[4]: r[5] for r in known_at(store.conn, "predictions", before, symbols=["BTC/USDT"],
                                              models=["pump_xgb"], start=ts[0].to_pydatetime())}
        rows = store.conn.execute("SELECT ts, value, superseded_at FROM predictions WHERE model_name = 'pump_xgb' "
                                  "AND symbol = 'BTC/USDT' AND ts >= %s ORDER BY ts, known_at",
                                  (ts[0].to_pydatetime(),)).fetchall()
        revision = store.conn.execute("SELECT features_done_at IS NOT NULL, predictions_done_at IS NOT NULL "
                                      "FROM ohlcv_revisions").fetchall()
    current = {t: v for t, v, s in rows if s is None}
    superseded = [t for t, _, s in rows if s is not None]
    assert current.keys() == fresh.keys() == {t.to_pydatetime() for t in ts}
    assert all(current[t] == pytest.approx(fresh[t], rel=1e-6) for t in fresh)  # every changed row corrected
    assert ts[1].to_pydatetime() in superseded and ts[0].to_pydatetime() not in superseded  # nothing before it
    first: dict = {}
    for t, v, _ in rows:  # ordered by known_at: the first row of each candle is what was known before
        first.setdefault(t, v)
    assert then == first
    assert then[ts[1].to_pydatetime()] != current[ts[1].to_pydatetime()]  # as known before: the old value
    assert revision == [(True, True)]  # done in the live batch: no other path redoes it


def test_tp_live_feed_says_what_it_waits_for_and_replays_stored_history(store, dsn, tp_env):
    """Caught up with the clock, the feeder says which candle it waits for and when it closes (it used to wait in
    silence); --replay DAYS sends the stored candles of the last days through the live path instead."""
    now = pd.Timestamp.now(tz="UTC").floor("1h")
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"], live=True))
    store.ingest_frame("BTC/USDT", "1h", candles((now - pd.Timedelta(hours=30)).strftime("%Y-%m-%d %H:%M"), 30,
                                                  tf_min=60), source="file")

    p = subprocess.run([sys.executable, "-m", "trading_platform.cli", "live", "feed", "--symbols", "BTC/USDT",
                        "--rate", "5", "--duration", "2", "--json"], env=tp_env, capture_output=True, text=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and out["fed"] == 0
    closes = (now + pd.Timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert "waiting for BTC/USDT 1h candle" in p.stderr and f"closes at {closes} UTC" in p.stderr, p.stderr
    assert "--replay DAYS" in p.stderr

    p = subprocess.run([sys.executable, "-m", "trading_platform.cli", "live", "feed", "--symbols", "BTC/USDT",
                        "--rate", "50", "--replay", "1", "--json"], env=tp_env, capture_output=True, text=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0, p.stderr
    # the last 24 stored hours (the file's candles were loaded by the bulk path: never seen by the live path)
    assert out["fed"] in (23, 24) and out["events"] == out["fed"] and out["written"]["unchanged"] == out["fed"]
    assert "replaying" in p.stderr
    p = subprocess.run([sys.executable, "-m", "trading_platform.cli", "live", "feed", "--symbols", "BTC/USDT",
                        "--rate", "50", "--replay", "0", "--json"], env=tp_env, capture_output=True, text=True)
    assert p.returncode == 2 and "--replay" in p.stdout


def test_the_live_run_makes_alerts_once_and_judges_them_on_its_next_candles(live):
    """The alerts of a live batch are made in its transaction (a late duplicate run adds none) and judged in the
    later batches, in their transactions, each candle applied once. The sample's candles closed long ago: the
    alerts are stale (never sent) and past their expiry by the clock, which the live path leaves to the minute's
    pass; made current here (``expires_at`` moved on), the live runs judge them."""
    dsn, instance, res = live
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO alert_rules (name, model_name, threshold) VALUES ('any', 'pump_xgb', 0)")
        c.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('hook', 'webhook', 'HOOK_URL')")
    ids, ts = feed_next(dsn, 2)
    [req] = tick(instance, res).run_requests
    first = run_request(req, instance=instance, resources=res)
    assert first.success and run_request(req, instance=instance, resources=res).success  # the late duplicate

    def alerts():
        with psycopg.connect(dsn) as c:
            return c.execute(
                "SELECT ts, send, a.created_at = p.known_at, status, candles_seen, last_candle_ts, deciding_ts "
                "FROM alerts a JOIN predictions p USING (model_name, model_version, symbol, timeframe, ts) "
                "ORDER BY ts").fetchall()

    with psycopg.connect(dsn) as c:
        stats = c.execute("SELECT stats->'alerts' FROM live_commits").fetchone()[0]
        assert c.execute("SELECT count(*) FROM alert_deliveries").fetchone()[0] == 0  # stale: never sent
    got = alerts()
    assert [g[:4] for g in got] == [(t.to_pydatetime(), "stale", True, "pending") for t in ts]
    assert stats["alerts"] == 2 and stats["judged"] == 0  # past their expiry by the clock: not the live path's
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("UPDATE alerts SET expires_at = '2999-01-01'")
    _, later = predict_next(live, 3)
    fed = [t.to_pydatetime() for t in list(ts) + list(later)]
    got = alerts()
    assert [g[0] for g in got] == fed  # the new candles' own alerts too, each once
    for a_ts, _, _, status, seen, last, deciding in got[:2]:
        after = [t for t in fed if t > a_ts]  # every later candle fed, applied once each (by the later batch)
        if status == "pending":
            assert seen == len(after) and last == after[-1]
        else:  # a 1 % rise reached: decided there, the candles up to it applied once
            assert status == "success" and deciding == last and seen == after.index(deciding) + 1


def test_a_rerun_of_the_scheduled_scoring_adds_no_alert_and_no_delivery(live):
    from trading_platform.assets.models import predictions
    from trading_platform.assets.partitions import market_key
    from trading_platform.symbols import sync_partitions

    dsn, instance, res = live
    with connect(dsn) as store:
        sync_partitions(instance, store)
        last = store.candle_stats("BTC/USDT", "5m")["last_ts"]
    month = pd.Timestamp(last).strftime("%Y-%m-01")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO alert_rules (name, model_name, threshold) VALUES ('any', 'pump_xgb', 0)")
        c.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('hook', 'webhook', 'HOOK_URL')")
        c.execute("DELETE FROM predictions WHERE model_name = 'pump_xgb' AND ts >= %s", (month,))

    def score(recompute):
        result = materialize([predictions], instance=instance, resources=res,
                             partition_key=str(market_key("BTC/USDT", month)),
                             run_config={"ops": {"predictions": {"config": {"recompute": recompute}}}})
        assert result.success
        with psycopg.connect(dsn) as c:
            return (c.execute("SELECT count(*), count(DISTINCT ts), min(send), max(send) FROM alerts").fetchone(),
                    c.execute("SELECT count(*) FROM alert_deliveries").fetchone()[0])

    first = score(False)
    (n, distinct, lo, hi), deliveries = first
    assert n > 0 and n == distinct and (lo, hi) == ("stale", "stale") and deliveries == 0  # history: never sent
    assert score(False) == first and score(True) == first  # a re-run, a recompute: the same rows, nothing added


def regime_spec(name: str):
    """A strategy on the BTC/USDT regime champion's hourly outputs: in whatever the regime, out after one hour."""
    from trading_platform.paper.spec import parse

    return parse({"name": name, "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}], "cash": 10_000,
                  "rules": {"regime": {"model": "regime_hmm", "allow": ["bear", "sideways", "bull",
                                                                        "high_volatility"]}, "time_exit": 1},
                  "costs": {"fee_bps": 10, "spread_bps": 4}})


def test_a_live_paper_run_steps_after_the_live_job_and_equals_the_backtest(live, live_env):
    """A strategy on the regime champion's hourly outputs, started live: each live run (the sensor's request, the
    live job) scores the hour its 5m candles complete, then the paper consumer steps the strategy on it. Its orders
    and fills are the backtest's over the same hours with the same pins; a replayed paper event places nothing."""
    from trading_platform.paper import backtest
    from trading_platform.paper import live as paper_live

    dsn, instance, res = live
    spec = regime_spec("regime_long")
    with connect(dsn) as store:
        started = paper_live.start(store, spec)
    assert started["pins"] == {"regime_hmm.BTC_USDT": "1"}
    for _ in range(5):  # five hours of 5m candles, one live run each
        predict_next(live, 12)
    with connect(dsn) as store:
        conn = store.conn
        stepped_to = conn.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s",
                                  (started["run_id"],)).fetchone()[0]
        assert stepped_to == started["stepped_to"] + 5 * timedelta(hours=1)
        assert conn.execute("SELECT count(*) FROM market_event_queue WHERE consumer = 'paper' AND status <> 'done'"
                            ).fetchone()[0] == 0

        def records(run_id):
            return (conn.execute("SELECT signal_ts, side, intent, quantity, filled, status FROM orders WHERE run_id = "
                                 "%s ORDER BY signal_ts, intent", (run_id,)).fetchall(),
                    conn.execute("SELECT candle_ts, price, quantity, fee FROM fills WHERE run_id = %s ORDER BY 1, 2",
                                 (run_id,)).fetchall())

        got = records(started["run_id"])
        assert len(got[0]) >= 3 and got[1]
        bt = backtest.run(store, spec, started["stepped_to"] - timedelta(hours=1) + timedelta(hours=1), stepped_to,
                          pins=started["pins"])
        assert records(bt["run_id"]) == got
        # every paper event delivered again, with no live run to step them: the sensor asks for a paper-only run,
        # which steps nothing new; a later tick has nothing to catch up
        conn.execute("UPDATE market_event_queue SET status = 'pending' WHERE consumer = 'paper'")
    import trading_platform.sensors.live as sensor_module

    live_env.setattr(sensor_module, "PAPER_CATCHUP_S", 0.0)  # the outputs were committed a moment ago
    [req] = tick(instance, res).run_requests
    assert req.run_key.startswith("paper-") and req.run_config["ops"]["predict_live_events"]["config"]["event_ids"] == []
    assert run_request(req, instance=instance, resources=res).success
    # and a retried batch: the last live run executed again after it committed
    ids, _ = feed_next(dsn, 12)
    [req] = tick(instance, res).run_requests
    assert run_request(req, instance=instance, resources=res).success
    assert run_request(req, instance=instance, resources=res).success
    assert not tick(instance, res).run_requests
    with connect(dsn) as store:
        conn = store.conn
        assert conn.execute("SELECT count(*) FROM market_event_queue WHERE consumer = 'paper' AND status <> 'done'"
                            ).fetchone()[0] == 0
        after = records(started["run_id"])
        assert after[1][:len(got[1])] == got[1] and len(after[0]) > len(got[0])  # fills are never rewritten
        stepped = conn.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s", (started["run_id"],)).fetchone()[0]
        assert stepped == stepped_to + timedelta(hours=1)
        bt = backtest.run(store, spec, started["stepped_to"], stepped, pins=started["pins"])
        assert records(bt["run_id"]) == after
        # one order per signal: nothing placed twice
        assert conn.execute("SELECT count(*) FROM (SELECT 1 FROM orders WHERE run_id = %s GROUP BY symbol, timeframe, "
                            "signal_ts, intent HAVING count(*) > 1) d", (started["run_id"],)).fetchone()[0] == 0


def test_a_daemon_killed_mid_feed_and_restarted_leaves_one_order_per_signal(live, live_env, tmp_path):
    """The real daemon (``dagster-daemon run`` with the repository's dagster.yaml: the sensor, the warm process's
    forked live runs, run monitoring, retries) steps a live paper run. SIGKILLed, with its process group (the
    warm process and a live run in flight), right after the next hour's candles are fed, then started again: the
    batch is re-requested, the hour is stepped once, and the run's orders and fills equal the backtest's over the
    same hours with the same pins, none placed twice."""
    from trading_platform.instance import instance_yaml
    from trading_platform.paper import backtest
    from trading_platform.paper import live as paper_live

    dsn, _, res = live
    spec = regime_spec("regime_daemon")
    with connect(dsn) as store:
        started = paper_live.start(store, spec)
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml("WARNING"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: trading_platform.definitions\n      attribute: defs\n"
        f"      location_name: trading_platform\n      working_directory: {repo}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "TP_HOME": str(tmp_path / "tp"), "TP_DATABASE_URL": dsn,
           "MLFLOW_TRACKING_URI": res["mlflow"].tracking_uri, "TP_EMBEDDED": "1", "TP_LIVE_RETRY_AFTER_S": "5",
           "TP_LOG_LEVEL": "WARNING", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    daemon_bin = os.path.join(os.path.dirname(sys.executable), "dagster-daemon")
    log = tmp_path / "daemon.log"

    def start_daemon():
        return subprocess.Popen([daemon_bin, "run", "-w", str(tmp_path / "workspace.yaml")], env=env, cwd=str(home),
                                stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)

    def stepped():
        with psycopg.connect(dsn) as c:
            return c.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s", (started["run_id"],)).fetchone()[0]

    def wait_stepped(hours, proc, timeout=300):
        deadline = time.monotonic() + timeout
        while stepped() != started["stepped_to"] + hours * timedelta(hours=1):
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, f"not stepped to hour {hours}: {stepped()}\n{log.read_text()[-4000:]}"
            time.sleep(0.5)

    daemon = start_daemon()
    try:
        feed_next(dsn, 12)
        wait_stepped(1, daemon)
        ids, _ = feed_next(dsn, 12)
        deadline = time.monotonic() + 120
        with psycopg.connect(dsn, autocommit=True) as c:  # the next batch claimed: its run is on its way
            while not c.execute("SELECT count(*) FROM market_event_queue WHERE consumer = 'predictions' AND "
                                "event_id = ANY(%s) AND status <> 'pending'", (ids,)).fetchone()[0]:
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.05)
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        daemon = start_daemon()
        wait_stepped(2, daemon)
        feed_next(dsn, 12)
        wait_stepped(3, daemon)
    finally:
        try:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(daemon.pid, signal.SIGKILL)
    with connect(dsn) as store:
        conn = store.conn
        got = [conn.execute("SELECT signal_ts, side, intent, quantity, filled, status FROM orders WHERE run_id = %s "
                            "ORDER BY signal_ts, intent", (started["run_id"],)).fetchall(),
               conn.execute("SELECT candle_ts, price, quantity, fee FROM fills WHERE run_id = %s ORDER BY 1, 2",
                            (started["run_id"],)).fetchall()]
        assert len(got[0]) >= 3 and got[1]
        bt = backtest.run(store, spec, started["stepped_to"], stepped(), pins=started["pins"])
        assert [conn.execute("SELECT signal_ts, side, intent, quantity, filled, status FROM orders WHERE run_id = %s "
                             "ORDER BY signal_ts, intent", (bt["run_id"],)).fetchall(),
                conn.execute("SELECT candle_ts, price, quantity, fee FROM fills WHERE run_id = %s ORDER BY 1, 2",
                             (bt["run_id"],)).fetchall()] == got
        assert conn.execute("SELECT count(*) FROM (SELECT 1 FROM orders WHERE run_id = %s GROUP BY signal_ts, intent "
                            "HAVING count(*) > 1) d", (started["run_id"],)).fetchone()[0] == 0
        # the killed batch was predicted once, by a later attempt
        assert conn.execute("SELECT count(*) FROM (SELECT e FROM live_commits, unnest(event_ids) e GROUP BY e "
                            "HAVING count(*) > 1) d").fetchone()[0] == 0

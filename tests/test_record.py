"""The model outputs as a point-in-time record: promotions write nothing, the champion history says who was
champion when, corrections supersede what a revised candle changed, every closed candle is scored once per
version, revisions are claimed by state, and migration 13 keeps every stored row. Real PostgreSQL, Dagster and
MLflow throughout."""

from datetime import timedelta

import psycopg
import pytest
from dagster import build_sensor_context

from trading_platform.assets.features import features
from trading_platform.assets.models import predictions, pump_xgb
from trading_platform.assets.partitions import market_key
from trading_platform.models.registry import promote
from trading_platform.resources import MarketDB, MLflowResource
from trading_platform.store.db import connect
from trading_platform.store.outputs import known_at

from conftest import model_runner, utc

ANY_BASELINE = {"min_improvement_auc": -1.0, "min_improvement_log_loss": -1.0}
PUMP = {"n_estimators": 30, "rise": 0.01, **ANY_BASELINE}
APRIL = str(market_key("BTC/USDT", "2025-04-01"))


def md(result, node):
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def rows(dsn, where="TRUE"):
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT model_name, model_version, symbol, timeframe, ts, value, known_at, superseded_at "
                         f"FROM predictions WHERE {where} ORDER BY 1, 2, 3, 4, 5, 7").fetchall()


def db_now(dsn):
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT clock_timestamp()").fetchone()[0]


@pytest.fixture
def env(market_copy, model_market, tmp_path):
    """(run(asset, config, partition_key, tags), resources, dsn) on a writable copy of the model market."""
    return model_runner(market_copy, model_market[1], tmp_path)


def test_a_promotion_changes_no_row_and_the_record_says_who_was_champion_when(env):
    run, res, dsn = env
    client = res["mlflow"].client()
    run(pump_xgb, PUMP)  # version 1: champion through the gate
    run(pump_xgb, {**PUMP, "n_estimators": 40, "min_improvement_vs_champion": 1.0})  # version 2: challenger
    assert str(client.get_model_version_by_alias("pump_xgb", "challenger").version) == "2"
    first = md(run(predictions, partition_key=APRIL), "predictions")["by_model"]
    assert first["pump_xgb"] == first["pump_xgb (shadow)"] > 0
    scored = rows(dsn)
    before_promotion = db_now(dsn)
    with connect(dsn) as store:
        promote(client, "pump_xgb", "2", conn=store.conn)
    again = md(run(predictions, partition_key=APRIL), "predictions")
    assert again["by_model"] == {"pump_xgb": 0}  # the new champion had scored every candle as a challenger
    assert rows(dsn) == scored  # no row changed, none added: a promotion writes nothing
    with connect(dsn) as store:
        then = known_at(store.conn, "predictions", before_promotion, symbols=["BTC/USDT"])
        now = known_at(store.conn, "predictions", db_now(dsn), symbols=["BTC/USDT"])
        latest = known_at(store.conn, "predictions", db_now(dsn), symbols=["BTC/USDT"], latest=True)
        nothing_yet = known_at(store.conn, "predictions", scored[0][6] - timedelta(seconds=1))
        dup = store.conn.execute("SELECT count(*) FROM (SELECT 1 FROM current_champion_predictions "
                                 "GROUP BY model_name, symbol, timeframe, ts HAVING count(*) > 1) d").fetchone()[0]
        current = store.conn.execute("SELECT DISTINCT model_version FROM current_champion_predictions").fetchall()
        moves = store.conn.execute("SELECT version, moved_by, valid_to IS NULL FROM model_champions "
                                   "WHERE model_name = 'pump_xgb' AND alias = 'champion' ORDER BY valid_from").fetchall()
    n = first["pump_xgb"]
    assert {r[1] for r in then} == {"1"} and len(then) == n  # before the promotion: the old champion's rows
    assert {r[1] for r in now} == {"2"} and len(now) == n  # after it: the new one's, the same candles
    assert [r[4] for r in then] == [r[4] for r in now]
    assert len(latest) == 1 and latest[0][4] == max(r[4] for r in now)
    assert nothing_yet == []  # before anything was scored, nothing was known
    assert dup == 0 and current == [("2",)]
    assert moves == [("1", "gate", False), ("2", "promote", True)]


def test_a_revised_candle_supersedes_the_outputs_it_changed_and_the_past_stays_readable(env, model_market):
    from trading_platform.models.scoring import Version, score_range
    from trading_platform.sensors.features import features_stale_sensor

    run, res, dsn = env
    _, instance = model_market
    client = res["mlflow"].client()
    run(pump_xgb, PUMP)
    run(predictions, partition_key=APRIL)
    scored = rows(dsn, "symbol = 'BTC/USDT'")
    before_revision = db_now(dsn)
    # a corrected candle in the middle of April, through the bulk path (a re-ingestion, `tp ingest`)
    r_ts = utc(2025, 4, 15, 12)
    with connect(dsn) as store:
        c = store.read_candles("BTC/USDT", "5m", r_ts, r_ts + timedelta(minutes=5))
        fixed = c.to_frame().assign(open=c.open * 1.04, high=c.high * 1.04, low=c.low * 1.04, close=c.close * 1.04,
                                    volume=c.volume * 20)
        assert store.ingest_frame("BTC/USDT", "5m", fixed, "correction").updated == 1
    # the sensor asks for the revised symbol's features and outputs from April on; the run corrects them
    with build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        [req] = features_stale_sensor(ctx).run_requests
    assert run(features, tags=req.tags).success
    out = md(run(predictions, tags=req.tags), "predictions")
    fix = out["corrections"]
    assert fix["revisions"] == 1 and fix["rows_rescored"] == fix["rows_in_window"] > 0
    assert 0 < fix["rows_superseded"] <= fix["rows_in_window"]
    after = rows(dsn, "symbol = 'BTC/USDT'")
    gone = [r for r in after if r[7] is not None]
    assert len(gone) == fix["rows_superseded"] and min(r[4] for r in gone) >= r_ts - timedelta(minutes=0)
    assert max(r[4] for r in gone) < r_ts + timedelta(days=1)  # a bounded window, not the rest of history
    # every current row is what a fresh scoring of the revised history gives: nothing that changed was missed
    with connect(dsn) as store:
        info = store.get_symbol("BTC/USDT")
        v = Version("pump_xgb", "1", "champion", dict(client.get_model_version("pump_xgb", "1").tags))
        fresh = {r[4]: r[5] for r in score_range(store, res["model_server"], v, info, "5m", utc(2025, 4, 1),
                                                 utc(2025, 5, 1))}
        then = {r[4]: r[5] for r in known_at(store.conn, "predictions", before_revision, symbols=["BTC/USDT"])}
        now = {r[4]: r[5] for r in known_at(store.conn, "predictions", db_now(dsn), symbols=["BTC/USDT"])}
    current = {r[4]: r[5] for r in after if r[7] is None}
    assert current.keys() == fresh.keys() and all(current[t] == pytest.approx(fresh[t], rel=1e-6) for t in fresh)
    assert then == {r[4]: r[5] for r in scored}  # as known before the revision: the old values
    # the rows superseded are exactly the outputs whose values the revision changed (which ones depends on the
    # model's splits: a tree may score the revised candle itself as before)
    assert now == current and {t for t in now if now[t] != then[t]} == {r[4] for r in gone}
    # the correction is done: a second run rescores nothing
    assert md(run(predictions, tags=req.tags), "predictions")["corrections"]["revisions"] == 0


def test_a_backfill_fills_an_interior_gap_of_a_series(env):
    """Candles missing at scoring time and stored later (an outage refilled): a backfill scores them, not only
    what comes after the newest row."""
    run, res, dsn = env
    run(pump_xgb, PUMP)
    hole = (utc(2025, 4, 10), utc(2025, 4, 10, 2))
    with connect(dsn) as store:
        kept = store.read_candles("BTC/USDT", "5m", *hole)
        store.conn.execute("DELETE FROM ohlcv WHERE symbol = 'BTC/USDT' AND timeframe = '5m' AND ts >= %s "
                           "AND ts < %s", hole)
        store.conn.execute("DELETE FROM features WHERE symbol = 'BTC/USDT' AND timeframe = '5m' AND ts >= %s "
                           "AND ts < %s", hole)
    run(predictions, partition_key=APRIL)
    assert not rows(dsn, f"symbol = 'BTC/USDT' AND ts >= '{hole[0]}' AND ts < '{hole[1]}'")
    with connect(dsn) as store:
        assert store.ingest_frame("BTC/USDT", "5m", kept.to_frame(), "refill").inserted == len(kept) == 24
    run(features, partition_key=APRIL)
    bf = md(run(predictions, partition_key=APRIL, tags={"dagster/backfill": "bf-gap"}), "predictions")
    assert bf["by_model"]["pump_xgb"] == 24
    got = rows(dsn, "symbol = 'BTC/USDT' AND timeframe = '5m' AND superseded_at IS NULL")
    with psycopg.connect(dsn) as c:
        candles = c.execute("SELECT count(*) FROM features WHERE symbol = 'BTC/USDT' AND timeframe = '5m' "
                            "AND ts >= '2025-04-01' AND ts < '2025-05-01'").fetchone()[0]
    assert len(got) == len({r[4] for r in got}) == candles  # every candle of the month, once


def test_revisions_committed_out_of_id_order_both_reach_the_features(env, model_market):
    from trading_platform.features.storage import read_features
    from trading_platform.sensors.features import features_stale_sensor
    from trading_platform.store.db import MarketStore

    run, res, dsn = env
    _, instance = model_market
    ctx_res = {"market_db": MarketDB(database_url=dsn)}
    slow_conn = psycopg.connect(dsn)  # a long transaction: its revision id is taken first, committed last
    slow = MarketStore(slow_conn, dsn)
    early, late = utc(2025, 4, 3, 8), utc(2025, 4, 20, 8)
    with connect(dsn) as fast:
        a = slow.read_candles("BTC/USDT", "5m", early, early + timedelta(minutes=5))  # (its transaction begins)
        slow.ingest_frame("BTC/USDT", "5m", a.to_frame().assign(volume=a.volume * 7), "slow")
        b = fast.read_candles("ETH/USDT", "5m", late, late + timedelta(minutes=5))
        fast.ingest_frame("ETH/USDT", "5m", b.to_frame().assign(volume=b.volume * 7), "fast")
        ids = fast.conn.execute("SELECT id, first_ts FROM ohlcv_revisions").fetchall()
        assert [t for _, t in ids] == [late]  # the higher id is visible first
    with build_sensor_context(instance=instance, resources=ctx_res) as ctx:
        [first] = features_stale_sensor(ctx).run_requests
    assert run(features, tags=first.tags).success
    slow_conn.commit()  # the lower id commits after the higher one was processed: a cursor would have passed it
    slow_conn.close()
    with build_sensor_context(instance=instance, resources=ctx_res) as ctx:
        [second] = features_stale_sensor(ctx).run_requests
    assert run(features, tags=second.tags).success
    with connect(dsn) as store:
        pending = store.conn.execute("SELECT count(*) FROM ohlcv_revisions WHERE features_done_at IS NULL"
                                     ).fetchone()[0]
        f = read_features(store.conn, "BTC/USDT", "5m", early, early + timedelta(minutes=5))
        vol = store.read_candles("BTC/USDT", "5m", early, early + timedelta(minutes=5)).volume[0]
    assert pending == 0
    assert f["volume"][0] == pytest.approx(vol) and vol == pytest.approx(a.volume[0] * 7)  # the slow one arrived
    with build_sensor_context(instance=instance, resources=ctx_res) as ctx:
        assert not getattr(features_stale_sensor(ctx), "run_requests", None)


def test_migration_13_keeps_every_row_and_seeds_the_champion_history(dsn, tmp_path):
    import json

    from trading_platform.store.champions import sync_from_registry
    from trading_platform.store.migrations import migrate

    with psycopg.connect(dsn, autocommit=True) as c:
        migrate(c, upto=12)
        c.execute("INSERT INTO symbols (symbol, category) VALUES ('BTC/USDT', 'crypto')")
        t0 = utc(2025, 1, 1)
        for i in range(48):
            ts = t0 + timedelta(hours=i)
            # version 2's first rows were rewritten as the champion's after a promotion (today's bug)
            for version, role, created in (("1", "champion", "2025-02-01"),
                                           ("2", "champion" if i < 24 else "shadow",
                                            "2025-03-01" if i < 24 else "2025-02-01")):
                c.execute("INSERT INTO predictions (model_name, model_version, symbol, timeframe, ts, value, label, "
                          "details, role, in_sample, created_at) VALUES ('pump_xgb', %s, 'BTC/USDT', '1h', %s, %s, "
                          "'none', %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                          (version, ts, i / 100 + int(version), json.dumps({"i": i}), role, i < 5, created))
            c.execute("INSERT INTO forecasts (model_name, model_version, symbol, timeframe, origin_ts, step, median, "
                      "quantiles, role) VALUES ('nhits.1h', '1', 'BTC/USDT', '1h', %s, 1, %s, '{}', 'champion')",
                      (ts, 100 + i))
        c.execute("INSERT INTO patterns (model_name, model_version, symbol, timeframe, ts, pattern, probability, bars, "
                  "role) VALUES ('pattern_tcn', '3', 'BTC/USDT', '1h', %s, 'double_top', 0.7, 64, 'shadow')", (t0,))
        old = {t: c.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4, 5").fetchall()
               for t in ("predictions", "forecasts", "patterns")}
        assert migrate(c, upto=13) == [13]
        for t, before in old.items():
            cols = [d.name for d in c.execute(f"SELECT * FROM {t} LIMIT 0").description]
            after = c.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4, 5").fetchall()
            # every row and value kept: created_at is known_at now, role is gone (the history holds it), and
            # nothing is superseded
            want = [{("known_at" if k == "created_at" else k): v for k, v in zip(_old_columns(t), r) if k != "role"}
                    for r in before]
            got = [{k: v for k, v in zip(cols, r) if k != "superseded_at"} for r in after]
            assert got == want and all(r[cols.index("superseded_at")] is None for r in after)
        seeded = c.execute("SELECT model_name, version, moved_by FROM model_champions ORDER BY 1, valid_from").fetchall()
        assert seeded == [("nhits.1h", "1", "seed"), ("pump_xgb", "1", "seed"), ("pump_xgb", "2", "seed")]
        # the registry's aliases: pump_xgb's champion is version 2 (as seeded); pattern_tcn has a champion that
        # never wrote a champion row: seeded from the alias
        mlflow = MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "a"))
        client = mlflow.client()
        for name, n, alias in (("pump_xgb", 2, "2"), ("pattern_tcn", 3, "3"), ("nhits.1h", 1, "1")):
            client.create_registered_model(name)
            for _ in range(n):
                client.create_model_version(name, source=str(tmp_path / "nothing"))
            client.set_registered_model_alias(name, "champion", alias)
        sync_from_registry(c, client)
        history = c.execute("SELECT model_name, version, moved_by, valid_to IS NULL FROM model_champions "
                            "WHERE alias = 'champion' ORDER BY 1, valid_from").fetchall()
    assert history == [("nhits.1h", "1", "seed", True), ("pattern_tcn", "3", "seed", True),
                       ("pump_xgb", "1", "seed", False), ("pump_xgb", "2", "seed", True)]


def _old_columns(table):
    return {"predictions": ["model_name", "model_version", "symbol", "timeframe", "ts", "value", "label", "details",
                            "created_at", "role", "in_sample"],
            "forecasts": ["model_name", "model_version", "symbol", "timeframe", "origin_ts", "step", "median",
                          "quantiles", "role", "created_at", "in_sample"],
            "patterns": ["model_name", "model_version", "symbol", "timeframe", "ts", "pattern", "probability", "bars",
                         "role", "created_at", "in_sample"]}[table]

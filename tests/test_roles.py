"""Least-privilege roles on the market store (migration 24, `tp db migrate`): each role can do what its service
needs and nothing else. Real PostgreSQL, logins made by the deploy step with passwords from the environment."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from trading_platform.core.symbols import SymbolInfo

PASSWORDS = {"TP_PLATFORM_PASSWORD": "pf-pass-7731", "TP_READER_PASSWORD": "rd-pass-1904",
             "TP_LIVE_WRITER_PASSWORD": "lw-pass-0451", "TP_OWNER_PASSWORD": "ow-pass-5520"}
DENIED = psycopg.errors.InsufficientPrivilege


def _as(dsn, role, password):
    d = conninfo_to_dict(dsn)
    d.update(user=role, password=password)
    return make_conninfo(**d)


@pytest.fixture
def deployed(dsn, monkeypatch):
    """A market store migrated by the deploy step, with the platform's, the reader's and the live writer's logins."""
    from trading_platform.api.market import migrate

    monkeypatch.setenv("TP_DATABASE_URL", dsn)
    for k, v in PASSWORDS.items():
        monkeypatch.setenv(k, v)
    out = migrate()
    assert out["roles"]["tp_platform"] == "tp_platform may log in (password from TP_PLATFORM_PASSWORD)"
    assert out["roles"]["tp_owner"] == "tp_owner may log in (password from TP_OWNER_PASSWORD)"
    for secret in PASSWORDS.values():
        assert secret not in str(out)
    return {"owner": dsn, "tp_owner": _as(dsn, "tp_owner", PASSWORDS["TP_OWNER_PASSWORD"]),
            "platform": _as(dsn, "tp_platform", PASSWORDS["TP_PLATFORM_PASSWORD"]),
            "reader": _as(dsn, "tp_reader", PASSWORDS["TP_READER_PASSWORD"]),
            "live": _as(dsn, "live_writer", PASSWORDS["TP_LIVE_WRITER_PASSWORD"])}


def test_tp_owner_owns_the_schema_and_the_platform_role_may_not_change_it(deployed):
    with psycopg.connect(deployed["owner"]) as c:
        foreign = c.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = current_schema() AND "
                            "tableowner <> 'tp_owner'").fetchall()
        functions = c.execute("SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON "
                              "n.oid = p.pronamespace WHERE n.nspname = current_schema() AND p.proowner <> "
                              "'tp_owner'::regrole").fetchall()
        # NOLOGIN until a password is given (none for tp_api_writer here)
        assert c.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tp_api_writer'").fetchone() == (False,)
    assert foreign == [] and functions == []
    with psycopg.connect(deployed["platform"], autocommit=True) as p:
        for q in ("DROP TABLE ohlcv", "TRUNCATE ohlcv", "ALTER TABLE features ADD COLUMN x double precision",
                  "CREATE TABLE mine (x int)", "DROP FUNCTION tp_live_candle(text, text, timestamptz, float8, float8, "
                  "float8, float8, float8, text)", "CREATE INDEX ON ohlcv (volume)", "ALTER TABLE ohlcv DISABLE TRIGGER ALL"):
            with pytest.raises(DENIED):
                p.execute(q)
        # a feature column goes through the owner's function, which takes plain names and the two types only
        p.execute("SELECT tp_features_add_column('ret_99', 'double precision')")
        for bad in (("x; DROP TABLE ohlcv", "double precision"), ("ret_100", "text"), ("ts", "timestamptz")):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                p.execute("SELECT tp_features_add_column(%s, %s)", bad)
    with psycopg.connect(deployed["owner"]) as c:
        assert c.execute("SELECT to_regclass('ohlcv') IS NOT NULL, count(*) FROM information_schema.columns "
                         "WHERE table_name = 'features' AND column_name = 'ret_99'").fetchone() == (True, 1)


def test_the_reader_reads_only_and_the_live_writer_writes_only_through_its_function(deployed):
    with psycopg.connect(deployed["owner"]) as c:
        c.execute("INSERT INTO symbols (symbol, category, timeframes, live) VALUES ('BTC/USDT', 'crypto', "
                  "ARRAY['1m'], true)")
    with psycopg.connect(deployed["reader"], autocommit=True) as r:
        assert r.execute("SELECT count(*) FROM symbols").fetchone() == (1,)
        for q in ("INSERT INTO symbols (symbol, category, timeframes) VALUES ('X/Y', 'crypto', ARRAY['1h'])",
                  "UPDATE symbols SET live = false", "DELETE FROM market_events", "TRUNCATE alerts",
                  "SELECT * FROM tp_live_candle('BTC/USDT', '1m', now(), 1, 1, 1, 1, 1, 'x')"):
            with pytest.raises(DENIED):
                r.execute(q)
    with psycopg.connect(deployed["live"], autocommit=True) as w:
        assert w.execute("SELECT * FROM tp_live_candle('BTC/USDT', '1m', '2024-03-01 00:00+00', 1, 2, 0.5, 1.5, "
                         "10, 'outside')").fetchone()[0] == "inserted"
        for q in ("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES ('BTC/USDT', "
                  "'1m', '2024-03-01 00:01+00', 1, 1, 1, 1, 1)", "SELECT * FROM predictions LIMIT 1",
                  "UPDATE symbols SET live = false", "SELECT tp_features_add_column('ret_5', 'double precision')"):
            with pytest.raises(DENIED):
                w.execute(q)


def test_the_platform_does_its_work_as_tp_platform(deployed, tmp_path):
    """What the code server, the runs and the workers do, logged in as tp_platform: candles in, features (their
    columns added on the first write), model outputs and a correction, the live write path, champions, refusals,
    metrics, the retention, and the faces' read role."""
    from trading_platform.core.candles import normalize_candles
    from trading_platform.features.pipeline import materialize
    from trading_platform.features.spec import FeatureSpec
    from trading_platform.models.scoring import Version
    from trading_platform.sources.synthetic import SyntheticSource
    from trading_platform.store import refusals
    from trading_platform.store.champions import record_move
    from trading_platform.store.db import connect
    from trading_platform.store.metrics import fold
    from trading_platform.store.outputs import OutputWriter, compact_superseded

    t0, t1 = datetime(2025, 1, 1, tzinfo=timezone.utc), datetime(2025, 2, 1, tzinfo=timezone.utc)
    info = SymbolInfo.create("BTC/USDT", timeframes=["1h"], live=True)
    norm = normalize_candles(SyntheticSource().fetch(info, "1h", t0, t1), "1h", now=datetime(2030, 1, 1,
                                                                                              tzinfo=timezone.utc))
    with connect(deployed["platform"], run_migrations=False) as store:
        assert store.conn.execute("SELECT current_user").fetchone() == ("tp_platform",)
        store.add_symbol(info)
        assert store.write_candles("BTC/USDT", "1h", norm, "synthetic").inserted == len(norm) > 700
        report = materialize(store, info, FeatureSpec(), [(t0, t1)])
        assert report["columns"] > 10 and store.conn.execute(
            "SELECT count(*) FROM features WHERE symbol = 'BTC/USDT'").fetchone()[0] > 0
        v = Version("pump_xgb", "1", "champion", {"tp.family": "pump_xgb"})
        record_move(store.conn, "pump_xgb", "champion", "1", "gate")
        ts = t0 + timedelta(hours=10)
        for value in (0.2, 0.3):  # a correction supersedes
            w = OutputWriter(store.conn, [v], "backfill")
            w.add("predictions", [("pump_xgb", "1", "BTC/USDT", "1h", ts, value, None, "{}", False)])
            with store.conn.transaction():
                w.flush()
        live = pd.DataFrame({"ts": [t1], "open": [100.0], "high": [101.0], "low": [99.0], "close": [100.0],
                             "volume": [1.0]})
        assert store.write_live("BTC/USDT", "1h", live).events
        refusals.record(store.conn, [("pump_xgb", "2", "champion", "it is not signed")])
        fold(store.conn)
        assert compact_superseded(store.conn, 1, now=datetime.now(timezone.utc) + timedelta(days=2))["predictions"] == 1
    # the faces read as tp_reader, switched to from the platform's login
    with psycopg.connect(deployed["platform"], autocommit=True) as p:
        p.execute("SET ROLE tp_reader")
        assert p.execute("SELECT count(*) FROM predictions").fetchone() == (1,)
        with pytest.raises(DENIED):
            p.execute("DELETE FROM predictions")


def test_tp_owner_runs_the_migrations(deployed, monkeypatch):
    """The deploy step logged in as tp_owner (not a superuser): it owns the schema, so `tp db migrate` works and a
    later migration's new table is its own; nobody else may create in the schema."""
    from trading_platform.api.market import migrate

    monkeypatch.setenv("TP_DATABASE_URL", deployed["tp_owner"])
    out = migrate()
    assert out["applied"] == [] and out["schema_version"] >= 24
    with psycopg.connect(deployed["tp_owner"], autocommit=True) as o:
        assert o.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = current_schema()"
                         ).fetchone() == ("tp_owner",)
        o.execute("CREATE TABLE later_migration (x int)")
        o.execute("DROP TABLE later_migration")
    with psycopg.connect(deployed["reader"], autocommit=True) as r, pytest.raises(DENIED):
        r.execute("CREATE TABLE mine (x int)")

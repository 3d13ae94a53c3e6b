"""TimescaleDB (migration 12): where the server has the extension, ohlcv and features are hypertables with
old chunks compressed, and the whole write path works on them (compressed chunks included); where it has
not, the tables stay plain with their statement-level symbol reference triggers.

The plain-PostgreSQL tests run everywhere the extension is missing (the embedded server, most CI). The
hypertable tests need a server that has timescaledb in ``pg_available_extensions`` (preloaded), given as
``TP_TEST_DATABASE_URL``; elsewhere they are skipped with the reason, never passed."""

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import psycopg
import pytest

from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import UnknownSymbol
from trading_platform.store import migrations
from trading_platform.store.db import MarketStore, connect
from trading_platform.store.migrations import MIGRATIONS, migrate


def _server_has_timescaledb() -> bool:
    """Whether the test server (TP_TEST_DATABASE_URL, else the embedded pgserver) offers timescaledb."""
    url = os.environ.get("TP_TEST_DATABASE_URL")
    if url:
        with psycopg.connect(url, connect_timeout=10) as c:
            return c.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions "
                             "WHERE name = 'timescaledb')").fetchone()[0]
    import pgserver

    return (Path(pgserver.__file__).parent / "pginstall/share/postgresql/extension/timescaledb.control").exists()


TIMESCALEDB = _server_has_timescaledb()
needs_timescaledb = pytest.mark.skipif(
    not TIMESCALEDB,
    reason="the test server has no timescaledb extension (not in pg_available_extensions) and it cannot be "
           "installed here: run with TP_TEST_DATABASE_URL pointing at a server with timescaledb preloaded")
plain_server = pytest.mark.skipif(
    TIMESCALEDB, reason="the test server has timescaledb: the hypertable tests of this module cover it")

V12 = next(sql for v, _, sql in MIGRATIONS if v == 12)


def candles(n, start="2024-01-01", freq="1h", seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({"ts": pd.date_range(start, periods=n, freq=freq, tz="UTC"), "open": open_,
                         "high": np.maximum(open_, close) * 1.01, "low": np.minimum(open_, close) * 0.99,
                         "close": close, "volume": rng.uniform(1, 10, n)})


def schema_snapshot(conn) -> dict:
    """What migration 12 could change: tables' kinds and children, triggers, constraints, indexes, columns."""
    q = {
        "tables": "SELECT relname, relkind::text FROM pg_class WHERE relname IN ('ohlcv', 'features') ORDER BY 1",
        "children": "SELECT count(*) FROM pg_inherits WHERE inhparent IN ('ohlcv'::regclass, 'features'::regclass)",
        # the platform's triggers (not TimescaleDB's own ts_insert_blocker on a hypertable's root, which older
        # versions list as a user trigger)
        "triggers": "SELECT tgrelid::regclass::text, tgname, tgnewtable FROM pg_trigger WHERE NOT tgisinternal "
                    "AND tgname <> 'ts_insert_blocker' ORDER BY 1, 2",
        "constraints": "SELECT conrelid::regclass::text, conname, contype::text FROM pg_constraint "
                       "WHERE conrelid IN ('ohlcv'::regclass, 'features'::regclass, 'symbols'::regclass) ORDER BY 1, 2",
        "indexes": "SELECT indexrelid::regclass::text FROM pg_index "
                   "WHERE indrelid IN ('ohlcv'::regclass, 'features'::regclass) ORDER BY 1",
        "columns": "SELECT table_name, column_name, data_type FROM information_schema.columns "
                   "WHERE table_name IN ('ohlcv', 'features') ORDER BY 1, ordinal_position",
        "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
    }
    return {k: conn.execute(v).fetchall() for k, v in q.items()}


def migrate_as_of(conn, monkeypatch, version: int, *, without_timescaledb: bool = True) -> list[int]:
    """Migrate to ``version`` as a database made before the extension was installed: migration 2 (which
    would make ohlcv a hypertable) as a no-op, as it was where the extension did not exist."""
    older = [(v, n, "SELECT 1" if v == 2 and without_timescaledb else sql) for v, n, sql in MIGRATIONS if v <= version]
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", older)
        return migrate(conn)


# ---- plain PostgreSQL ----------------------------------------------------------------------------
@plain_server
def test_without_timescaledb_migration_12_leaves_plain_tables_and_their_triggers(dsn, monkeypatch):
    with psycopg.connect(dsn, autocommit=True) as conn:
        # a database of the previous release, with candles
        assert migrate_as_of(conn, monkeypatch, 11) == list(range(1, 12))
        conn.execute("INSERT INTO symbols (symbol, category) VALUES ('BTC/USDT', 'crypto')")
        conn.execute("INSERT INTO ohlcv SELECT 'BTC/USDT', '1h', t, 1, 2, 0.5, 1.5, 10 FROM generate_series("
                     "'2024-01-01'::timestamptz, '2024-03-01', interval '1 hour') t")
        before = schema_snapshot(conn)
        assert migrate_as_of(conn, monkeypatch, 12, without_timescaledb=False) == [12]
        after = schema_snapshot(conn)
        assert after == before  # nothing changed: no extension, plain tables, the same triggers
        assert after["tables"] == [("features", "r"), ("ohlcv", "r")] and after["children"] == [(0,)]
        assert ("ohlcv", "ohlcv_symbols_exist", "new_rows") in after["triggers"]
        assert ("ohlcv", "ohlcv_symbols_exist_update", "new_rows") in after["triggers"]
        assert not [c for c in after["constraints"] if c[2] == "f"]  # no row-level foreign key
        assert conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 1441
        assert conn.execute("SELECT tp_timescaledb_setup()").fetchone()[0] == "timescaledb is not available: plain tables"
        # the statement-level reference check still refuses a candle, or a move, to an unknown symbol
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="symbol NOPE is not in the symbols table"):
            conn.execute("INSERT INTO ohlcv VALUES ('NOPE', '1h', '2024-01-01', 1, 1, 1, 1, 1)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not in the symbols table"):
            conn.execute("UPDATE ohlcv SET symbol = 'GHOST' WHERE ts = '2024-01-01'")
        assert migrate_as_of(conn, monkeypatch, 12, without_timescaledb=False) == []
        assert schema_snapshot(conn) == before


@plain_server
def test_without_timescaledb_a_fresh_store_is_plain_and_a_second_migrate_is_a_no_op(dsn):
    with connect(dsn, run_migrations=True) as store:
        conn = store.conn
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == MIGRATIONS[-1][0] >= 12
        snap = schema_snapshot(conn)
        assert snap["tables"] == [("features", "r"), ("ohlcv", "r")] and ("timescaledb",) not in snap["extensions"]
        assert {t[1] for t in snap["triggers"] if t[0] == "ohlcv"} == {"ohlcv_symbols_exist", "ohlcv_symbols_exist_update"}
        assert store.migrate() == []
        conn.execute(V12)  # the migration's SQL itself is idempotent too
        assert schema_snapshot(conn) == snap
        with pytest.raises(UnknownSymbol):
            store.ingest_frame("NOPE/USDT", "1h", candles(5), "test")
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="not in the symbols table"):
            with conn.cursor() as cur, cur.copy("COPY ohlcv FROM STDIN") as cp:
                cp.write_row(("NOPE", "1h", datetime(2024, 1, 1, tzinfo=timezone.utc), 1, 1, 1, 1, 1))
        assert conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 0


# ---- TimescaleDB ---------------------------------------------------------------------------------
def hypertables(conn) -> dict:
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT h.hypertable_name, h.compression_enabled, d.time_interval, "
        "(SELECT count(*) FROM timescaledb_information.jobs j WHERE j.proc_name = 'policy_compression' "
        " AND j.hypertable_name = h.hypertable_name) "
        "FROM timescaledb_information.hypertables h JOIN timescaledb_information.dimensions d "
        "ON d.hypertable_name = h.hypertable_name AND d.column_name = 'ts' ORDER BY 1")}


def hold_policies(conn) -> None:
    """Pause the compression policies' jobs, and wait for a run already under way (some versions run a new
    policy at once): the tests compress chunks themselves, when they choose to. A run compressing a chunk while
    a transaction writes into it can deadlock with it, and either side may be the one cancelled."""
    conn.execute("SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
                 "WHERE proc_name = 'policy_compression'")
    for _ in range(300):
        if not conn.execute("SELECT count(*) FROM timescaledb_information.job_stats s JOIN "
                            "timescaledb_information.jobs j USING (job_id) WHERE j.proc_name = 'policy_compression' "
                            "AND s.job_status = 'Running'").fetchone()[0]:
            return
        time.sleep(0.1)


def compress_all(conn, table: str) -> int:
    """Compress every chunk of ``table`` (what the policy does to chunks older than 30 days)."""
    n = 0
    for (chunk,) in conn.execute("SELECT c FROM show_chunks(%s::regclass) c", (table,)).fetchall():
        try:
            conn.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
        except psycopg.errors.DuplicateObject:  # compressed by a policy run meanwhile
            pass
        n += 1
    return n


def compressed_chunks(conn, table: str) -> int:
    return conn.execute("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = %s "
                        "AND is_compressed", (table,)).fetchone()[0]


def policy_config(conn, table: str) -> dict:
    return conn.execute("SELECT config FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression' "
                        "AND hypertable_name = %s", (table,)).fetchone()[0]


@needs_timescaledb
def test_timescaledb_hypertables_with_compression_and_a_policy(dsn):
    with connect(dsn, run_migrations=True) as store:
        conn = store.conn
        ht = hypertables(conn)
        assert set(ht) == {"ohlcv", "features"}
        assert ht["features"] == (True, timedelta(days=30), 1)
        # ohlcv: made a hypertable by migration 2 (at the default 7 days), 30 days from migration 12 on
        assert ht["ohlcv"] == (True, timedelta(days=30), 1)
        assert policy_config(conn, "ohlcv")["compress_after"] == "30 days"
        assert policy_config(conn, "features")["compress_after"] == "30 days"
        settings = conn.execute(
            "SELECT hypertable_name, string_agg(attname, ',' ORDER BY segmentby_column_index) "
            "FILTER (WHERE segmentby_column_index IS NOT NULL), string_agg(attname || CASE WHEN orderby_asc "
            "THEN '' ELSE ' DESC' END, ',' ORDER BY orderby_column_index) FILTER (WHERE orderby_column_index "
            "IS NOT NULL) FROM timescaledb_information.compression_settings GROUP BY 1 ORDER BY 1").fetchall()
        assert settings == [("features", "symbol,timeframe", "ts"), ("ohlcv", "symbol,timeframe", "ts")]
        snap = schema_snapshot(conn)
        # no transition-table trigger on the hypertable; the real foreign key instead
        assert not [t for t in snap["triggers"] if t[0] == "ohlcv"]
        assert ("ohlcv", "ohlcv_symbol_fkey", "f") in snap["constraints"]
        assert {t[1] for t in snap["triggers"] if t[0] == "symbols"} == {"symbols_keep_referenced",
                                                                         "symbols_keep_referenced_name"}
        # idempotent: migrate again, the migration's SQL again, the function again
        assert store.migrate() == []
        conn.execute(V12)
        assert conn.execute("SELECT tp_timescaledb_setup()").fetchone()[0].endswith(": nothing to change")
        assert schema_snapshot(conn) == snap and hypertables(conn) == ht


@needs_timescaledb
def test_timescaledb_bulk_writes_into_compressed_chunks(dsn):
    with connect(dsn, run_migrations=True) as store:
        conn = store.conn
        hold_policies(conn)
        store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["5m", "1h"]))
        store.add_symbol(SymbolInfo.create("ETH/USDT"))
        df = candles(3000)  # 125 days of 1h candles: 5 chunks of 30 days
        assert store.ingest_frame("BTC/USDT", "1h", df, "test").counts() == {
            "inserted": 3000, "updated": 0, "unchanged": 0, "rejected": 0}
        assert compress_all(conn, "ohlcv") >= 5 and compressed_chunks(conn, "ohlcv") >= 5
        # upsert over rows in compressed chunks: 3 changed, 97 unchanged, 100 new after the stored range
        df2 = pd.concat([df.iloc[2900:], candles(100, start=df.ts.iloc[-1] + pd.Timedelta("1h"), seed=3)])
        df2.loc[df2.index[:3], "volume"] += 1
        assert store.ingest_frame("BTC/USDT", "1h", df2, "test").counts() == {
            "inserted": 100, "updated": 3, "unchanged": 97, "rejected": 0}
        # a candle in the middle of a compressed chunk changed, another one missing and filled
        mid = df.iloc[[1000, 1001]].copy()
        mid["close"] = mid["low"]
        conn.execute("DELETE FROM ohlcv WHERE symbol = 'BTC/USDT' AND ts = %s", (mid.ts.iloc[1].to_pydatetime(),))
        assert store.ingest_frame("BTC/USDT", "1h", mid, "test").counts() == {
            "inserted": 1, "updated": 1, "unchanged": 0, "rejected": 0}
        back = store.read_candles("BTC/USDT", "1h")
        assert len(back) == 3100 and back.close[1000] == mid.low.iloc[0] and back.close[1001] == mid.low.iloc[1]
        assert conn.execute("SELECT count(*) FROM ohlcv_revisions WHERE symbol = 'BTC/USDT'").fetchone()[0] == 2
        # COPY straight into compressed chunks: another symbol over the same (compressed) months
        compress_all(conn, "ohlcv")
        assert store.ingest_frame("ETH/USDT", "1h", candles(3000, seed=5), "test").inserted == 3000
        assert store.candle_stats("ETH/USDT", "1h")["rows"] == 3000
        # the bulk reload path (>= 5000 overlapping rows: the join that drops unchanged rows first)
        five = candles(12_000, start="2024-02-01", freq="5min", seed=7)
        store.ingest_frame("BTC/USDT", "5m", five, "test")
        compress_all(conn, "ohlcv")
        five.loc[[5, 6000], "close"] = five.loc[[5, 6000], "low"]
        assert store.ingest_frame("BTC/USDT", "5m", five, "test").counts() == {
            "inserted": 0, "updated": 2, "unchanged": 11_998, "rejected": 0}
        back = store.read_candles("BTC/USDT", "5m")
        assert np.array_equal(back.close, five.close.to_numpy())
        assert np.array_equal(back.ts_us, five.ts.dt.as_unit("us").astype("int64").to_numpy())
        assert store.read_candles_tail("BTC/USDT", "5m", five.ts.iloc[-1].to_pydatetime(), 3).close.tolist() == \
            five.close.iloc[-3:].tolist()
        n, distinct = conn.execute("SELECT count(*), count(DISTINCT (symbol, timeframe, ts)) FROM ohlcv").fetchone()
        assert n == distinct == 3100 + 3000 + 12_000


@needs_timescaledb
def test_timescaledb_symbol_reference_live_path_and_purge(dsn):
    with connect(dsn, run_migrations=True) as store:
        conn = store.conn
        hold_policies(conn)
        store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"], live=True))
        store.ingest_frame("BTC/USDT", "1h", candles(2000), "test")
        compress_all(conn, "ohlcv")
        # a candle of a symbol not in symbols: refused by the write path, and by the foreign key in SQL
        with pytest.raises(UnknownSymbol):
            store.ingest_frame("NOPE/USDT", "1h", candles(5), "test")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO ohlcv VALUES ('NOPE', '1h', '2024-01-01 05:00+00', 1, 1, 1, 1, 1)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO ohlcv VALUES ('NOPE', '1h', now() - interval '3 days', 1, 1, 1, 1, 1)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            with conn.cursor() as cur, cur.copy("COPY ohlcv FROM STDIN") as cp:
                cp.write_row(("NOPE", "1h", datetime(2024, 1, 1, 7, tzinfo=timezone.utc), 1, 1, 1, 1, 1))
        with pytest.raises(psycopg.errors.ForeignKeyViolation):  # moving candles to an unknown symbol
            conn.execute("UPDATE ohlcv SET symbol = 'GHOST' WHERE symbol = 'BTC/USDT' AND ts < '2024-01-02'")
        # a symbol with candles can be neither renamed nor deleted in SQL
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="cannot be renamed"):
            conn.execute("UPDATE symbols SET symbol = 'XBT/USDT' WHERE symbol = 'BTC/USDT'")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("DELETE FROM symbols WHERE symbol = 'BTC/USDT'")
        assert store.candle_stats("BTC/USDT", "1h")["rows"] == 2000
        # the live path: tp_live_candle() upserts and records the outbox event in the same transaction,
        # for a recent candle (an uncompressed chunk) and for a corrected one in a compressed chunk
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        recent = candles(2, start=now - timedelta(hours=3), seed=9)
        r = store.write_live("BTC/USDT", "1h", recent)
        assert (r.inserted, len(r.events)) == (2, 2)
        old = candles(2000).iloc[[10]].copy()
        old["close"] = old["high"]
        r = store.write_live("BTC/USDT", "1h", old)
        assert (r.updated, len(r.events)) == (1, 1)
        got = conn.execute("SELECT e.ts, e.change, q.status FROM market_events e "
                           "JOIN market_event_queue q ON q.event_id = e.id ORDER BY e.id").fetchall()
        assert [g[1:] for g in got] == [("inserted", "pending")] * 2 + [("updated", "pending")]
        assert got[2][0] == old.ts.iloc[0].to_pydatetime()
        assert conn.execute("SELECT * FROM tp_live_candle('NOPE/USDT', '1h', '2024-01-01', 1, 1, 1, 1, 1)"
                            ).fetchone() == ("quarantined", None)
        assert conn.execute("SELECT count(*) FROM ohlcv WHERE symbol = 'NOPE/USDT'").fetchone()[0] == 0
        # features of the symbol in a compressed chunk too, then the purge removes all of it
        conn.execute("INSERT INTO features (symbol, timeframe, ts) SELECT symbol, timeframe, ts FROM ohlcv")
        compress_all(conn, "features")
        assert store.remove_symbol("BTC/USDT", purge=True) == 2002
        assert store.get_symbol("BTC/USDT") is None
        assert conn.execute("SELECT (SELECT count(*) FROM ohlcv) + (SELECT count(*) FROM features)").fetchone()[0] == 0


@needs_timescaledb
def test_timescaledb_features_add_columns_and_rewrite_compressed_chunks(dsn):
    from trading_platform.features.pipeline import materialize
    from trading_platform.features.spec import FeatureSpec
    from trading_platform.features.storage import read_features, write_features

    def months(*starts):
        ts = [datetime.fromisoformat(s).replace(tzinfo=timezone.utc) for s in starts]
        return list(zip(ts[:-1], ts[1:]))

    with connect(dsn, run_migrations=True) as store:
        conn = store.conn
        hold_policies(conn)
        info = SymbolInfo.create("BTC/USDT", timeframes=["1h"])
        store.add_symbol(info)
        store.ingest_frame("BTC/USDT", "1h", candles(24 * 91, start="2024-01-01"), "test")  # Jan-Mar 2024
        base_cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'features'")}
        report = materialize(store, info, FeatureSpec(), months("2024-01-01", "2024-02-01", "2024-03-01"))
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'features'")}
        assert len(cols - base_cols) >= report["columns"] > 10  # feature columns added to the hypertable
        first = read_features(conn, "BTC/USDT", "1h")
        assert len(first) == 24 * 60  # January and February
        assert compress_all(conn, "features") >= 2 and compressed_chunks(conn, "features") >= 2
        # re-materializing (DELETE + COPY) over compressed chunks, and the next month as well
        materialize(store, info, FeatureSpec(), months("2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"))
        again = read_features(conn, "BTC/USDT", "1h")
        assert len(again) == 24 * 91
        shared = [c for c in first.columns if c not in ("computed_at",)]
        assert again.filter(pl.col("ts") < datetime(2024, 3, 1, tzinfo=timezone.utc)).select(shared).equals(
            first.select(shared))
        # a new feature column on the compressed hypertable (ALTER TABLE ADD COLUMN), written into a compressed chunk
        compress_all(conn, "features")
        extra = again.select("symbol", "timeframe", "ts").with_columns(
            pl.lit(1.5).alias("tsdb_extra"), pl.col("ts").alias("tsdb_extra_ts"))
        a, b = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 8, tzinfo=timezone.utc)
        assert write_features(conn, extra, "BTC/USDT", "1h", a, b) == 24 * 7
        back = read_features(conn, "BTC/USDT", "1h", a, b)
        assert back["tsdb_extra"].to_list() == [1.5] * (24 * 7) and back["tsdb_extra_ts"].to_list() == back["ts"].to_list()
        assert read_features(conn, "BTC/USDT", "1h")["tsdb_extra"].null_count() == 24 * (91 - 7)


@needs_timescaledb
def test_timescaledb_converts_an_existing_plain_database_keeping_its_data(dsn, monkeypatch):
    with psycopg.connect(dsn, autocommit=True) as conn:
        # a database made before the extension was installed: plain tables with the triggers, and data
        assert migrate_as_of(conn, monkeypatch, 11) == list(range(1, 12))
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0] == 0
        plain = schema_snapshot(conn)
        assert {t[1] for t in plain["triggers"] if t[0] == "ohlcv"} == {"ohlcv_symbols_exist", "ohlcv_symbols_exist_update"}
    with MarketStore(psycopg.connect(dsn, autocommit=True), dsn) as store:  # the old release, no migration
        store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"], live=True))
        store.ingest_frame("BTC/USDT", "1h", candles(3000), "test")
        store.conn.execute("ALTER TABLE features ADD COLUMN f_one double precision")
        store.conn.execute("INSERT INTO features (symbol, timeframe, ts, f_one) "
                           "SELECT symbol, timeframe, ts, close FROM ohlcv")
        stored = store.read_candles("BTC/USDT", "1h")
    # the upgrade: migrate converts in place
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrate_as_of(conn, monkeypatch, 12, without_timescaledb=False) == [12]
        hold_policies(conn)
        ht = hypertables(conn)
        assert ht == {"features": (True, timedelta(days=30), 1), "ohlcv": (True, timedelta(days=30), 1)}
        snap = schema_snapshot(conn)
        assert not [t for t in snap["triggers"] if t[0] == "ohlcv"]
        assert ("ohlcv", "ohlcv_symbol_fkey", "f") in snap["constraints"]
        assert set(snap["columns"]) == set(plain["columns"]) | {("features", "f_one", "double precision")}
        assert conn.execute("SELECT count(*) FROM ONLY ohlcv").fetchone()[0] == 0  # the rows moved into chunks
        assert conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 3000
        assert conn.execute("SELECT count(*), sum(f_one) FROM features").fetchone() == conn.execute(
            "SELECT count(*), sum(close) FROM ohlcv").fetchone()
        assert migrate_as_of(conn, monkeypatch, 12, without_timescaledb=False) == []
        assert conn.execute("SELECT tp_timescaledb_setup()").fetchone()[0].endswith(": nothing to change")
    with connect(dsn, run_migrations=True) as store:
        back = store.read_candles("BTC/USDT", "1h")
        assert np.array_equal(back.ts_us, stored.ts_us) and np.array_equal(back.close, stored.close)
        compress_all(store.conn, "ohlcv")
        more = pd.concat([candles(3000), candles(100, start="2024-05-05 00:00+00", seed=3)], ignore_index=True)
        more.loc[[5, 2999], "volume"] += 1
        assert store.ingest_frame("BTC/USDT", "1h", more, "test").counts() == {
            "inserted": 100, "updated": 2, "unchanged": 2998, "rejected": 0}
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            store.conn.execute("INSERT INTO ohlcv VALUES ('NOPE', '1h', '2024-01-01', 1, 1, 1, 1, 1)")


@needs_timescaledb
def test_timescaledb_a_database_past_migration_12_is_converted_by_the_function(dsn, monkeypatch):
    """A database that took migration 12 before the extension was installed: migrate has nothing left to
    apply, ``SELECT tp_timescaledb_setup()`` converts it."""
    older = [(v, n, "SELECT 1" if v == 2 else sql.replace("SELECT tp_timescaledb_setup();", ""))
             for v, n, sql in MIGRATIONS]
    with psycopg.connect(dsn, autocommit=True) as conn:
        with monkeypatch.context() as m:
            m.setattr(migrations, "MIGRATIONS", older)
            migrate(conn)
        conn.execute("INSERT INTO symbols (symbol, category) VALUES ('BTC/USDT', 'crypto')")
        conn.execute("INSERT INTO ohlcv SELECT 'BTC/USDT', '1h', t, 1, 2, 0.5, 1.5, 10 FROM generate_series("
                     "'2024-01-01'::timestamptz, '2024-03-01', interval '1 hour') t")
        assert migrate(conn) == [] and hypertables_or_none(conn) is None
        msg = conn.execute("SELECT tp_timescaledb_setup()").fetchone()[0]
        assert "ohlcv: hypertable" in msg and "features: compression policy" in msg
        assert set(hypertables(conn)) == {"ohlcv", "features"}
        assert conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 1441


def hypertables_or_none(conn):
    if not conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]:
        return None
    return hypertables(conn)

"""The market store on a real PostgreSQL server: migrations, the write path, symbols."""

import numpy as np
import pandas as pd
import psycopg
import pytest

from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import InvalidInput, StoreUnavailable, UnknownSymbol
from trading_platform.store.db import connect, redact_dsn
from trading_platform.store.migrations import MIGRATIONS, current_version, migrate


def candles(n, start="2024-01-01", freq="1h", seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))) * scale
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({"ts": pd.date_range(start, periods=n, freq=freq, tz="UTC"), "open": open_,
                         "high": np.maximum(open_, close) * 1.01, "low": np.minimum(open_, close) * 0.99,
                         "close": close, "volume": rng.uniform(1, 10, n)})


def test_migrations_from_empty_and_rerun(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrate(conn) == [v for v, _, _ in MIGRATIONS]
        assert migrate(conn) == []  # re-run applies nothing
        assert current_version(conn) == MIGRATIONS[-1][0]
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert {"symbols", "ohlcv", "ingest_rejects", "schema_migrations"} <= tables
        pk = conn.execute("""SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum))
            FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = 'ohlcv'::regclass AND i.indisprimary""").fetchone()[0]
        assert pk == "symbol,timeframe,ts"


def test_write_counts_inserted_updated_unchanged_rejected(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    df = candles(500)
    r1 = store.ingest_frame("BTC/USDT", "1h", df, "test")
    assert r1.counts() == {"inserted": 500, "updated": 0, "unchanged": 0, "rejected": 0}
    r2 = store.ingest_frame("BTC/USDT", "1h", df, "test")
    assert r2.counts() == {"inserted": 0, "updated": 0, "unchanged": 500, "rejected": 0}
    # overlap: 3 rows changed, 100 new, one bad row
    df2 = pd.concat([df.iloc[400:], candles(100, start=df.ts.iloc[-1] + pd.Timedelta("1h"), seed=3)])
    df2.loc[df2.index[:3], "volume"] += 1
    df2 = pd.concat([df2, pd.DataFrame([{"ts": "2030-01-01T00:00:00Z", "open": 1, "high": 0.5, "low": 1,
                                         "close": 1, "volume": 1}])], ignore_index=True)
    r3 = store.ingest_frame("BTC/USDT", "1h", df2, "test")
    assert r3.counts() == {"inserted": 100, "updated": 3, "unchanged": 97, "rejected": 1}
    assert store.candle_stats("BTC/USDT", "1h")["rows"] == 600
    reject = store.conn.execute("SELECT symbol, timeframe, source, raw->>'high', reason FROM ingest_rejects").fetchall()
    assert reject == [("BTC/USDT", "1h", "test", "0.5", "high < low")]


def test_bulk_reload_takes_the_join_path_and_counts_changes(store):
    store.add_symbol(SymbolInfo.create("ETH/USDT"))
    df = candles(12_000, freq="5min")
    store.ingest_frame("ETH/USDT", "5m", df, "test")
    df2 = df.copy()
    df2.loc[[5, 6000], "close"] = df2.loc[[5, 6000], "low"]
    r = store.ingest_frame("ETH/USDT", "5m", df2, "test")
    assert r.counts() == {"inserted": 0, "updated": 2, "unchanged": 11_998, "rejected": 0}
    back = store.read_candles("ETH/USDT", "5m")
    assert np.array_equal(back.close, df2.close.to_numpy())
    assert np.array_equal(back.ts_us, df.ts.dt.as_unit("us").astype("int64").to_numpy())


def test_rows_are_never_duplicated_by_reingestion(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    for _ in range(3):
        store.ingest_frame("BTC/USDT", "1h", candles(50), "test")
    n, distinct = store.conn.execute("SELECT count(*), count(DISTINCT ts) FROM ohlcv").fetchone()
    assert n == distinct == 50


# the statement trigger's message on a plain table, the foreign key's on a TimescaleDB hypertable
UNKNOWN_SYMBOL = 'not in the symbols table|is not present in table "symbols"'


def test_unknown_symbol_is_refused_by_api_and_by_sql(store):
    with pytest.raises(UnknownSymbol, match="NOPE/USDT"):
        store.ingest_frame("NOPE/USDT", "1h", candles(5), "test")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match=UNKNOWN_SYMBOL):
        store.conn.execute("INSERT INTO ohlcv VALUES ('NOPE', '1h', now(), 1, 1, 1, 1, 1)")
    assert store.conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 0


def test_symbols_add_update_remove(store):
    store.add_symbol(SymbolInfo.create("AAPL", exchange="NASDAQ", timeframes=["1d"]))
    with pytest.raises(InvalidInput, match="already exists"):
        store.add_symbol(SymbolInfo.create("AAPL"))
    info = store.update_symbol("AAPL", enabled=False, live=True, timeframes=["1h", "1d"])
    assert (info.enabled, info.live, info.timeframes) == (False, True, ["1h", "1d"])
    assert store.get_symbol("AAPL").timeframes == ["1h", "1d"]
    with pytest.raises(InvalidInput) as e:
        store.update_symbol("AAPL", timeframes=["7m"])
    assert e.value.field == "timeframes"
    store.ingest_frame("AAPL", "1d", candles(10, freq="1D"), "test")
    with pytest.raises(InvalidInput, match="has 10 stored candles"):
        store.remove_symbol("AAPL")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):  # SQL cannot orphan candles either
        store.conn.execute("DELETE FROM symbols WHERE symbol = 'AAPL'")
    assert store.remove_symbol("AAPL", purge=True) == 10
    assert store.get_symbol("AAPL") is None and store.conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 0


def test_unreachable_database_names_host_never_password():
    dsn = "postgresql://trader:s3cr3t-pw@127.0.0.1:1/market"
    with pytest.raises(StoreUnavailable) as e:
        connect(dsn, connect_timeout=2)
    msg = e.value.message
    assert "127.0.0.1" in msg and "port 1" in msg and "s3cr3t-pw" not in msg
    assert e.value.field == "TP_DATABASE_URL"
    assert redact_dsn(dsn) == "postgresql://trader:***@127.0.0.1:1/market"
    assert "s3cr3t" not in redact_dsn("host=db password=s3cr3t user=x")


def test_reingested_rejects_are_counted_again_but_stored_once(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    df = candles(20)
    df.loc[3, "high"] = df.loc[3, "low"] / 2  # high < low
    df.loc[7, "volume"] = -1
    for _ in range(3):
        assert store.ingest_frame("BTC/USDT", "1h", df, "file:btc.csv").rejected == 2
    rows = store.conn.execute("SELECT source, reason FROM ingest_rejects ORDER BY reason").fetchall()
    assert rows == [("file:btc.csv", "high < low"), ("file:btc.csv", "negative volume")]
    # the same bad row from another source, or for another timeframe, is its own record
    store.ingest_frame("BTC/USDT", "1h", df, "file:other.csv")
    assert store.conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()[0] == 4


def test_renames_keep_the_symbol_reference(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT"))
    store.ingest_frame("BTC/USDT", "1h", candles(5), "test")
    # a candle cannot be moved to a symbol that is not in symbols
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match=UNKNOWN_SYMBOL):
        store.conn.execute("UPDATE ohlcv SET symbol = 'GHOST/USDT' WHERE symbol = 'BTC/USDT'")
    # a symbol that has candles cannot be renamed (its candles keep their name and stay referenced)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="cannot be renamed"):
        store.conn.execute("UPDATE symbols SET symbol = 'XBT/USDT' WHERE symbol = 'BTC/USDT'")
    assert store.candle_stats("BTC/USDT", "1h")["rows"] == 5 and store.get_symbol("BTC/USDT") is not None
    # moving candles to another managed symbol, and renaming a symbol without candles, are allowed
    store.add_symbol(SymbolInfo.create("ETH/USDT"))
    store.conn.execute("UPDATE ohlcv SET symbol = 'ETH/USDT' WHERE symbol = 'BTC/USDT'")
    store.conn.execute("UPDATE symbols SET symbol = 'XBT/USDT' WHERE symbol = 'BTC/USDT'")
    assert store.get_symbol("XBT/USDT") is not None and store.candle_stats("ETH/USDT", "1h")["rows"] == 5
    # other updates of symbols and of candles are untouched by the triggers
    store.update_symbol("ETH/USDT", live=True)
    store.conn.execute("UPDATE ohlcv SET volume = volume + 1 WHERE symbol = 'ETH/USDT'")

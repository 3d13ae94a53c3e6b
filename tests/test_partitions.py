"""The `month` partitions start where the market's history starts, as the code location loads them.

Each load is a new process importing ``trading_platform.definitions`` (what a code-location reload, a run and
the daemon do), over a real database.
"""

import json
import os
import subprocess
import sys
import time

from conftest import utc
from trading_platform.core.symbols import SymbolInfo
from trading_platform.sources.synthetic import SyntheticSource

LOAD = """
import json
from trading_platform.assets.market_data import OHLCV_KEY
from trading_platform.definitions import defs

months = defs.get_repository_def().asset_graph.get(OHLCV_KEY).partitions_def.get_partitions_def_for_dimension("month")
keys = months.get_partition_keys()
print(json.dumps({"first": keys[0], "last": keys[-1], "months": keys}))
"""


def load(dsn, tmp_path, **env):
    """The month partitions of a fresh load of the code location over ``dsn``."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TP_")}
    out = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, timeout=120,
                         env={**base, "TP_DATABASE_URL": dsn, "TP_HOME": str(home), "TP_LOG_LEVEL": "WARNING", **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def store_candles(store, symbol, start, end):
    if store.get_symbol(symbol) is None:
        store.add_symbol(SymbolInfo.create(symbol, timeframes=["1h"]))
    df = SyntheticSource().fetch(SymbolInfo.create(symbol), "1h", start, end)
    return store.ingest_frame(symbol, "1h", df, "test")


def this_month() -> str:
    return utc(*time.gmtime()[:2], 1).strftime("%Y-%m-01")


def test_they_start_at_the_first_month_with_candles(store, dsn, tmp_path):
    # a store with no history: the wide default (the demo and backfills of a fresh install ask for any month)
    fresh, _ = load(dsn, tmp_path)
    assert fresh["first"] == "2018-01-01"
    store_candles(store, "BTC/USDT", utc(2025, 3, 10), utc(2025, 4, 5))
    store_candles(store, "ETH/USDT", utc(2025, 4, 1), utc(2025, 4, 20))
    parts, _ = load(dsn, tmp_path)
    assert parts["first"] == "2025-03-01" and parts["last"] == this_month()  # not 2018-01: no empty years
    assert store.history_start() == "2025-03-01"


def test_tp_history_start_moves_them_earlier_never_later(store, dsn, tmp_path):
    store_candles(store, "BTC/USDT", utc(2025, 3, 10), utc(2025, 3, 20))
    earlier, _ = load(dsn, tmp_path, TP_HISTORY_START="2024-11-01")
    assert earlier["first"] == "2024-11-01"
    later, _ = load(dsn, tmp_path, TP_HISTORY_START="2025-06-01")  # after the data: the data's first month holds
    assert later["first"] == "2025-03-01"


def test_older_history_extends_them(store, dsn, tmp_path, instance):
    from trading_platform.backfill import create_backfill
    from trading_platform.ingest import ingest_file
    from trading_platform.symbols import sync_partitions

    store_candles(store, "BTC/USDT", utc(2025, 3, 10), utc(2025, 3, 20))
    assert load(dsn, tmp_path)[0]["first"] == "2025-03-01"

    # a file of older candles: its months are recorded in Dagster and are partitions from the next load on
    df = SyntheticSource().fetch(SymbolInfo.create("BTC/USDT"), "1h", utc(2025, 1, 20), utc(2025, 2, 3))
    path = tmp_path / "older.csv"
    df.to_csv(path, index=False)
    _, recorded = ingest_file(store, path, "BTC/USDT", "1h", instance=instance)
    assert recorded["months"] == ["2025-01-01", "2025-02-01"] and recorded["months_outside_partitions"] == []
    assert recorded["first_month"] == "2025-01-01"
    assert load(dsn, tmp_path)[0]["first"] == "2025-01-01"

    # a backfill of months before any stored: accepted, recorded, partitions at the next load
    sync_partitions(instance, store)
    out = create_backfill(instance, store, None, "BTC/USDT", utc(2024, 10, 1).date(), utc(2024, 11, 30).date(),
                          ("market",))
    assert out["months"] == ["2024-10", "2024-11"] and out["first_month"] == "2024-10"
    assert out["reload_code_location"] is True
    target = instance.get_backfill(out["backfill_id"]).asset_backfill_data.target_subset
    keys = {str(k.partition_key) for k in target.iterate_asset_partitions()}
    assert keys == {"2024-10-01|BTC/USDT", "2024-11-01|BTC/USDT"}
    reloaded, _ = load(dsn, tmp_path)
    assert reloaded["first"] == "2024-10-01"
    assert {k.split("|")[0] for k in keys} <= set(reloaded["months"])  # the daemon's load knows every target
    # within what is known, a backfill moves nothing and asks for no reload
    again = create_backfill(instance, store, None, "BTC/USDT", utc(2025, 1, 1).date(), utc(2025, 2, 1).date(),
                            ("market",))
    assert again["reload_code_location"] is False and again["first_month"] == "2024-10"


SENSOR = """
from dagster import DagsterInstance, build_sensor_context
from trading_platform.resources import MarketDB
from trading_platform.sensors.market_data import symbol_partitions_sensor
from trading_platform.store.db import connect

with connect({dsn!r}) as store:
    store.extend_history("2024-06-01")  # a backfill from another process, after this code location loaded
with DagsterInstance.ephemeral() as inst, build_sensor_context(
        instance=inst, resources={{"market_db": MarketDB(database_url={dsn!r})}}) as ctx:
    inst.add_dynamic_partitions("symbol", ["BTC/USDT"])
    print(symbol_partitions_sensor.evaluate_tick(ctx).skip_message)
"""


def test_the_symbols_sensor_says_when_a_reload_would_show_older_months(store, dsn, tmp_path):
    store_candles(store, "BTC/USDT", utc(2025, 3, 10), utc(2025, 3, 20))
    base = {k: v for k, v in os.environ.items() if not k.startswith("TP_")}
    out = subprocess.run([sys.executable, "-c", SENSOR.format(dsn=dsn)], capture_output=True, text=True, timeout=120,
                         env={**base, "TP_DATABASE_URL": dsn, "TP_HOME": str(tmp_path), "TP_EMBEDDED": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    message = out.stdout.strip().splitlines()[-1]
    assert message.startswith("1 symbols, partitions in step") and "starts at 2024-06" in message
    assert "before the first month partition (2025-03)" in message and "reload" in message


def test_a_load_that_cannot_read_the_store_uses_the_copy_kept_by_the_last_one(store, dsn, tmp_path, pg_server):
    import psycopg

    store_candles(store, "BTC/USDT", utc(2025, 3, 10), utc(2025, 3, 20))
    assert load(dsn, tmp_path)[0]["first"] == "2025-03-01"  # read, and kept under TP_HOME
    store.close()
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")
    t0 = time.monotonic()
    parts, err = load(dsn, tmp_path)
    assert parts["first"] == "2025-03-01" and time.monotonic() - t0 < 30
    assert "could not be read from the market store" in err and "2025-03, kept in" in err
    # another database's copy is not this one's: the wide default, said once
    other = dsn.replace(f"/{name}?", "/t_nosuchdb?") if f"/{name}?" in dsn else dsn + " dbname=t_nosuchdb"
    parts, err = load(other, tmp_path)
    assert parts["first"] == "2018-01-01" and err.count("could not be read") == 1


def test_an_existing_store_starts_where_its_candles_do(dsn):
    import psycopg

    from trading_platform.store.migrations import migrate

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET TimeZone = 'Asia/Tokyo'")  # months are UTC months whatever the session's zone
        migrate(c, upto=13)
        c.execute("INSERT INTO symbols (symbol, category, timeframes) VALUES ('BTC/USDT', 'crypto', '{1h,4h}'), "
                  "('ETH/USDT', 'crypto', '{1h}')")
        c.execute("INSERT INTO ohlcv VALUES ('BTC/USDT', '4h', '2024-07-31 20:00+00', 1, 1, 1, 1, 1), "
                  "('ETH/USDT', '1h', '2024-09-01 00:00+00', 1, 1, 1, 1, 1)")
        assert migrate(c)[0] == 14  # the stored history seeds the first month (later migrations follow)
        assert c.execute("SELECT tp_history_start()").fetchone()[0].isoformat() == "2024-07-01"
        # no month recorded (candles only from the live path): the oldest stored candle's month
        c.execute("UPDATE history_start SET first_month = NULL")
        c.execute("INSERT INTO ohlcv VALUES ('ETH/USDT', '1h', '2024-05-31 23:00+00', 1, 1, 1, 1, 1)")
        assert c.execute("SELECT tp_history_start()").fetchone()[0].isoformat() == "2024-05-01"

import pytest

from trading_platform.core.symbols import SymbolInfo, validate_symbol
from trading_platform.core.timeframes import TIMEFRAMES, parse_timeframe
from trading_platform.errors import InvalidInput


@pytest.mark.parametrize("alias,expected", [
    ("60m", "1h"), ("H1", "1h"), ("1H", "1h"), ("D1", "1d"), ("1wk", "1w"), ("1day", "1d"),
    ("5min", "5m"), ("M15", "15m"), ("240m", "4h"), ("1m", "1m"), ("4h", "4h"),
])
def test_timeframe_aliases(alias, expected):
    assert parse_timeframe(alias) == expected


@pytest.mark.parametrize("bad", ["2m", "1M", "", "fortnight", "3h"])
def test_unknown_timeframes_are_refused_with_the_list(bad):
    with pytest.raises(InvalidInput) as e:
        parse_timeframe(bad)
    assert e.value.field == "timeframe"
    assert "1m" in e.value.message and "1w" in e.value.message


def test_timeframe_list_is_fixed():
    assert list(TIMEFRAMES) == ["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]


@pytest.mark.parametrize("name", ["BTC/USDT", "BTC/USDT:USDT", "EURUSD=X", "^GSPC", "BRK.B", "GC=F", "BTC-USD"])
def test_exchange_and_yahoo_names_are_accepted(name):
    assert validate_symbol(name) == name


@pytest.mark.parametrize("name", [
    "BTC'; DROP TABLE ohlcv;--", "BTC USDT", "a|b", "a,b", "a[1]", "x]", 'q"', "tab\tx", "", "x" * 65, "///",
])
def test_bad_symbol_names_are_refused(name):
    with pytest.raises(InvalidInput) as e:
        validate_symbol(name)
    assert e.value.field == "symbol"


def test_symbol_info_infers_category_and_pair():
    btc = SymbolInfo.create("BTC/USDT:USDT", timeframes=["1h", "5m", "60m"])
    assert (btc.category, btc.base, btc.quote) == ("crypto", "BTC", "USDT")
    assert btc.timeframes == ["5m", "1h"] and btc.base_timeframe == "5m"
    eur = SymbolInfo.create("EURUSD=X")
    assert (eur.category, eur.base, eur.quote) == ("forex", "EUR", "USD")
    assert SymbolInfo.create("AAPL").category == "stock"
    with pytest.raises(InvalidInput) as e:
        SymbolInfo.create("AAPL", category="bond")
    assert e.value.field == "category"


# ---- what a probe found: bad input to `tp symbols` and `tp ingest` that reached the database or stranded rows ----

def _frame(n, start="2025-03-03", freq="1h"):
    import numpy as np
    import pandas as pd

    close = 100 + np.arange(float(n))
    return pd.DataFrame({"ts": pd.date_range(start, periods=n, freq=freq, tz="UTC"), "open": close,
                         "high": close + 1, "low": close - 1, "close": close, "volume": 5.0})


@pytest.mark.parametrize("meta", ['{"a": NaN}', '{"a": Infinity}', '{"a": [-Infinity]}', '{"a": {"b": 1e999}}',
                                  '{"a": "x\\u0000y"}', '{"k\\u0000": 1}', '{"a": "\\ud800"}', {"a": float("nan")}])
def test_metadata_jsonb_cannot_hold_is_refused_naming_it(store, meta):
    from trading_platform.api import symbols

    with pytest.raises(InvalidInput) as e:
        symbols.add_symbol("S10", metadata=meta, store=store)
    assert e.value.field == "metadata" and "\n" not in e.value.message
    assert store.get_symbol("S10") is None
    symbols.add_symbol("S13", metadata='{"ok": 1.5}', store=store)
    with pytest.raises(InvalidInput) as e:
        symbols.update_symbol("S13", metadata=meta, store=store)
    assert e.value.field == "metadata" and store.get_symbol("S13").metadata == {"ok": 1.5}


def test_purge_deletes_the_symbols_outputs_and_removal_without_it_is_refused(store):
    from trading_platform.api import outputs, symbols

    sql = store.conn.execute
    symbols.add_symbol("EURUSD=X", store=store)
    store.ingest_frame("EURUSD=X", "1h", _frame(5), "test")
    sql("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
        "('m', '1', now() - interval '1 day', 'seed')")
    sql("INSERT INTO predictions (model_name, model_version, symbol, timeframe, ts, value) VALUES "
        "('m', '1', 'EURUSD=X', '1h', '2025-03-03 01:00+00', 0.9)")
    sql("INSERT INTO forecasts (model_name, model_version, symbol, timeframe, origin_ts, step, median, quantiles) "
        "VALUES ('m', '1', 'EURUSD=X', '1h', '2025-03-03 01:00+00', 1, 101, '{}')")
    sql("INSERT INTO output_series VALUES ('predictions', 'm', '1', 'EURUSD=X', '1h', '2025-03-03 01:00+00', "
        "'2025-03-03 01:00+00'), ('forecasts', 'm', '1', 'EURUSD=X', '1h', '2025-03-03 01:00+00', "
        "'2025-03-03 01:00+00')")
    sql("INSERT INTO rag_sync_state VALUES ('EURUSD=X', '1h', now())")
    sql("INSERT INTO strategies VALUES ('s', 'v1', 'buy_and_hold', '{\"universe\": []}')")
    sql("INSERT INTO paper_runs (run_id, mode, strategy_name, strategy_version, cash, status) VALUES "
        "('r1', 'backtest', 's', 'v1', 1000, 'done')")
    sql("INSERT INTO orders (order_id, run_id, symbol, timeframe, signal_ts, side, intent, quantity, status) VALUES "
        "('o1', 'r1', 'EURUSD=X', '1h', '2025-03-03 01:00+00', 'buy', 'entry', 1, 'filled')")
    assert outputs.get_outputs("predictions", symbols="EURUSD=X", store=store)["rows"]  # served before
    store.conn.execute("DELETE FROM ohlcv")  # candles gone some other way: the outputs alone refuse the removal
    with pytest.raises(InvalidInput) as e:
        symbols.remove_symbol("EURUSD=X", store=store)
    assert e.value.field == "symbol" and "1 predictions" in e.value.message
    assert "--purge" in e.value.message and store.get_symbol("EURUSD=X") is not None
    symbols.remove_symbol("EURUSD=X", purge=True, store=store)
    symbols.add_symbol("EURUSD=X", store=store)
    assert outputs.get_outputs("predictions", symbols="EURUSD=X", store=store)["rows"] == []
    assert outputs.get_outputs("forecasts", symbols="EURUSD=X", store=store)["rows"] == []
    for table in ("predictions", "forecasts", "output_series", "rag_sync_state"):
        assert sql(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert sql("SELECT count(*) FROM orders").fetchone()[0] == 1  # a backtest is a record of its run: it stays


def test_ingest_checks_category_and_exchange_as_symbols_add_does(store, tmp_path):
    from trading_platform.ingest import ingest_file

    path = tmp_path / "good.csv"
    _frame(5).to_csv(path, index=False)
    ingest_file(store, path, "EURUSD=X", "1h")
    for opts, field, words in (({"category": "bogus"}, "category", "unknown category"),
                               ({"exchange": "bad x"}, "exchange", "invalid exchange"),
                               ({"category": "stock"}, "category", "stored category 'forex'"),
                               ({"exchange": "NYSE"}, "exchange", "stored exchange 'fx'")):
        with pytest.raises(InvalidInput) as e:
            ingest_file(store, path, "EURUSD=X", "1h", **opts)
        assert e.value.field == field and words in e.value.message, e.value.message
    ingest_file(store, path, "EURUSD=X", "1h", category="forex", exchange="fx")  # what is stored: fine
    _frame(5, freq="5min").to_csv(tmp_path / "five.csv", index=False)
    with pytest.raises(InvalidInput) as e:  # a finer file would make the loaded 1h candles derived from it
        ingest_file(store, tmp_path / "five.csv", "EURUSD=X", "5m")
    assert "5 stored 1h candles" in e.value.message and store.get_symbol("EURUSD=X").timeframes == ["1h"]
    with pytest.raises(InvalidInput) as e:
        ingest_file(store, path, "BTC/USDT", "1h", exchange="nosuchexchange")
    assert e.value.field == "exchange" and "not a ccxt exchange id" in e.value.message
    assert store.get_symbol("BTC/USDT") is None


def test_update_cannot_strand_or_overwrite_stored_candles(store):
    from trading_platform.api import symbols

    symbols.add_symbol("T1", timeframes="1h", store=store)
    store.ingest_frame("T1", "1h", _frame(6), "test")
    with pytest.raises(InvalidInput) as e:
        symbols.update_symbol("T1", timeframes="4h", store=store)
    assert e.value.field == "timeframes" and "6 stored 1h candles" in e.value.message and "--purge" in e.value.message
    with pytest.raises(InvalidInput) as e:
        symbols.update_symbol("T1", timeframes="5m,1h", store=store)
    assert e.value.field == "timeframes" and "resampling 5m" in e.value.message
    assert store.get_symbol("T1").timeframes == ["1h"]
    assert symbols.update_symbol("T1", timeframes="1h,1d", store=store)["timeframes"] == ["1h", "1d"]
    store.conn.execute("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES "
                       "('T1', '1d', '2025-03-03', 1, 2, 0.5, 1.5, 3)")  # a day resampled from the hours
    assert symbols.update_symbol("T1", timeframes="1h", store=store)["timeframes"] == ["1h"]  # derived: may go


def test_a_symbol_that_differs_from_a_stored_one_only_in_case_is_refused(store):
    """btc/usdt was added beside BTC/USDT: one market twice (the files source reads one file for both)."""
    from trading_platform.api import symbols

    symbols.add_symbol("BTC/USDT", store=store)
    with pytest.raises(InvalidInput) as e:
        symbols.add_symbol("btc/usdt", store=store)
    assert e.value.field == "symbol" and "'BTC/USDT'" in e.value.message
    assert [s.symbol for s in store.list_symbols()] == ["BTC/USDT"]

"""Sources behind one interface. Network adapters run on recorded responses only."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

import recorded
from conftest import utc
from trading_platform.core.candles import normalize_candles
from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import InvalidInput, SourceUnavailable
from trading_platform.sources import CandleSource, FallbackSource, build_source
from trading_platform.sources.exchange import CcxtSource
from trading_platform.sources.files import FileSource
from trading_platform.sources.postgres import PostgresTableSource
from trading_platform.sources.synthetic import SyntheticSource
from trading_platform.sources.yahoo import YahooSource

BTC = SymbolInfo.create("BTC/USDT")


def test_synthetic_is_deterministic_and_independent_of_the_window():
    src = SyntheticSource(seed=11)
    whole = src.fetch(BTC, "5m", utc(2025, 1, 1), utc(2025, 3, 1))
    feb = SyntheticSource(seed=11).fetch(BTC, "5m", utc(2025, 2, 1), utc(2025, 3, 1))
    pd.testing.assert_frame_equal(whole[whole.ts >= "2025-02-01"].reset_index(drop=True), feb)
    other = SyntheticSource(seed=12).fetch(BTC, "5m", utc(2025, 2, 1), utc(2025, 3, 1))
    assert not np.allclose(other.close, feb.close)
    n = normalize_candles(whole, "5m", now=utc(2026, 1, 1))
    assert not n.rejects and len(n) == 59 * 288  # every candle valid, none missing


def test_synthetic_has_pumps_regimes_and_volume_spikes():
    df = SyntheticSource(seed=7).fetch(BTC, "5m", utc(2025, 1, 1), utc(2025, 7, 1))
    rise = df.close.rolling(12).max() / df.close.shift(12) - 1
    assert (rise > 0.08).sum() > 0  # at least one rise of >8% within an hour: a pump
    vol_ratio = df.volume / df.volume.rolling(288).median()
    assert vol_ratio.max() > 5
    weekly = np.log(df.set_index("ts").close.resample("7D").last()).diff().dropna()
    assert (weekly > 0).any() and (weekly < 0).any()


def test_synthetic_plants_exactly_the_daily_season_season_level_names(monkeypatch):
    """``season_level`` (benchmarks/nhits_demo.py's oracle reads it) is the season in the candles: the close of the
    candle stamped t carries ``season_level(t)``, the same amplitude and phase, and nothing else of the market
    moves with it."""
    from trading_platform.sources import synthetic

    src = SyntheticSource(seed=7)
    with_season = src.fetch(BTC, "1h", utc(2025, 3, 1), utc(2025, 3, 6))
    monkeypatch.setattr(synthetic, "_CACHE", {})  # the paths are cached per process: generate them anew
    monkeypatch.setattr(synthetic, "season_level", lambda symbol, category, t_s: np.zeros(len(t_s)))
    without = src.fetch(BTC, "1h", utc(2025, 3, 1), utc(2025, 3, 6))
    assert (with_season.ts == without.ts).all() and len(with_season) == 5 * 24
    moved = np.log(with_season.close.to_numpy()) - np.log(without.close.to_numpy())
    monkeypatch.undo()
    stamps = with_season.ts.dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype("int64")
    level = synthetic.season_level("BTC/USDT", "crypto", stamps)
    assert np.ptp(level) > 0.01  # about 3 hourly standard deviations of BTC from trough to peak
    np.testing.assert_allclose(moved - moved[0], level - level[0], atol=1e-9)


def test_synthetic_markets_close_like_real_ones():
    fx = SyntheticSource().fetch(SymbolInfo.create("EURUSD=X"), "1h", utc(2025, 1, 6), utc(2025, 1, 13))
    sat = fx[fx.ts.dt.day_of_week == 5]
    assert len(sat) == 0 and len(fx) == 120  # Sun 22:00 .. Fri 22:00 UTC in winter
    aapl = SyntheticSource().fetch(SymbolInfo.create("AAPL", exchange="NASDAQ"), "1h", utc(2025, 1, 6), utc(2025, 1, 7))
    assert aapl.ts.dt.hour.tolist() == [14, 15, 16, 17, 18, 19, 20]  # 09:30-16:00 New York


def test_file_source_reads_one_file_per_symbol_and_timeframe(tmp_path):
    df = SyntheticSource().fetch(BTC, "1h", utc(2025, 1, 1), utc(2025, 1, 3))
    df.rename(columns=str.upper).to_csv(tmp_path / "BTC-USDT_1h.csv", index=False)
    got = FileSource(tmp_path).fetch(BTC, "1h", utc(2025, 1, 2), utc(2025, 1, 3))
    assert len(got) == 24
    with pytest.raises(InvalidInput, match="BTC-USDT_5m.csv"):
        FileSource(tmp_path).fetch(BTC, "5m", utc(2025, 1, 2), utc(2025, 1, 3))


def test_postgres_table_source_reads_an_existing_table(dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ohlcv_1h (symbol text, ts timestamptz, open float8, high float8, "
                     "low float8, close float8, volume float8)")
        for i in range(30):
            conn.execute("INSERT INTO ohlcv_1h VALUES ('BTC/USDT', %s, 1, 2, 0.5, 1.5, 10)",
                         (utc(2025, 1, 1) + timedelta(hours=i),))
    src = build_source("postgres:ohlcv_1h", dsn=dsn)
    got = src.fetch(BTC, "1h", utc(2025, 1, 1, 5), utc(2025, 1, 1, 10))
    assert len(got) == 5 and got.ts.iloc[0] == utc(2025, 1, 1, 5)
    with pytest.raises(InvalidInput, match="does not exist"):
        PostgresTableSource(dsn).fetch(BTC, "4h", utc(2025, 1, 1), utc(2025, 1, 2))  # ohlcv_4h
    with pytest.raises(InvalidInput) as e:
        src.fetch(BTC, "5m", utc(2025, 1, 1), utc(2025, 1, 2))
    assert e.value.field == "timeframe" and "holds 1h candles, not 5m" in e.value.message
    with pytest.raises(InvalidInput):
        PostgresTableSource(dsn, "ohlcv; DROP TABLE x")
    assert build_source("postgres", dsn=dsn).table_for("H1") == "ohlcv_1h"  # the default template


def test_ccxt_binance_on_recorded_responses_pages_through_klines():
    session, adapter = recorded.session("binance")
    src = CcxtSource("binance", session=session)
    df = src.fetch(BTC, "1m", utc(2024, 1, 1), utc(2024, 1, 1) + timedelta(minutes=1500))
    assert len(df) == 1500 and df.ts.is_monotonic_increasing
    first = recorded.load("binance", "api_v3_klines@1704067200000.json")[0]
    assert df.iloc[0].tolist()[1:] == [float(x) for x in first[1:6]]
    klines = [u for u in adapter.requests if "klines" in u]
    assert len(klines) == 2 and "startTime=1704127200000" in klines[1]  # second page
    n = normalize_candles(df, "1m", now=utc(2025, 1, 1))
    assert len(n) == 1500 and not n.rejects


def test_ccxt_retries_transient_outages_then_reports():
    session, adapter = recorded.session("binance", fail_first=2)
    df = CcxtSource("binance", session=session, retry_delay=0.01).fetch(
        BTC, "1m", utc(2024, 1, 1), utc(2024, 1, 1, 1))
    assert len(df) == 60 and adapter.fail_first == 0
    session, _ = recorded.session("binance", fail_first=100)
    with pytest.raises(SourceUnavailable, match="unreachable after retries"):
        CcxtSource("binance", session=session, retry_delay=0.01).fetch(BTC, "1m", utc(2024, 1, 1), utc(2024, 1, 1, 1))


def test_ccxt_unknown_symbol_and_exchange_are_bad_input():
    session, _ = recorded.session("binance")
    with pytest.raises(InvalidInput, match="does not list 'DOGE/EUR'"):
        CcxtSource("binance", session=session).fetch(
            SymbolInfo.create("DOGE/EUR"), "1m", utc(2024, 1, 1), utc(2024, 1, 2))
    with pytest.raises(InvalidInput) as e:
        CcxtSource("nosuchexchange").fetch(BTC, "1m", utc(2024, 1, 1), utc(2024, 1, 2))
    assert e.value.field == "exchange"


def test_yahoo_on_a_recorded_history_frame():
    rec = pd.read_csv(recorded.FIXTURES / "yahoo" / "AAPL_1d.csv", index_col=0)
    calls = []

    def history(symbol, start, end, interval):
        calls.append((symbol, interval))
        return rec

    src = YahooSource(history=history)
    df = src.fetch(SymbolInfo.create("AAPL"), "1d", utc(2024, 2, 1), utc(2024, 4, 1))
    n = normalize_candles(df, "1d", now=utc(2025, 1, 1))
    assert calls == [("AAPL", "1d")] and len(n) == 20 and not n.rejects
    days = n.to_frame().ts
    assert days.iloc[0] == utc(2024, 2, 26) and days.iloc[-1] == utc(2024, 3, 22)  # DST switch kept the dates
    with pytest.raises(InvalidInput, match="no 4h"):
        src.fetch(SymbolInfo.create("AAPL"), "4h", utc(2024, 2, 1), utc(2024, 4, 1))


def test_fallbacks_are_tried_in_order_and_all_failures_reported():
    class Down(CandleSource):
        name = "down"

        def fetch(self, *a):
            raise ConnectionError("unreachable")

    fb = FallbackSource([Down(), SyntheticSource(seed=3)])
    df = fb.fetch(BTC, "1h", utc(2025, 1, 1), utc(2025, 1, 2))
    assert len(df) == 24 and fb.last_used == "synthetic:3"
    with pytest.raises(SourceUnavailable) as e:
        FallbackSource([Down(), Down()]).fetch(BTC, "1h", utc(2025, 1, 1), utc(2025, 1, 2))
    assert e.value.message.count("down: ConnectionError: unreachable") == 2


@pytest.mark.parametrize("spec,field", [("nope", "source"), ("files", "source"), ("synthetic:x", "source"), ("", "source"),
                                        ("postgres:candles", "source"), ("postgres:candles?tf=x", "source"),
                                        ("postgres:candles?timeframe_column=a;b", "timeframe_column")])
def test_bad_source_specs_name_the_problem(spec, field):
    with pytest.raises(InvalidInput) as e:
        build_source(spec)
    assert e.value.field == field

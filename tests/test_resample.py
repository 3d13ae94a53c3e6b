"""Resampling uses closed candles only: no look-ahead, no half-formed buckets."""

import numpy as np

from conftest import utc
from trading_platform.core.calendars import find_gaps, slot_open
from trading_platform.core.candles import normalize_candles
from trading_platform.core.resample import resample
from trading_platform.core.symbols import SymbolInfo
from trading_platform.sources.synthetic import SyntheticSource

US = 1_000_000


def lower(symbol="BTC/USDT", tf="5m", start=utc(2025, 3, 1), end=utc(2025, 3, 3)):
    return normalize_candles(SyntheticSource().fetch(SymbolInfo.create(symbol), tf, start, end), tf,
                             now=utc(2026, 1, 1))


def test_resampled_values_are_the_aggregates_of_their_bucket():
    five = lower()
    hour = resample(five, 300, 3600, now_us=int(utc(2026, 1, 1).timestamp() * US)).candles
    assert len(hour) == 48
    f = five.to_frame().set_index("ts")
    first = f.loc["2025-03-01 00:00":"2025-03-01 00:55"]
    assert hour.open[0] == first.open.iloc[0] and hour.close[0] == first.close.iloc[-1]
    assert hour.high[0] == first.high.max() and hour.low[0] == first.low.min()
    assert np.isclose(hour.volume[0], first.volume.sum())


def test_no_look_ahead_altering_the_future_changes_nothing_before_t():
    five = lower()
    t = int(utc(2025, 3, 2, 10).timestamp() * US)
    now = int(utc(2026, 1, 1).timestamp() * US)
    base = resample(five, 300, 3600, now_us=now).candles
    altered = five.take(np.ones(len(five), dtype=bool))
    future = altered.ts_us >= t
    altered.close[future] *= 3
    altered.high[future] *= 3
    altered.volume[future] = 0
    alt = resample(altered, 300, 3600, now_us=now).candles
    before = base.ts_us < t
    assert before.sum() == 34
    for col in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(base, col)[before], getattr(alt, col)[before])
    # removing the future entirely: the buckets before t are still identical
    cut = five.take(five.ts_us < t)
    trunc = resample(cut, 300, 3600, now_us=now).candles
    assert np.array_equal(trunc.close, base.close[before]) and np.array_equal(trunc.ts_us, base.ts_us[before])


def test_a_bucket_still_forming_is_not_emitted():
    five = lower(end=utc(2025, 3, 1, 2, 30))  # 00:00 .. 02:25 stored
    horizon = int(five.ts_us[-1] + 300 * US)  # 02:30
    out = resample(five, 300, 3600, now_us=horizon)
    assert [int(x // US) for x in out.candles.ts_us] == [int(utc(2025, 3, 1, h).timestamp()) for h in (0, 1)]
    assert out.incomplete == 0  # 02:00-03:00 has not ended: forming, not incomplete
    # the clock has passed 03:00 but the 02:30-03:00 candles are not stored yet: still not emitted
    later = resample(five, 300, 3600, now_us=horizon + 3600 * US,
                     market_open=lambda ts, s: slot_open("crypto", None, ts, s))
    assert len(later.candles) == 2 and later.incomplete == 1


def test_a_bucket_with_a_hole_in_the_middle_is_not_written_until_the_candle_arrives():
    five = lower()
    now = int(utc(2026, 1, 1).timestamp() * US)
    hole = int(utc(2025, 3, 1, 10, 20).timestamp() * US)
    holed = five.take(five.ts_us != hole)
    out = resample(holed, 300, 3600, now_us=now, market_open=lambda ts, s: slot_open("crypto", None, ts, s))
    assert len(out.candles) == 47 and out.incomplete == 1 and out.incomplete_first_ts == hole - 20 * 60 * US
    assert int(utc(2025, 3, 1, 10).timestamp() * US) not in out.candles.ts_us
    # the candle arrives: the bucket is written, with the values of all twelve
    full = resample(five, 300, 3600, now_us=now, market_open=lambda ts, s: slot_open("crypto", None, ts, s))
    assert len(full.candles) == 48 and full.incomplete == 0


def test_forex_friday_is_complete_once_the_market_closes():
    fx = SymbolInfo.create("EURUSD=X")
    hours = lower("EURUSD=X", "1h", utc(2025, 1, 6), utc(2025, 1, 11))  # Mon .. Sat, market shut Fri 22:00
    day = resample(hours, 3600, 86400, now_us=int(utc(2025, 1, 11, 12).timestamp() * US),
                   market_open=lambda ts, s: slot_open(fx.category, fx.exchange, ts, s))
    assert [utc(2025, 1, d).timestamp() for d in (6, 7, 8, 9, 10)] == [t / US for t in day.candles.ts_us]
    assert day.incomplete == 0


def test_stock_sessions_come_from_the_exchange_calendar():
    def at(*args):
        return np.array([int(utc(*args).timestamp() * US)])

    # NYSE: Independence Day is a holiday; the day before closes early (13:00 New York = 17:00 UTC)
    assert not slot_open("stock", "NASDAQ", at(2025, 7, 4, 15), 3600)[0]
    assert slot_open("stock", "NASDAQ", at(2025, 7, 3, 16), 3600)[0]
    assert not slot_open("stock", "NASDAQ", at(2025, 7, 3, 17), 3600)[0]
    assert not slot_open("stock", "NYSE", at(2025, 7, 4), 86400)[0] and slot_open("stock", "NYSE", at(2025, 7, 3), 86400)[0]
    # lunch breaks: Tokyo 11:30-12:30 JST (02:30-03:30 UTC), Hong Kong 12:00-13:00 HKT (04:00-05:00 UTC)
    assert slot_open("stock", "TSE", at(2025, 3, 3, 2), 1800)[0] and not slot_open("stock", "TSE", at(2025, 3, 3, 2, 30), 1800)[0]
    assert slot_open("stock", "TSE", at(2025, 3, 3, 3, 30), 1800)[0]
    assert not slot_open("stock", "HKEX", at(2025, 3, 3, 4), 3600)[0] and slot_open("stock", "HKEX", at(2025, 3, 3, 5), 3600)[0]
    # the synthetic market follows the same calendar: no candle on the holiday, none after the early close
    aapl = SymbolInfo.create("AAPL", exchange="NASDAQ")
    df = SyntheticSource().fetch(aapl, "1h", utc(2025, 7, 3), utc(2025, 7, 5))
    assert df.ts.dt.strftime("%d %H").tolist() == ["03 13", "03 14", "03 15", "03 16"]
    # and its daily candles skip the holiday: a daily bucket of that week is complete without it
    week = normalize_candles(SyntheticSource().fetch(aapl, "1h", utc(2025, 6, 30), utc(2025, 7, 7)), "1h",
                             now=utc(2026, 1, 1))
    days = resample(week, 3600, 86400, now_us=int(utc(2026, 1, 1).timestamp() * US),
                    market_open=lambda ts, s: slot_open("stock", "NASDAQ", ts, s))
    assert days.incomplete == 0 and len(days.candles) == 4


def test_gap_finder_respects_market_calendars():
    fx = lower("EURUSD=X", "1h", utc(2025, 1, 1), utc(2025, 2, 1))
    assert find_gaps("forex", None, fx.ts_us, 3600)["missing"] == 0  # weekends are not gaps
    # the same timestamps for a crypto pair (which never closes) are full of gaps
    g = find_gaps("crypto", None, fx.ts_us, 3600)
    assert g["gaps"] == 4 and g["longest_gap_s"] == 49 * 3600
    holed = np.delete(fx.ts_us, [50, 51, 52])
    g = find_gaps("forex", None, holed, 3600)
    assert (g["missing"], g["gaps"], g["longest_gap_s"]) == (3, 1, 4 * 3600)

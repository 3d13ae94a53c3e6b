"""Normalization and quarantine of incoming candles: every bad input in the issue."""


import numpy as np
import pandas as pd
import pytest

from conftest import utc
from trading_platform.core.candles import normalize_candles
from trading_platform.errors import InvalidInput
from trading_platform.sources.files import read_ohlcv_file


def frame(rows, cols=("ts", "open", "high", "low", "close", "volume")):
    return pd.DataFrame(rows, columns=list(cols))


GOOD = [
    ("2024-01-01T00:00:00Z", 10, 11, 9, 10.5, 100),
    ("2024-01-01T01:00:00Z", 10.5, 12, 10, 11, 120),
    ("2024-01-01T02:00:00Z", 11, 11.5, 10.5, 11.2, 90),
]


def reasons(n):
    return sorted(r.reason for r in n.rejects)


def test_clean_rows_pass_through_unchanged():
    n = normalize_candles(frame(GOOD), "1h")
    assert len(n) == 3 and not n.rejects
    assert n.to_frame()["close"].tolist() == [10.5, 11, 11.2]
    assert n.to_frame()["ts"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")


@pytest.mark.parametrize("row,reason", [
    (("2024-01-01T03:00:00Z", float("nan"), 11, 9, 10, 1), "missing open"),
    (("2024-01-01T03:00:00Z", "abc", 11, 9, 10, 1), "non-numeric open 'abc'"),
    (("2024-01-01T03:00:00Z", 10, 9, 11, 10, 1), "high < low"),
    (("2024-01-01T03:00:00Z", 10, 11, 9, 10, -5), "negative volume"),
    (("2024-01-01T03:00:00Z", -10, 11, 9, 10, 5), "open is not positive"),
    (("2024-01-01T03:00:00Z", 10, 11, 9, 12, 5), "open or close outside [low, high]"),
    (("2024-01-01T03:00:00Z", 10, 11, 9, 10, None), "missing volume"),
    (("not a time", 10, 11, 9, 10, 5), "unparseable timestamp 'not a time'"),
    (("2024-01-01T03:17:00Z", 10, 11, 9, 10, 5), "timestamp not aligned to a 1h boundary"),
])
def test_bad_rows_are_quarantined_with_their_reason(row, reason):
    n = normalize_candles(frame(GOOD + [row]), "1h")
    assert len(n) == 3
    assert reasons(n) == [reason]
    assert n.rejects[0].raw["ts"] == row[0]  # the raw row is kept


def test_identical_duplicates_collapse_and_are_counted():
    n = normalize_candles(frame(GOOD + [GOOD[1], GOOD[1]]), "1h")
    assert len(n) == 3 and n.duplicates_collapsed == 2 and not n.rejects


def test_conflicting_duplicates_are_all_quarantined():
    clash = ("2024-01-01T01:00:00Z", 10.5, 12, 10, 11.9, 120)
    n = normalize_candles(frame(GOOD + [clash]), "1h")
    assert len(n) == 2
    assert reasons(n) == ["conflicting duplicate timestamp (2 rows with different values)"] * 2
    assert 1704070800 * 10**6 not in n.ts_us


def test_unsorted_rows_are_sorted_not_rejected():
    n = normalize_candles(frame(list(reversed(GOOD))), "1h")
    assert n.was_unsorted and not n.rejects
    assert list(np.diff(n.ts_us) > 0) == [True, True]


def test_mixed_time_zones_are_normalized_to_utc():
    rows = [("2024-01-01T01:00:00+01:00", 10, 11, 9, 10.5, 100),      # 00:00 UTC
            ("2023-12-31T20:00:00-05:00", 10.5, 12, 10, 11, 120),     # 01:00 UTC
            ("2024-01-01 02:00:00", 11, 11.5, 10.5, 11.2, 90)]        # naive = UTC
    n = normalize_candles(frame(rows), "1h")
    assert not n.rejects
    assert list(n.to_frame()["ts"]) == list(pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC"))


def test_epoch_milliseconds_and_daily_local_midnight():
    ms = [(1704067200000 + i * 3600_000, 10, 11, 9, 10, 1) for i in range(3)]
    assert normalize_candles(frame(ms), "1h").ts_us[0] == 1704067200 * 10**6
    # Yahoo daily bars come stamped at New York midnight (05:00 UTC): the trading day is kept
    daily = [("2024-01-02 00:00:00-05:00", 10, 11, 9, 10, 1), ("2024-01-03 00:00:00-05:00", 10, 11, 9, 10, 1)]
    n = normalize_candles(frame(daily), "1d")
    assert list(n.to_frame()["ts"].dt.day) == [2, 3] and (n.ts_us % (86400 * 10**6) == 0).all()


def test_missing_columns_name_them():
    with pytest.raises(InvalidInput) as e:
        normalize_candles(frame([(1, 2, 3)], cols=("ts", "open", "close")), "1h")
    assert "high" in e.value.message and "low" in e.value.message and "volume" in e.value.message
    assert e.value.field == "columns"


def test_candle_not_closed_yet_is_rejected_from_files_and_skipped_from_sources():
    now = utc(2024, 1, 1, 2, 30)
    rej = normalize_candles(frame(GOOD), "1h", now=now)
    assert len(rej) == 2 and reasons(rej) == ["candle not closed yet (ts + 1h is after now)"]
    skip = normalize_candles(frame(GOOD), "1h", now=now, forming="skip")
    assert len(skip) == 2 and not skip.rejects and skip.forming_skipped == 1


def test_pandas_csv_export_loads_as_it_is(tmp_path):
    idx = pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC")
    df = pd.DataFrame({"Open": [1, 2, 3.0], "High": [2, 3, 4.0], "Low": [0.5, 1, 2.0],
                       "Close": [1.5, 2.5, 3.5], "Volume": [10, 20, 30]}, index=idx)
    p = tmp_path / "x.csv"
    df.to_csv(p)
    n = normalize_candles(read_ohlcv_file(p), "1h")
    assert len(n) == 3 and not n.rejects and n.close.tolist() == [1.5, 2.5, 3.5]
    pq = tmp_path / "x.parquet"
    df.to_parquet(pq)
    assert len(normalize_candles(read_ohlcv_file(pq), "1h")) == 3


def test_empty_and_header_only_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInput, match="is empty"):
        read_ohlcv_file(empty)
    header = tmp_path / "header.csv"
    header.write_text("ts,open,high,low,close,volume\n")
    with pytest.raises(InvalidInput, match="no rows"):
        read_ohlcv_file(header)
    with pytest.raises(InvalidInput, match="not found"):
        read_ohlcv_file(tmp_path / "nope.csv")


# ---- what a probe found stored wrong (each case stored candles at the wrong time, or nonsense, before) ----------
def test_day_first_dates_are_read_one_way_for_the_whole_column():
    """11/03/2024 .. 14/03/2024: pandas guessed row by row (11 Nov, 12 Dec, 13 Mar, 14 Mar); the 13 says day first."""
    rows = [(f"{d}/03/2024", 10, 11, 9, 10.5, 1) for d in (11, 12, 13, 14)]
    n = normalize_candles(frame(rows), "1d")
    assert not n.rejects
    assert n.to_frame()["ts"].dt.strftime("%Y-%m-%d").tolist() == [f"2024-03-{d}" for d in (11, 12, 13, 14)]
    month_first = normalize_candles(frame([(f"03/{d}/2024", 10, 11, 9, 10.5, 1) for d in (11, 13)]), "1d")
    assert month_first.to_frame()["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-03-11", "2024-03-13"]


def test_dates_that_do_not_say_which_number_is_the_day_are_quarantined():
    n = normalize_candles(frame([("03/11/2024", 10, 11, 9, 10.5, 1), ("03/12/2024", 10, 11, 9, 10.5, 1)]), "1d")
    assert len(n) == 0 and len(n.rejects) == 2
    assert all("ambiguous date" in r.reason and "YYYY-MM-DD" in r.reason for r in n.rejects)


def test_separate_date_and_time_columns_make_one_time():
    """Date,Time: the time alone was read as today's (two candles today, the third collapsed into one of them)."""
    rows = [("2024-03-01", "00:00", 1, 2, 0.5, 1.5, 3), ("2024-03-01", "01:00", 1, 2, 0.5, 1.5, 3),
            ("2024-03-02", "00:00", 1, 2, 0.5, 1.5, 3)]
    n = normalize_candles(frame(rows, ("Date", "Time", "Open", "High", "Low", "Close", "Volume")), "1h")
    assert not n.rejects and n.duplicates_collapsed == 0
    assert n.to_frame()["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == [
        "2024-03-01 00:00", "2024-03-01 01:00", "2024-03-02 00:00"]
    alone = normalize_candles(frame([("00:00", 1, 2, 0.5, 1.5, 3)]), "1h")  # a time of day is no date
    assert len(alone) == 0 and reasons(alone) == ["unparseable timestamp '00:00'"]


@pytest.mark.parametrize("ts,tf", [("1900-01-01T00:00Z", "1h"), (-86_400, "1h"), (-9e18, "1d")])
def test_times_before_1970_are_quarantined(ts, tf):
    """They moved every symbol's history start (partitions from 1684) for good."""
    n = normalize_candles(frame([(ts, 1, 2, 0.5, 1.5, 3)]), tf)
    assert len(n) == 0 and reasons(n) == ["timestamp outside 1970-2199 (UTC)"]


def test_a_huge_number_is_no_time_and_does_not_change_the_units_of_the_others():
    """1e30 cast to garbage (a traceback on 1d) and made the other rows' unit nanoseconds (1970-01-01)."""
    n = normalize_candles(frame([(1e30, 1, 2, 0.5, 1.5, 3), (-5e30, 1, 2, 0.5, 1.5, 3),
                                 (1_704_067_200, 1, 2, 0.5, 1.5, 3)]), "1d")
    assert n.to_frame()["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-01"]
    assert reasons(n) == ["unparseable timestamp -5e+30", "unparseable timestamp 1e+30"]


def test_booleans_are_not_prices_or_volumes():
    rows = [("2024-01-01T00:00Z", 1, 2, 0.5, 1.5, True), ("2024-01-01T01:00Z", 1, 2, 0.5, 1.5, False)]
    n = normalize_candles(frame(rows), "1h")
    assert len(n) == 0 and reasons(n) == ["non-numeric volume False", "non-numeric volume True"]


def test_a_column_given_twice_is_ambiguous():
    with pytest.raises(InvalidInput, match="ambiguous columns 'close' and 'Close'"):
        normalize_candles(frame([GOOD[0] + (10.6,)], ("ts", "open", "high", "low", "close", "volume", "Close")), "1h")


def test_rows_longer_than_the_header_are_refused_not_shifted(tmp_path):
    """Every row one field longer: pandas made the first field an index, and a 1970-01-01 candle was stored."""
    f = tmp_path / "ragged.csv"
    f.write_text("ts,open,high,low,close,volume\n2024-03-01,7,100,110,90,105,10\n2024-03-04,7,100,110,90,105,10\n")
    with pytest.raises(InvalidInput, match="more fields than its header"):
        read_ohlcv_file(f)


def test_a_time_column_that_holds_whole_times_is_the_time_beside_a_date_column():
    """Date beside a Time of full timestamps: joining them read '2024-03-01 2024-03-01 00:00:00' as 01:00."""
    rows = [("2024-03-01", "2024-03-01 00:00:00", 1, 2, 0.5, 1.5, 3), ("2024-03-01", "2024-03-01 01:00:00", 1, 2, 0.5,
                                                                       1.5, 3)]
    n = normalize_candles(frame(rows, ("Date", "Time", "Open", "High", "Low", "Close", "Volume")), "1h")
    assert not n.rejects
    assert n.to_frame()["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == ["2024-03-01 00:00", "2024-03-01 01:00"]


def test_a_window_of_a_day_first_file_keeps_the_whole_files_reading(tmp_path):
    """The files source read the column as a whole, then handed the window's raw text on: 1-10 March alone has no
    day over 12, and every row was quarantined as ambiguous."""
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.sources.files import FileSource

    days = pd.date_range("2024-02-01", "2024-03-31", freq="D")
    lines = "".join(f"{d:%d/%m/%Y},1,2,0.5,1.5,3\n" for d in days)
    (tmp_path / "EURUSD=X_1d.csv").write_text("date,open,high,low,close,volume\n" + lines)
    got = FileSource(tmp_path).fetch(SymbolInfo.create("EURUSD=X"), "1d", utc(2024, 3, 1), utc(2024, 3, 11))
    n = normalize_candles(got, "1d")
    assert not n.rejects and n.to_frame()["ts"].dt.strftime("%m-%d").tolist() == [f"03-{d:02d}" for d in range(1, 11)]


def test_a_comma_at_the_end_of_every_row_is_read_as_meant(tmp_path):
    f = tmp_path / "trailing.csv"
    f.write_text("ts,open,high,low,close,volume\n2024-03-01,1,2,0.5,1.5,3,\n2024-03-02,1,2,0.5,1.5,4,\n")
    n = normalize_candles(read_ohlcv_file(f), "1d")
    assert not n.rejects and n.to_frame()["volume"].tolist() == [3, 4]

"""Bad input at the CLI's edges: a time outside the calendar the platform stores, an unreadable file fed to the
live path, nonsense numbers, and bad environment values each end in one line naming the field (exit 2), never a
Python traceback, and change nothing (each of these printed a traceback, or was accepted, before)."""

import psycopg
import pytest

from test_cli import tp


def refused(env, *args, field: str, says: str) -> dict:
    code, err, proc = tp(env, *args, "--json", check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert code == 2 and err["field"] == field and says in err["error"], (code, err, proc.stderr)
    return err


def test_times_outside_the_platforms_years_are_refused_and_move_nothing(tp_env, dsn):
    tp(tp_env, "symbols", "add", "BTC/USDT", "--timeframes", "1h", "--live", "--json")
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT first_month FROM history_start").fetchall()
    # year 50 (a typo for 2050) overflowed PostgreSQL's date; year 999 moved the history start to 0999 for good
    for year in ("0050", "0999", "1900"):
        refused(tp_env, "backfill", "--symbol", "BTC/USDT", "--from", f"{year}-01-01", "--to", f"{year}-02-01",
                "--assets", "market", field="from", says="out of range")
    refused(tp_env, "backfill", "--symbol", "BTC/USDT", "--from", "2026-01-01", "--to", "9999-12-31",
            "--assets", "market", field="to", says="out of range")  # queued 3,039 runs of centuries of months
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT first_month FROM history_start").fetchall() == before
    # a time that parses but whose UTC is past the calendar's end (year 10000): ValueError before
    refused(tp_env, "rag", "search", "btc", "--since", "9999-12-31T23:59:59-14:00", field="since", says="out of range")
    refused(tp_env, "rag", "sync", "--since", "0001-01-01", field="since", says="out of range")  # OverflowError
    refused(tp_env, "rag", "search", "btc", "--since", "NaN", field="since", says="not a date")  # no time at all
    # pandas read 02.01.2026 as 1 February and 1/2/2026 as 2 January: a guess at which number is the day
    for day in ("02.01.2026", "1/2/2026"):
        refused(tp_env, "rag", "search", "btc", "--since", day, field="since", says="YYYY-MM-DD")
    # the feed walked chunk by chunk from year 50, silent for minutes
    refused(tp_env, "live", "feed", "--symbols", "BTC/USDT", "--rate", "1", "--count", "1", "--start", "0050-01-01",
            field="start", says="out of range")
    code, _, proc = tp({**tp_env, "TP_HISTORY_START": "0999-01"}, "backfill", "--symbol", "BTC/USDT", "--from",
                       "2026-01-01", "--to", "2026-02-01", "--assets", "market", "--json", check=False)
    assert code == 2 and "TP_HISTORY_START" in proc.stderr and "Traceback" not in proc.stderr


def test_the_live_feed_refuses_unreadable_files_and_nonsense_numbers(tp_env, dsn, tmp_path):
    tp(tp_env, "symbols", "add", "BTC/USDT", "--timeframes", "1h", "--live", "--json")
    empty, fake = tmp_path / "empty.csv", tmp_path / "fake.parquet"
    empty.write_text("")
    fake.write_text("ts,open\n")
    feed = ("live", "feed", "--symbols", "BTC/USDT")
    refused(tp_env, *feed, "--rate", "1", "--count", "1", "--file", str(empty), field="file", says="is empty")
    refused(tp_env, *feed, "--rate", "1", "--count", "1", "--file", str(fake), field="file", says="cannot read")
    refused(tp_env, *feed, "--rate", "1", "--count", "-1", field="count", says="positive")  # 'fed 0 candles', exit 0
    for rate in ("nan", "inf"):  # fed a candle and exited 0
        refused(tp_env, *feed, "--rate", rate, "--count", "1", field="rate", says="positive")
    with psycopg.connect(dsn) as conn:  # no candle was fed
        assert conn.execute("SELECT count(*) FROM ohlcv WHERE symbol = 'BTC/USDT'").fetchone()[0] == 0


@pytest.mark.parametrize("env,args,field,says", [
    ({"TP_LOG_LEVEL": "bogus"}, ("symbols", "list"), "TP_LOG_LEVEL", "is not one of"),
    ({"MLFLOW_TRACKING_URI": "notascheme://user:hunter2@x"}, ("models", "list"), "MLFLOW_TRACKING_URI",
     "unsupported URI"),
    # a server that is down: MLflow retried for about four silent minutes, then a traceback (here its retries
    # are off, so the old code's traceback comes at once)
    ({"MLFLOW_TRACKING_URI": "http://trader:hunter2@127.0.0.1:1/", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
     ("models", "list"), "MLFLOW_TRACKING_URI", "does not answer"),
])
def test_bad_environment_values_name_the_variable(tp_env, env, args, field, says):
    err = refused({**tp_env, **env}, *args, field=field, says=says)
    assert "hunter2" not in err["error"]


def test_a_home_that_is_a_file_is_named(tp_env, tmp_path):
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    env = {k: v for k, v in tp_env.items() if k not in ("TP_DATABASE_URL", "DAGSTER_HOME")}
    refused({**env, "TP_HOME": str(home), "TP_EMBEDDED": "1"}, "symbols", "list", field="TP_HOME",
            says="not a directory")
    assert home.read_text() == "not a directory"


def test_month_keys_keep_four_digit_years():
    from datetime import datetime, timezone

    from trading_platform.core.months import month_key

    assert month_key(datetime(999, 3, 5, tzinfo=timezone.utc)) == "0999-03-01"  # strftime gave '999-03-01'


def test_log_level_names_logging_takes_still_work(tp_env):
    for level in ("warn", "FATAL"):  # logging's aliases: a check that knew only five names refused them
        code, out, proc = tp({**tp_env, "TP_LOG_LEVEL": level}, "symbols", "list", "--json", check=False)
        assert code == 0 and out == [], (level, proc.stderr)


def test_negative_waits_and_unknown_symbols_are_refused(tp_env):
    # each of these was accepted: migrate --wait -1 and collect --duration -1 ran; search said 'no match', exit 0
    refused(tp_env, "db", "migrate", "--wait", "-1", field="wait", says="0 or more")
    refused(tp_env, "live", "collect", "--duration", "-1", field="duration", says="positive")
    refused(tp_env, "rag", "search", "btc", "--symbol", "NOPE/USDT", field="symbol", says="NOPE/USDT")


def test_a_demo_day_it_cannot_run_as_of_is_refused_before_anything_loads(tp_env, dsn):
    from datetime import datetime, timedelta, timezone

    later = (datetime.now(timezone.utc) + timedelta(days=2)).date().isoformat()  # after today, even past midnight
    refused(tp_env, "demo", "--as-of", later, field="as_of", says="after today")  # its candles have not closed
    refused(tp_env, "demo", "--as-of", "2018-02-01", field="as_of", says="before 2018-05-01")  # no four months yet
    for day in ("2026-13-01", "1/2/2026", "2026-1-2", "2026-W49-1"):  # the last: Python reads it as 30 November
        refused(tp_env, "demo", "--as-of", day, field="arguments", says="YYYY-MM-DD")
    with psycopg.connect(dsn) as conn:  # the sample's symbols were not added (the store was not even opened)
        if conn.execute("SELECT to_regclass('symbols')").fetchone()[0]:
            assert conn.execute("SELECT count(*) FROM symbols").fetchone()[0] == 0
    # a store that holds the sample's candles past the day (tp up's first start loads them up to today): the demo
    # would have trained on them and reported the day all the same
    tp(tp_env, "symbols", "add", "BTC/USDT", "--timeframes", "1h", "--json")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES "
                     "('BTC/USDT', '1h', '2026-11-20 05:00+00', 1, 1, 1, 1, 1)")
    refused(tp_env, "demo", "--as-of", "2026-11-10", field="as_of", says="BTC/USDT up to 2026-11-20 05:00")
    with psycopg.connect(dsn) as conn:  # nothing added: the sample's other symbols are not there
        assert conn.execute("SELECT array_agg(symbol) FROM symbols").fetchone()[0] == ["BTC/USDT"]


def test_arguments_that_are_not_text_are_named(tp_env):
    """$'\\xff' on the command line (Python keeps the byte as a lone surrogate): a UnicodeEncodeError traceback from
    psycopg (tp paper report, tp alerts rule add) or from a spec's hash (tp paper backtest --strategy)."""
    refused(tp_env, "paper", "report", "r\udcff", field="arguments", says="not UTF-8 text")


def test_json_output_has_no_nan_or_infinity(capsys):
    """``--json`` printed NaN and Infinity (a paper run's equity and day change), which JSON readers refuse."""
    import json
    from argparse import Namespace

    from trading_platform.cli._base import emit

    def refuse(constant):
        raise ValueError(constant)

    for as_json in (True, False):
        emit(Namespace(json=as_json), {"equity": float("inf"), "today": [float("nan"), 1.5], "n": 2})
        assert json.loads(capsys.readouterr().out, parse_constant=refuse) == {"equity": None, "today": [None, 1.5],
                                                                               "n": 2}

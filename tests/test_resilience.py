"""Operations that go wrong: the database dying mid-command, secrets kept out of sight."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psycopg

N = 600_000


def _tp(env, *args, **kw):
    return subprocess.run([sys.executable, "-m", "trading_platform.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def test_a_database_killed_mid_ingest_is_a_clear_error_keeps_nothing_and_restarts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TP_DATABASE_URL"}
    env.update({"TP_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "home" / "dagster"),
                "TP_LOG_LEVEL": "WARNING"})
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, N)))
    open_ = np.r_[close[0], close[:-1]]
    path = tmp_path / "big.csv"
    pd.DataFrame({"ts": pd.date_range("2020-01-01", periods=N, freq="1min", tz="UTC"), "open": open_,
                  "high": np.maximum(open_, close) * 1.001, "low": np.minimum(open_, close) * 0.999,
                  "close": close, "volume": rng.uniform(1, 10, N)}).to_csv(path, index=False)
    url = json.loads(_tp(env, "db", "url", "--show-password", "--json").stdout.splitlines()[-1])["url"]
    pgdata = tmp_path / "home" / "pg"

    args = [sys.executable, "-m", "trading_platform.cli", "ingest", str(path), "--symbol", "X/USDT",
            "--timeframe", "1m", "--json"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with psycopg.connect(url, autocommit=True) as conn:  # wait until the candles are streaming in
        deadline = time.time() + 120
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                               "AND query LIKE 'COPY ohlcv %%'").fetchone()[0]:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)
        os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)  # the server dies
    out, err = proc.communicate(timeout=120)
    # a clear one-line error naming the database, exit 2, no traceback
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: lost the market store (host ") and "database trading" in err
    assert json.loads(out.splitlines()[-1])["field"] == "TP_DATABASE_URL"
    # the next command restarts the server; nothing of the load is visible, not even its symbol
    listed = _tp(env, "symbols", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout.splitlines()[-1]) == [], listed.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 0
    # and running the command again completes
    again = _tp(env, *args[3:])
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1]) == {"inserted": N, "updated": 0, "unchanged": 0, "rejected": 0}
    _tp(env, "down")

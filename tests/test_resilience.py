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


def _with_password(dsn: str, password: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(dsn)
    d["password"] = password  # the test server trusts local connections: the password is carried, unused
    return f"postgresql://{d.get('user', 'postgres')}:{password}@/{d['dbname']}?host={d['host']}"


def test_a_failed_model_fails_the_demo_and_no_password_shows_anywhere(tp_env, dsn, tmp_path):
    """Passwords in TP_DATABASE_URL and MLFLOW_TRACKING_URI: the demo runs (MLflow is down, so the
    models fail and the demo exits 1 naming them), and neither password is in its output, in the
    Dagster event log or in any materialization's metadata."""
    db_secret, ml_secret = "db-s3cret-9f1", "mlflow-s3cret-7c2"
    env = {**tp_env, "TP_DATABASE_URL": _with_password(dsn, db_secret),
           "MLFLOW_TRACKING_URI": f"http://trader:{ml_secret}@127.0.0.1:9/",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2", "TP_LOG_LEVEL": "INFO"}
    out = _tp(env, "demo", "--quick", "--json")
    assert out.returncode == 1, out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])
    # (the quick sample's pump model may refuse for too few pumps before it needs MLflow, skipped, not failed:
    # how many the holdout holds depends on the day the demo runs)
    assert "model models/regime_hmm[BTC/USDT]" in summary["failed"] and all(f.startswith("model ")
                                                                           for f in summary["failed"])
    assert summary["stored_candles"]["1h"] > 0  # the data part worked
    line = next(x for x in out.stderr.splitlines() if "failed step(s): " in x)
    assert line.split("failed step(s): ")[1].split("; ") == summary["failed"] and "Traceback" not in out.stderr
    assert "127.0.0.1:9" in out.stdout + out.stderr  # the failures name the server...
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(tp_env["DAGSTER_HOME"])) as inst:
        runs = inst.get_run_records()
        events = [str(e) for r in runs for e in inst.all_logs(r.dagster_run.run_id)]
        configs = [str(r.dagster_run.run_config) + str(r.dagster_run.tags) for r in runs]
    assert len(runs) >= 4 and any("materialization" in e.lower() for e in events)
    for text in (out.stdout, out.stderr, *events, *configs):
        assert db_secret not in text and ml_secret not in text  # ...never the passwords


def test_tp_up_keeps_secrets_off_command_lines_and_its_console_quiet(tp_env, dsn, tmp_path):
    import socket

    import psutil

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    marker = "uri-s3cret-4d8"
    env = {**tp_env, "TP_DATABASE_URL": _with_password(dsn, marker),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow-{marker}.db", "TP_LOG_LEVEL": "INFO",
           "TP_MODEL_SIGNING_KEY": f"signing-key-{marker}-{marker}"}
    up = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "up", "--no-sample", "--port",
                           str(free_port()), "--mlflow-port", str(free_port()), "--api-port", str(free_port())], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = tmp_path / "home" / "run" / "pids.json"
    try:
        deadline = time.time() + 60
        seen = set()
        while time.time() < deadline:  # the services and what they start (webserver, daemon, workers)
            if pids.exists():
                for pid in json.loads(pids.read_text()):
                    try:
                        proc = psutil.Process(pid)
                        for p in [proc, *proc.children(recursive=True)]:
                            seen.add(" ".join(p.cmdline()))
                    except psutil.Error:
                        pass
            if sum("dagster_webserver" in c or "uvicorn" in c for c in seen) >= 2:
                break
            time.sleep(0.5)
        assert any("mlflow ui" in c for c in seen) and any("dagster dev" in c for c in seen), seen
        assert any("dagster_webserver" in c for c in seen), seen
        assert any(" serve --host 127.0.0.1" in c for c in seen), seen  # tp serve, on loopback
        assert not [c for c in seen if marker in c]
    finally:
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
    assert marker not in err
    assert "will not be used to configure Dagster" not in err  # no dagster.yaml warning
    assert " DEBUG " not in err

"""`tp` as a user runs it: a separate process, JSON on the last line, clear errors."""

import json
from datetime import datetime, timezone
import subprocess
import sys

import numpy as np
import pandas as pd
import psycopg
import pytest

from conftest import utc
from trading_platform.core.symbols import SymbolInfo
from trading_platform.sources.synthetic import SyntheticSource


def tp(env, *args, check=True):
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", *args], env=env,
                         capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"tp {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "null"
    return out.returncode, json.loads(last), out


def test_db_url_is_a_uri_psql_accepts(tp_env):
    _, shown, _ = tp(tp_env, "db", "url", "--json")
    _, real, _ = tp(tp_env, "db", "url", "--show-password", "--json")
    assert shown["url"] == real["url"].replace("postgres:@", "postgres:***@")
    with psycopg.connect(real["url"]) as conn:  # libpq, which psql uses, takes the URI
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1  # tp created the schema


def test_password_is_hidden_unless_asked(tp_env):
    env = {**tp_env, "TP_DATABASE_URL": "postgresql://trader:hunter2@127.0.0.1:1/market"}
    _, out, _ = tp(env, "db", "url", "--json")
    assert out == {"url": "postgresql://trader:***@127.0.0.1:1/market"}
    code, err, proc = tp(env, "symbols", "list", "--json", check=False)
    assert code != 0 and "127.0.0.1" in err["error"] and "hunter2" not in proc.stdout + proc.stderr
    assert err["field"] == "TP_DATABASE_URL"


def test_symbols_commands(tp_env):
    _, added, _ = tp(tp_env, "symbols", "add", "BTC/USDT:USDT", "--timeframes", "5m,H1", "--live", "--json")
    assert added["timeframes"] == ["5m", "1h"] and added["live"] and added["quote"] == "USDT"
    _, upd, _ = tp(tp_env, "symbols", "update", "BTC/USDT:USDT", "--disable", "--json")
    assert upd["enabled"] is False
    _, rows, _ = tp(tp_env, "symbols", "list", "--json")
    assert [r["symbol"] for r in rows] == ["BTC/USDT:USDT"]
    code, err, _ = tp(tp_env, "symbols", "add", "BTC'; DROP TABLE ohlcv;--", "--json", check=False)
    assert code == 2 and err["field"] == "symbol" and "outside the allowed set" in err["error"]
    code, err, _ = tp(tp_env, "symbols", "add", "ETH/USDT", "--timeframes", "2m", "--json", check=False)
    assert code == 2 and err["field"] == "timeframes"
    code, err, proc = tp(tp_env, "symbols", "add", "SOL/USDT", "--metadata", "{'note': 1}", "--json", check=False)
    assert code == 2 and err["field"] == "metadata" and "not valid JSON" in err["error"]
    assert "Traceback" not in proc.stderr
    code, err, _ = tp(tp_env, "symbols", "update", "BTC/USDT:USDT", "--timeframes", ",", "--json", check=False)
    assert code == 2 and err["field"] == "timeframes"
    code, err, _ = tp(tp_env, "symbols", "update", "NOPE", "--enable", "--json", check=False)
    assert code == 2 and "not in the symbols table" in err["error"]
    _, gone, _ = tp(tp_env, "symbols", "remove", "BTC/USDT:USDT", "--json")
    assert gone == {"removed": "BTC/USDT:USDT", "candles_deleted": 0}


def test_ingest_counts_quarantines_and_records_in_dagster(tp_env, tmp_path, monkeypatch):
    df = SyntheticSource().fetch(SymbolInfo.create("ETH/USDT"), "1h", utc(2025, 1, 30), utc(2025, 2, 2))
    df = df.set_index("ts")
    df.loc[df.index[5], "high"] = df.loc[df.index[5], "low"] / 2          # high < low
    df.loc[df.index[6], "volume"] = -1                                     # negative volume
    df = pd.concat([df, df.iloc[[7]]])                                     # identical duplicate
    path = tmp_path / "eth.csv"
    df.iloc[::-1].to_csv(path)                                             # unsorted, pandas export
    _, counts, _ = tp(tp_env, "ingest", str(path), "--symbol", "ETH/USDT", "--timeframe", "60m", "--json")
    assert counts == {"inserted": 70, "updated": 0, "unchanged": 0, "rejected": 2}
    _, again, _ = tp(tp_env, "ingest", str(path), "--symbol", "ETH/USDT", "--timeframe", "1h", "--json")
    assert again == {"inserted": 0, "updated": 0, "unchanged": 70, "rejected": 2}
    with psycopg.connect(tp_env["TP_DATABASE_URL"]) as conn:  # counted again, stored once
        assert conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()[0] == 2
    _, rows, _ = tp(tp_env, "symbols", "list", "--json")
    assert rows[0]["symbol"] == "ETH/USDT" and rows[0]["timeframes"] == ["1h"]

    monkeypatch.setenv("DAGSTER_HOME", tp_env["DAGSTER_HOME"])
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.get() as inst:
        recs = inst.fetch_materializations(AssetKey(["market", "ohlcv"]), limit=10).records
        parts = sorted(r.partition_key for r in recs)
        assert "ETH/USDT" in inst.get_dynamic_partitions("symbol")
    assert parts == ["2025-01-01|ETH/USDT", "2025-01-01|ETH/USDT", "2025-02-01|ETH/USDT", "2025-02-01|ETH/USDT"]


@pytest.mark.parametrize("content,field,message", [
    ("ts,open,close\n2024-01-01,1,2\n", "columns", "missing column(s) high, low, volume"),
    ("", "path", "is empty"),
])
def test_ingest_bad_files_are_clear_errors(tp_env, tmp_path, content, field, message):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    code, err, _ = tp(tp_env, "ingest", str(p), "--symbol", "X/USDT", "--timeframe", "1h", "--json", check=False)
    assert code == 2 and err["field"] == field and message in err["error"]


def test_ingest_into_a_resampled_timeframe_is_refused_naming_the_base(tp_env, tmp_path):
    tp(tp_env, "symbols", "add", "BTC/USDT", "--timeframes", "5m,1h", "--json")
    df = SyntheticSource().fetch(SymbolInfo.create("BTC/USDT"), "1h", utc(2025, 1, 1), utc(2025, 1, 2))
    path = tmp_path / "btc_1h.csv"
    df.to_csv(path, index=False)
    for tf in ("1h", "4h"):  # listed and derived, or not listed yet but above the base
        code, err, proc = tp(tp_env, "ingest", str(path), "--symbol", "BTC/USDT", "--timeframe", tf, "--json",
                             check=False)
        assert code == 2 and err["field"] == "timeframe", proc.stderr
        assert f"derives {tf} by resampling its base timeframe 5m" in err["error"] and "Traceback" not in proc.stderr
    with psycopg.connect(tp_env["TP_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 0  # nothing written
    _, rows, _ = tp(tp_env, "symbols", "list", "--json")
    assert rows[0]["timeframes"] == ["5m", "1h"]  # nor the symbol changed
    # the base timeframe itself loads
    five = SyntheticSource().fetch(SymbolInfo.create("BTC/USDT"), "5m", utc(2025, 1, 1), utc(2025, 1, 2))
    five.to_csv(path, index=False)
    _, counts, _ = tp(tp_env, "ingest", str(path), "--symbol", "BTC/USDT", "--timeframe", "5m", "--json")
    assert counts["inserted"] == 288


def test_ingest_unknown_timeframe(tp_env, tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("ts,open,high,low,close,volume\n2024-01-01,1,2,0.5,1,1\n")
    code, err, _ = tp(tp_env, "ingest", str(p), "--symbol", "X/USDT", "--timeframe", "1M", "--json", check=False)
    assert code == 2 and err["field"] == "timeframe" and "monthly" in err["error"]


def test_demo_quick(tp_env, monkeypatch):
    _, summary, proc = tp(tp_env, "demo", "--quick", "--json")
    assert summary["symbols"] == ["BTC/USDT", "EURUSD=X"] and summary["error_checks_failed"] == []
    assert summary["failed"] == [] and all(m["success"] for m in summary["models"].values())
    assert " DEBUG " not in proc.stderr and "STEP_START" not in proc.stderr  # INFO and above only
    monkeypatch.setenv("DAGSTER_HOME", tp_env["DAGSTER_HOME"])
    from dagster import DagsterInstance

    with DagsterInstance.get() as inst:  # the data runs belong to the named job
        jobs = {inst.get_run_by_id(r).job_name for r in summary["runs"]}
    assert jobs == {"market_data_job"}
    assert set(summary["asset_seconds"]) >= {"market/ohlcv", "market/ohlcv_1h", "market/ohlcv_1d"}
    assert summary["stored_candles"]["1h"] > 0


def test_features_export(tp_env, tmp_path):
    tp(tp_env, "symbols", "add", "ETH/USDT", "--timeframes", "1h,4h", "--json")
    df = SyntheticSource().fetch(SymbolInfo.create("ETH/USDT"), "1h", utc(2025, 1, 1), utc(2025, 2, 1))
    path = tmp_path / "eth.csv"
    df.to_csv(path, index=False)
    tp(tp_env, "ingest", str(path), "--symbol", "ETH/USDT", "--timeframe", "1h", "--json")
    out = tmp_path / "eth_features.parquet"
    _, summary, _ = tp(tp_env, "features", "export", "--symbol", "ETH/USDT", "--timeframe", "1h",
                       "--out", str(out), "--json")
    assert summary["rows"] == 744 and summary["recomputed_months"] == ["2025-01-01"]
    got = pd.read_parquet(out)
    assert len(got) == 744 and got["rsi_14"].notna().sum() == 744 - 14
    code, err, _ = tp(tp_env, "features", "export", "--symbol", "ETH/USDT", "--timeframe", "1d",
                      "--out", str(out), "--json", check=False)
    assert code == 2 and err["field"] == "timeframe" and "does not list" in err["error"]
    code, err, proc = tp(tp_env, "features", "export", "--symbol", "ETH/USDT", "--timeframe", "1h",
                         "--out", str(tmp_path / "nowhere" / "f.parquet"), "--json", check=False)
    assert code == 2 and err["field"] == "out" and "Traceback" not in proc.stderr
    (tmp_path / "dir.parquet").mkdir()  # polars' IsADirectoryError traceback before
    code, err, proc = tp(tp_env, "features", "export", "--symbol", "ETH/USDT", "--timeframe", "1h",
                         "--out", str(tmp_path / "dir.parquet"), "--json", check=False)
    assert code == 2 and err["field"] == "out" and "is a directory" in err["error"], proc.stderr


def test_models_list_and_promote(tp_env, tmp_path):
    import mlflow
    import xgboost as xgb

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**tp_env, "MLFLOW_TRACKING_URI": uri}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # other tests leave theirs set in this process
    client = mlflow.MlflowClient(uri, uri)
    exp = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    X = np.random.default_rng(0).normal(size=(200, 3))
    for i in range(2):
        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=X[:, 0] > 0), 2 + i)
        with mlflow.start_run(experiment_id=exp):
            mlflow.log_metric("roc_auc", 0.6 + i / 10)
            mlflow.xgboost.log_model(booster, name="model", registered_model_name="pump_xgb",
                                     pip_requirements=["xgboost"])
    client.set_registered_model_alias("pump_xgb", "champion", "1")
    _, models, _ = tp(env, "models", "list", "--json")
    [m] = models
    assert m["name"] == "pump_xgb" and [v["aliases"] for v in m["versions"]] == [["champion"], []]
    assert m["versions"][1]["metrics"]["roc_auc"] == pytest.approx(0.7)
    # registered by hand, not by the platform: unsigned, so `promote` refuses until `tp models sign` vouches
    assert m["versions"][0]["serve"].startswith("refused: it is not signed")
    code, refused, _ = tp(env, "models", "promote", "pump_xgb", "2", "--json", check=False)
    assert code == 2 and "cannot serve: it is not signed" in refused["error"] and refused["field"] == "version"
    _, signed, _ = tp(env, "models", "sign", "pump_xgb", "2", "--json")
    assert signed["version"] == "2" and signed["was_signed"] is False
    _, out, _ = tp(env, "models", "promote", "pump_xgb", "2", "--json")
    assert out == {"model": "pump_xgb", "champion": "2", "previous": "1", "skipped_gate": ""}  # no gate had spoken
    assert str(client.get_model_version_by_alias("pump_xgb", "champion").version) == "2"
    _, history, _ = tp(env, "models", "history", "pump_xgb", "--json")  # the promotion is in the champion history
    assert [(h["version"], h["moved_by"], h["valid_to"] is None) for h in history if h["alias"] == "champion"] == [
        ("2", "promote", True)]
    code, err, _ = tp(env, "models", "history", "nothing_here", "--json", check=False)
    assert code == 2 and err["field"] == "name"
    code, err, _ = tp(env, "models", "promote", "pump_xgb", "9", "--json", check=False)
    assert code == 2 and err["field"] == "version" and "version '9'" in err["error"]
    code, err, _ = tp(env, "models", "compare", "pump_xgb", "--json", check=False)  # no challenger to compare
    assert code == 2 and err["field"] == "name" and "challenger" in err["error"]


def test_quick_demo_has_two_weeks_of_history_whatever_the_day_of_the_month():
    """On the 3rd of a month the current month alone has 55 hourly candles: the quick demo's pump and NHITS
    models refused to train and `tp demo --quick` failed in the first days of every month."""
    from trading_platform.demo import demo_plan

    for day in (1, 3, 14, 15, 28):
        _, months = demo_plan(True, now=utc(2026, 12, day, 9))
        first = datetime.fromisoformat(months[0]).replace(tzinfo=timezone.utc)
        # the candles end at the day's midnight: on the 1st, December holds none (its predictions, knowledge base
        # and backtest were empty, the backtest from midnight to midnight failed the demo), so it ends in November
        assert months[-1] == ("2026-11-01" if day == 1 else "2026-12-01")
        assert (utc(2026, 12, day) - first).days >= 14  # two weeks of candles before the day's midnight
    assert demo_plan(True, now=utc(2026, 1, 2))[1] == ["2025-12-01", "2026-01-01"]  # across a year
    assert demo_plan(False, now=utc(2026, 12, 1))[1] == ["2026-08-01", "2026-09-01", "2026-10-01", "2026-11-01"]

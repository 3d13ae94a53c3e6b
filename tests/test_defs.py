"""The code location loads, resolves everything, and imports nothing heavy."""

import json
import subprocess
import sys

from dagster import AssetKey

HEAVY = ("torch", "neuralforecast", "pytorch_lightning", "lightning", "ray", "sentence_transformers", "faiss",
         "mlflow", "ccxt", "yfinance", "xgboost", "lightgbm", "sklearn", "hmmlearn", "numba", "polars", "talib",
         "mcp", "fastapi", "uvicorn")


def test_definitions_resolve_every_asset_check_job_schedule_and_sensor():
    from trading_platform.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"market/ohlcv", "market/ohlcv_5m", "market/ohlcv_1h", "market/ohlcv_1d", "features",
            "models/pump_xgb", "models/regime_hmm", "models/signal_lgbm", "models/nhits_1h", "models/pattern_tcn",
            "predictions", "forecasts", "patterns"} <= keys
    checks = repo.asset_graph.asset_check_keys

    def names(k):
        return {c.name for c in checks if c.asset_key == AssetKey.from_user_string(k)}

    for k in {k for k in keys if k.startswith("market/")}:
        assert {"no_duplicate_keys", "ohlc_consistent", "no_unexpected_gaps", "fresh_if_live"} <= names(k), k
    assert names("features") == {"rows_match_candles", "values_finite"}
    for k in ("models/pump_xgb", "models/regime_hmm", "models/signal_lgbm", "models/nhits_1h", "models/pattern_tcn"):
        assert names(k) == {"metrics_finite", "champion_exists"}, k
    for job in repo.get_all_jobs():
        assert job.name
    assert defs.resolve_job_def("market_data_job").name == "market_data_job"
    assert defs.resolve_schedule_def("market_data_hourly").cron_schedule == "5 * * * *"
    assert defs.resolve_sensor_def("symbol_partitions_sensor").name == "symbol_partitions_sensor"
    assert defs.resolve_sensor_def("features_stale_sensor").name == "features_stale_sensor"
    assert defs.resolve_job_def("features_job").name == "features_job"
    for key in ("market_db", "market_source", "mlflow", "model_server"):
        assert key in repo.get_top_level_resources()


def test_importing_definitions_is_fast_and_light():
    code = ("import sys, time, json; t = time.time(); import trading_platform.definitions; "
            f"print(json.dumps([time.time() - t, [m for m in {HEAVY!r} if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert seconds < 10  # 3 s on an idle 2-core box; generous here so a busy CI box does not flake


def test_a_bad_source_config_fails_at_load_naming_the_field(monkeypatch):
    code = "import trading_platform.definitions"
    env = {"TP_SOURCE": "carrier-pigeon", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert "spec: unknown source kind 'carrier-pigeon'" in out.stderr


def test_the_code_location_loads_every_standard_way(tmp_path):
    """One Definitions at module scope: `-m` works as well as workspace.yaml (dagster dev, definitions
    validate, the UI and the daemon load it these ways)."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    for args in (["-m", "trading_platform.definitions"], ["-w", str(root / "workspace.yaml")]):
        out = subprocess.run([str(dagster), "definitions", "validate", *args], capture_output=True, text=True,
                             cwd=root, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Validation successful" in out.stderr + out.stdout
    from trading_platform.definitions import defs

    jobs = {j.name for j in defs.get_repository_def().get_all_jobs()}
    assert {"market_data_job", "features_job", "pump_training_job", "regime_training_job", "signal_training_job",
            "nhits_training_job", "pattern_training_job", "predictions_job"} <= jobs

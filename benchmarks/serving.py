"""Serving: batch and one-row predict through the ModelServer resource vs the raw
XGBoost booster, and model load times (cold: nothing cached; warm: artifacts on
disk, new process; cold process: a new process whose alias cache is fresh).

Trains a pump-sized XGBoost model (300 trees, depth 4, 40 features), registers it in
a throwaway MLflow store, then in the same run:
- platform_rows_per_s / raw_rows_per_s: 10,000-row batch predictions through
  ModelServer.predict vs booster.inplace_predict (best of 20);
- cold_load_s: a new process loading models:/bench_pump@champion with an empty cache
  (alias resolution, artifact download, native load);
- warm_load_ms: a new process loading it again with the artifacts on disk (alias
  resolution and native load, no download).
Both are measured inside the load call, after the process has its tracking client;
the client's start (client_init_s: with the SQLite store, a schema check) and the
imports (import_s) are reported beside them.
- single_row_ms / raw_single_row_ms: one-row predictions (what the live path makes)
  through ModelServer.predict (alias resolved from the in-memory cache: no registry
  call) vs booster.inplace_predict on the same row (median of 2,000);
  registry_calls_per_1000_predicts counts alias look-ups that reached MLflow.
- cold_process_load_s: a new process (every Dagster run is one) loading the
  champion while its alias cache on disk is fresh: imports of the platform's
  serving module and xgboost plus the native load, without importing MLflow
  (mlflow_imported says whether it was).
The model carries the Platt calibration the platform's classifiers carry, so
ModelServer computes margins and applies it where the raw booster applies its own
sigmoid. The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOADER = r"""
import json, sys, time
t0 = time.perf_counter()
from trading_platform.resources.serving import ModelServer
import mlflow, xgboost
t1 = time.perf_counter()
server = ModelServer(tracking_uri=sys.argv[1], cache_dir=sys.argv[2], device="cpu")
t = time.perf_counter()
server._client()  # the tracking client of this process (SQLite store: schema check)
client_s = time.perf_counter() - t
t = time.perf_counter()
m = server.load("bench_pump")
load = time.perf_counter() - t
print(json.dumps({"import_s": t1 - t0, "client_s": client_s, "load_s": load, "version": m.version}))
"""

COLD_PROCESS = r"""
import json, sys, time
t0 = time.perf_counter()
from trading_platform.resources.serving import ModelServer
m = ModelServer(tracking_uri=sys.argv[1], cache_dir=sys.argv[2], device="cpu", alias_ttl_s=3600).load("bench_pump")
print(json.dumps({"load_s": time.perf_counter() - t0, "version": m.version, "mlflow": "mlflow" in sys.modules}))
"""


def main() -> None:
    import mlflow
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature

    tmp = Path(tempfile.mkdtemp(prefix="tp-serving-"))
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(40)]
    X = rng.normal(size=(50_000, 40)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=len(X)) > 1.5).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.05, "nthread": 2},
                        xgb.DMatrix(X, label=y, feature_names=cols), num_boost_round=300)
    client = mlflow.MlflowClient(uri, uri)
    exp = client.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.xgboost.log_model(booster, name="model",
                                        signature=infer_signature(pd.DataFrame(X[:5], columns=cols)),
                                        registered_model_name="bench_pump", pip_requirements=["xgboost"],
                                        metadata={"tp_calibration": {"method": "platt", "a": 0.9, "b": -0.1}})
    client.set_registered_model_alias("bench_pump", "champion", info.registered_model_version)

    cache = tmp / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cold = json.loads(subprocess.run([sys.executable, "-c", LOADER, uri, str(cache)], env=env, capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1])
    warm = json.loads(subprocess.run([sys.executable, "-c", LOADER, uri, str(cache)], env=env, capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1])

    cold_proc = json.loads(subprocess.run([sys.executable, "-c", COLD_PROCESS, uri, str(cache)], env=env,
                                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

    from trading_platform.resources import serving
    from trading_platform.resources.serving import ModelServer

    server = ModelServer(tracking_uri=uri, cache_dir=str(cache), device="cpu")
    model = server.load("bench_pump")
    raw = xgb.Booster()
    raw.load_model(str(next((cache / "bench_pump" / model.version).glob("model.*"))))
    raw.set_param({"nthread": 2})
    batch = rng.normal(size=(10_000, 40)).astype(np.float32)
    m = raw.inplace_predict(batch, predict_type="margin")
    assert np.allclose(server.predict("bench_pump", batch), 1 / (1 + np.exp(-(0.9 * m - 0.1))), atol=1e-6)

    def best(fn, n=20):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    raw_s = best(lambda: raw.inplace_predict(batch))
    platform_s = best(lambda: server.predict("bench_pump", batch))

    def median_ms(fn, n=2000):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1000)

    row = batch[:1].copy()
    server.predict("bench_pump", row)  # warm: alias resolved once
    calls = serving.REGISTRY_CALLS["resolve"]
    raw_row_ms = median_ms(lambda: raw.inplace_predict(row), 1000)
    platform_row_ms = median_ms(lambda: server.predict("bench_pump", row), 1000)
    raw_row_ms = min(raw_row_ms, median_ms(lambda: raw.inplace_predict(row), 1000))
    platform_row_ms = min(platform_row_ms, median_ms(lambda: server.predict("bench_pump", row), 1000))
    registry_calls = (serving.REGISTRY_CALLS["resolve"] - calls) / 2
    figures = {
        "batch_rows": len(batch),
        "raw_rows_per_s": round(len(batch) / raw_s),
        "platform_rows_per_s": round(len(batch) / platform_s),
        "ratio_vs_raw": round(raw_s / platform_s, 3),
        "cold_load_s": round(cold["load_s"], 3),
        "warm_load_ms": round(warm["load_s"] * 1000, 1),
        "client_init_s": round(warm["client_s"], 2),
        "import_s": round(warm["import_s"], 2),
        "single_row_ms": round(platform_row_ms, 4),
        "raw_single_row_ms": round(raw_row_ms, 4),
        "ratio_single_row_vs_raw": round(platform_row_ms / raw_row_ms, 2),
        "single_row_target_ms": round(2 * raw_row_ms + 1, 4),
        "registry_calls_per_1000_predicts": registry_calls,
        "cold_process_load_s": round(cold_proc["load_s"], 3),
        "mlflow_imported": cold_proc["mlflow"],
    }
    print(f"10,000-row batch: raw booster {figures['raw_rows_per_s']:,} rows/s, ModelServer "
          f"{figures['platform_rows_per_s']:,} rows/s ({figures['ratio_vs_raw']}x); load: cold "
          f"{figures['cold_load_s']} s, warm {figures['warm_load_ms']} ms (plus, in any new process: "
          f"tracking client {figures['client_init_s']} s, imports {figures['import_s']} s)")
    print(f"one row: ModelServer {figures['single_row_ms']} ms, raw booster {figures['raw_single_row_ms']} ms "
          f"({figures['ratio_single_row_vs_raw']}x; target <= {figures['single_row_target_ms']} ms), registry calls "
          f"per 1,000 predicts: {registry_calls}; a new process loads the cached champion in "
          f"{figures['cold_process_load_s']} s (mlflow imported: {figures['mlflow_imported']})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

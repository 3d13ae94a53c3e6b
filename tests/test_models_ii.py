"""The NHITS forecaster and the TCN pattern detector through Dagster, MLflow and PostgreSQL:
trained, registered, gated, served from the registry, and written to their tables. Tiny
configurations (a few training steps); the real sizes are in benchmarks/models.py."""

import json

import numpy as np
import psycopg
import pytest

from trading_platform.assets.models import forecasts, nhits_assets, pattern_tcn, patterns
from trading_platform.models.registry import promote

NHITS_TINY = {"max_steps": 20, "horizon": 12, "input_size": 24, "min_origins": 20, "learning_rate": 1e-3,
              "n_boot": 200}
TCN_TINY = {"epochs": 1, "n_synthetic": 400, "channels": 8, "n_boot": 200}


def md(result, asset):
    [m] = result.asset_materializations_for_node(asset.key.to_python_identifier())
    return {k: v.value for k, v in m.metadata.items()}


def test_nhits_trains_registers_and_forecasts_through_the_registry(model_env):
    run, res, dsn = model_env
    [nhits_1h] = nhits_assets
    client = res["mlflow"].client()
    r = md(run(nhits_1h, NHITS_TINY), nhits_1h)
    assert r["registered_model"] == "nhits.1h" and r["registered_version"] == "1"
    assert r["gate_decision"] == ("champion" if "vs_best_naive" in r["gate_comparisons"]
                                  and r["gate_comparisons"]["vs_best_naive"]["passed"] else "challenger")
    tags = client.get_model_version("nhits.1h", "1").tags
    assert tags["tp.target"].startswith("nhits: close over the next 12 bars (1h)")
    assert tags["tp.train_data_end"] < tags["tp.holdout_start"]
    run_ = client.get_run(r["mlflow_run_id"])
    assert {"mae", "rel_mae_vs_naive", "rel_mae_vs_seasonal_naive", "coverage_80"} <= set(run_.data.metrics)
    assert {a.path for a in client.list_artifacts(r["mlflow_run_id"], "plots")} == {"plots/nhits.png"}
    # forecasts: a challenger is written as a shadow, a champion as the champion; re-runs replace rows
    if r["gate_decision"] != "champion":
        shadow = md(run(forecasts), forecasts)
        assert shadow["by_model"] == {"nhits.1h (shadow)": 2 * 12}
        promote(client, "nhits.1h", "1")
    out = md(run(forecasts), forecasts)
    assert out["by_model"] == {"nhits.1h": 2 * 12}  # 2 symbols x 12 steps, one batched call
    run(forecasts)
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT symbol, step, median, quantiles, role FROM forecasts WHERE role = 'champion' "
                         "ORDER BY symbol, step").fetchall()
        origin = c.execute("SELECT DISTINCT symbol, origin_ts FROM forecasts WHERE role = 'champion'").fetchall()
        last = dict(c.execute("SELECT symbol, max(ts) FROM features WHERE timeframe = '1h' GROUP BY 1").fetchall())
    assert len(rows) == 24 and [r[1] for r in rows[:12]] == list(range(1, 13))
    for _, _, median, q, _ in rows:
        assert q["0.1"] <= median == q["0.5"] <= q["0.9"]
    assert all(ts == last[s] for s, ts in origin)  # each series' latest closed candle is the origin
    # served from the registry: the same forecasts as the stored ones
    import polars as pl

    from trading_platform.features.storage import read_features
    from trading_platform.store.db import connect

    forecaster = res["model_server"].load("nhits.1h").model
    with connect(dsn) as store:
        data = pl.concat([read_features(store.conn, s, "1h", last=forecaster.rows_needed)
                          .select("symbol", "ts", "close") for s in ("BTC/USDT", "ETH/USDT")])
    again = forecaster.forecast(data.to_pandas()).rows
    np.testing.assert_allclose([x["median"] for x in sorted(again, key=lambda x: (x["symbol"], x["step"]))],
                               [r[2] for r in rows], rtol=1e-6)


def test_the_tcn_is_gated_on_the_frozen_set_and_scans_point_in_time(model_env):
    import mlflow
    import pandas as pd

    run, res, dsn = model_env
    client = res["mlflow"].client()
    r = md(run(pattern_tcn, TCN_TINY), pattern_tcn)
    assert r["registered_model"] == "pattern_tcn"
    # one epoch on 400 windows is nowhere near the floor: registered, not promoted, and it says why
    assert r["gate_decision"] == "challenger" and "floor macro F1 0.85" in r["gate_reason"]
    assert r["macro_f1"] < 0.85 and set(r["scores"]) == {"tcn", "labeler"}
    assert r["new_score"] == pytest.approx(r["macro_f1"])  # the gate scored the evaluation it reports
    assert r["labeler_macro_f1"] > 0.5  # the rule labeler on the same frozen set, for reference
    assert "plots/pattern_tcn.png" in {a.path for a in client.list_artifacts(r["mlflow_run_id"], "plots")}
    # the shadow scan: every listed timeframe of every symbol, rows only for windows that have closed
    p = md(run(patterns, {"last_n": 30, "stride": 3, "threshold": 0.0}), patterns)
    assert p["by_model"]["pattern_tcn (shadow)"] > 0
    with psycopg.connect(dsn) as c:
        got = c.execute("SELECT symbol, timeframe, max(ts), count(DISTINCT ts), min(bars) FROM patterns "
                        "WHERE role = 'shadow' GROUP BY 1, 2").fetchall()
        last = {(s, tf): ts for s, tf, ts in c.execute(
            "SELECT symbol, timeframe, max(ts) FROM ohlcv GROUP BY 1, 2").fetchall()}
    assert {(s, tf) for s, tf, *_ in got} == {(s, tf) for s in ("BTC/USDT", "ETH/USDT") for tf in ("5m", "1h")}
    for s, tf, newest, ends, bars in got:
        assert newest == last[(s, tf)] and ends == 10 and bars >= 64  # the 30 newest ends, every third
    # served natively from the registry and by MLflow's own loader: the same probabilities
    native = res["model_server"].load("pattern_tcn", version="1").model
    window = np.cumprod(1 + np.random.default_rng(0).normal(0, 0.01, (100, 4)), axis=0) * 100
    window = np.column_stack([window[:, 0], window.max(axis=1), window.min(axis=1), window[:, 3]])
    pyf = mlflow.pyfunc.load_model("models:/pattern_tcn/1").predict(
        pd.DataFrame(window, columns=["open", "high", "low", "close"]))
    np.testing.assert_allclose(pyf.to_numpy()[0], native.predict_proba([window])[0], rtol=1e-5)
    assert json.loads(client.get_model_version("pattern_tcn", "1").tags["tp.config"])["epochs"] == 1

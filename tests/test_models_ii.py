"""The NHITS forecaster and the TCN pattern detector through Dagster, MLflow and PostgreSQL:
trained, registered, gated, served from the registry, and written to their tables. Tiny
configurations (a few training steps); the real sizes are in benchmarks/models.py."""

import json

import numpy as np
import psycopg
import pytest

from datetime import datetime

from conftest import utc
from trading_platform.assets.models import forecasts, nhits_assets, pattern_tcn, patterns
from trading_platform.assets.partitions import market_key
from trading_platform.models.registry import promote

APRIL = str(market_key("BTC/USDT", "2025-04-01"))

NHITS_TINY = {"max_steps": 20, "horizon": 12, "input_size": 24, "min_origins": 20, "learning_rate": 1e-3,
              "n_boot": 200}
TCN_TINY = {"epochs": 1, "n_synthetic": 400, "channels": 8, "n_boot": 200}


def md(result, asset):
    m = result.asset_materializations_for_node(asset.key.to_python_identifier())[0]
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
    # forecasts at every candle of the month as origin: a challenger's as a shadow, a champion's as the champion
    if r["gate_decision"] != "champion":
        shadow = md(run(forecasts, partition_key=APRIL), forecasts)
        assert shadow["by_model"] == {"nhits.1h (shadow)": 30 * 24 * 12}  # 720 origins x 12 steps, one call
        promote(client, "nhits.1h", "1")
        out = md(run(forecasts, partition_key=APRIL), forecasts)
        assert out["by_model"] == {"nhits.1h": 0}  # a promotion writes nothing: its rows are the shadow's
    else:
        out = md(run(forecasts, partition_key=APRIL), forecasts)
        assert out["by_model"] == {"nhits.1h": 30 * 24 * 12}  # 720 origins x 12 steps, in one batched call
    again = md(run(forecasts, partition_key=APRIL), forecasts)
    assert again["by_model"] == {"nhits.1h": 0}  # nothing new to score: nothing recomputed
    with psycopg.connect(dsn) as c:
        n, keys = c.execute("SELECT count(*), count(DISTINCT (model_version, symbol, timeframe, origin_ts, step)) "
                            "FROM forecasts").fetchone()
        rows = c.execute("SELECT origin_ts, step, median, quantiles, in_sample FROM current_champion_forecasts "
                         "ORDER BY origin_ts, step").fetchall()
    assert n == keys == len(rows) == 30 * 24 * 12  # the promoted shadow's rows are the champion's, none duplicated
    for _, _, median, q, _ in rows:
        assert q["0.1"] <= median == q["0.5"] <= q["0.9"]
    holdout = np.datetime64(tags["tp.holdout_start"].rstrip("Z"), "us")
    flags = {o.replace(tzinfo=None) < holdout.astype(datetime): ins for o, _, _, _, ins in rows}
    assert flags.get(True, True) is True and flags.get(False, False) is False  # in_sample: inside its training rows
    # served from the registry: the stored forecast at the month's last origin

    from trading_platform.features.storage import read_features
    from trading_platform.store.db import connect

    forecaster = res["model_server"].load("nhits.1h").model
    with connect(dsn) as store:
        data = read_features(store.conn, "BTC/USDT", "1h", last=forecaster.rows_needed).select("symbol", "ts", "close")
    last = forecaster.forecast(data.to_pandas()).rows
    np.testing.assert_allclose([x["median"] for x in last], [r[2] for r in rows[-12:]], rtol=1e-6)


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
    # the shadow scan of a symbol-month: every listed timeframe, every window ending in the month
    p = md(run(patterns, {"pattern_threshold": 0.0}, partition_key=APRIL), patterns)
    assert p["by_model"]["pattern_tcn (shadow)"] > 0
    with psycopg.connect(dsn) as c:
        got = c.execute("SELECT timeframe, min(ts), max(ts), count(DISTINCT ts), min(bars), count(*) FROM patterns "
                        "WHERE model_name = 'pattern_tcn' AND model_version = '1' GROUP BY 1 ORDER BY 1").fetchall()
        candles = dict(c.execute("SELECT timeframe, count(*) FROM ohlcv WHERE symbol = 'BTC/USDT' AND "
                                 "ts >= '2025-04-01' AND ts < '2025-05-01' GROUP BY 1").fetchall())
    assert [g[0] for g in got] == ["1h", "5m"]
    for tf, first, newest, ends, bars, n in got:
        assert first == utc(2025, 4, 1) and ends == candles[tf] and bars >= 64  # each April candle ends windows
        assert n == ends * 16  # at threshold 0 every one of the 16 patterns is written ("none" never is)
    # served natively from the registry and by MLflow's own loader: the same probabilities
    native = res["model_server"].load("pattern_tcn", version="1").model
    window = np.cumprod(1 + np.random.default_rng(0).normal(0, 0.01, (100, 4)), axis=0) * 100
    window = np.column_stack([window[:, 0], window.max(axis=1), window.min(axis=1), window[:, 3]])
    pyf = mlflow.pyfunc.load_model("models:/pattern_tcn/1").predict(
        pd.DataFrame(window, columns=["open", "high", "low", "close"]))
    np.testing.assert_allclose(pyf.to_numpy()[0], native.predict_proba([window])[0], rtol=1e-5)
    assert json.loads(client.get_model_version("pattern_tcn", "1").tags["tp.config"])["epochs"] == 1

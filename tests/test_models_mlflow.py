"""Training assets, the gate, lineages, serving, shadows and predictions against a real
MLflow store, real PostgreSQL and real Dagster."""

import json
import logging
import os
import re
import subprocess
import sys
import time

import numpy as np
import psycopg
import pytest

from conftest import utc
from trading_platform.assets.models import predictions, pump_xgb, regime_hmm, signal_lgbm
from trading_platform.assets.partitions import market_key
from trading_platform.models.registry import list_models, promote, sign
from trading_platform.resources import ModelServer
from trading_platform.resources import serving
from trading_platform.resources.serving import ModelLoadError
from trading_platform.store.db import connect


@pytest.fixture
def env(model_env):
    return model_env


def md(result, asset):
    ms = result.asset_materializations_for_node(asset.key.to_python_identifier())
    return {k: v.value for k, v in ms[0].metadata.items()}


def failure(result) -> str:
    [ev] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return ev.event_specific_data.error.message + (ev.event_specific_data.user_failure_data.description or ""
                                                   if ev.event_specific_data.user_failure_data else "")


APRIL = str(market_key("BTC/USDT", "2025-04-01"))
# margins a test sets to take the baselines out of a decision it is not about
ANY_BASELINE = {"min_improvement_auc": -1.0, "min_improvement_log_loss": -1.0}
WEAK = {"n_estimators": 1, "max_depth": 1, "rise": 0.01}
# an unregularized signal model that uses every input it has (the regime probabilities included)
LEANS_ON_EVERYTHING = {"n_estimators": 20, "num_leaves": 15, "min_data_in_leaf": 5, "lambda_l2": 0.0,
                       "feature_fraction": 1.0, "early_stopping_rounds": 1000}
STRONG = {"n_estimators": 60, "max_depth": 4, "rise": 0.01}


def _alias(client, name, alias):
    return str(client.get_model_version_by_alias(name, alias).version)


def test_pump_version_is_one_run_registered_with_its_evidence(env):
    run, res, _ = env
    client = res["mlflow"].client()
    r1 = md(run(pump_xgb, {**STRONG, **ANY_BASELINE}), pump_xgb)
    assert r1["registered_version"] == "1" and r1["gate_decision"] == "champion"
    mlrun = client.get_run(r1["mlflow_run_id"])
    assert mlrun.data.tags["dagster.asset_key"] == "models/pump_xgb" and mlrun.data.tags["dagster.run_id"]
    assert {"roc_auc", "log_loss", "baseline_log_loss", "pr_auc", "baseline_pr_auc",
            "gate_vs_best_rule_lower_bound", "gate_vs_base_rate_lower_bound"} <= set(mlrun.data.metrics)
    assert mlrun.data.params["horizon"] == "12" and mlrun.data.params["rise"] == "0.01"
    assert {a.path for a in client.list_artifacts(r1["mlflow_run_id"], "plots")} == {"plots/pump_xgb.png"}
    gate = json.loads(open(client.download_artifacts(r1["mlflow_run_id"], "details/gate.json")).read())
    assert set(gate) == {"vs_base_rate", "vs_best_rule"} and gate["vs_best_rule"]["against"].startswith("the best")
    tags = client.get_model_version("pump_xgb", "1").tags
    # the version says what it predicts, when it trained, how it was judged
    assert tags["tp.target"] == "pump: close rises >= 0.01 within 12 bars of 5m"
    assert tags["tp.train_start"] < tags["tp.train_end"] < tags["tp.train_data_end"] < tags["tp.holdout_start"]
    assert json.loads(tags["tp.config"])["n_estimators"] == 60
    lo, hi = (float(x) for x in tags["gate.vs_best_rule.interval"].strip("[]").split(","))
    assert lo == pytest.approx(float(tags["gate.vs_best_rule.lower_bound"]), rel=1e-3) and lo <= hi
    assert tags["gate.bootstrap"].startswith("moving blocks of 201 bars")
    # a stronger-evidence run scores the champion on the same rows and takes the alias only with support
    r2 = md(run(pump_xgb, {**STRONG, **ANY_BASELINE, "min_improvement_vs_champion": -1.0}), pump_xgb)
    assert r2["gate_decision"] == "champion" and r2["gate_champion_comparison"].startswith("scored")
    assert r2["champion_score"] == pytest.approx(r1["new_score"], abs=1e-9)  # same model, same rows
    assert _alias(client, "pump_xgb", "champion") == "2"
    r3 = md(run(pump_xgb, {**WEAK, **ANY_BASELINE}), pump_xgb)
    assert r3["gate_decision"] == "challenger" and "not champion version 2" in r3["gate_reason"]
    assert _alias(client, "pump_xgb", "champion") == "2" and _alias(client, "pump_xgb", "challenger") == "3"
    [m] = [m for m in list_models(client) if m["name"] == "pump_xgb"]
    assert m["target"] == tags["tp.target"]
    assert [v["aliases"] for v in m["versions"]] == [[], ["champion"], ["challenger"]]
    assert m["versions"][2]["gate"]["vs_champion.interval"].startswith("[")


def test_default_gate_refuses_a_pump_model_that_does_not_beat_the_rules(env):
    run, res, _ = env
    r = md(run(pump_xgb, WEAK), pump_xgb)  # one stump: no better than momentum over 60 bars
    assert r["gate_decision"] == "challenger" and "does not beat" in r["gate_reason"]
    with pytest.raises(Exception):
        res["mlflow"].client().get_model_version_by_alias("pump_xgb", "champion")


@pytest.mark.parametrize("rise,why", [(0.5, r"only negatives"),
                                      (0.16, r"the holdout has [1-9] positive episode\(s\).* needs at least 10")])
def test_a_holdout_that_cannot_score_a_model_fails_before_anything_is_registered(env, rise, why):
    run, res, _ = env
    r = run(pump_xgb, {"n_estimators": 5, "rise": rise}, raise_on_error=False)  # (almost) no such pump
    assert not r.success
    assert "nothing was registered" in failure(r) and re.search(why, failure(r)), failure(r)
    assert list(res["mlflow"].client().search_registered_models()) == []


def test_a_new_target_needs_its_own_lineage(env):
    run, res, _ = env
    client = res["mlflow"].client()
    run(pump_xgb, {**STRONG, **ANY_BASELINE})
    r = run(pump_xgb, {**STRONG, "rise": 0.015}, raise_on_error=False)
    assert not r.success and "lineage" in failure(r) and "rises >= 0.01" in failure(r)
    assert [str(v.version) for v in client.search_model_versions("name = 'pump_xgb'")] == ["1"]
    other = md(run(pump_xgb, {**STRONG, **ANY_BASELINE, "rise": 0.015, "lineage": "r15"}), pump_xgb)
    assert other["registered_model"] == "pump_xgb.r15" and other["gate_champion_comparison"] == "none"
    assert client.get_registered_model("pump_xgb.r15").tags["tp.target"].startswith("pump: close rises >= 0.015")


def test_signal_versions_are_scored_and_served_with_their_own_regime_version(env, caplog, capfd):
    run, res, dsn = env
    client, server = res["mlflow"].client(), res["model_server"]
    with caplog.at_level(logging.INFO):
        r1 = md(run(regime_hmm, {"n_iter": 10}, partition_key="BTC/USDT"), regime_hmm)
    out = capfd.readouterr()
    for noise in ("missing function", "Failed to validate"):  # a proper pyfunc model: no warning at training
        assert noise not in caplog.text + out.out + out.err
    assert r1["registered_model"] == "regime_hmm.BTC_USDT" and "VAR(1)" in json.dumps(r1["gate_comparisons"])
    promote(client, "regime_hmm.BTC_USDT", "1")  # whatever the gate said: the regime champion for what follows
    s1 = md(run(signal_lgbm, {**LEANS_ON_EVERYTHING, **ANY_BASELINE}, partition_key="BTC/USDT"), signal_lgbm)
    assert s1["gate_decision"] == "champion" and "regime_hmm.BTC_USDT version 1" in s1["regime_inputs"]
    v1 = client.get_model_version("signal_lgbm.BTC_USDT", "1").tags
    assert v1["tp.regime_model_version"] == "1" and v1["tp.holdout_start"] == \
        client.get_model_version("regime_hmm.BTC_USDT", "1").tags["tp.holdout_start"]  # one boundary
    # the regime champion moves on
    run(regime_hmm, {"n_iter": 3}, partition_key="BTC/USDT")
    promote(client, "regime_hmm.BTC_USDT", "2")
    s2 = md(run(signal_lgbm, {**LEANS_ON_EVERYTHING, **ANY_BASELINE, "min_improvement_vs_champion": 1.0},
                partition_key="BTC/USDT"), signal_lgbm)
    assert "version 2" in s2["regime_inputs"] and s2["gate_decision"] == "challenger"
    # the gate scored the champion with regime version 1's probabilities: its own training score, exactly
    assert s2["gate_champion_comparison"].startswith("scored")
    assert s2["champion_score"] == pytest.approx(s1["new_score"], abs=1e-9)
    # predictions: the champion keeps regime v1 as input; the challenger is a shadow with regime v2
    p = md(run(predictions, partition_key=APRIL), predictions)
    assert p["by_model"]["signal_lgbm.BTC_USDT"] == 30 * 24 == p["by_model"]["signal_lgbm.BTC_USDT (shadow)"]
    with psycopg.connect(dsn) as c:
        got = {r[0]: r[1] for r in c.execute(
            "SELECT model_version, details->'inputs'->>'regime_hmm.BTC_USDT' FROM predictions "
            "WHERE model_name = 'signal_lgbm.BTC_USDT' GROUP BY 1, 2")}
        served = np.array([r[0] for r in c.execute(
            "SELECT value FROM predictions WHERE model_name = 'signal_lgbm.BTC_USDT' AND model_version = '1' "
            "ORDER BY ts")])
    assert got == {"1": "1", "2": "2"}
    # the served value is the one computed with regime v1, not with the current regime champion
    from trading_platform.features.storage import read_features
    from trading_platform.models.predict import align
    from trading_platform.models.regime import REGIMES, frame_probs

    import polars as pl

    with connect(dsn) as store:  # April and the 2,000 rows before it the regime filter runs over
        f = pl.concat([read_features(store.conn, "BTC/USDT", "1h", end=utc(2025, 4, 1), last=2000),
                       read_features(store.conn, "BTC/USDT", "1h", utc(2025, 4, 1), utc(2025, 5, 1))])
    sig = server.load("signal_lgbm.BTC_USDT", version="1")
    gain = dict(zip(sig.feature_names, sig.model.feature_importance("gain")))
    assert sum(gain[f"p_{r}"] for r in REGIMES) > 0  # the version does use its regime inputs

    def with_regime(v):
        pr = frame_probs(server.load("regime_hmm.BTC_USDT", version=v), f)
        return sig.predict(align(sig, f.with_columns(**{f"p_{r}": pr[:, i] for i, r in enumerate(REGIMES)})))[-720:]

    np.testing.assert_allclose(served, with_regime("1"), atol=1e-9)
    assert np.abs(served - with_regime("2")).max() > 1e-6  # the current regime champion would give other values
    # champion against shadow on the outcomes realized since
    from trading_platform.models.compare import compare_shadow

    with connect(dsn) as store:
        cmp = compare_shadow(store, client, server, "signal_lgbm.BTC_USDT", n_boot=200)
    ends = [client.get_model_version("signal_lgbm.BTC_USDT", v).tags["tp.train_data_end"] for v in ("1", "2")]
    after = np.datetime64(max(ends).rstrip("Z"), "us")
    fts = f["ts"].dt.replace_time_zone(None).to_numpy()[-720:]
    # April's rows after both versions' training data, but the last 12 (their outcome is not stored yet)
    assert cmp["champion"] == "1" and cmp["shadow"] == "2" and cmp["rows"] == int((fts > after).sum()) - 12
    from sklearn.metrics import roc_auc_score

    close = f["close"].to_numpy()
    with psycopg.connect(dsn) as c:
        v1 = np.array([r[0] for r in c.execute(
            "SELECT value FROM predictions WHERE model_name = 'signal_lgbm.BTC_USDT' AND model_version = '1' "
            "ORDER BY ts")])
    use = (fts > after)[:-12]
    realized = (close[12:] > close[:-12])[-720 + 12:]  # sign of the next 12 bars, where they are stored
    assert cmp["champion_score"] == pytest.approx(roc_auc_score(realized[use], v1[:-12][use]), abs=1e-9)
    assert cmp["interval"][0] <= cmp["interval"][1] and "shadow" in cmp["verdict"]


def test_without_a_regime_champion_the_signal_trains_on_features_alone(env):
    run, res, _ = env
    client = res["mlflow"].client()
    s = md(run(signal_lgbm, {"n_estimators": 20}, partition_key="ETH/USDT"), signal_lgbm)
    assert "no regime champion for ETH/USDT" in s["regime_inputs"]
    tags = client.get_model_version("signal_lgbm.ETH_USDT", "1").tags
    assert tags["tp.regime_model_version"] == ""
    names = res["model_server"].load("signal_lgbm.ETH_USDT", version="1").feature_names
    assert not any(n.startswith("p_") for n in names)


def test_serving_one_row_makes_no_registry_call_while_the_alias_is_fresh(env, tmp_path, caplog):
    import xgboost as xgb

    run, res, _ = env
    run(pump_xgb, {**STRONG, **ANY_BASELINE})
    run(pump_xgb, {**WEAK, **ANY_BASELINE})
    client = res["mlflow"].client()
    uri = res["mlflow"].tracking_uri
    server = ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "cache"), device="cpu", alias_ttl_s=600)
    m = server.load("pump_xgb")
    assert isinstance(m.model, xgb.Booster) and m.version == "1" and m.calibration["method"] == "platt"
    row = np.random.default_rng(0).normal(size=(1, len(m.feature_names))).astype(np.float32)
    calls = serving.REGISTRY_CALLS["resolve"]
    for _ in range(200):
        p = server.predict("pump_xgb", row)
    assert serving.REGISTRY_CALLS["resolve"] == calls  # the cached resolution served every call
    margin = m.model.inplace_predict(row, predict_type="margin")
    assert p == pytest.approx(1 / (1 + np.exp(-(m.calibration["a"] * margin + m.calibration["b"]))))
    # the alias moves: picked up once the cached resolution is older than the TTL
    promote(client, "pump_xgb", "2")
    assert server.load("pump_xgb").version == "1"  # within its TTL: the cached resolution
    short = ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "cache"), device="cpu", alias_ttl_s=0.2)
    time.sleep(0.3)
    assert short.load("pump_xgb").version == "2" and serving.REGISTRY_CALLS["resolve"] == calls + 1
    # a new process with a fresh disk cache loads the champion natively, without importing MLflow
    code = ("import sys; from trading_platform.resources.serving import ModelServer; "
            f"m = ModelServer(tracking_uri={uri!r}, cache_dir={str(tmp_path / 'cache')!r}, alias_ttl_s=60)"
            ".load('pump_xgb'); print(m.version, 'mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert out.stdout.split() == ["2", "False"]
    # the registry unreachable: while the cached resolution is fresh nothing even tries to reach it...
    serving._MEMORY.clear()
    serving._ALIASES.clear()
    cache = str(tmp_path / "cache")
    fresh = ModelServer(tracking_uri="http://127.0.0.1:9/", cache_dir=cache, device="cpu", alias_ttl_s=600)
    with caplog.at_level(logging.WARNING):
        for _ in range(200):
            fresh.predict("pump_xgb", row)
    assert "unreachable" not in caplog.text  # any attempt would have failed and said so
    # ...and once it is stale, the next call tries, fails, serves the cached version and says so
    down = ModelServer(tracking_uri="http://127.0.0.1:9/", cache_dir=cache, device="cpu", alias_ttl_s=0)
    with caplog.at_level(logging.WARNING):
        assert down.load("pump_xgb").version == "2"
    assert "serving cached pump_xgb@champion" in caplog.text
    with pytest.raises(ModelLoadError, match="nope"):
        server.load("nope")
    with pytest.raises(ModelLoadError, match="pump_xgb version 99"):
        server.load("pump_xgb", version="99")


def test_the_regime_model_is_a_standard_pyfunc_and_loads_natively(env):
    import mlflow
    import pandas as pd

    from trading_platform.models.regime import INPUTS, REGIMES

    run, res, _ = env
    run(regime_hmm, {"n_iter": 5}, partition_key="ETH/USDT")
    native = res["model_server"].load("regime_hmm.ETH_USDT", version="1")
    X = np.column_stack([np.random.default_rng(1).normal(0, 0.01, 50), np.full(50, 0.01)])
    pyf = mlflow.pyfunc.load_model("models:/regime_hmm.ETH_USDT/1").predict(pd.DataFrame(X, columns=list(INPUTS)))
    assert list(pyf.columns) == list(REGIMES)
    np.testing.assert_allclose(pyf.to_numpy(), native.predict(X), rtol=1e-9)
    # self-contained: MLflow loads it in a process where trading_platform cannot be imported
    path = mlflow.artifacts.download_artifacts("models:/regime_hmm.ETH_USDT/1")
    code = ("import sys; sys.modules['trading_platform'] = None; import mlflow, pandas as pd, numpy as np; "
            f"m = mlflow.pyfunc.load_model({path!r}); "
            f"print(m.predict(pd.DataFrame(np.array({X[:3].tolist()}), columns={list(INPUTS)!r})).to_numpy().sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) == pytest.approx(3.0)  # three rows of probabilities


def test_listing_and_scoring_more_than_100_registered_models(env):
    import mlflow

    run, res, dsn = env
    client = res["mlflow"].client()
    run(pump_xgb, {**STRONG, **ANY_BASELINE})
    tags = client.get_model_version("pump_xgb", "1").tags
    for i in range(105):  # per-symbol models of a large universe
        name = f"pump_xgb.copy{i:03d}"
        mv = mlflow.register_model("models:/pump_xgb/1", name)
        for k in ("tp.family", "tp.threshold"):
            client.set_model_version_tag(name, mv.version, k, tags[k])
        client.set_model_version_tag(name, mv.version, "tp.timeframe", "1h")  # on hourly features: cheaper here
        sign(client, name, mv.version)  # registered by hand: served once vouched for (tp models sign)
        client.set_registered_model_alias(name, "champion", mv.version)
    assert len(list_models(client)) == 106
    p = md(run(predictions, partition_key=APRIL), predictions)
    assert len(p["by_model"]) == 106 and p["by_model"]["pump_xgb.copy104"] == 30 * 24  # every model scored


def test_an_incumbent_that_cannot_be_loaded_keeps_its_alias_and_promote_says_what_it_skips(model_env, tmp_path):
    """A champion whose artifacts are gone (a store error, a deleted directory) is never replaced blind: the new
    version, which the gate could not compare with it, is registered as a challenger saying why."""
    import shutil

    run, res, dsn = model_env
    client = res["mlflow"].client()
    pump = {"n_estimators": 30, "rise": 0.01, **ANY_BASELINE}
    run(pump_xgb, pump)
    assert str(client.get_model_version_by_alias("pump_xgb", "champion").version) == "1"
    shutil.rmtree(tmp_path / "artifacts")  # version 1's artifacts vanish...
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # ...and nothing is cached
    serving._MEMORY.clear()
    serving._ALIASES.clear()
    r = run(pump_xgb, {**pump, "n_estimators": 40, "min_improvement_vs_champion": -1.0})
    meta = {k: v.value for k, v in r.asset_materializations_for_node("models__pump_xgb")[0].metadata.items()}
    assert meta["gate_decision"] == "challenger" and "not compared with champion version 1" in meta["gate_reason"]
    assert str(client.get_model_version_by_alias("pump_xgb", "champion").version) == "1"  # it keeps its alias
    v2 = client.get_model_version("pump_xgb", "2").tags
    assert v2["gate.decision"] == "challenger" and "tp models promote" in v2["gate.reason"]
    listed = {m["name"]: m for m in list_models(client)}["pump_xgb"]["versions"]
    assert "not compared" in listed[1]["gate"]["reason"]
    with connect(dsn) as store:  # forcing it stays possible, and says what it skips
        out = promote(client, "pump_xgb", "2", conn=store.conn)
    assert out["previous"] == "1" and "not compared with champion version 1" in out["skipped_gate"]


def test_a_failing_blocking_check_moves_no_alias(tmp_path):
    from pathlib import Path

    import pandas as pd
    import xgboost as xgb

    from trading_platform.models.gate import GateDecision
    from trading_platform.models.tracking import log_and_register
    from trading_platform.resources import MLflowResource

    mlflow = MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "a"))
    X = np.random.default_rng(0).normal(size=(60, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, (X[:, 0] > 0).astype(int)), 3)
    decision = GateDecision("champion", "first champion: beats every naive baseline with support", "roc_auc",
                            "higher", 0.9)

    def plot(path):
        Path(path).write_bytes(b"not a plot")
        return path

    out = log_and_register(
        mlflow_resource=mlflow, experiment="t", run_name="t", tags={}, version_tags={}, flavor="xgboost",
        model=booster, registered_name="pump_xgb", target="t", params={}, metrics={"roc_auc": float("nan")},
        example=pd.DataFrame(X[:2], columns=["a", "b", "c"]), predict_example=booster.predict(xgb.DMatrix(X[:2])),
        plot=plot, decision=decision, required=("roc_auc", "log_loss"))
    client = mlflow.client()
    assert out["decision"].alias == "blocked" and "roc_auc, log_loss" in out["decision"].reason
    assert client.get_registered_model("pump_xgb").aliases == {}  # registered, but no alias moved
    assert client.get_model_version("pump_xgb", out["version"]).tags["gate.decision"] == "blocked"

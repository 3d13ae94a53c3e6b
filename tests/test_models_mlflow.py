"""Training assets, the registry gate, serving and predictions against a real MLflow store."""

import logging
import uuid

import numpy as np
import psycopg
import pytest
from dagster import DagsterInstance, materialize

from trading_platform.assets.features import features
from trading_platform.assets.market_data import market_assets
from trading_platform.assets.models import pump_xgb, predictions, regime_hmm, signal_lgbm
from trading_platform.assets.partitions import market_key
from trading_platform.core.symbols import SymbolInfo
from trading_platform.models.registry import list_models, promote
from trading_platform.resources import MarketDB, MarketSource, MLflowResource, ModelServer
from trading_platform.resources import serving
from trading_platform.resources.serving import ModelLoadError
from trading_platform.store.db import connect
from trading_platform.symbols import sync_partitions

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def market(pg_server):
    """Two crypto symbols with 5m and 1h candles and features for Jan-Feb 2025 (built once)."""
    name = f"m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    dsn = pg_server.replace("/postgres?", f"/{name}?")
    instance = DagsterInstance.ephemeral()
    with connect(dsn) as store:
        for s in SYMBOLS:
            store.add_symbol(SymbolInfo.create(s, timeframes=["5m", "1h"]))
        sync_partitions(instance, store)
    res = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec="synthetic:7")}
    for s in SYMBOLS:
        materialize([*market_assets, features], instance=instance, resources=res, tags={
            "dagster/asset_partition_range_start": str(market_key(s, "2025-01-01")),
            "dagster/asset_partition_range_end": str(market_key(s, "2025-02-01"))})
    yield dsn, instance
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def env(market, tmp_path):
    dsn, instance = market
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    serving._MEMORY.clear()
    resources = {"market_db": MarketDB(database_url=dsn),
                 "mlflow": MLflowResource(tracking_uri=uri, artifact_root=str(tmp_path / "artifacts")),
                 "model_server": ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "cache"), device="cpu")}

    def run(asset, config=None, partition_key=None, raise_on_error=True):
        key = asset.key.to_python_identifier()
        return materialize([asset], instance=instance, resources=resources, partition_key=partition_key,
                           run_config={"ops": {key: {"config": config}}} if config else None,
                           raise_on_error=raise_on_error)

    return run, resources, dsn


def md(result, asset):
    [m] = result.asset_materializations_for_node(asset.key.to_python_identifier())
    return {k: v.value for k, v in m.metadata.items()}


WEAK = {"n_estimators": 1, "max_depth": 1, "rise": 0.01}
STRONG = {"n_estimators": 60, "max_depth": 4, "rise": 0.01}


def test_pump_training_is_one_run_registered_and_gated(env):
    run, res, _ = env
    client = res["mlflow"].client()
    r1 = md(run(pump_xgb, WEAK), pump_xgb)
    assert r1["registered_version"] == "1"
    first = r1["gate_decision"]
    assert first == ("champion" if r1["new_score"] > 0.5 else "challenger")
    mlrun = client.get_run(r1["mlflow_run_id"])
    assert mlrun.data.tags["dagster.asset_key"] == "models/pump_xgb" and mlrun.data.tags["dagster.run_id"]
    assert {"roc_auc", "pr_auc", "baseline_roc_auc", "baseline_pr_auc", "precision_at_threshold",
            "recall_at_threshold"} <= set(mlrun.data.metrics)
    assert mlrun.data.params["horizon"] == "12" and mlrun.data.params["rise"] == "0.01"
    arts = {a.path for a in client.list_artifacts(r1["mlflow_run_id"], "plots")}
    assert arts == {"plots/pump_xgb.png"}
    # a stronger model beats the champion on the same, new holdout and takes the alias
    r2 = md(run(pump_xgb, STRONG), pump_xgb)
    assert r2["gate_decision"] == "champion"
    if first == "champion":  # it had to beat version 1 on the same holdout
        assert r2["new_score"] > r2["champion_score"]
    assert _alias(client, "champion") == "2"
    # a weaker one does not: it becomes challenger, the champion stays
    r3 = md(run(pump_xgb, WEAK), pump_xgb)
    assert r3["gate_decision"] == "challenger" and r3["new_score"] < r3["champion_score"]
    assert _alias(client, "champion") == "2" and _alias(client, "challenger") == "3"
    tags = client.get_model_version("pump_xgb", "3").tags
    assert tags["gate.decision"] == "challenger" and tags["gate.direction"] == "higher is better"
    assert float(tags["gate.champion_score"]) == pytest.approx(r3["champion_score"], rel=1e-5)
    # the listing shows versions, aliases and metrics
    [m] = [m for m in list_models(client) if m["name"] == "pump_xgb"]
    assert [v["aliases"] for v in m["versions"]][1:] == [["champion"], ["challenger"]]
    assert "roc_auc" in m["versions"][1]["metrics"] and m["versions"][2]["gate"]["decision"] == "challenger"


def _alias(client, alias):
    return str(client.get_model_version_by_alias("pump_xgb", alias).version)


def test_a_first_model_without_a_usable_score_gets_no_champion(env):
    run, res, _ = env
    r = run(pump_xgb, {"n_estimators": 5, "rise": 0.06}, raise_on_error=False)  # no pump in the holdout
    checks = {c.check_name: c.passed for c in r.get_asset_check_evaluations()}
    assert checks["metrics_finite"] is False
    client = res["mlflow"].client()
    assert client.get_model_version("pump_xgb", "1").tags["gate.decision"] == "challenger"
    with pytest.raises(Exception):
        client.get_model_version_by_alias("pump_xgb", "champion")


def test_serving_loads_native_models_caches_and_follows_the_alias(env, tmp_path, caplog):
    import xgboost as xgb

    run, res, _ = env
    run(pump_xgb, STRONG)
    run(pump_xgb, WEAK)
    server = res["model_server"]
    client = res["mlflow"].client()
    champ = _alias(client, "champion")
    m = server.load("pump_xgb")
    assert isinstance(m.model, xgb.Booster) and m.version == champ and server.load("pump_xgb") is m
    X = np.random.default_rng(0).normal(size=(100, len(m.feature_names))).astype(np.float32)
    np.testing.assert_array_equal(server.predict("pump_xgb", X), m.model.inplace_predict(X))
    assert (tmp_path / "cache" / "pump_xgb" / champ / "MLmodel").exists()
    # the alias moves: the next load serves the new version
    other = "2" if champ == "1" else "1"
    promote(client, "pump_xgb", other)
    assert server.load("pump_xgb").version == other
    # MLflow unreachable: a new process (empty memory) still serves the cached version, and says so
    serving._MEMORY.clear()
    down = ModelServer(tracking_uri="http://127.0.0.1:9/", cache_dir=str(tmp_path / "cache"), device="cpu")
    with caplog.at_level(logging.WARNING):
        assert down.load("pump_xgb").version == other
    assert "serving cached pump_xgb@champion" in caplog.text
    with pytest.raises(ModelLoadError, match="nope"):
        server.load("nope")
    with pytest.raises(ModelLoadError, match="pump_xgb version 99"):
        server.load("pump_xgb", version="99")


def test_regimes_signal_and_predictions(env):
    run, res, dsn = env
    r = md(run(regime_hmm, {"n_iter": 20}, partition_key="BTC/USDT"), regime_hmm)
    assert r["registered_model"] == "regime_hmm.BTC_USDT"
    # held-out log-likelihood per row against one Gaussian fitted on the same training rows
    assert r["gate_decision"] == ("champion" if r["new_score"] > r["baseline_score"] else "challenger")
    if r["gate_decision"] != "champion":  # the signal model needs a regime champion: promote by hand
        promote(res["mlflow"].client(), "regime_hmm.BTC_USDT", r["registered_version"])
    assert set(r["regime_share"]) == {"bull", "bear", "sideways", "high_volatility"}
    assert abs(sum(r["transition_matrix"]["bull"].values()) - 1) < 1e-6
    logged = {a.path for a in res["mlflow"].client().list_artifacts(r["mlflow_run_id"], "details")}
    assert logged == {"details/transition_matrix.json", "details/regime_stats.json", "details/regime_share.json"}
    s = md(run(signal_lgbm, {"n_estimators": 20}, partition_key="BTC/USDT"), signal_lgbm)
    assert s["registered_model"] == "signal_lgbm.BTC_USDT"
    assert s["gate_decision"] == ("champion" if s["new_score"] > 0.5 else "challenger")
    run(pump_xgb, STRONG)
    p1 = md(run(predictions, {"last_n": 50}), predictions)
    assert p1["by_model"]["regime_hmm.BTC_USDT"] == 50
    assert p1["by_model"].get("pump_xgb", 0) in (0, 100)  # 50 rows x 2 symbols, if pump_xgb has a champion
    run(predictions, {"last_n": 50})
    with psycopg.connect(dsn) as c:
        n, distinct = c.execute("SELECT count(*), count(DISTINCT (model_name, model_version, symbol, timeframe, ts)) "
                                "FROM predictions").fetchone()
        labels = {r[0] for r in c.execute("SELECT label FROM predictions WHERE model_name LIKE 'regime%'")}
    assert n == distinct == sum(p1["by_model"].values())  # a re-run replaced, never duplicated
    assert labels <= {"bull", "bear", "sideways", "high_volatility"}

"""Bad configuration values of the model families, their gate and the scoring assets are refused before anything
is read, trained or written, naming the config field: the gate's margins and replicates (``GatePolicy``), the
families' configurations (pump, signal, regime, TCN, NHITS) and the scoring parameters (``scoring.Params``).
Unit checks construct the real objects; a few real Dagster runs show an asset failing on its config, naming the
field, before it opens MLflow or reads the market store."""

import math

import pytest
from dagster import materialize

from trading_platform.errors import InvalidInput

NAN, INF = float("nan"), float("inf")


# ---- the gate -----------------------------------------------------------------------------------
def _policies():
    from trading_platform.models import classifier, regime
    from trading_platform.models.forecast import baselines
    from trading_platform.models.patterns import gate as pattern_gate

    return {"classifier": (classifier.default_policy, "vs_best_rule"),
            "regime": (regime.gate_policy, "vs_var1"),
            "pattern_tcn": (pattern_gate.default_policy, "vs_no_edge"),
            "nhits": (baselines.gate_policy, "vs_best_naive")}


@pytest.mark.parametrize("family", ["classifier", "regime", "pattern_tcn", "nhits"])
@pytest.mark.parametrize("margin", [-INF, NAN, INF, -5.0, "0.01", None, True])
def test_every_family_refuses_a_margin_that_is_not_a_sane_number(family, margin):
    build, key = _policies()[family]
    margins = dict(build().margins)
    with pytest.raises(InvalidInput) as e:
        build(margins={**margins, key: margin})
    assert e.value.field == f"margins.{key}"


@pytest.mark.parametrize("n_boot", [0, -3, 10, 99, 100.0, NAN])
def test_the_gate_refuses_too_few_bootstrap_replicates(n_boot):
    from trading_platform.models import classifier

    with pytest.raises(InvalidInput) as e:
        classifier.default_policy(n_boot=n_boot)
    assert e.value.field == "n_boot" and "100" in e.value.message


@pytest.mark.parametrize("kw,field", [({"confidence": NAN}, "confidence"), ({"confidence": 1.0}, "confidence"),
                                      ({"seed": -1}, "seed"), ({"direction": "up"}, "direction"),
                                      ({"margins": [0.1]}, "margins")])
def test_the_gate_refuses_other_nonsense(kw, field):
    from trading_platform.models.gate import GatePolicy

    with pytest.raises(InvalidInput) as e:
        GatePolicy(**{"metric": "roc_auc", "direction": "higher", "margins": {"vs_champion": 0.0}, **kw})
    assert e.value.field == field


def test_the_asset_policy_names_the_config_field():
    from trading_platform.assets.nhits import NHITSTrainConfig
    from trading_platform.assets.pump import PumpTrainConfig
    from trading_platform.assets.training import gate_policy
    from trading_platform.models import classifier
    from trading_platform.models.forecast import baselines

    pump = {"vs_base_rate": "min_improvement_log_loss", "vs_best_rule": "min_improvement_auc",
            "vs_champion": "min_improvement_vs_champion"}
    with pytest.raises(InvalidInput) as e:
        gate_policy(classifier.default_policy, PumpTrainConfig(min_improvement_auc=NAN), pump)
    assert e.value.field == "min_improvement_auc"
    with pytest.raises(InvalidInput) as e:
        gate_policy(classifier.default_policy, PumpTrainConfig(n_boot=0), pump)
    assert e.value.field == "n_boot"
    nhits = {"vs_best_naive": "min_improvement_vs_naive", "vs_champion": "min_improvement_vs_champion"}
    with pytest.raises(InvalidInput) as e:
        gate_policy(baselines.gate_policy, NHITSTrainConfig(min_improvement_vs_naive=-INF), nhits)
    assert e.value.field == "min_improvement_vs_naive" and "-inf" in e.value.message
    ok = gate_policy(baselines.gate_policy, NHITSTrainConfig(n_boot=200), nhits)
    assert ok.margins == {"vs_best_naive": 0.0, "vs_champion": 0.005} and ok.n_boot == 200
    # -1 still switches a comparison off (what tests and demos use to take a baseline out of a decision: an AUC
    # difference is never below it); 100 replicates are enough
    p = gate_policy(classifier.default_policy, PumpTrainConfig(min_improvement_auc=-1.0, n_boot=100), pump)
    assert p.margin("vs_best_rule") == -1.0 and p.n_boot == 100


# ---- the families' configurations ---------------------------------------------------------------
PUMP_BAD = [("learning_rate", NAN), ("learning_rate", -1.0), ("learning_rate", INF), ("max_depth", -1),
            ("n_estimators", 0), ("horizon", 0), ("horizon", -5), ("subsample", 0.0), ("colsample_bytree", 1.5),
            ("alert_threshold", 5.0), ("alert_threshold", 0.0), ("rise", 0.0), ("rise", NAN),
            ("holdout_frac", 1.0), ("calibration_frac", 0.0), ("min_episodes", 0), ("early_stopping_rounds", 0),
            ("reg_lambda", -1.0), ("min_child_weight", NAN), ("horizon", 12.5), ("horizon", True)]
SIGNAL_BAD = [("horizon", 0), ("horizon", -2), ("learning_rate", NAN), ("learning_rate", 0.0), ("num_leaves", 1),
              ("n_estimators", 0), ("feature_fraction", 0.0), ("lambda_l2", -INF), ("min_data_in_leaf", 0),
              ("holdout_frac", 0.0), ("calibration_frac", 1.0)]
REGIME_BAD = [("n_iter", 0), ("n_iter", -3), ("holdout_frac", 5.0), ("holdout_frac", NAN), ("n_states", 3),
              ("seed", -1)]
TCN_BAD = [("epochs", 0), ("n_synthetic", 0), ("n_synthetic", 1), ("lr", NAN), ("lr", -1.0), ("lr", INF),
           ("channels", 0), ("threads", -1), ("length", 8), ("batch_size", 1), ("dropout", 1.0),
           ("label_smoothing", NAN), ("dilations", ()), ("window_bars", (256, 64)), ("share", (0.0, 1.0)),
           ("noise", (0.0, NAN)), ("seed", -2)]


@pytest.mark.parametrize("family,field,value", [("pump", *b) for b in PUMP_BAD] + [("signal", *b) for b in SIGNAL_BAD]
                         + [("regime", *b) for b in REGIME_BAD] + [("tcn", *b) for b in TCN_BAD])
def test_family_configs_refuse_bad_values_naming_the_field(family, field, value):
    if family == "pump":
        from trading_platform.models.pump import PumpConfig as cls
    elif family == "signal":
        from trading_platform.models.signal import SignalConfig as cls
    elif family == "regime":
        from trading_platform.models.regime import RegimeConfig as cls
    else:
        from trading_platform.models.patterns.tcn import TCNConfig as cls
    with pytest.raises(InvalidInput) as e:
        cls(**{field: value})
    assert e.value.field == field and field in e.value.message


def test_nhits_refuses_an_infinite_learning_rate():
    from trading_platform.models.forecast.nhits import NHITSConfig

    for lr in (INF, NAN):
        with pytest.raises(InvalidInput) as e:
            NHITSConfig(learning_rate=lr)
        assert e.value.field == "nhits.learning_rate"


def test_a_champion_whose_recorded_config_is_now_refused_cannot_be_refit_but_does_not_stop_training():
    from trading_platform.assets.training import config_of
    from trading_platform.models.pump import PumpConfig

    assert config_of(PumpConfig, {"alert_threshold": 5.0, "horizon": 12}) is None
    assert config_of(PumpConfig, {"horizon": 6, "retired_field": 1}) == PumpConfig(horizon=6)


def test_pattern_tcn_checks_its_run_settings():
    from trading_platform.assets.patterns import TCNTrainConfig, checked_history_timeframes

    assert checked_history_timeframes(TCNTrainConfig(history_timeframes=["60m", "1h", "D1"])) == ["1h", "1d"]
    for kw, field in [({"history_timeframes": ["7x"]}, "history_timeframes"),
                      ({"history_holdout_frac": 5.0}, "history_holdout_frac"),
                      ({"history_holdout_frac": 0.0}, "history_holdout_frac"),
                      ({"history_holdout_frac": -0.2}, "history_holdout_frac"),
                      ({"edge_horizon": 0}, "edge_horizon"), ({"min_detections": 0}, "min_detections"),
                      ({"detection_threshold": NAN}, "detection_threshold"), ({"floor": 1.5}, "floor")]:
        with pytest.raises(InvalidInput) as e:
            checked_history_timeframes(TCNTrainConfig(**kw))
        assert e.value.field == field


# ---- scoring --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,field", [({"pattern_threshold": NAN}, "pattern_threshold"),
                                      ({"pattern_threshold": -1.0}, "pattern_threshold"),
                                      ({"pattern_threshold": 1.5}, "pattern_threshold"),
                                      ({"context_rows": -5}, "context_rows"),
                                      ({"context_rows": 2.5}, "context_rows"),
                                      ({"pattern_windows": ()}, "pattern_windows"),
                                      ({"pattern_windows": (8, 64)}, "pattern_windows")])
def test_scoring_params_refuse_bad_values(kw, field):
    from trading_platform.models.scoring import Params

    with pytest.raises(InvalidInput) as e:
        Params(**kw)
    assert e.value.field == field


def test_the_defaults_and_the_edges_that_mean_something_still_construct():
    from trading_platform.models.patterns.tcn import TCNConfig
    from trading_platform.models.pump import PumpConfig
    from trading_platform.models.regime import RegimeConfig
    from trading_platform.models.scoring import Params
    from trading_platform.models.signal import SignalConfig

    for cls in (PumpConfig, SignalConfig, RegimeConfig):
        assert cls(**cls().to_dict()) == cls()
    assert TCNConfig.from_dict(TCNConfig().to_dict()) == TCNConfig()
    assert TCNConfig(threads=0).threads == 0  # 0: torch's default
    # threshold 0 writes every pattern (a test of the scan uses it); the windows are checked and kept as a tuple
    p = Params(context_rows=0, pattern_threshold=0.0, pattern_windows=[64, 128])
    assert p.pattern_windows == (64, 128) and isinstance(p.pattern_windows, tuple)
    assert math.isclose(Params(pattern_threshold=1).pattern_threshold, 1)


# ---- through Dagster ------------------------------------------------------------------------------
@pytest.fixture
def bad_run(dsn, instance, tmp_path):
    """run(asset, config, partition_key) -> (the failed step's errors, text with their causes); the MLflow store
    is a SQLite file a run creates on first use: it must not exist afterwards."""
    from trading_platform.resources import MarketDB, MLflowResource, ModelServer

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    resources = {"market_db": MarketDB(database_url=dsn),
                 "mlflow": MLflowResource(tracking_uri=uri, artifact_root=str(tmp_path / "artifacts")),
                 "model_server": ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "cache"), device="cpu")}
    instance.add_dynamic_partitions("symbol", ["BTC/USDT"])

    def run(asset, config, partition_key=None):
        r = materialize([asset], instance=instance, resources=resources, partition_key=partition_key,
                        run_config={"ops": {asset.key.to_python_identifier(): {"config": config}}},
                        raise_on_error=False)
        assert not r.success
        [ev] = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"]
        err, classes, text = ev.event_specific_data.error, [], []
        while err is not None:
            classes.append(err.cls_name)
            text.append(err.message)
            err = err.cause
        assert not (tmp_path / "mlflow.db").exists(), "the run opened MLflow before refusing its config"
        return classes, "\n".join(text)

    return run


def test_training_assets_refuse_bad_config_naming_the_field_before_anything_runs(bad_run):
    from trading_platform.assets.models import nhits_assets, pattern_tcn, pump_xgb, regime_hmm

    cases = [(pump_xgb, {"n_boot": 0}, None, "n_boot"),
             (pump_xgb, {"symbols": ["NOPE/USDT"]}, None, "NOPE/USDT"),  # "no stored features" after MLflow
             (nhits_assets[0], {"min_improvement_vs_naive": -INF}, None, "min_improvement_vs_naive"),
             (regime_hmm, {"n_iter": 0}, "BTC/USDT", "regime n_iter"),
             (pattern_tcn, {"history_timeframes": ["7x"], "epochs": 1}, None, "history_timeframes")]
    for asset, config, key, field in cases:
        classes, text = bad_run(asset, config, key)
        assert "InvalidInput" in classes and field in text, (asset.key, text)


def test_the_patterns_asset_refuses_a_nan_threshold_before_writing(bad_run):
    from trading_platform.assets.models import patterns
    from trading_platform.assets.partitions import market_key

    classes, text = bad_run(patterns, {"pattern_threshold": NAN, "recompute": True},
                            str(market_key("BTC/USDT", "2025-04-01")))
    assert "InvalidInput" in classes and "pattern_threshold" in text

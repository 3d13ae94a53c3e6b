"""``models/pump_xgb``: the XGBoost pump classifier, pooled across crypto symbols
(pumps are rare; pooling gives the model enough of them). Registered as
``pump_xgb`` (or ``pump_xgb.<lineage>`` for another target)."""

from typing import List, Optional

from dagster import AssetExecutionContext, AssetKey, Config, Failure, MaterializeResult, asset

from ..resources import MarketDB, MLflowResource, ModelServer
from .features import FEATURES_KEY
from .training import GROUP, checks

PUMP_KEY = AssetKey(["models", "pump_xgb"])


# the blocking check: a version whose metrics are missing or not finite moves no alias
REQUIRED_METRICS = ("roc_auc", "log_loss", "baseline_log_loss")

class PumpTrainConfig(Config):
    timeframe: str = "5m"
    symbols: List[str] = []          # empty: every enabled crypto symbol listing the timeframe
    horizon: int = 12
    rise: float = 0.05
    alert_threshold: float = 0.5
    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    min_child_weight: float = 5.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 5.0
    early_stopping_rounds: int = 30
    holdout_frac: float = 0.2
    calibration_frac: float = 0.25
    min_episodes: int = 10
    lineage: Optional[str] = None    # a new target (rise, horizon, timeframe) needs its own lineage
    # the gate: minimum improvements (lower bounds of the one-sided 95 % bootstrap interval)
    min_improvement_auc: float = 0.01        # ROC AUC over the best untrained rule
    min_improvement_log_loss: float = 0.0    # log loss under the training base rate
    min_improvement_vs_champion: float = 0.005  # ROC AUC over the champion
    n_boot: int = 1000


@asset(key=PUMP_KEY, deps=[FEATURES_KEY], check_specs=checks(PUMP_KEY), kinds={"xgboost", "mlflow"},
       group_name=GROUP, pool="gpu",
       description="XGBoost pump classifier: does the close rise `rise` within `horizon` bars? Gated against the "
                   "base rate, the best untrained rule and the champion with a block bootstrap; registered as "
                   "pump_xgb.")
def pump_xgb(context: AssetExecutionContext, config: PumpTrainConfig, market_db: MarketDB,
             mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    import pandas as pd

    from ..core.timeframes import parse_timeframe
    from ..models import classifier as clf
    from ..models import pump
    from ..models.common import EvaluationError
    from ..models.registry import registered_name
    from ..models.tracking import log_and_register
    from ..resources.serving import resolve_device
    from .training import (align_columns, check_lineage, classifier_champion, evaluation_failure, gate_policy,
                           pure_config, result, run_tags, training_frame, version_tags)

    tf = parse_timeframe(config.timeframe)
    # the configuration and the gate's policy are checked before anything is read or trained
    cfg = pure_config(pump.PumpConfig, config)
    policy = gate_policy(clf.default_policy, config, {"vs_base_rate": "min_improvement_log_loss",
                                                      "vs_best_rule": "min_improvement_auc",
                                                      "vs_champion": "min_improvement_vs_champion"})
    if config.symbols:  # an unknown one was "no stored features", after MLflow opened
        with market_db.open() as store:
            listed = {s.symbol for s in store.list_symbols(enabled_only=True) if tf in s.timeframes}
        unknown = [s for s in config.symbols if s not in listed]
        if unknown:
            from ..errors import InvalidInput

            raise InvalidInput(f"symbols: {', '.join(unknown)} is not an enabled symbol listing {tf}",
                               field="symbols")
    name = registered_name("pump_xgb", lineage=config.lineage)
    target = cfg.target(tf)
    client = mlflow.client()
    check_lineage(client, name, target)
    with market_db.open() as store:
        symbols = config.symbols or [s.symbol for s in store.list_symbols(enabled_only=True)
                                     if s.category == "crypto" and tf in s.timeframes]
        frame = training_frame(store, symbols, tf)
    if frame is None:
        raise Failure(description=f"no stored features for {symbols or 'any symbol'} at {tf}; "
                                  "materialize `features` first")
    device = resolve_device(model_server.device)
    champion = classifier_champion(
        client, model_server, name, cfg,
        features=lambda loaded, tags, task: align_columns(loaded, task.columns, task.X),
        refit=lambda c, task: pump.fit(task, c, device), log=context.log)
    try:
        t = pump.train_and_gate(frame, cfg, device=device, policy=policy, champion=champion, what=name)
    except EvaluationError as e:
        raise evaluation_failure(e) from None
    context.log.info("gate: %s (%s)", t.decision.alias, t.decision.reason)
    X_ho, y_ho = t.task.X[t.task.holdout], t.task.y[t.task.holdout]
    tags = {**run_tags(context, "pump_xgb", tf, None), "tp.threshold": str(cfg.alert_threshold)}
    info = log_and_register(
        mlflow_resource=mlflow, market_db=market_db, required=REQUIRED_METRICS,
        experiment="pump_xgb", run_name=f"{name} {tf}", tags=tags,
        version_tags=version_tags(cfg, t.task.window(), t.task.block_len), flavor="xgboost", model=t.model.booster,
        registered_name=name, target=target,
        params={**cfg.to_dict(), "timeframe": tf, "symbols": ",".join(symbols), "features": len(t.task.columns),
                "fit_rows": len(t.task.fit), "calibration_rows": len(t.task.cal)},
        metrics=t.metrics, example=pd.DataFrame(X_ho[:5], columns=t.task.columns),
        predict_example=t.model.predict(X_ho[:5]),
        plot=lambda path: pump.calibration_plot(y_ho, t.model.predict(X_ho), path), decision=t.decision,
        model_metadata={"tp_calibration": t.model.calibration()})
    return result(info, t.metrics, list(REQUIRED_METRICS),
                  {"train_rows": len(t.task.train), "holdout_rows": len(t.task.holdout), "symbols": ", ".join(symbols),
                   "target": target})

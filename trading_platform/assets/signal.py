"""``models/signal_lgbm`` (partition: symbol): LightGBM score of the forward return's
sign over ``horizon`` bars. Registered as ``signal_lgbm.<symbol>``.

Its inputs include the regime probabilities only of a regime *champion* of the same
symbol and timeframe whose training data ends before the signal's holdout (the two
share one holdout boundary); without one it trains on the features alone and says
so. The version records the regime version it was trained with; the gate and
serving feed it exactly that version's probabilities, also after the regime
champion moves.
"""

from typing import Optional

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, asset

from ..resources import MarketDB, MLflowResource, ModelServer
from .features import FEATURES_KEY
from .partitions import symbol_partitions
from .regime import REGIME_KEY
from .training import GROUP, checks

SIGNAL_KEY = AssetKey(["models", "signal_lgbm"])


# the blocking check: a version whose metrics are missing or not finite moves no alias
REQUIRED_METRICS = ("roc_auc", "log_loss", "baseline_log_loss", "accuracy", "baseline_accuracy")

class SignalTrainConfig(Config):
    timeframe: Optional[str] = None
    horizon: int = 12
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    lambda_l2: float = 10.0
    early_stopping_rounds: int = 30
    holdout_frac: float = 0.2
    calibration_frac: float = 0.25
    min_episodes: int = 10
    use_regime: bool = True
    lineage: Optional[str] = None
    min_improvement_auc: float = 0.01
    min_improvement_log_loss: float = 0.0
    min_improvement_vs_champion: float = 0.005
    n_boot: int = 1000


def regime_source(client, server, symbol: str, tf: str, holdout_start_us: int):
    """((name, version, loaded model, its holdout start) | None, why) of the regime inputs a new signal
    version may use: a regime champion of the symbol and timeframe whose training data ends before the
    signal's holdout. The signal then takes the regime version's holdout boundary as its own."""
    from ..models.gate import iso
    from ..models.registry import champion_version, registered_name
    from .training import data_end_us, iso_us

    name = registered_name("regime_hmm", symbol)
    mv = champion_version(client, name)
    if mv is None:
        return None, f"no regime champion for {symbol}: trained without regime inputs"
    tags = mv.tags or {}
    if tags.get("tp.timeframe") != tf:
        return None, (f"the regime champion {name} v{mv.version} is on {tags.get('tp.timeframe')}, not {tf}: "
                      "trained without regime inputs")
    end = data_end_us(tags)
    if end is None or end >= holdout_start_us:
        return None, (f"the regime champion {name} v{mv.version} trained on data up to "
                      f"{iso(end) or '(not recorded)'}, not before this holdout ({iso(holdout_start_us)}): trained "
                      "without regime inputs")
    from ..resources.serving import ModelLoadError

    try:
        loaded = server.load(name, version=str(mv.version))
    except ModelLoadError as e:
        return None, f"the regime champion {name} v{mv.version} cannot be loaded ({e}): trained without regime inputs"
    hs = tags.get("tp.holdout_start")
    return (name, str(mv.version), loaded, iso_us(hs)), \
        f"regime inputs from {name} version {mv.version} (holdout from {hs or iso(holdout_start_us)})"


@asset(key=SIGNAL_KEY, deps=[FEATURES_KEY, REGIME_KEY], partitions_def=symbol_partitions,
       check_specs=checks(SIGNAL_KEY), kinds={"lightgbm", "mlflow"}, group_name=GROUP,
       description="LightGBM score of the forward return's sign over `horizon` bars, from features plus (when the "
                   "symbol has one) the regime champion's filtered probabilities. Gated against the base rate, the "
                   "best untrained rule and the champion. Registered as signal_lgbm.<symbol>.")
def signal_lgbm(context: AssetExecutionContext, config: SignalTrainConfig, market_db: MarketDB,
               mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    from ..models import classifier as clf
    from ..models import signal
    from .training import gate_policy, per_symbol, pure_config

    # the configuration and the gate's policy are checked once, before any symbol is read or trained
    cfg = pure_config(signal.SignalConfig, config)
    policy = gate_policy(clf.default_policy, config, {"vs_base_rate": "min_improvement_log_loss",
                                                      "vs_best_rule": "min_improvement_auc",
                                                      "vs_champion": "min_improvement_vs_champion"})
    return per_symbol(context, lambda symbol: _train_signal(context, symbol, config, market_db, mlflow, model_server,
                                                            cfg, policy))


def _train_signal(context: AssetExecutionContext, symbol: str, config: SignalTrainConfig, market_db: MarketDB,
                  mlflow: MLflowResource, model_server: ModelServer, cfg, policy) -> MaterializeResult:
    import pandas as pd

    from ..models import signal
    from ..models.common import EvaluationError, holdout_start
    from ..models.predict import regime_input
    from ..models.regime import frame_probs
    from ..models.registry import registered_name
    from ..models.tracking import log_and_register
    from .training import (align_columns, check_lineage, classifier_champion, evaluation_failure, result, run_tags,
                           symbol_frame, version_tags)

    tf, frame = symbol_frame(market_db, symbol, config.timeframe)
    frame = frame.sort("ts")
    name = registered_name("signal_lgbm", symbol, config.lineage)
    target = cfg.target(tf)
    client = mlflow.client()
    check_lineage(client, name, target)
    hs = holdout_start(frame["ts"].dt.epoch("us").to_numpy(), cfg.holdout_frac)
    src, regime_note = (regime_source(client, model_server, symbol, tf, hs) if config.use_regime
                        else (None, "use_regime is off: trained without regime inputs"))
    context.log.info(regime_note)
    probs = frame_probs(src[2], frame) if src else None
    if src and src[3] is not None:
        hs = src[3]  # one boundary with the regime version whose probabilities are inputs

    def champion_features(loaded, tags, task):
        own = regime_input(model_server, tags)  # the champion's own regime version, never the current one
        own_probs = frame_probs(model_server.load(own[0], version=own[1]), frame) if own else None
        ctask = signal.build_task(frame, cfg, own_probs, hs)
        return align_columns(loaded, ctask.columns, ctask.X)

    champion = classifier_champion(client, model_server, name, cfg, features=champion_features,
                                   refit=lambda c, task: signal.fit(task, c), log=context.log)
    try:
        t = signal.train_and_gate(frame, cfg, regime_probs=probs, holdout_start_us=hs, policy=policy,
                                  champion=champion, what=name)
    except EvaluationError as e:
        raise evaluation_failure(e) from None
    context.log.info("gate: %s (%s)", t.decision.alias, t.decision.reason)
    X_ho = t.task.X[t.task.holdout]
    regime_tags = {"tp.regime_model": src[0] if src else "", "tp.regime_model_version": src[1] if src else "",
                   "tp.regime_inputs": regime_note}
    info = log_and_register(
        mlflow_resource=mlflow, market_db=market_db, required=REQUIRED_METRICS,
        experiment="signal_lgbm", run_name=f"{name} {tf}",
        tags=run_tags(context, "signal_lgbm", tf, symbol),
        version_tags=version_tags(cfg, t.task.window(), t.task.block_len, regime_tags),
        flavor="lightgbm", model=t.model.booster, registered_name=name, target=target,
        params={**cfg.to_dict(), "symbol": symbol, "timeframe": tf, "fit_rows": len(t.task.fit),
                "calibration_rows": len(t.task.cal), "regime_model": src[0] if src else "",
                "regime_model_version": src[1] if src else ""},
        metrics=t.metrics, example=pd.DataFrame(X_ho[:5], columns=t.task.columns),
        predict_example=t.model.predict(X_ho[:5]),
        plot=lambda path: signal.importance_plot(t.model.booster, t.task.columns, path,
                                                 f"{symbol} {tf}: signal score, feature importance (gain)"),
        decision=t.decision, model_metadata={"tp_calibration": t.model.calibration()})
    return result(info, t.metrics, list(REQUIRED_METRICS),
                  {"regime_inputs": regime_note, "target": target})

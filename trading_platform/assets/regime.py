"""``models/regime_hmm`` (partition: symbol): a 4-state Gaussian HMM on returns and
volatility, states named by their statistics. Registered as ``regime_hmm.<symbol>``,
logged as a ``python_function`` model."""

from typing import Optional

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from ..resources import MarketDB, MLflowResource, ModelServer
from .features import FEATURES_KEY
from .partitions import symbol_partitions
from .training import GROUP, checks

REGIME_KEY = AssetKey(["models", "regime_hmm"])


# the blocking check: a version whose metrics are missing or not finite moves no alias
REQUIRED_METRICS = ("holdout_return_loglik_per_row", "baseline_return_loglik_per_row")

class RegimeTrainConfig(Config):
    timeframe: Optional[str] = None   # default: 1h if the symbol lists it, else its base timeframe
    n_iter: int = 50
    holdout_frac: float = 0.2
    lineage: Optional[str] = None
    min_improvement_vs_var1: float = 0.0       # log-likelihood per row (nats) over the VAR(1)
    min_improvement_vs_champion: float = 0.005
    n_boot: int = 1000


@asset(key=REGIME_KEY, deps=[FEATURES_KEY], partitions_def=symbol_partitions, check_specs=checks(REGIME_KEY),
       kinds={"hmmlearn", "mlflow"}, group_name=GROUP,
       description="4-state Gaussian HMM on returns and volatility, states named by their statistics "
                   "(bull, bear, sideways, high_volatility); gated on held-out log-likelihood against a Gaussian "
                   "VAR(1) on the density of the next return. Registered as regime_hmm.<symbol>.")
def regime_hmm(context: AssetExecutionContext, config: RegimeTrainConfig, market_db: MarketDB,
               mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    from ..models import regime
    from .training import gate_policy, per_symbol, pure_config

    # the configuration and the gate's policy are checked once, before any symbol is read or trained
    cfg = pure_config(regime.RegimeConfig, config)
    policy = gate_policy(regime.gate_policy, config, {"vs_var1": "min_improvement_vs_var1",
                                                      "vs_champion": "min_improvement_vs_champion"})
    return per_symbol(context, lambda symbol: _train_regime(context, symbol, config, market_db, mlflow, model_server,
                                                            cfg, policy))


def _train_regime(context: AssetExecutionContext, symbol: str, config: RegimeTrainConfig, market_db: MarketDB,
                  mlflow: MLflowResource, model_server: ModelServer, cfg, policy) -> MaterializeResult:
    import pandas as pd

    from ..models import regime
    from ..models.common import EvaluationError
    from ..models.registry import registered_name
    from ..models.tracking import log_and_register
    from .training import (check_lineage, config_of, current_champion, data_end_us, evaluation_failure,
                           recorded_config, result, run_tags, symbol_frame, version_tags)

    tf, frame = symbol_frame(market_db, symbol, config.timeframe)
    name = registered_name("regime_hmm", symbol, config.lineage)
    target = cfg.target(tf)
    client = mlflow.client()
    check_lineage(client, name, target)
    champion = None
    found = current_champion(client, model_server, name, context.log)
    if found is not None:
        tags, loaded = found
        champion = regime.RegimeChampion(version=loaded.version, data_end_us=data_end_us(tags), model=loaded.model,
                                         config=config_of(regime.RegimeConfig, recorded_config(tags)))
    try:
        t = regime.train_and_gate(frame, cfg, policy=policy, champion=champion, what=name)
    except EvaluationError as e:
        raise evaluation_failure(e) from None
    context.log.info("gate: %s (%s)", t.decision.alias, t.decision.reason)
    model = t.model
    labels = model.regimes(t.X)
    share = {r: t.metrics[f"share_{r}"] for r in regime.REGIMES}
    close = frame.drop_nulls(list(regime.INPUTS)).sort("ts")["close"].to_numpy()
    example = pd.DataFrame(t.X[:5], columns=list(regime.INPUTS))
    info = log_and_register(
        mlflow_resource=mlflow, market_db=market_db, required=REQUIRED_METRICS,
        experiment="regime_hmm", run_name=f"{name} {tf}",
        tags=run_tags(context, "regime_hmm", tf, symbol), version_tags=version_tags(cfg, t.window(), regime.BLOCK_LEN),
        flavor="regime", model=model, registered_name=name, target=target,
        params={"symbol": symbol, "timeframe": tf, "n_states": cfg.n_states, "n_iter": cfg.n_iter,
                "inputs": ",".join(regime.INPUTS), "train_rows": len(t.train), "holdout_frac": cfg.holdout_frac},
        metrics=t.metrics, example=example,
        predict_example=pd.DataFrame(model.filtered_proba(t.X[:5]), columns=list(regime.REGIMES)),
        plot=lambda path: regime.regime_plot(t.ts_us, close, labels, path, f"{symbol} {tf}: regimes (filtered)"),
        decision=t.decision,
        artifacts={"transition_matrix": model.transitions(), "regime_stats": model.state_stats(),
                   "regime_share": share},
    )
    return result(info, t.metrics, list(REQUIRED_METRICS), {
        "transition_matrix": MetadataValue.json(model.transitions()),
        "regime_stats": MetadataValue.json(model.state_stats()), "regime_share": MetadataValue.json(share),
        "target": target})

"""Model training assets (one MLflow run each, registered and gated) and predictions.

- ``pump_xgb``: trained across symbols (pumps are rare; pooling gives the model
  enough of them), on one timeframe (default 5m). Registered as ``pump_xgb``.
- ``regime_hmm`` and ``signal_lgbm``: per symbol (partitioned by ``symbol``): each
  market has its own regimes. Registered as ``regime_hmm.<symbol>`` and
  ``signal_lgbm.<symbol>``.
- ``predictions``: every champion over the latest features, into ``predictions``.
"""

import math
from typing import List, Optional

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..resources import MarketDB, MLflowResource, ModelServer
from .features import FEATURES_KEY
from .partitions import symbol_partitions

GROUP = "models"


def _checks(key: AssetKey) -> list[AssetCheckSpec]:
    return [AssetCheckSpec("metrics_finite", asset=key, blocking=True,
                           description="the holdout metrics and the baseline are present and finite"),
            AssetCheckSpec("champion_exists", asset=key,
                           description="the registered model has a champion version")]


def _check_results(metrics: dict, required: list[str], has_champion: bool) -> list[AssetCheckResult]:
    bad = [k for k in required if not (isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]))]
    return [
        AssetCheckResult(check_name="metrics_finite", passed=not bad, severity=AssetCheckSeverity.ERROR,
                         metadata={"missing_or_not_finite": MetadataValue.json(bad)}),
        AssetCheckResult(check_name="champion_exists", passed=has_champion, severity=AssetCheckSeverity.WARN),
    ]


def _run_tags(context: AssetExecutionContext, family: str, timeframe: str, symbol: str | None) -> dict:
    tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition_key": context.partition_key if context.has_partition_key else "",
            "tp.family": family, "tp.timeframe": timeframe}
    if symbol:
        tags["tp.symbol"] = symbol
    return tags


def _training_frame(store, symbols: list[str], timeframe: str):
    import polars as pl

    from ..features.storage import read_features

    frames = [read_features(store.conn, s, timeframe) for s in symbols]
    frames = [f.drop([c for c in f.columns if c.startswith("state_") or c == "computed_at"])
              for f in frames if len(f)]
    if not frames:
        return None
    return pl.concat(frames, how="diagonal_relaxed").sort("symbol", "ts")


def _result(info: dict, metrics: dict, required: list[str], extra: dict | None = None) -> MaterializeResult:
    d = info["decision"]
    md = {"mlflow_run_id": info["run_id"], "registered_model": info["name"], "registered_version": info["version"],
          "gate_decision": d.alias, "gate_reason": d.reason, "gate_metric": f"{d.metric} ({d.direction} is better)",
          "new_score": d.new_score, "baseline_score": d.baseline_score,
          "champion_score": d.champion_score if d.champion_score is not None else float("nan"),
          "metrics": MetadataValue.json({k: v for k, v in metrics.items() if isinstance(v, (int, float))}),
          **(extra or {})}
    has_champion = d.alias == "champion" or d.champion_score is not None
    return MaterializeResult(metadata=md, check_results=_check_results(metrics, required, has_champion))


# ---- XGBoost pump classifier ---------------------------------------------------
class PumpTrainConfig(Config):
    timeframe: str = "5m"
    symbols: List[str] = []          # empty: every enabled crypto symbol listing the timeframe
    horizon: int = 12
    rise: float = 0.05
    alert_threshold: float = 0.5
    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    holdout_frac: float = 0.2


PUMP_KEY = AssetKey(["models", "pump_xgb"])


@asset(key=PUMP_KEY, deps=[FEATURES_KEY], check_specs=_checks(PUMP_KEY), kinds={"xgboost", "mlflow"},
       group_name=GROUP, pool="gpu",
       description="XGBoost pump classifier: does the close rise `rise` within `horizon` bars? One MLflow run; "
                   "registered as pump_xgb; champion only if it wins on the same new holdout.")
def pump_xgb(context: AssetExecutionContext, config: PumpTrainConfig, market_db: MarketDB,
             mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    import numpy as np
    import pandas as pd

    from ..core.timeframes import TIMEFRAMES, parse_timeframe
    from ..models import pump
    from ..models.common import binary_metrics
    from ..models.tracking import log_train_and_gate
    from ..resources.serving import resolve_device

    tf = parse_timeframe(config.timeframe)
    cfg = pump.PumpConfig(horizon=config.horizon, rise=config.rise, alert_threshold=config.alert_threshold,
                          n_estimators=config.n_estimators, max_depth=config.max_depth,
                          learning_rate=config.learning_rate, holdout_frac=config.holdout_frac)
    with market_db.open() as store:
        symbols = config.symbols or [s.symbol for s in store.list_symbols(enabled_only=True)
                                     if s.category == "crypto" and tf in s.timeframes]
        frame = _training_frame(store, symbols, tf)
    if frame is None:
        raise Failure(description=f"no stored features for {symbols or 'any symbol'} at {tf}; "
                                  "materialize `features` first")
    ds = pump.build_dataset(frame, cfg, TIMEFRAMES[tf])
    if len(ds.train) == 0 or len(np.unique(ds.y[ds.train])) < 2:
        raise Failure(description=f"the training window has no pump (rise {cfg.rise:.0%} in {cfg.horizon} bars) "
                                  f"among {len(ds.train)} rows; widen the data or lower `rise`")
    booster = pump.train(ds, cfg, device=resolve_device(model_server.device))
    metrics, baseline = pump.evaluate(booster, ds, cfg)
    X_ho, y_ho = ds.X[ds.holdout], ds.y[ds.holdout]
    tags = {**_run_tags(context, "pump_xgb", tf, None), "tp.threshold": str(cfg.alert_threshold)}
    example = pd.DataFrame(X_ho[:5], columns=ds.columns)
    info = log_train_and_gate(
        mlflow_resource=mlflow, server=model_server, experiment="pump_xgb", run_name=f"pump_xgb {tf}", tags=tags,
        flavor="xgboost", model=booster, registered_name="pump_xgb",
        params={**cfg.__dict__, "timeframe": tf, "symbols": ",".join(symbols), "features": len(ds.columns),
                "train_rows": len(ds.train)},
        metrics=metrics, example=example, predict_example=pump.predict(booster, X_ho[:5]),
        plot=lambda path: pump.calibration_plot(y_ho, pump.predict(booster, X_ho), path),
        metric=pump.METRIC, direction=pump.DIRECTION, new_score=metrics[pump.METRIC], baseline_score=baseline,
        score_champion=lambda m: binary_metrics(y_ho, m.predict(_align(m, ds.columns, X_ho)),
                                                cfg.alert_threshold)[pump.METRIC],
    )
    return _result(info, metrics, ["roc_auc", "pr_auc", "baseline_roc_auc", "baseline_pr_auc"],
                   {"train_rows": len(ds.train), "holdout_rows": len(ds.holdout), "symbols": ", ".join(symbols)})


def _align(model, columns: list[str], X):
    """X's columns in the order the model was trained on (a champion may predate a feature)."""
    import numpy as np

    names = model.feature_names or columns
    idx = [columns.index(c) if c in columns else None for c in names]
    out = np.full((len(X), len(names)), np.nan, dtype=np.float32)
    for j, i in enumerate(idx):
        if i is not None:
            out[:, j] = X[:, i]
    return out


# ---- HMM regimes and LightGBM signal (per symbol) --------------------------------
class RegimeTrainConfig(Config):
    timeframe: Optional[str] = None   # default: 1h if the symbol lists it, else its base timeframe
    n_iter: int = 50
    holdout_frac: float = 0.2


class SignalTrainConfig(Config):
    timeframe: Optional[str] = None
    horizon: int = 12
    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    holdout_frac: float = 0.2


REGIME_KEY = AssetKey(["models", "regime_hmm"])
SIGNAL_KEY = AssetKey(["models", "signal_lgbm"])


def _symbol_frame(market_db: MarketDB, symbol: str, wanted: Optional[str]):
    """(timeframe, stored features) of one symbol: `wanted`, else 1h if listed, else its base timeframe."""
    from ..core.timeframes import parse_timeframe

    with market_db.open() as store:
        info = store.require_symbol(symbol)
        tf = parse_timeframe(wanted) if wanted else ("1h" if "1h" in info.timeframes else info.base_timeframe)
        frame = _training_frame(store, [symbol], tf)
    if frame is None:
        raise Failure(description=f"no stored features for {symbol} {tf}; materialize `features` first")
    return tf, frame


@asset(key=REGIME_KEY, deps=[FEATURES_KEY], partitions_def=symbol_partitions, check_specs=_checks(REGIME_KEY),
       kinds={"hmmlearn", "mlflow"}, group_name=GROUP,
       description="4-state Gaussian HMM on returns and volatility, states named by their statistics "
                   "(bull, bear, sideways, high_volatility). Registered as regime_hmm.<symbol>.")
def regime_hmm(context: AssetExecutionContext, config: RegimeTrainConfig, market_db: MarketDB,
               mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    import numpy as np
    import pandas as pd

    from ..models import regime
    from ..models.registry import registered_name
    from ..models.tracking import log_train_and_gate

    symbol = context.partition_key
    tf, frame = _symbol_frame(market_db, symbol, config.timeframe)
    X, ts = regime.inputs(frame)
    cut = int(len(X) * (1 - config.holdout_frac))
    if cut < 200:
        raise Failure(description=f"{symbol} {tf}: {len(X)} rows with returns and volatility; need at least 250")
    cfg = regime.RegimeConfig(n_iter=config.n_iter, holdout_frac=config.holdout_frac)
    model = regime.fit(X[:cut], cfg)
    new_score = model.score_per_row(X[cut:])
    baseline = regime.baseline_score(X[:cut], X[cut:])
    labels = model.regimes(X)
    share = {r: float(np.mean(labels == r)) for r in regime.REGIMES}
    metrics = {"holdout_loglik_per_row": new_score, "baseline_loglik_per_row": baseline,
               **{f"share_{r}": v for r, v in share.items()}}
    name = registered_name("regime_hmm", symbol)
    tags = _run_tags(context, "regime_hmm", tf, symbol)
    close = frame.drop_nulls(list(regime.INPUTS)).sort("ts")["close"].to_numpy()
    example = pd.DataFrame(X[:5], columns=list(regime.INPUTS))
    info = log_train_and_gate(
        mlflow_resource=mlflow, server=model_server, experiment="regime_hmm", run_name=f"regime_hmm {symbol} {tf}",
        tags=tags, flavor="sklearn", model=model, registered_name=name,
        params={"symbol": symbol, "timeframe": tf, "n_states": cfg.n_states, "n_iter": cfg.n_iter,
                "inputs": ",".join(regime.INPUTS), "train_rows": cut},
        metrics=metrics, example=example, predict_example=model.filtered_proba(X[:5]),
        plot=lambda path: regime.regime_plot(ts, close, labels, path, f"{symbol} {tf}: regimes (filtered)"),
        metric="holdout_loglik_per_row", direction="higher", new_score=new_score, baseline_score=baseline,
        score_champion=lambda m: m.model.score_per_row(X[cut:]),
        artifacts={"transition_matrix": model.transitions(), "regime_stats": model.state_stats(),
                   "regime_share": share},
    )
    return _result(info, metrics, ["holdout_loglik_per_row", "baseline_loglik_per_row"], {
        "transition_matrix": MetadataValue.json(model.transitions()),
        "regime_stats": MetadataValue.json(model.state_stats()), "regime_share": MetadataValue.json(share)})


@asset(key=SIGNAL_KEY, deps=[FEATURES_KEY, REGIME_KEY], partitions_def=symbol_partitions,
       check_specs=_checks(SIGNAL_KEY), kinds={"lightgbm", "mlflow"}, group_name=GROUP,
       description="LightGBM score of the forward return's sign over `horizon` bars, from features plus the "
                   "regime champion's filtered probabilities. Registered as signal_lgbm.<symbol>.")
def signal_lgbm(context: AssetExecutionContext, config: SignalTrainConfig, market_db: MarketDB,
                mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    import lightgbm as lgb
    import numpy as np
    import pandas as pd

    from ..core.timeframes import TIMEFRAMES
    from ..models import regime
    from ..models.common import binary_metrics, forward_return_sign, model_columns, walk_forward_split
    from ..models.registry import registered_name
    from ..models.tracking import log_train_and_gate
    from ..resources.serving import ModelLoadError

    symbol = context.partition_key
    tf, frame = _symbol_frame(market_db, symbol, config.timeframe)
    try:
        hmm = model_server.load(registered_name("regime_hmm", symbol))
    except ModelLoadError as e:
        raise Failure(description=f"{e}; materialize models/regime_hmm for {symbol} first") from None
    frame = frame.drop_nulls(list(regime.INPUTS)).sort("ts")
    probs = hmm.predict(frame.select(regime.INPUTS).to_numpy())
    cols = model_columns(frame.columns)
    X = np.column_stack([frame.select(cols).to_numpy(), probs]).astype(np.float32)
    names = cols + [f"p_{r}" for r in regime.REGIMES]
    y = forward_return_sign(frame["close"].to_numpy(), config.horizon)
    ts = frame["ts"].dt.epoch("us").to_numpy()
    keep = ~np.isnan(y)
    X, y, ts = X[keep], y[keep].astype(int), ts[keep]
    split = walk_forward_split(ts, ts + config.horizon * TIMEFRAMES[tf] * 1_000_000, config.holdout_frac)
    if len(split.train) < 100 or len(np.unique(y[split.train])) < 2:
        raise Failure(description=f"{symbol} {tf}: too few labelled rows to train ({len(split.train)})")
    booster = lgb.train({"objective": "binary", "learning_rate": config.learning_rate, "num_leaves": config.num_leaves,
                         "verbose": -1, "seed": 7, "num_threads": 2},
                        lgb.Dataset(X[split.train], label=y[split.train], feature_name=names),
                        num_boost_round=config.n_estimators)
    X_ho, y_ho = X[split.holdout], y[split.holdout]
    metrics = binary_metrics(y_ho, booster.predict(X_ho), 0.5)
    metrics["baseline_roc_auc"] = 0.5
    metrics["baseline_accuracy"] = float(max(np.mean(y_ho), 1 - np.mean(y_ho)))
    metrics["accuracy"] = float(np.mean((booster.predict(X_ho) >= 0.5) == y_ho))
    name = registered_name("signal_lgbm", symbol)
    tags = {**_run_tags(context, "signal_lgbm", tf, symbol), "tp.regime_model_version": hmm.version}

    def plot(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        imp = booster.feature_importance("gain")
        order = np.argsort(imp)[-20:]
        fig, ax = plt.subplots(figsize=(7, 6))
        ax.barh([names[i] for i in order], imp[order])
        ax.set_title(f"{symbol} {tf}: signal score, feature importance (gain)")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    info = log_train_and_gate(
        mlflow_resource=mlflow, server=model_server, experiment="signal_lgbm", run_name=f"signal_lgbm {symbol} {tf}",
        tags=tags, flavor="lightgbm", model=booster, registered_name=name,
        params={"symbol": symbol, "timeframe": tf, "horizon": config.horizon, "n_estimators": config.n_estimators,
                "learning_rate": config.learning_rate, "num_leaves": config.num_leaves, "train_rows": len(split.train),
                "regime_model_version": hmm.version},
        metrics=metrics, example=pd.DataFrame(X_ho[:5], columns=names), predict_example=booster.predict(X_ho[:5]),
        plot=plot, metric="roc_auc", direction="higher", new_score=metrics["roc_auc"], baseline_score=0.5,
        score_champion=lambda m: binary_metrics(y_ho, m.predict(_align(m, names, X_ho)), 0.5)["roc_auc"],
    )
    return _result(info, metrics, ["roc_auc", "baseline_roc_auc", "accuracy", "baseline_accuracy"])


# ---- predictions ---------------------------------------------------------------
class PredictionsConfig(Config):
    last_n: int = 288       # newest feature rows per symbol to score
    context_rows: int = 2000  # rows before them that the regime filter runs over


PREDICTIONS_KEY = AssetKey(["predictions"])


@asset(key=PREDICTIONS_KEY, deps=[PUMP_KEY, REGIME_KEY, SIGNAL_KEY], kinds={"postgres"}, group_name="predictions",
       description="Every champion over the latest features, into the predictions table "
                   "(keyed by model, version, symbol, timeframe, ts: re-runs never duplicate).")
def predictions(context: AssetExecutionContext, config: PredictionsConfig, market_db: MarketDB,
                mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    from ..models.predict import score_champions

    with market_db.open() as store:
        written = score_champions(store, mlflow.client(), model_server, config.last_n, config.context_rows,
                                  log=context.log)
    return MaterializeResult(metadata={"rows": sum(written.values()), "by_model": MetadataValue.json(written)})


model_assets = [pump_xgb, regime_hmm, signal_lgbm, predictions]

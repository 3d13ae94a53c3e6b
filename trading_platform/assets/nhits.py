"""``models/nhits_<tf>``: the NHITS multi-horizon price forecaster (neuralforecast), one asset
per configured timeframe (``TP_NHITS_TIMEFRAMES``, default ``1h``). One global model per
timeframe across the enabled symbols that list it (registered ``nhits.<tf>``), or one per
symbol (``scope: per_symbol``, registered ``nhits.<tf>.<symbol>``). Evaluated by rolling-origin
cross-validation from one cutoff common to every series (a series left out of the evaluation is
named in the run's tags, the notes and the metadata) against the naive and seasonal-naive
forecasts; gated by the shared gate on relative MAE against the better naive forecast (lower is
better)."""

import os
from typing import List, Optional

from dagster import AssetExecutionContext, AssetKey, Config, Failure, MaterializeResult, MetadataValue, asset

from ..core.timeframes import parse_timeframe
from ..resources import MarketDB, MLflowResource, ModelServer
from .features import FEATURES_KEY
from .training import GROUP, checks


# the blocking check: a version whose metrics are missing or not finite moves no alias
REQUIRED_METRICS = ("mae", "rel_mae_vs_naive", "rel_mae_vs_seasonal_naive", "coverage_80")

def nhits_timeframes() -> list[str]:
    """``TP_NHITS_TIMEFRAMES`` (comma-separated, default ``1h``); a bad one fails at load, naming it."""
    raw = os.environ.get("TP_NHITS_TIMEFRAMES", "1h")
    tfs = [parse_timeframe(t.strip(), field="TP_NHITS_TIMEFRAMES") for t in raw.split(",") if t.strip()]
    return list(dict.fromkeys(tfs))


class NHITSTrainConfig(Config):
    symbols: List[str] = []            # empty: every enabled symbol listing the timeframe
    scope: str = "global"              # global (one model across symbols) | per_symbol
    horizon: int = 24
    input_size: int = 48
    max_steps: int = 300
    learning_rate: float = 1e-4
    target: str = "level"              # level | log | log_return
    scaler_type: str = "identity"
    hist_exog: List[str] = []          # feature columns known at the origin (historic exogenous only)
    mlp_width: int = 256
    warm_start: bool = False           # continue from the champion's weights (only when it trained before the holdout)
    holdout_frac: float = 0.2
    min_origins: int = 50
    lineage: Optional[str] = None
    min_improvement_vs_naive: float = 0.0      # relative MAE (1 - rel MAE) over the better naive forecast
    min_improvement_vs_champion: float = 0.005
    n_boot: int = 1000


def _nhits_asset(tf: str):
    key = AssetKey(["models", f"nhits_{tf}"])

    @asset(key=key, deps=[FEATURES_KEY], check_specs=checks(key), kinds={"pytorch", "mlflow"}, group_name=GROUP,
           pool="gpu",
           description=f"NHITS quantile forecasts of the close over the next `horizon` {tf} bars (neuralforecast), "
                       f"one global model across symbols (nhits.{tf}) or one per symbol; gated on MAE relative to the "
                       "better naive forecast, which real prices rarely lose to.")
    def _asset(context: AssetExecutionContext, config: NHITSTrainConfig, market_db: MarketDB,
               mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
        from ..models.common import EvaluationError
        from ..models.forecast import baselines, nhits
        from ..models.registry import registered_name
        from .training import gate_policy, models_summary, training_frame

        # the configuration and the gate's policy are checked before anything is read or trained
        fields = {f for f in nhits.NHITSConfig.__dataclass_fields__ if hasattr(config, f)}
        cfg = nhits.NHITSConfig.from_dict({f: getattr(config, f) for f in fields} | {
            "hist_exog": tuple(config.hist_exog), "device": model_server.device})
        policy = gate_policy(baselines.gate_policy, config, {"vs_best_naive": "min_improvement_vs_naive",
                                                             "vs_champion": "min_improvement_vs_champion"})
        with market_db.open() as store:
            infos = {s.symbol: s for s in store.list_symbols(enabled_only=True) if tf in s.timeframes}
            symbols = config.symbols or sorted(infos)
            missing = [s for s in symbols if s not in infos]
            if missing:
                raise Failure(description=f"{', '.join(missing)}: not an enabled symbol listing {tf}")
            frame = training_frame(store, symbols, tf)
        if frame is None:
            raise Failure(description=f"no stored features for {symbols or 'any symbol'} at {tf}; "
                                      "materialize `features` first")
        groups = ({None: frame} if cfg.scope == "global"
                  else {s: frame.filter(frame["symbol"] == s) for s in symbols})
        client = mlflow.client()
        results, failures = {}, {}
        for symbol, data in groups.items():
            name = registered_name(f"nhits.{tf}", symbol, config.lineage)
            try:
                results[name] = _train_one(context, cfg, policy, tf, name, symbol, data, infos, client, mlflow,
                                           market_db, model_server)
            except EvaluationError as e:
                failures[name] = f"{e} (nothing was registered)"
        if failures and not results:
            raise Failure(description="; ".join(failures.values()))
        if failures:  # the others are registered; the run still fails, naming what could not be evaluated
            context.log.error("; ".join(failures.values()))
        first = next(iter(results.values()))
        if len(results) == 1 and not failures:
            return first
        md = {"models": models_summary(results),
              "not_evaluated": MetadataValue.json(failures)}
        if failures:
            raise Failure(description="; ".join(failures.values()), metadata=md)
        return MaterializeResult(metadata=md, check_results=first.check_results)

    return _asset


def _train_one(context, cfg, policy, tf: str, name: str, symbol, data, infos, client, mlflow, market_db,
               model_server):
    import polars as pl

    from ..models.forecast import nhits
    from ..models.forecast.nhits import rows_frame
    from ..models.forecast.plot import forecast_plot
    from ..models.tracking import log_and_register
    from .training import (check_lineage, current_champion, data_end_us, recorded_config, result, run_tags,
                           version_tags)

    target = cfg.target_definition(tf)
    check_lineage(client, name, target)
    champion = None
    found = current_champion(client, model_server, name, context.log)
    if found is not None:
        tags, loaded = found
        champion = nhits.NHITSChampion(version=loaded.version, data_end_us=data_end_us(tags), model=loaded.model,
                                       config=recorded_config(tags))
    t = nhits.train_and_gate(data, cfg, timeframe=tf, markets={s: infos[s] for s in data["symbol"].unique()},
                             champion=champion, policy=policy,
                             progress=lambda p: context.log.info("%s: %s", name, nhits.progress_text(p)))
    ev = t.evaluation
    for note in ev.notes:
        context.log.info("%s: %s", name, note)
    context.log.info("%s gate: %s (%s)", name, t.decision.alias, t.decision.reason)
    example = data.sort("symbol", "ts").group_by("symbol", maintain_order=True).tail(t.forecaster.rows_needed)
    # MLflow's schema check takes no time zones: the example's times are UTC, written without one
    example = example.select(["symbol", pl.col("ts").dt.replace_time_zone(None), "close", *cfg.hist_exog]).to_pandas()
    predicted = rows_frame(t.forecaster.forecast(example).rows, cfg.quantiles)
    info = log_and_register(
        mlflow_resource=mlflow, market_db=market_db, required=REQUIRED_METRICS,
        experiment="nhits", run_name=f"{name}", tags={**run_tags(context, "nhits", tf, symbol),
                                                      "tp.horizon": str(cfg.horizon), **ev.cutoff_tags()},
        version_tags=version_tags(cfg, ev.window_tags(), ev.block_len, {"tp.horizon": str(cfg.horizon)}),
        flavor="nhits", model=t.forecaster, registered_name=name, target=target,
        params={**{k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in cfg.to_dict().items()},
                "timeframe": tf, "symbols": ",".join(sorted(data["symbol"].unique()))},
        metrics=t.metrics, example=example, predict_example=predicted,
        plot=lambda path: forecast_plot(ev.windows, ev.series, path, f"{name}: median and 10-90 % band on the "
                                                                     "held-out windows"),
        decision=t.decision, artifacts={"evaluation_notes": {"notes": list(ev.notes)}})
    return result(info, t.metrics, list(REQUIRED_METRICS),
                  {"windows": len(ev.windows), "series": int(t.metrics.get("series", 0)), "target": target,
                   "cutoff": ev.cutoff_tags()["tp.cutoff"], "series_left_out": MetadataValue.json(ev.left_out),
                   "evaluation_notes": MetadataValue.json(ev.notes),
                   "rel_mae_vs_naive": t.metrics["rel_mae_vs_naive"],
                   "rel_mae_vs_seasonal_naive": t.metrics["rel_mae_vs_seasonal_naive"],
                   "coverage_80": t.metrics["coverage_80"]})


nhits_assets = [_nhits_asset(tf) for tf in nhits_timeframes()]

"""The model outputs, each from every champion (role ``champion``) and every challenger as a
shadow (role ``shadow``, never used downstream):

- ``predictions``: the classifiers and regime models over the latest features;
- ``forecasts``: the NHITS forecasters at the latest origin of each symbol;
- ``patterns``: the TCN pattern scan over the latest window ends of every listed timeframe.
"""

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from ..resources import MarketDB, MLflowResource, ModelServer
from .nhits import nhits_assets
from .patterns import TCN_KEY
from .pump import PUMP_KEY
from .regime import REGIME_KEY
from .signal import SIGNAL_KEY


class PredictionsConfig(Config):
    last_n: int = 288       # newest feature rows per symbol to score
    context_rows: int = 2000  # rows before them that the regime filter runs over


PREDICTIONS_KEY = AssetKey(["predictions"])


@asset(key=PREDICTIONS_KEY, deps=[PUMP_KEY, REGIME_KEY, SIGNAL_KEY], kinds={"postgres"}, group_name="predictions",
       description="Every champion (role champion) and challenger (role shadow) over the latest features, into the "
                   "predictions table (keyed by model, version, symbol, timeframe, ts: re-runs never duplicate).")
def predictions(context: AssetExecutionContext, config: PredictionsConfig, market_db: MarketDB,
                mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
    from ..models.predict import score_models

    with market_db.open() as store:
        written = score_models(store, mlflow.client(), model_server, config.last_n, config.context_rows,
                               log=context.log)
    return MaterializeResult(metadata={"rows": sum(written.values()), "by_model": MetadataValue.json(written)})


FORECASTS_KEY = AssetKey(["forecasts"])


@asset(key=FORECASTS_KEY, deps=[a.key for a in nhits_assets], kinds={"postgres"}, group_name="predictions",
       description="Every NHITS champion (and shadow challenger) at the latest origin of each of its symbols, one "
                   "batched call per version, into the forecasts table (keyed by model, version, symbol, timeframe, "
                   "origin, step: re-runs never duplicate).")
def forecasts(context: AssetExecutionContext, market_db: MarketDB, mlflow: MLflowResource,
              model_server: ModelServer) -> MaterializeResult:
    from ..models.predict import score_forecasts

    with market_db.open() as store:
        written = score_forecasts(store, mlflow.client(), model_server, log=context.log)
    return MaterializeResult(metadata={"rows": sum(written.values()), "by_model": MetadataValue.json(written)})


class PatternsConfig(Config):
    last_n: int = 100          # newest window ends per symbol and timeframe
    stride: int = 1
    threshold: float = 0.5     # patterns at or above this probability are written


PATTERNS_KEY = AssetKey(["patterns"])


@asset(key=PATTERNS_KEY, deps=[TCN_KEY], kinds={"postgres"}, group_name="predictions",
       description="The TCN champion's (and shadow challenger's) chart patterns above a confidence threshold, per "
                   "symbol and listed timeframe, into the patterns table; a pattern at ts uses only candles closed "
                   "by ts + timeframe.")
def patterns(context: AssetExecutionContext, config: PatternsConfig, market_db: MarketDB, mlflow: MLflowResource,
             model_server: ModelServer) -> MaterializeResult:
    from ..models.predict import scan_patterns

    with market_db.open() as store:
        written = scan_patterns(store, mlflow.client(), model_server, config.last_n, config.stride,
                                config.threshold, log=context.log)
    return MaterializeResult(metadata={"rows": sum(written.values()), "by_model": MetadataValue.json(written)})

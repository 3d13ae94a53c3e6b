"""``predictions``: every champion (role ``champion``) and every challenger as a shadow
(role ``shadow``, never used downstream) over the latest features."""

from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from ..resources import MarketDB, MLflowResource, ModelServer
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

"""The model outputs, partitioned like the market data (symbol x month) so history can be
backfilled, each from every champion (role ``champion``) and every challenger as a shadow
(role ``shadow``, never used downstream):

- ``predictions``: the classifiers and regime models, one row per feature row;
- ``forecasts``: the NHITS forecasters, a forecast at every candle as origin;
- ``patterns``: the TCN scan, every window ending at a candle, patterns above a threshold.

A run scores only what is not stored yet for its versions (``recompute`` scores everything
again), month by month, with ``models/scoring.py``: the rows are the same whichever run
computed them, however a backfill is chunked. A backfill pins one version per model and
role for all its chunks (``prediction_pins``, keyed by the backfill id); any other run uses
the versions registered when it starts. Runs started by the schedules leave live symbols
to the live path, so the two never compute the same prediction twice.
"""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from ..resources import MarketDB, MLflowResource, ModelServer
from .features import FEATURES_KEY
from .market_data import OHLCV_KEY
from .nhits import nhits_assets
from .partitions import market_backfill_policy, market_partitions, month_bounds, split_keys
from .patterns import TCN_KEY
from .pump import PUMP_KEY
from .regime import REGIME_KEY
from .signal import SIGNAL_KEY

GROUP = "predictions"
PREDICTIONS_KEY = AssetKey(["predictions"])
FORECASTS_KEY = AssetKey(["forecasts"])
PATTERNS_KEY = AssetKey(["patterns"])
_BY_SYMBOL = MultiToSingleDimensionPartitionMapping(partition_dimension_name="symbol")


class PredictionsConfig(Config):
    recompute: bool = False          # score every row of the partitions again, not only the missing ones
    context_rows: int = 2000         # rows before each month the regime filter runs over
    pattern_threshold: float = 0.5   # patterns at or above this probability are written


def live_start(conn, symbol: str, timeframe: str):
    """The time of the first candle of the series that went through the live path (None if none did): from it
    on, the series is the live path's to predict, so a backfill or a run launched by hand stops there and
    the two never compute the same row."""
    return conn.execute("SELECT min(ts) FROM market_events WHERE symbol = %s AND timeframe = %s",
                        (symbol, timeframe)).fetchone()[0]


def score_partitions(context: AssetExecutionContext, config: PredictionsConfig, market_db: MarketDB,
                     mlflow: MLflowResource, model_server: ModelServer, table: str) -> MaterializeResult:
    from ..models import scoring

    client, log = mlflow.client(), context.log
    tags = context.run.tags
    backfill = tags.get("dagster/backfill")
    scheduled = "dagster/schedule_name" in tags
    params = scoring.Params(context_rows=config.context_rows, pattern_threshold=config.pattern_threshold)
    written: dict[str, int] = {}
    in_sample: dict[str, int] = {}
    errors, live_skipped, live_owned = [], [], set()
    live_from_cache: dict[tuple[str, str], object] = {}
    with market_db.open() as store:
        families = scoring.TABLES[table]
        versions = (scoring.pinned_for(store, client, backfill, families, log) if backfill
                    else scoring.resolve_versions(client, families, log))
        for symbol, months in split_keys(context.partition_keys).items():
            info = store.get_symbol(symbol)
            if info is None:
                errors.append(f"symbol {symbol!r} is not in the symbols table")
                continue
            if scheduled and info.live:
                live_skipped.append(symbol)  # the live path predicts live symbols
                continue
            for v in versions:
                label = v.name if v.role == "champion" else f"{v.name} (shadow)"
                for tf in v.timeframes(info):
                    # candles from a live symbol's first live event on are the live path's, here too
                    if info.live and (symbol, tf) not in live_from_cache:
                        live_from_cache[(symbol, tf)] = live_start(store.conn, symbol, tf)
                    live_from = live_from_cache.get((symbol, tf))
                    for month in months:
                        start, end = month_bounds(month)
                        if live_from is not None and live_from < end:
                            end = live_from
                            live_owned.add(symbol)
                            if end <= start:
                                continue
                        after = None if config.recompute else scoring.latest_stored(store.conn, table, v, symbol,
                                                                                     tf, start, end)
                        rows = scoring.score_range(store, model_server, v, info, tf, start, end, params, after)
                        written[label] = written.get(label, 0) + scoring.write_rows(store.conn, table, rows)
                        in_sample[label] = in_sample.get(label, 0) + sum(1 for r in rows if r[-1])
    if errors:
        raise Failure(description="; ".join(errors))
    for label, n in written.items():
        log.info("%s: %d %s rows (%d inside its own training window)", label, n, table, in_sample.get(label, 0))
    return MaterializeResult(metadata={
        "rows": sum(written.values()), "by_model": MetadataValue.json(written),
        "in_sample_rows": MetadataValue.json(in_sample),
        "versions": MetadataValue.json(scoring.pins(versions)),
        "pinned_by_backfill": backfill or "",
        "live_symbols_skipped": MetadataValue.json(live_skipped),
        "live_symbols_cut_at_live_start": MetadataValue.json(sorted(live_owned))})


def _output_asset(key: AssetKey, table: str, deps: list, description: str):
    @asset(key=key, deps=deps, partitions_def=market_partitions, backfill_policy=market_backfill_policy,
           kinds={"postgres"}, group_name=GROUP, description=description)
    def _asset(context: AssetExecutionContext, config: PredictionsConfig, market_db: MarketDB,
               mlflow: MLflowResource, model_server: ModelServer) -> MaterializeResult:
        return score_partitions(context, config, market_db, mlflow, model_server, table)

    return _asset


predictions = _output_asset(
    PREDICTIONS_KEY, "predictions",
    [FEATURES_KEY, PUMP_KEY, AssetDep(REGIME_KEY, partition_mapping=_BY_SYMBOL),
     AssetDep(SIGNAL_KEY, partition_mapping=_BY_SYMBOL)],
    "Every classifier and regime champion (and shadow challenger) over the symbol-month's feature rows, into the "
    "predictions table (keyed by model, version, symbol, timeframe, ts: re-runs never duplicate).")
forecasts = _output_asset(
    FORECASTS_KEY, "forecasts", [FEATURES_KEY, *(a.key for a in nhits_assets)],
    "Every NHITS champion (and shadow challenger): a forecast at every candle of the symbol-month as origin, into "
    "the forecasts table (keyed by model, version, symbol, timeframe, origin, step).")
patterns = _output_asset(
    PATTERNS_KEY, "patterns", [OHLCV_KEY, TCN_KEY],
    "The TCN champion's (and shadow challenger's) chart patterns above a threshold for every window ending in the "
    "symbol-month, per listed timeframe, into the patterns table; a pattern at ts uses only candles closed by "
    "ts + timeframe.")

output_assets = [predictions, forecasts, patterns]

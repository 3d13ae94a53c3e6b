"""The model outputs, partitioned like the market data (symbol x month) so history can be
backfilled, each from every champion and every challenger (scored beside it, a *shadow*):

- ``predictions``: the classifiers and regime models, one row per feature row;
- ``forecasts``: the NHITS forecasters, a forecast at every candle as origin;
- ``patterns``: the TCN scan, every window ending at a candle, patterns above a threshold.

The tables are an append-only record (``store/outputs.py``): a run first corrects what revised candles
changed (the symbol's revisions whose features are recomputed, claimed by state), then scores every closed
candle of its months that a version has no current output for, interior gaps included (``recompute``
scores every candle again; equal values write nothing). Rows are the same whichever run computed them,
however a backfill is chunked. A backfill pins one version per model and alias for all its chunks
(``prediction_pins``, keyed by the backfill id); any other run uses the versions registered when it starts
(recording alias moves made outside the platform in the champion history). Live series are scored here
too, except the candles whose live event is still pending (``series_owners`` says from when a series is
live): the live path scores those, this path what reached the series another way (a refill, a completed
bucket), so a candle is scored by one of them, never neither, never both.
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


def live_lock(conn, symbol: str) -> None:
    """The live path's per-symbol lock (``live/process.py``), for this transaction."""
    from ..store.outbox import lock_symbol

    lock_symbol(conn, symbol)


def score_partitions(context: AssetExecutionContext, config: PredictionsConfig, market_db: MarketDB,
                     mlflow: MLflowResource, model_server: ModelServer, table: str) -> MaterializeResult:
    from ..models import scoring
    from ..store import outputs

    # checked before anything is read or written (InvalidInput naming the config field)
    params = scoring.Params(context_rows=config.context_rows, pattern_threshold=config.pattern_threshold)
    client, log = mlflow.client(), context.log
    backfill = context.run.tags.get("dagster/backfill")
    written: dict[str, int] = {}
    superseded: dict[str, int] = {}
    in_sample: dict[str, int] = {}
    corrections = {"revisions": 0, "rows_rescored": 0, "rows_in_window": 0, "rows_superseded": 0}
    errors, live_series = [], set()

    def count(label: str, flushed: dict, rows: list[tuple] | None = None) -> None:
        got = flushed.get(table, {})
        written[label] = written.get(label, 0) + got.get("inserted", 0)
        superseded[label] = superseded.get(label, 0) + got.get("superseded", 0)
        in_sample[label] = in_sample.get(label, 0) + sum(1 for r in rows or () if r[-1])

    with market_db.open() as store:
        families = scoring.TABLES[table]
        versions = (scoring.pinned_for(store, client, backfill, families, log) if backfill
                    else scoring.resolve_versions(client, families, log, conn=store.conn, server=model_server))
        for symbol, months in split_keys(context.partition_keys).items():
            info = store.get_symbol(symbol)
            if info is None:
                errors.append(f"symbol {symbol!r} is not in the symbols table")
                continue
            if not backfill:  # a backfill keeps its pinned versions; the next run with today's corrects
                with store.conn.transaction():
                    # the live path's lock first (it takes it before the revisions it marks): no live batch
                    # writes this symbol between this read and this write
                    live_lock(store.conn, symbol)
                    revs = outputs.pending_revisions(store.conn, table, symbol)
                    if revs:
                        w = outputs.OutputWriter(store.conn, versions, "backfill" if backfill else "schedule")
                        st = scoring.correct(store, model_server, versions, info, [r[1:] for r in revs], params, w,
                                             tables=(table,))
                        outputs.mark_revisions(store.conn, f"{table}_done_at", [r[0] for r in revs])
                        got = w.flush().get(table, {})
                        corrections["revisions"] += len(revs)
                        corrections["rows_rescored"] += st["rows_rescored"]
                        corrections["rows_in_window"] += st["rows_in_window"]
                        corrections["rows_superseded"] += got.get("superseded", 0)
                        corrections["rows_written"] = corrections.get("rows_written", 0) + got.get("inserted", 0)
            for v in versions:
                label = v.name if v.role == "champion" else f"{v.name} (shadow)"
                for tf in v.timeframes(info):
                    live_from = outputs.live_since(store.conn, symbol, tf)
                    if live_from is not None:
                        live_series.add(f"{symbol} {tf}")
                    for month in months:
                        start, end = month_bounds(month)
                        w = outputs.OutputWriter(store.conn, versions, "backfill" if backfill else "schedule")
                        with store.conn.transaction():
                            # a gap fill only inserts, for candles without a current row: a live batch's row for
                            # the same candle wins either way, so it holds no lock while it scores. A recompute
                            # compares and supersedes: no live batch may write the series between its read and write
                            if config.recompute and live_from is not None:
                                live_lock(store.conn, symbol)
                            if config.recompute:
                                rows = scoring.score_range(store, model_server, v, info, tf, start, end, params)
                                w.add(table, rows, scope=(v.name, v.version, symbol, tf, start, end))
                            else:
                                scoring.fill_gaps(store, model_server, v, info, tf, start, end, params, w, live_from)
                                rows = w.rows[table]
                            count(label, w.flush(), list(rows))
    if errors:
        raise Failure(description="; ".join(errors))
    for label, n in written.items():
        log.info("%s: %d new %s rows (%d superseded; %d inside its own training window)", label, n, table,
                 superseded.get(label, 0), in_sample.get(label, 0))
    return MaterializeResult(metadata={
        "rows": sum(written.values()), "by_model": MetadataValue.json(written),
        "superseded_by_model": MetadataValue.json(superseded),
        "in_sample_rows": MetadataValue.json(in_sample),
        "corrections": MetadataValue.json(corrections),
        "versions": MetadataValue.json(scoring.pins(versions)),
        "pinned_by_backfill": backfill or "",
        "live_series": MetadataValue.json(sorted(live_series))})


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
    "predictions table (append-only: a re-run writes nothing new, a changed value supersedes).")
forecasts = _output_asset(
    FORECASTS_KEY, "forecasts", [FEATURES_KEY, *(a.key for a in nhits_assets)],
    "Every NHITS champion (and shadow challenger): a forecast at every candle of the symbol-month as origin, into "
    "the forecasts table (append-only, like predictions).")
patterns = _output_asset(
    PATTERNS_KEY, "patterns", [OHLCV_KEY, TCN_KEY],
    "The TCN champion's (and shadow challenger's) chart patterns above a threshold for every window ending in the "
    "symbol-month, per listed timeframe, into the patterns table; a pattern at ts uses only candles closed by "
    "ts + timeframe.")

output_assets = [predictions, forecasts, patterns]

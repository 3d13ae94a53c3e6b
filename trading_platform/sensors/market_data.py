"""Automation for market data: the symbols -> partitions sensor and the ingestion schedule."""


import hashlib
import json

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
    sensor,
)

from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ..assets.features import FEATURES_KEY, feature_assets
from ..assets.market_data import OHLCV_KEY, market_assets
from ..assets.partitions import market_key, month_key, symbol_partitions
from ..resources import MarketDB

market_data_job = define_asset_job(
    "market_data_job",
    selection=[*market_assets, *feature_assets],
    executor_def=in_process_executor,
    description="Ingest the base timeframe, resample every higher one and compute features, "
                "for the chosen symbol-months (the steps run in one process).",
)
DEFAULT_SYMBOLS_PER_RUN = 50


def symbols_per_run() -> int:
    """``TP_SYMBOLS_PER_RUN`` (default 50): how many symbols one scheduled run takes."""
    import os

    from ..errors import InvalidInput

    raw = os.environ.get("TP_SYMBOLS_PER_RUN", str(DEFAULT_SYMBOLS_PER_RUN))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidInput(f"TP_SYMBOLS_PER_RUN={raw!r} is not a positive integer", field="TP_SYMBOLS_PER_RUN")
    return n


def symbol_batches(partition_order: list[str], infos: dict, size: int) -> list[list[str]]:
    """Batches of enabled symbols for one run each: contiguous in the partition order (a run targets a
    partition *range*, which cannot skip a symbol), sharing their timeframes (a run selects the assets
    its symbols list, so none gets an empty materialization of a timeframe it does not list), and at
    most ``size`` long."""
    batches: list[list[str]] = []
    current: list[str] = []
    for symbol in partition_order:
        info = infos.get(symbol)
        if info is None or not info.enabled:  # a range over it would ingest it: end the batch here
            if current:
                batches.append(current)
            current = []
            continue
        if current and (len(current) >= size or set(infos[current[0]].timeframes) != set(info.timeframes)):
            batches.append(current)
            current = []
        current.append(symbol)
    if current:
        batches.append(current)
    return batches


def batch_assets(info) -> list:
    """The assets a symbol's run materializes: its base candles, each timeframe it resamples, features."""
    resampled = [AssetKey(["market", f"ohlcv_{tf}"]) for tf in info.timeframes if info.resample_source(tf)]
    return [OHLCV_KEY, *resampled, FEATURES_KEY]


def partition_requests(table_symbols: list[str], partition_symbols: list[str]):
    """The dynamic-partition requests that make partitions equal the symbols table."""
    add = sorted(set(table_symbols) - set(partition_symbols))
    remove = sorted(set(partition_symbols) - set(table_symbols))
    reqs = []
    if add:
        reqs.append(AddDynamicPartitionsRequest(symbol_partitions.name, add))
    if remove:
        reqs.append(DeleteDynamicPartitionsRequest(symbol_partitions.name, remove))
    return reqs, add, remove


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Keeps the `symbol` dynamic partitions equal to the symbols table (which is the truth).",
)
def symbol_partitions_sensor(context: SensorEvaluationContext, market_db: MarketDB):
    with market_db.open() as store:
        symbols = [s.symbol for s in store.list_symbols()]
    digest = hashlib.sha256(json.dumps(symbols).encode()).hexdigest()[:16]
    existing = context.instance.get_dynamic_partitions(symbol_partitions.name)
    reqs, add, remove = partition_requests(symbols, existing)
    if not reqs:
        return SensorResult(skip_reason=SkipReason(f"{len(symbols)} symbols, partitions in step"),
                            cursor=digest)
    context.log.info("adding partitions %s, removing %s", add, remove)
    return SensorResult(dynamic_partitions_requests=reqs, cursor=digest)


@schedule(
    job=market_data_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly: the current month of every enabled symbol (fetches only what is missing), "
                "TP_SYMBOLS_PER_RUN (50) symbols a run.",
)
def market_data_hourly(context: ScheduleEvaluationContext, market_db: MarketDB):
    month = month_key(context.scheduled_execution_time)
    with market_db.open() as store:
        infos = {s.symbol: s for s in store.list_symbols()}
    order = context.instance.get_dynamic_partitions(symbol_partitions.name)
    batches = symbol_batches(order, infos, symbols_per_run())
    if not batches:
        return SkipReason("no enabled symbol with a partition yet")
    when = context.scheduled_execution_time.isoformat()
    return [
        RunRequest(
            run_key=f"{month}|{b[0]}..{b[-1]}|{when}",
            asset_selection=batch_assets(infos[b[0]]),
            tags={ASSET_PARTITION_RANGE_START_TAG: str(market_key(b[0], month)),
                  ASSET_PARTITION_RANGE_END_TAG: str(market_key(b[-1], month)),
                  "symbols": f"{len(b)}: {b[0]}..{b[-1]}"},
        )
        for b in batches
    ]

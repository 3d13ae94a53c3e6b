"""Automation for market data: the symbols -> partitions sensor and the ingestion schedule."""


import hashlib
import json

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from ..assets.features import feature_assets
from ..assets.market_data import market_assets
from ..assets.partitions import market_key, month_key, symbol_partitions
from ..resources import MarketDB

market_data_job = define_asset_job(
    "market_data_job",
    selection=[*market_assets, *feature_assets],
    description="Ingest the base timeframe, resample every higher one and compute features, "
                "for the chosen symbol-months.",
)


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
    description="Hourly: the current month of every enabled symbol (fetches only what is missing).",
)
def market_data_hourly(context: ScheduleEvaluationContext, market_db: MarketDB):
    month = month_key(context.scheduled_execution_time)
    with market_db.open() as store:
        symbols = [s.symbol for s in store.list_symbols(enabled_only=True)]
    known = set(context.instance.get_dynamic_partitions(symbol_partitions.name))
    requests = [
        RunRequest(
            run_key=f"{s}|{month}|{context.scheduled_execution_time.isoformat()}",
            partition_key=market_key(s, month),
            tags={"symbol": s},
        )
        for s in symbols
        if s in known
    ]
    if not requests:
        return SkipReason("no enabled symbol with a partition yet")
    return requests

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
from ..assets.paper import strategy_partitions
from ..assets.partitions import market_key, month_key, month_partitions, store_first_month, symbol_partitions
from ..assets.predictions import output_assets
from ..assets.watchdog import without_watchdog_checks
from ..resources import MarketDB

market_data_job = define_asset_job(
    "market_data_job",
    selection=without_watchdog_checks([*market_assets, *feature_assets]),
    executor_def=in_process_executor,
    description="Ingest the base timeframe, resample every higher one and compute features, "
                "for the chosen symbol-months (the steps run in one process).",
)
market_cycle_job = define_asset_job(
    "market_cycle_job",
    selection=without_watchdog_checks([*market_assets, *feature_assets, *output_assets]),
    executor_def=in_process_executor,
    description="What the schedules run: ingest, resample, features and the model outputs (predictions, "
                "forecasts, patterns) for the chosen symbol-months, in one process.",
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


def partition_requests(table_symbols: list[str], partition_symbols: list[str], name: str | None = None):
    """The dynamic-partition requests that make partitions (``symbol`` unless ``name``) equal the table."""
    name = name or symbol_partitions.name
    add = sorted(set(table_symbols) - set(partition_symbols))
    remove = sorted(set(partition_symbols) - set(table_symbols))
    reqs = []
    if add:
        reqs.append(AddDynamicPartitionsRequest(name, add))
    if remove:
        reqs.append(DeleteDynamicPartitionsRequest(name, remove))
    return reqs, add, remove


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Keeps the `symbol` dynamic partitions equal to the symbols table (which is the truth), and "
                "paper_backtest's `strategy` partitions equal to the strategies table; says when "
                "the market's history starts before the loaded `month` partitions (a reload shows those months).",
)
def symbol_partitions_sensor(context: SensorEvaluationContext, market_db: MarketDB):
    with market_db.open() as store:
        symbols = [s.symbol for s in store.list_symbols()]
        first = store_first_month(store)
        strategies = sorted(r[0] for r in store.conn.execute("SELECT DISTINCT name FROM strategies").fetchall())
    loaded = month_partitions.get_first_partition_key()
    reload_hint = ""
    if first < loaded:  # older history stored or asked for (tp backfill) since this code location loaded
        reload_hint = (f"; the market's history starts at {first[:7]}, before the first month partition "
                       f"({loaded[:7]}): reload the code location (Deployment > Reload) to see those months")
        context.log.warning(reload_hint[2:])
    digest = hashlib.sha256(json.dumps([symbols, strategies]).encode()).hexdigest()[:16]
    existing = context.instance.get_dynamic_partitions(symbol_partitions.name)
    reqs, add, remove = partition_requests(symbols, existing)
    # paper_backtest's strategy partitions follow the strategies table the same way
    got = context.instance.get_dynamic_partitions(strategy_partitions.name)
    s_reqs, s_add, s_remove = partition_requests(strategies, got, strategy_partitions.name)
    reqs += s_reqs
    add, remove = add + s_add, remove + s_remove
    if not reqs:
        return SensorResult(skip_reason=SkipReason(f"{len(symbols)} symbols, partitions in step{reload_hint}"),
                            cursor=digest)
    context.log.info("adding partitions %s, removing %s", add, remove)
    return SensorResult(dynamic_partitions_requests=reqs, cursor=digest)


def cycle_assets(info) -> list:
    """What a scheduled cycle of a symbol materializes: its market data chain and the model outputs."""
    return [*batch_assets(info), *(a.key for a in output_assets)]


# when each base timeframe's cycle runs (UTC): a little after its candles close, so the source has them
CYCLE_CRONS = {"1m": "* * * * *", "5m": "1-59/5 * * * *", "15m": "2-59/15 * * * *", "30m": "3-59/30 * * * *",
               "1h": "5 * * * *", "4h": "10 */4 * * *", "1d": "15 0 * * *", "1w": "20 0 * * 1"}
SCHEDULE_NAMES = {"1h": "market_data_hourly", "1d": "market_data_daily", "1w": "market_data_weekly"}


def cycle_requests(context: ScheduleEvaluationContext, store, base: str) -> list[RunRequest]:
    """The current month of every enabled symbol whose base timeframe is ``base``, in batches (see
    ``symbol_batches``), each run ingesting, resampling, computing features and the model outputs."""
    month = month_key(context.scheduled_execution_time)
    infos = {s.symbol: s for s in store.list_symbols() if s.base_timeframe == base}
    order = context.instance.get_dynamic_partitions(symbol_partitions.name)
    when = context.scheduled_execution_time.isoformat()
    return [
        RunRequest(
            run_key=f"{month}|{b[0]}..{b[-1]}|{when}",
            asset_selection=cycle_assets(infos[b[0]]),
            tags={ASSET_PARTITION_RANGE_START_TAG: str(market_key(b[0], month)),
                  ASSET_PARTITION_RANGE_END_TAG: str(market_key(b[-1], month)),
                  "symbols": f"{len(b)}: {b[0]}..{b[-1]}", "tp/run_kind": "schedule"},
        )
        for b in symbol_batches(order, infos, symbols_per_run())
    ]


def _cycle_schedule(base: str):
    @schedule(
        name=SCHEDULE_NAMES.get(base, f"market_data_{base}"),
        job=market_cycle_job,
        cron_schedule=CYCLE_CRONS[base],
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Every {base} candle: the current month of every enabled symbol whose base timeframe is {base} "
                    "(fetches only what is missing), resampled, its features and the model outputs (live symbols' "
                    "outputs come from the live path); TP_SYMBOLS_PER_RUN (50) symbols a run.",
    )
    def _schedule(context: ScheduleEvaluationContext, market_db: MarketDB):
        with market_db.open() as store:
            requests = cycle_requests(context, store, base)
        return requests or SkipReason(f"no enabled symbol with base timeframe {base} and a partition yet")

    return _schedule


cycle_schedules = [_cycle_schedule(tf) for tf in CYCLE_CRONS]
market_data_hourly = next(s for s in cycle_schedules if s.name == "market_data_hourly")

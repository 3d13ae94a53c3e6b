"""Jobs for the model assets (every run a user or the demo starts belongs to a named job, not
Dagster's ``__ephemeral_asset_job__``, and the steps run in one process) and the weekly retraining."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ..assets.models import (forecasts, nhits_assets, pattern_tcn, patterns, predictions, pump_xgb, regime_hmm,
                             signal_lgbm)
from ..assets.partitions import symbol_partitions
from ..assets.watchdog import without_watchdog_checks
from ..resources import MarketDB

pump_training_job = define_asset_job(
    "pump_training_job", selection=without_watchdog_checks([pump_xgb]), executor_def=in_process_executor,
    description="Train the pooled XGBoost pump classifier, register it and gate it.")
regime_training_job = define_asset_job(
    "regime_training_job", selection=without_watchdog_checks([regime_hmm]), executor_def=in_process_executor,
    description="Train one symbol's HMM regime model (partition: symbol), register it and gate it.")
signal_training_job = define_asset_job(
    "signal_training_job", selection=without_watchdog_checks([signal_lgbm]), executor_def=in_process_executor,
    description="Train one symbol's LightGBM signal model (partition: symbol), register it and gate it.")
nhits_training_job = define_asset_job(
    "nhits_training_job", selection=without_watchdog_checks(nhits_assets), executor_def=in_process_executor,
    description="Train the NHITS forecaster of every configured timeframe, register it and gate it.")
pattern_training_job = define_asset_job(
    "pattern_training_job", selection=without_watchdog_checks([pattern_tcn]), executor_def=in_process_executor,
    description="Train the TCN chart-pattern detector, register it and gate it on the frozen set.")
predictions_job = define_asset_job(
    "predictions_job", selection=without_watchdog_checks([predictions, forecasts, patterns]), executor_def=in_process_executor,
    description="Score every champion (and shadow every challenger): predictions, forecasts and patterns.")

retraining_job = define_asset_job(
    "retraining_job", selection=without_watchdog_checks([pump_xgb, *nhits_assets, pattern_tcn]), executor_def=in_process_executor,
    tags={"tp/run_kind": "retrain"},
    description="Retrain the pooled models (pump, NHITS per timeframe, TCN); each version goes through the gate.")
symbol_retraining_job = define_asset_job(
    "symbol_retraining_job", selection=without_watchdog_checks([regime_hmm, signal_lgbm]), executor_def=in_process_executor,
    tags={"tp/run_kind": "retrain"},
    description="Retrain every symbol's regime model, then its signal model, in one run over a range of symbols.")

model_jobs = [pump_training_job, regime_training_job, signal_training_job, nhits_training_job, pattern_training_job,
              predictions_job, retraining_job, symbol_retraining_job]


def enabled_ranges(order: list[str], enabled: set[str]) -> list[list[str]]:
    """Stretches of enabled symbols, contiguous in the partition order (a run's range cannot skip one)."""
    out, current = [], []
    for symbol in order:
        if symbol in enabled:
            current.append(symbol)
        elif current:
            out.append(current)
            current = []
    return out + ([current] if current else [])


@schedule(job=retraining_job, cron_schedule="0 2 * * 0", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED,
          description="Weekly (Sunday 02:00 UTC): retrain the pump, NHITS and TCN models on the history so far; the "
                      "gate decides whether each new version replaces its champion.")
def weekly_retraining(context: ScheduleEvaluationContext):
    return RunRequest(run_key=f"retrain|{context.scheduled_execution_time.isoformat()}")


@schedule(job=symbol_retraining_job, cron_schedule="0 3 * * 0", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED,
          description="Weekly (Sunday 03:00 UTC): retrain every enabled symbol's regime and signal models, one run "
                      "per stretch of enabled symbols (not one per symbol).")
def weekly_symbol_retraining(context: ScheduleEvaluationContext, market_db: MarketDB):
    with market_db.open() as store:
        enabled = {s.symbol for s in store.list_symbols(enabled_only=True)}
    ranges = enabled_ranges(context.instance.get_dynamic_partitions(symbol_partitions.name), enabled)
    when = context.scheduled_execution_time.isoformat()
    return [RunRequest(run_key=f"retrain|{r[0]}..{r[-1]}|{when}",
                       tags={ASSET_PARTITION_RANGE_START_TAG: r[0], ASSET_PARTITION_RANGE_END_TAG: r[-1]})
            for r in ranges] or SkipReason("no enabled symbol with a partition yet")


model_schedules = [weekly_retraining, weekly_symbol_retraining]

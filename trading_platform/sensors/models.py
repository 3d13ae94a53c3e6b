"""Jobs for the model assets: every run a user or the demo starts belongs to a named job
(not Dagster's ``__ephemeral_asset_job__``), and the steps run in one process."""

from dagster import define_asset_job, in_process_executor

from ..assets.models import (forecasts, nhits_assets, pattern_tcn, patterns, predictions, pump_xgb, regime_hmm,
                             signal_lgbm)

pump_training_job = define_asset_job(
    "pump_training_job", selection=[pump_xgb], executor_def=in_process_executor,
    description="Train the pooled XGBoost pump classifier, register it and gate it.")
regime_training_job = define_asset_job(
    "regime_training_job", selection=[regime_hmm], executor_def=in_process_executor,
    description="Train one symbol's HMM regime model (partition: symbol), register it and gate it.")
signal_training_job = define_asset_job(
    "signal_training_job", selection=[signal_lgbm], executor_def=in_process_executor,
    description="Train one symbol's LightGBM signal model (partition: symbol), register it and gate it.")
nhits_training_job = define_asset_job(
    "nhits_training_job", selection=nhits_assets, executor_def=in_process_executor,
    description="Train the NHITS forecaster of every configured timeframe, register it and gate it.")
pattern_training_job = define_asset_job(
    "pattern_training_job", selection=[pattern_tcn], executor_def=in_process_executor,
    description="Train the TCN chart-pattern detector, register it and gate it on the frozen set.")
predictions_job = define_asset_job(
    "predictions_job", selection=[predictions, forecasts, patterns], executor_def=in_process_executor,
    description="Score every champion (and shadow every challenger): predictions, forecasts and patterns.")

model_jobs = [pump_training_job, regime_training_job, signal_training_job, nhits_training_job, pattern_training_job,
              predictions_job]

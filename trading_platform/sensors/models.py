"""Jobs for the model assets: every run a user or the demo starts belongs to a named job
(not Dagster's ``__ephemeral_asset_job__``), and the steps run in one process."""

from dagster import define_asset_job, in_process_executor

from ..assets.models import predictions, pump_xgb, regime_hmm, signal_lgbm

pump_training_job = define_asset_job(
    "pump_training_job", selection=[pump_xgb], executor_def=in_process_executor,
    description="Train the pooled XGBoost pump classifier, register it and gate it.")
regime_training_job = define_asset_job(
    "regime_training_job", selection=[regime_hmm], executor_def=in_process_executor,
    description="Train one symbol's HMM regime model (partition: symbol), register it and gate it.")
signal_training_job = define_asset_job(
    "signal_training_job", selection=[signal_lgbm], executor_def=in_process_executor,
    description="Train one symbol's LightGBM signal model (partition: symbol), register it and gate it.")
predictions_job = define_asset_job(
    "predictions_job", selection=[predictions], executor_def=in_process_executor,
    description="Score every champion (and shadow every challenger) over the latest features.")

model_jobs = [pump_training_job, regime_training_job, signal_training_job, predictions_job]

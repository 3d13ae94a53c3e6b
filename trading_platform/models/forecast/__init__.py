"""Price forecasters: multi-horizon quantile forecasts of a series' close, evaluated
against the naive forecasts on rolling origins, and gated like every other family.

- ``frames``: per-symbol frames -> neuralforecast's long frame on an integer time
  index (row numbers, so closed markets never get invented timestamps), the target
  transforms, and the season of a market in rows;
- ``baselines``: the naive and seasonal-naive forecasts on the same windows, the
  relative MAE (geometric mean over series), coverage, and the gate;
- ``nhits``: the NHITS forecaster (neuralforecast): configuration, rolling-origin
  cross-validation, training progress, warm start, forecasts, save and load;
- ``plot``: the forecast-vs-actual plot.

Nothing here imports torch or neuralforecast at module level, nor Dagster or MLflow.
"""

"""The model assets, one module per family (pure code in ``trading_platform/models``):

- ``pump.py``: ``models/pump_xgb``, pooled across crypto symbols;
- ``regime.py``: ``models/regime_hmm`` per symbol;
- ``signal.py``: ``models/signal_lgbm`` per symbol;
- ``nhits.py``: ``models/nhits_<tf>``, the NHITS forecaster per configured timeframe;
- ``patterns.py``: ``models/pattern_tcn``, the TCN chart-pattern detector;
- ``predictions.py``: champions and shadow challengers into ``predictions``, ``forecasts``, ``patterns``
  (partitioned symbol x month);
- ``training.py``: what the training assets share (lineage check, champion, result).
"""

from .nhits import NHITSTrainConfig, nhits_assets  # noqa: F401
from .patterns import TCN_KEY, TCNTrainConfig, pattern_tcn  # noqa: F401
from .predictions import (FORECASTS_KEY, PATTERNS_KEY, PREDICTIONS_KEY, PredictionsConfig, forecasts,  # noqa: F401
                          output_assets, patterns, predictions)
from .pump import PUMP_KEY, PumpTrainConfig, pump_xgb  # noqa: F401
from .regime import REGIME_KEY, RegimeTrainConfig, regime_hmm  # noqa: F401
from .signal import SIGNAL_KEY, SignalTrainConfig, signal_lgbm  # noqa: F401

model_assets = [pump_xgb, regime_hmm, signal_lgbm, *nhits_assets, pattern_tcn, predictions, forecasts, patterns]

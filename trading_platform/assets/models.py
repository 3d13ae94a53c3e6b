"""The model assets, one module per family (pure code in ``trading_platform/models``):

- ``pump.py``: ``models/pump_xgb``, pooled across crypto symbols;
- ``regime.py``: ``models/regime_hmm`` per symbol;
- ``signal.py``: ``models/signal_lgbm`` per symbol;
- ``predictions.py``: champions and shadow challengers into ``predictions``;
- ``training.py``: what the training assets share (lineage check, champion, result).
"""

from .predictions import PREDICTIONS_KEY, PredictionsConfig, predictions  # noqa: F401
from .pump import PUMP_KEY, PumpTrainConfig, pump_xgb  # noqa: F401
from .regime import REGIME_KEY, RegimeTrainConfig, regime_hmm  # noqa: F401
from .signal import SIGNAL_KEY, SignalTrainConfig, signal_lgbm  # noqa: F401

model_assets = [pump_xgb, regime_hmm, signal_lgbm, predictions]

"""Paper trading: strategies as data (``spec``), orders and fills (``orders``), risk rules (``risk``), the engine's
step (``engine``), the steps from candles as they arrive (``stepper``), the controls (``controls``, ``vectorized``)
and statistics (``stats``) are pure: no Dagster, no store. ``backtest`` (the driver over stored candles and outputs) and ``report`` (the evaluation, MLflow) use the
store; the live driver comes with the next issue.
"""

STRATEGY_PARTITIONS = "strategy"  # the dynamic partitions of paper_backtest: the strategies' names

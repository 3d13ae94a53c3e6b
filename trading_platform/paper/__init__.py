"""Paper trading (issue 25, in progress): strategies as data (``spec``), orders and fills (``orders``), risk rules
(``risk``) and the engine's step (``engine``). Pure: no Dagster, no store; the backtest and live drivers call it.
"""

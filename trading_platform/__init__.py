"""trading_platform: a Dagster-orchestrated data and ML platform for market data."""

__version__ = "0.1.0"

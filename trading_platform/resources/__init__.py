"""Dagster resources: thin typed wrappers over the pure packages."""

from .market_db import MarketDB
from .sources import MarketSource

__all__ = ["MarketDB", "MarketSource"]

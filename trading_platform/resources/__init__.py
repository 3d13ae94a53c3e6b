"""Dagster resources: thin typed wrappers over the pure packages."""

from .market_db import MarketDB
from .mlflow import MLflowResource
from .serving import ModelServer
from .sources import MarketSource

__all__ = ["MarketDB", "MarketSource", "MLflowResource", "ModelServer"]

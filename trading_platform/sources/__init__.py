"""Market-data sources behind one interface (no Dagster here).

Every source returns raw candles of one symbol and timeframe for [start, end);
normalization, validation and quarantine happen in one place afterwards
(core.candles), whatever the source.
"""

from .base import CandleSource, FallbackSource, build_source, SOURCE_KINDS

__all__ = ["CandleSource", "FallbackSource", "build_source", "SOURCE_KINDS"]

"""Yahoo Finance through yfinance (imported on first fetch).

Yahoo has no 4h candles: fetch 1h and let the platform resample. Daily and
weekly bars come stamped at the exchange's local midnight and are mapped to the
trading day (UTC midnight) during normalization.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

import pandas as pd

from ..core.symbols import SymbolInfo
from ..core.timeframes import parse_timeframe
from ..errors import InvalidInput, SourceUnavailable
from .base import CandleSource, with_retries

INTERVALS = {"1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "60m", "1d": "1d", "1w": "1wk"}


def _yfinance_history(symbol: str, start: datetime, end: datetime, interval: str) -> pd.DataFrame:
    import yfinance as yf

    return yf.Ticker(symbol).history(start=start, end=end, interval=interval, auto_adjust=False,
                                     actions=False, raise_errors=True)


class YahooSource(CandleSource):
    name = "yahoo"

    def __init__(self, history: Callable[..., pd.DataFrame] | None = None, retry_delay: float = 0.5):
        # history(symbol, start, end, interval) -> the frame yfinance returns
        self._history = history or _yfinance_history
        self.retry_delay = retry_delay

    def fetch(self, info: SymbolInfo, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        tf = parse_timeframe(timeframe)
        if tf not in INTERVALS:
            raise InvalidInput(f"Yahoo has no {tf} candles; ingest 1h and resample", field="timeframe")
        try:
            df = with_retries(lambda: self._history(info.symbol, start, end, INTERVALS[tf]),
                              what=f"yahoo {info.symbol} {tf}", transient=(ConnectionError, TimeoutError, OSError),
                              base_delay=self.retry_delay)
        except (ConnectionError, TimeoutError, OSError) as e:
            raise SourceUnavailable(f"yahoo unreachable after retries: {type(e).__name__}: {e}",
                                    field="source") from None
        except Exception as e:  # yfinance raises its own types for unknown symbols
            if "delisted" in str(e).lower() or "no data" in str(e).lower() or "not found" in str(e).lower():
                raise InvalidInput(f"yahoo: {e}", field="symbol") from None
            raise SourceUnavailable(f"yahoo failed: {type(e).__name__}: {e}", field="source") from None
        if df is None or len(df) == 0:
            return pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume"])
        df = df.reset_index()
        df = df.rename(columns={df.columns[0]: "ts"})
        return df[["ts", "Open", "High", "Low", "Close", "Volume"]]

"""Exchanges through ccxt (any ccxt exchange id; MEXC and Binance are the defaults).

ccxt is imported when a fetch happens, never at definitions load. Transient
network errors are retried with backoff; a symbol the exchange does not list is
bad input, reported as such.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from ..core.symbols import SymbolInfo
from ..core.timeframes import TIMEFRAMES, parse_timeframe
from ..errors import InvalidInput, SourceUnavailable
from .base import CandleSource, with_retries

PAGE = 1000


class CcxtSource(CandleSource):
    def __init__(self, exchange_id: str = "binance", *, session=None, options: dict | None = None,
                 retry_delay: float = 0.5):
        self.exchange_id = exchange_id.strip().lower()
        self.name = f"ccxt:{self.exchange_id}"
        self._session = session  # a requests.Session (tests mount recorded responses on it)
        self._options = options or {}
        self._exchange = None
        self.retry_delay = retry_delay

    def exchange(self):
        if self._exchange is None:
            import ccxt

            if self.exchange_id not in ccxt.exchanges:
                raise InvalidInput(f"unknown ccxt exchange id {self.exchange_id!r}", field="exchange")
            ex = getattr(ccxt, self.exchange_id)({"enableRateLimit": True, "timeout": 15_000,
                                                  "options": self._options})
            if self._session is not None:
                ex.session = self._session
            self._exchange = ex
        return self._exchange

    def fetch(self, info: SymbolInfo, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        import ccxt

        tf = parse_timeframe(timeframe)
        ex = self.exchange()
        tf_ms = TIMEFRAMES[tf] * 1000
        since, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        rows: list[list] = []
        try:
            with_retries(ex.load_markets, what=f"{self.name} load_markets",
                         transient=(ccxt.NetworkError,), base_delay=self.retry_delay)
            if info.symbol not in ex.markets:
                raise InvalidInput(f"{self.exchange_id} does not list {info.symbol!r}", field="symbol")
            while since < end_ms:
                batch = with_retries(
                    lambda: ex.fetch_ohlcv(info.symbol, tf, since=since, limit=PAGE),
                    what=f"{self.name} fetch_ohlcv {info.symbol} {tf}",
                    transient=(ccxt.NetworkError,), base_delay=self.retry_delay,
                )
                if not batch:
                    break
                rows.extend(r for r in batch if since <= r[0] < end_ms)
                last = batch[-1][0]
                if last + tf_ms <= since:  # no progress: the exchange has nothing newer
                    break
                since = last + tf_ms
        except ccxt.BadSymbol as e:
            raise InvalidInput(f"{self.exchange_id}: {e}", field="symbol") from None
        except ccxt.NetworkError as e:
            raise SourceUnavailable(f"{self.name} unreachable after retries: {type(e).__name__}: {e}",
                                    field="source") from None
        except ccxt.ExchangeError as e:
            raise SourceUnavailable(f"{self.name} refused: {type(e).__name__}: {e}", field="source") from None
        df = pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])
        df["ts"] = pd.to_datetime(df["ts"].astype("int64"), unit="ms", utc=True)
        return df

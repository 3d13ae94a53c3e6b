"""The source interface, retries with backoff, fallbacks, and the factory."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING, Callable, TypeVar

from ..core.symbols import SymbolInfo
from ..errors import InvalidInput, PlatformError, SourceUnavailable

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
T = TypeVar("T")

SOURCE_KINDS = ("synthetic", "control", "files", "postgres", "ccxt", "yahoo", "auto")


class CandleSource(ABC):
    """Raw candles of one symbol and timeframe with start <= ts < end.

    The frame has a time column (or index) and open, high, low, close, volume in
    any casing; a still-forming last candle may be included (the caller skips it).
    """

    name: str = "source"

    @abstractmethod
    def fetch(self, info: SymbolInfo, timeframe: str, start: datetime, end: datetime) -> "pd.DataFrame":
        ...


def with_retries(fn: Callable[[], T], *, what: str, transient: tuple[type[BaseException], ...],
                 attempts: int = 4, base_delay: float = 0.5) -> T:
    """Call fn, retrying transient errors with exponential backoff (0.5, 1, 2 s)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except transient as e:
            if attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(e).__name__, e,
                        attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class FallbackSource(CandleSource):
    """Tries each source in order; the first that answers wins.

    Bad input (an unknown symbol on that source, say) is not a reason to try the
    next one with the same request, except that each source may know different
    symbols, so any failure moves on; when all fail the error lists every reason.
    """

    def __init__(self, sources: list[CandleSource]):
        if not sources:
            raise InvalidInput("no source configured", field="source")
        self.sources = sources
        self.name = " -> ".join(s.name for s in sources)
        self.last_used: str | None = None

    def fetch(self, info, timeframe, start, end):
        errors = []
        for src in self.sources:
            try:
                df = src.fetch(info, timeframe, start, end)
                self.last_used = src.name
                if errors:
                    log.warning("used fallback source %s after: %s", src.name, "; ".join(errors))
                return df
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                msg = e.message if isinstance(e, PlatformError) else f"{type(e).__name__}: {e}"
                errors.append(f"{src.name}: {msg}")
                log.warning("source %s failed for %s %s: %s", src.name, info.symbol, timeframe, msg)
        raise SourceUnavailable(
            f"every source failed for {info.symbol} {timeframe}: " + "; ".join(errors), field="source"
        )


def parse_spec(spec: str, field: str = "source") -> tuple[str, str]:
    """(kind, argument) of a source spec, or InvalidInput naming the field."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInput(f"{field}: source spec is empty", field=field)
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in SOURCE_KINDS:
        raise InvalidInput(
            f"{field}: unknown source kind {kind!r}; use one of {', '.join(SOURCE_KINDS)}", field=field
        )
    if kind == "files" and not arg:
        raise InvalidInput(f"{field}: files source needs a directory: files:/path/to/dir", field=field)
    if kind == "postgres":
        from .postgres import parse_table_arg

        parse_table_arg(arg, field=field)
    if kind in ("synthetic", "control") and arg and not arg.lstrip("-").isdigit():
        raise InvalidInput(f"{field}: {kind} seed must be an integer, got {arg!r}", field=field)
    return kind, arg


def build_source(spec: str, *, dsn: str | None = None, seed: int = 7) -> CandleSource:
    """A source from a spec ``kind[:argument]``.

    synthetic[:SEED] (the synthetic market) · control[:SEED] (its structureless control) ·
    files:DIRECTORY · postgres[:TABLE] (a ``{timeframe}`` template, default
    ``ohlcv_{timeframe}``, or ``TABLE?timeframe_column=COL``; DSN from ``dsn``) ·
    ccxt[:EXCHANGE_ID] · yahoo · auto (crypto via ccxt on the symbol's exchange,
    forex and stocks via Yahoo).
    """
    kind, arg = parse_spec(spec)
    if kind in ("synthetic", "control"):
        from .synthetic import SyntheticSource

        return SyntheticSource(seed=int(arg) if arg else seed, structure=kind == "synthetic")
    if kind == "files":
        from .files import FileSource

        return FileSource(arg)
    if kind == "postgres":
        from .postgres import DEFAULT_TABLE, PostgresTableSource

        if not dsn:
            raise InvalidInput("postgres source needs a DSN (TP_SOURCE_DSN)", field="source_dsn")
        return PostgresTableSource(dsn, table=arg or DEFAULT_TABLE)
    if kind == "ccxt":
        from .exchange import CcxtSource

        return CcxtSource(arg or "binance")
    if kind == "yahoo":
        from .yahoo import YahooSource

        return YahooSource()
    return AutoSource()


class AutoSource(CandleSource):
    """Crypto through ccxt on the symbol's exchange, forex and stocks through Yahoo."""

    name = "auto"

    def __init__(self):
        self._by_key: dict[str, CandleSource] = {}

    def fetch(self, info, timeframe, start, end):
        key = f"ccxt:{info.exchange or 'binance'}" if info.category == "crypto" else "yahoo"
        if key not in self._by_key:
            self._by_key[key] = build_source(key)
        return self._by_key[key].fetch(info, timeframe, start, end)

"""Symbol names and their metadata, validated before anything touches SQL."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InvalidInput
from .timeframes import RESAMPLED, TIMEFRAMES, finest, parse_timeframe

# The documented character set: letters, digits and . _ - / : = ^ @ +
# (covers BTC/USDT, BTC/USDT:USDT, EURUSD=X, ^GSPC, BRK.B, GC=F, BTC-USD).
# Everything else is refused, notably quotes, whitespace, ; | , [ ] which
# would break SQL, shells, or Dagster's partition-key syntax.
SYMBOL_CHARSET = "letters, digits and . _ - / : = ^ @ +"
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9._\-/:=^@+]{1,64}$")
CATEGORIES = ("crypto", "forex", "stock")


def validate_symbol(symbol: str, field: str = "symbol") -> str:
    if not isinstance(symbol, str) or symbol == "":
        raise InvalidInput(f"{field} is empty", field=field)
    if not _SYMBOL_RE.match(symbol) or not re.search(r"[A-Za-z0-9]", symbol):
        bad = sorted({c for c in symbol if not re.match(r"[A-Za-z0-9._\-/:=^@+]", c)})
        what = f"characters {bad!r} are" if bad else "it is"
        raise InvalidInput(
            f"invalid {field} {symbol!r}: {what} outside the allowed set "
            f"({SYMBOL_CHARSET}; 1 to 64 characters)",
            field=field,
        )
    return symbol


def infer_category(symbol: str) -> str:
    if "/" in symbol:
        return "crypto"
    if symbol.endswith("=X"):
        return "forex"
    return "stock"


def split_pair(symbol: str, category: str) -> tuple[str | None, str | None]:
    """Base and quote currency where the name says them."""
    if "/" in symbol:
        base, rest = symbol.split("/", 1)
        return base, rest.split(":", 1)[0]
    if category == "forex" and symbol.endswith("=X") and len(symbol) == 8:
        return symbol[:3], symbol[3:6]
    return None, None


@dataclass
class SymbolInfo:
    symbol: str
    category: str
    exchange: str | None = None
    base: str | None = None
    quote: str | None = None
    timeframes: list[str] = field(default_factory=lambda: ["1h"])
    enabled: bool = True
    live: bool = False
    metadata: dict = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        symbol: str,
        category: str | None = None,
        exchange: str | None = None,
        timeframes: list[str] | None = None,
        enabled: bool = True,
        live: bool = False,
        metadata: dict | None = None,
        base: str | None = None,
        quote: str | None = None,
        check_exchange: bool = False,
    ) -> "SymbolInfo":
        """A validated symbol. ``check_exchange``: an exchange given for a crypto symbol must be a ccxt id (the
        collector and the REST source use it; stock and forex symbols keep their exchange names: NASDAQ, NYSE,
        fx are calendars, not ccxt exchanges). What a user gives is checked (`tp symbols add`, `tp ingest`);
        a row already stored is taken as it is."""
        symbol = validate_symbol(symbol)
        category = category or infer_category(symbol)
        if category not in CATEGORIES:
            raise InvalidInput(
                f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}",
                field="category",
            )
        tfs = sorted(
            {parse_timeframe(t, "timeframes") for t in (timeframes or ["1h"])},
            key=TIMEFRAMES.__getitem__,
        )
        if exchange is not None and not isinstance(exchange, str):
            raise InvalidInput(f"invalid exchange {exchange!r}: give its name as text", field="exchange")
        if exchange is None:
            exchange = {"crypto": "binance", "forex": "fx", "stock": "NYSE"}[category]
        elif check_exchange and category == "crypto":
            from ..live.collector import check_exchange as ccxt_id

            exchange = ccxt_id(exchange)
        if exchange is not None and not re.match(r"^[A-Za-z0-9_.\-]{1,32}$", exchange):
            raise InvalidInput(f"invalid exchange {exchange!r}", field="exchange")
        b, q = split_pair(symbol, category)
        return cls(
            symbol=symbol,
            category=category,
            exchange=exchange,
            base=base or b,
            quote=quote or q,
            timeframes=tfs,
            enabled=enabled,
            live=live,
            metadata=metadata or {},
        )

    @property
    def base_timeframe(self) -> str:
        """The finest listed timeframe: the one fetched from the source."""
        return finest(self.timeframes)

    def resample_source(self, timeframe: str) -> str | None:
        """The listed timeframe ``timeframe`` is resampled from (the coarsest listed one below it that
        divides it), or None when it is not derived (the base timeframe, ``1w``, or not listed)."""
        tf_s = TIMEFRAMES[timeframe]
        if timeframe not in self.timeframes or timeframe not in RESAMPLED:
            return None
        lower = [t for t in self.timeframes if TIMEFRAMES[t] < tf_s and tf_s % TIMEFRAMES[t] == 0]
        return max(lower, key=TIMEFRAMES.__getitem__) if lower else None

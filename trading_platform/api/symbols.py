"""Managed symbols: list, add, update, remove (``tp symbols``)."""

from __future__ import annotations

import json
import math

from ..errors import InvalidInput
from ._context import instance as _inst
from ._context import store_or_open


def symbol_row(s) -> dict:
    return {"symbol": s.symbol, "category": s.category, "exchange": s.exchange, "base": s.base,
            "quote": s.quote, "timeframes": s.timeframes, "enabled": s.enabled, "live": s.live,
            "metadata": s.metadata}


def parse_metadata(v) -> dict | None:
    """A JSON object (text or dict), or None."""
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v, parse_constant=_refuse_constant)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"--metadata is not valid JSON ({e.msg} at character {e.pos}): {v!r}",
                               field="metadata") from None
        except RecursionError:
            raise InvalidInput("--metadata is nested too deeply", field="metadata") from None
    if not isinstance(v, dict):
        raise InvalidInput("--metadata must be a JSON object", field="metadata")
    try:
        _check_storable(v, "--metadata")
    except RecursionError:
        raise InvalidInput("--metadata is nested too deeply", field="metadata") from None
    return v


def _refuse_constant(name: str):
    # Python's json reads NaN, Infinity and -Infinity; JSON (and PostgreSQL's jsonb) has no such values
    raise InvalidInput(f"--metadata holds {name}, which is not JSON (jsonb stores no NaN or infinity): give a number "
                       "or null", field="metadata")


def _check_storable(v, where: str) -> None:
    """What jsonb refuses, named: a float that is not finite (1e999 reads as infinity), a NUL character (\\u0000)
    or a lone surrogate (\\ud800) in a key or a string, at any depth."""
    if isinstance(v, float) and not math.isfinite(v):
        raise InvalidInput(f"{where} is {v!r}, which JSON cannot hold (jsonb stores no NaN or infinity): "
                           "give a finite number or null", field="metadata")
    if isinstance(v, str):
        _check_text(v, where)
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{where} has the key {k!r}: JSON object keys are text",
                                   field="metadata")
            _check_text(k, f"a key of {where}")
            _check_storable(x, f"{where}[{k!r}]")
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_storable(x, f"{where}[{i}]")


def _check_text(t: str, where: str) -> None:
    if "\0" in t:
        raise InvalidInput(f"{where} holds a NUL character (\\u0000), which PostgreSQL text cannot store",
                           field="metadata")
    try:
        t.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where} holds a lone surrogate (\\ud800 to \\udfff without its pair), "
                           "which is not a character", field="metadata") from None


def parse_timeframes(v) -> list[str] | None:
    """Comma-separated text or a list of timeframes, or None."""
    if v is None:
        return None
    tfs = [str(t).strip() for t in (v.split(",") if isinstance(v, str) else v) if str(t).strip()]
    if not tfs:
        raise InvalidInput(f"--timeframes lists no timeframe ({v!r}); give e.g. 5m,1h,1d", field="timeframes")
    return tfs


def list_symbols(*, enabled_only: bool = False, store=None) -> list[dict]:
    with store_or_open(store) as s:
        return [symbol_row(i) for i in s.list_symbols(enabled_only)]


def add_symbol(symbol: str, *, category: str | None = None, exchange: str | None = None, timeframes=None,
               enabled: bool = True, live: bool = False, metadata=None, store=None, instance=None) -> dict:
    from ..symbols import Symbols

    meta, tfs = parse_metadata(metadata), parse_timeframes(timeframes)
    with store_or_open(store) as s:
        info = Symbols(s, _inst(instance)).add(symbol, category=category, exchange=exchange, timeframes=tfs,
                                               enabled=enabled, live=live, metadata=meta, check_exchange=True)
        return symbol_row(info)


def update_symbol(symbol: str, *, category: str | None = None, exchange: str | None = None, timeframes=None,
                  enabled: bool | None = None, live: bool | None = None, metadata=None, store=None,
                  instance=None) -> dict:
    from ..symbols import Symbols

    meta, tfs = parse_metadata(metadata), parse_timeframes(timeframes)
    with store_or_open(store) as s:
        if exchange is not None:
            current = s.get_symbol(symbol)
            if (category or (current.category if current else None)) == "crypto":
                exchange = _ccxt_exchange(exchange)
        info = Symbols(s, _inst(instance)).update(symbol, category=category, exchange=exchange,
                                                  timeframes=tfs, enabled=enabled, live=live, metadata=meta)
        return symbol_row(info)


def _ccxt_exchange(exchange: str) -> str:
    """A crypto symbol's exchange is a ccxt id (the collector and the REST source use it); stock and forex
    symbols keep their exchange names (NASDAQ, NYSE, fx: calendars, not ccxt exchanges)."""
    from ..live.collector import check_exchange

    return check_exchange(exchange)


def remove_symbol(symbol: str, *, purge: bool = False, store=None, instance=None) -> dict:
    from ..symbols import Symbols

    with store_or_open(store) as s:
        n = Symbols(s, _inst(instance)).remove(symbol, purge=purge)
    return {"removed": symbol, "candles_deleted": n}

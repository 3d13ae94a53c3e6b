"""The record of model outputs: predictions, forecasts and patterns, as they are now or as the live system
knew them at a time (the ``tp_<table>_for_candles`` and ``tp_<table>_known_at`` reads)."""

from __future__ import annotations

from datetime import datetime

from ..errors import InvalidInput
from ._context import store_or_open
from .market import check_limit, parse_time

TABLES = ("predictions", "forecasts", "patterns")
MAX_ROWS = 100_000


def _list(v, field: str) -> list[str] | None:
    if v is None:
        return None
    items = [str(x).strip() for x in (v.split(",") if isinstance(v, str) else v) if str(x).strip()]
    if not items:
        raise InvalidInput(f"{field} lists nothing ({v!r})", field=field)
    return items


def _json(v):
    return v.isoformat() if isinstance(v, datetime) else v


def get_outputs(table: str, *, symbols=None, timeframes=None, models=None, start=None, end=None,
                as_of=None, latest: bool = False, versions: dict | None = None, limit: int = 1000,
                store=None) -> dict:
    """Rows of ``table`` (predictions, forecasts or patterns), newest ``limit`` first.

    Without ``as_of``: per candle, the current output of today's champions (or the pinned ``versions``,
    ``{"name": "version"}``), with ``in_sample`` marking rows inside a version's training window. With
    ``as_of``: what the live system knew then (the champion of that time, its rows known by then);
    ``latest`` keeps each series' newest time only."""
    from ..core.symbols import validate_symbol
    from ..core.timeframes import parse_timeframe
    from ..store import outputs as so
    from ..store.migrations import _OUTPUT_TABLES

    if table not in TABLES:
        raise InvalidInput(f"unknown output table {table!r}; one of {', '.join(TABLES)}", field="table")
    syms = [validate_symbol(s) for s in _list(symbols, "symbols") or []] or None
    tfs = [parse_timeframe(t, "timeframes") for t in _list(timeframes, "timeframes") or []] or None
    mods = _list(models, "models")
    start, end, as_of = parse_time(start, "start"), parse_time(end, "end"), parse_time(as_of, "as_of")
    check_limit(limit, MAX_ROWS)
    if latest and as_of is None:
        raise InvalidInput("latest keeps each series' newest row as known at a time: give as_of too", field="latest")
    if versions is not None and (not isinstance(versions, dict) or not versions):
        raise InvalidInput('versions must be a JSON object {"model name": "version"}', field="versions")
    if as_of is not None and versions:
        raise InvalidInput("as_of reads the champions of that time: give versions or as_of, not both",
                           field="versions")
    with store_or_open(store) as s:
        if as_of is not None:
            rows = so.known_at(s.conn, table, as_of, symbols=syms, timeframes=tfs, models=mods, start=start,
                               end=end, latest=latest, limit=limit + 1)
        else:
            rows = so.for_candles(s.conn, table, symbols=syms, timeframes=tfs, models=mods, start=start, end=end,
                                  versions={k: str(v) for k, v in versions.items()} if versions else None,
                                  limit=limit + 1)
    names = [c for c, _ in _OUTPUT_TABLES[table][1]]  # newest first (the store orders and pages)
    return {"table": table, "rows": [{k: _json(v) for k, v in zip(names, r)} for r in rows[:limit]],
            "truncated": len(rows) > limit}

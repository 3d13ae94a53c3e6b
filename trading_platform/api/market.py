"""The market store and its candles: the database URL, migrations, file ingestion, reading candles."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

from ..errors import InvalidInput
from ._context import instance as _inst
from ._context import store_or_open

log = logging.getLogger("tp")

MAX_CANDLES = 100_000  # one read's ceiling (a page for the MCP tool and the read API)


def database_url(*, show_password: bool = False) -> dict:
    """A URI psql accepts (password as *** unless ``show_password``). Embedded, opening the store first
    applies pending migrations, so the URL leads to the schema; an unreachable store is only warned of."""
    from ..errors import StoreUnavailable
    from ..store.db import redact_dsn
    from ..store.runtime import database_url as dsn_of
    from ._context import open_store

    dsn = dsn_of()
    try:
        with open_store(dsn):
            pass
    except StoreUnavailable as e:  # the URL is still the answer; say why it may not work yet
        log.warning("%s", e.message)
    return {"url": dsn if show_password else redact_dsn(dsn)}


def migrate(*, wait_s: float = 0.0) -> dict:
    """The deploy step: apply pending migrations (under an advisory lock: two at once are safe, the second
    finds nothing to do). ``wait_s`` retries an unreachable server for that long (a container starting)."""
    from ..errors import StoreUnavailable
    from ..store.db import connect
    from ..store.migrations import current_version
    from ..store.runtime import database_url as dsn_of

    from . import _context

    import math

    from ..errors import InvalidInput

    if wait_s is not None and not (isinstance(wait_s, (int, float)) and math.isfinite(wait_s) and wait_s >= 0):
        raise InvalidInput(f"--wait must be a number of seconds, 0 or more, got {wait_s}", field="wait")
    dsn = _context._DSN = dsn_of()
    deadline = time.monotonic() + (wait_s or 0.0)
    while True:
        try:
            store = connect(dsn, run_migrations=False, check_schema=False)
            break
        except StoreUnavailable as e:
            if time.monotonic() >= deadline:
                raise
            log.warning("%s; retrying", e.message)
            time.sleep(2)
    with store:
        from ..store.roles import set_passwords

        applied = store.migrate()
        roles = set_passwords(store.conn)
        return {"schema_version": current_version(store.conn), "applied": applied, "live_writer": roles["live_writer"],
                "roles": roles}


def ingest_file(path: str, symbol: str, timeframe: str, *, category: str | None = None,
                exchange: str | None = None, store=None, instance=None) -> dict:
    """Load one CSV/Parquet file of candles: the counts (written, updated, quarantined, ...), recorded as a
    materialization of the market partitions it touched."""
    from ..ingest import ingest_file as load

    with store_or_open(store) as s:
        result, recorded = load(s, path, symbol, timeframe, category=category, exchange=exchange,
                                instance=_inst(instance))
    log.info("duplicates collapsed: %d; recorded in Dagster: %s", result.duplicates_collapsed, recorded)
    return result.counts()


def parse_time(value, field: str) -> datetime | None:
    """A date or time (ISO text, or a date or datetime; naive means UTC) as an aware UTC datetime, or None.
    Numbers are refused: an epoch in unknown units would be read silently wrong."""
    from datetime import date

    from ..core.timeframes import parse_time as parse

    if value is not None and not isinstance(value, (str, date)):
        raise InvalidInput(f"--{field} {value!r} is not a date or time (ISO text such as 2026-01-31T12:00Z)",
                           field=field)
    return parse(value, field, f"--{field}")


def check_limit(limit, most: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInput(f"limit must be an integer from 1 to {most}, got {limit!r}", field="limit")
    return limit


def require_series(store, symbol: str, tf: str):
    """The symbol's info when it lists timeframe ``tf``; else the error naming what it lists."""
    info = store.require_symbol(symbol)
    if tf not in info.timeframes:
        raise InvalidInput(f"{symbol} does not list timeframe {tf} (it lists {', '.join(info.timeframes)})",
                           field="timeframe")
    return info


def get_candles(symbol: str, timeframe: str, *, start=None, end=None, limit: int = 1000, store=None) -> dict:
    """Stored candles of one series with start <= ts < end: the newest ``limit`` of them, oldest first."""
    import numpy as np

    from ..core.symbols import validate_symbol
    from ..core.timeframes import parse_timeframe

    symbol, tf = validate_symbol(symbol), parse_timeframe(timeframe)
    start, end = parse_time(start, "start"), parse_time(end, "end")
    check_limit(limit, MAX_CANDLES)
    if start is not None and end is not None and end <= start:
        raise InvalidInput(f"end ({end.isoformat()}) is not after start ({start.isoformat()})", field="end")
    with store_or_open(store) as s:
        require_series(s, symbol, tf)
        # the newest limit + 1 before end (one index range scan, whatever the range), then those from start on
        until = end - timedelta(microseconds=1) if end is not None else datetime(9999, 1, 1, tzinfo=timezone.utc)
        c = s.read_candles_tail(symbol, tf, until, limit + 1)
    first = 0 if start is None else int(np.searchsorted(c.ts_us, int(start.timestamp() * 1_000_000)))
    n = len(c) - first
    sl = slice(max(first, len(c) - limit), len(c))
    rows = [{"ts": datetime.fromtimestamp(int(t) / 1e6, tz=timezone.utc).isoformat(), "open": float(o),
             "high": float(h), "low": float(lo), "close": float(cl), "volume": float(v)}
            for t, o, h, lo, cl, v in zip(c.ts_us[sl], c.open[sl], c.high[sl], c.low[sl], c.close[sl],
                                          c.volume[sl])]
    return {"symbol": symbol, "timeframe": tf, "candles": rows, "truncated": n > limit}

"""The live path: the outbox's backlog and latency, and a feeder of closed candles (``tp live``)."""

from __future__ import annotations

import os

from ._context import store_or_open
from .market import parse_time


def status(*, store=None) -> dict:
    """Backlog (events not yet predicted), lag of the oldest, batches in flight and retried, the last error,
    and the insert-to-prediction latency of the last hour."""
    from ..store.outbox import status as outbox_status

    with store_or_open(store) as s:
        return outbox_status(s.conn)


def feed(symbols, rate: float, *, duration: float | None = None, count: int | None = None,
         timeframe: str | None = None, file: str | None = None, source: str | None = None, start=None,
         log=None, store=None) -> dict:
    """Append closed candles of live ``symbols`` (a list or comma-separated text) at ``rate`` candles per
    second in total through the live write path: synthetic (continuing each series) or replayed from
    ``file``."""
    from ..live.feed import feed as run

    names = [x.strip() for x in (symbols.split(",") if isinstance(symbols, str) else symbols or []) if x.strip()]
    start = parse_time(start, "start")
    with store_or_open(store) as s:
        out = run(s, names, rate, duration, timeframe=timeframe,
                  source_spec=source or os.environ.get("TP_SOURCE", "synthetic:7"), file=file, start=start,
                  count=count, log=log)
    return out.as_dict()

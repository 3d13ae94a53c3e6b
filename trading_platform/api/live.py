"""The live path: the outbox's backlog and latency, and a feeder of closed candles (``tp live``)."""

from __future__ import annotations

import os

from ..errors import InvalidInput
from ._context import store_or_open
from .market import parse_time


def status(*, store=None) -> dict:
    """Backlog (events not yet predicted), lag of the oldest, batches in flight and retried, the last error,
    and the insert-to-prediction latency of the last hour."""
    from ..store.collector import read_status
    from ..store.outbox import status as outbox_status

    with store_or_open(store) as s:
        out = outbox_status(s.conn)
        out["collector"] = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                            for r in read_status(s.conn)]
        return out


def collect(*, once: bool = False, exchanges=None, duration: float | None = None, dsn: str | None = None,
            clock=None, exchange_factory=None) -> dict:
    """Run the exchange collector (``live/collector.py``): until SIGINT/SIGTERM (or ``duration`` seconds), or,
    with ``once``, fetch and write what is due for every live series over REST and return. The summary counts
    the series, the candles written and the ones skipped with their reason. ``TP_COLLECTOR_DATABASE_URL``
    (the ``live_writer`` role, say) overrides the platform's database for it."""
    import asyncio
    import math
    import signal

    from ..live.collector import Collector
    from ..store.runtime import database_url

    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise InvalidInput(f"--duration must be a positive number of seconds, got {duration}", field="duration")
    names = [x.strip() for x in (exchanges.split(",") if isinstance(exchanges, str) else exchanges or [])
             if x.strip()]
    c = Collector(dsn or os.environ.get("TP_COLLECTOR_DATABASE_URL") or database_url(), clock=clock,
                  exchange_factory=exchange_factory, exchanges=names or None)

    async def main():
        if once:
            return await c.once()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, c.stop)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread
        return await c.run(duration)

    return asyncio.run(main())


def feed(symbols, rate: float, *, duration: float | None = None, count: int | None = None,
         timeframe: str | None = None, file: str | None = None, source: str | None = None, start=None,
         log=None, store=None, replay=None) -> dict:
    """Append closed candles of live ``symbols`` (a list or comma-separated text) at ``rate`` candles per
    second in total through the live write path: synthetic (continuing each series) or replayed from
    ``file``."""
    from ..live.feed import feed as run

    names = [x.strip() for x in (symbols.split(",") if isinstance(symbols, str) else symbols or []) if x.strip()]
    start = parse_time(start, "start")
    with store_or_open(store) as s:
        out = run(s, names, rate, duration, timeframe=timeframe,
                  source_spec=source or os.environ.get("TP_SOURCE", "synthetic:7"), file=file, start=start,
                  count=count, log=log, replay_days=replay)
    return out.as_dict()

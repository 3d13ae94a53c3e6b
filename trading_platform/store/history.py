"""The market's first month (``history_start``, migration 14): where the month partitions start.

Light on purpose (no pandas or numpy): the code location reads it at every load (``assets/partitions.py``),
over its own short-timeout connection. The writes that move the month earlier are part of the candle write
path (``MarketStore._lower_history_start``, ``MarketStore.extend_history``).
"""

from __future__ import annotations


def history_start(conn) -> str | None:
    """'YYYY-MM-01' of the market's first month: the oldest month stored or asked for by a backfill; None while
    there is no history. ``tp_history_start()`` reads the one-row table (its primary key), or, with no month
    recorded yet, probes the oldest candle of each symbol and listed timeframe (the ``ohlcv`` primary key)."""
    month = conn.execute("SELECT tp_history_start()").fetchone()[0]
    return month.isoformat() if month is not None else None

"""SQL of the exchange collector (`tp live collect`): the series it collects, the newest stored candle of
each, closed candles through the live write path, and ``collector_status``.

The collector is asyncio; it uses psycopg's async connection (the driver the rest of the platform uses:
one DSN syntax, one set of types and errors, and no second driver to install). Every statement here works
for the ``live_writer`` role: it calls ``tp_live_candle()`` and ``tp_live_last_candle()``, reads
``symbols`` and keeps ``collector_status``, and touches no other table.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from .metrics import count_ingest_async

US = 1_000_000

LIVE_SERIES_SQL = (
    "SELECT symbol, category, exchange, timeframes FROM symbols WHERE enabled AND live ORDER BY symbol")

_STATUS_COLUMNS = ("symbol", "timeframe", "state", "connected", "last_frame_at", "last_candle_ts", "last_written_at",
                   "lag_s", "frames", "candles_written", "reconnects", "gap_candles", "last_error", "last_error_at")


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


async def live_symbols(conn) -> list[tuple[str, str, str, list[str]]]:
    """(symbol, category, exchange, timeframes) of every enabled live symbol."""
    cur = await conn.execute(LIVE_SERIES_SQL)
    return [(r[0], r[1], r[2], list(r[3])) for r in await cur.fetchall()]


async def last_candle_ms(conn, symbol: str, timeframe: str) -> int | None:
    """Open time (ms) of the newest stored candle of the series, or None."""
    cur = await conn.execute("SELECT tp_live_last_candle(%s, %s)", (symbol, timeframe))
    row = await cur.fetchone()
    return int(row[0].timestamp() * 1000) if row and row[0] is not None else None


async def write_closed(conn, rows: list[tuple[str, str, list]], source: str) -> list[tuple[str, int | None]]:
    """Closed candles ``(symbol, timeframe, [ts_ms, o, h, l, c, v])`` through ``tp_live_candle()``, in one
    transaction (the candle, its outbox event and the NOTIFY commit together); (outcome, event id) of each."""
    out = []
    async with conn.transaction():
        for symbol, tf, c in rows:
            cur = await conn.execute(
                "SELECT outcome, event_id FROM tp_live_candle(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (symbol, tf, _ts(int(c[0])), *(float(x) if x is not None else None for x in c[1:6]), source))
            r = await cur.fetchone()
            out.append((r[0], r[1]))
        await count_ingest_async(conn, Counter((source, o) for o, _ in out))
    return out


async def write_batch(conn, rows: list[tuple[str, str, list, str]]) -> list[tuple[str, int | None]]:
    """Closed candles ``(symbol, timeframe, [ts_ms, o, h, l, c, v], source)`` of many series through
    ``tp_live_candle()`` in one statement and one transaction (the candles of one bucket end commit together,
    each with its event); (outcome, event id) of each, in order."""
    cols = list(zip(*[(sym, tf, _ts(int(c[0])), *(None if x is None else float(x) for x in c[1:6]), src)
                      for sym, tf, c, src in rows]))  # a missing value is quarantined by the store, with its reason
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT r.outcome, r.event_id FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::float8[], "
            "%s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::text[]) WITH ORDINALITY "
            "AS u(s, tf, t, o, h, l, c, v, src, i) "
            "CROSS JOIN LATERAL tp_live_candle(u.s, u.tf, u.t, u.o, u.h, u.l, u.c, u.v, u.src) r ORDER BY u.i",
            [list(c) for c in cols])
        out = [(r[0], r[1]) for r in await cur.fetchall()]
        await count_ingest_async(conn, Counter((src, o) for (_, _, _, src), (o, _) in zip(rows, out)))
    return out


async def save_status(conn, rows: list[dict]) -> None:
    """Upsert status rows (keys: exchange, kind, name and any of the status columns)."""
    if not rows:
        return
    async with conn.transaction():
        for r in rows:
            cols = [c for c in _STATUS_COLUMNS if c in r]
            values = [r["exchange"], r["kind"], r["name"], *(r[c] for c in cols)]
            names = ", ".join(("exchange", "kind", "name", *cols, "updated_at"))
            marks = ", ".join(["%s"] * len(values) + ["now()"])
            sets = ", ".join([f"{c} = EXCLUDED.{c}" for c in cols] + ["updated_at = now()"])
            await conn.execute(f"INSERT INTO collector_status ({names}) VALUES ({marks}) "
                               f"ON CONFLICT (exchange, kind, name) DO UPDATE SET {sets}",
                               values, prepare=False)


async def delete_status(conn, keys: list[tuple[str, str, str]]) -> None:
    """Remove the status rows ``(exchange, kind, name)`` (series no longer collected)."""
    for exchange, kind, name in keys:
        await conn.execute("DELETE FROM collector_status WHERE exchange = %s AND kind = %s AND name = %s",
                           (exchange, kind, name))


async def clear_status(conn, exchanges: list[str] | None = None) -> None:
    """Forget the rows of a previous run (of these exchanges; None: all), before a new run writes its own."""
    if exchanges is None:
        await conn.execute("DELETE FROM collector_status")
    else:
        await conn.execute("DELETE FROM collector_status WHERE exchange = ANY(%s)", (list(exchanges),))


def read_status(conn) -> list[dict]:
    """Every row of ``collector_status`` (a synchronous connection: `tp live status`), connections first."""
    if conn.execute("SELECT to_regclass('collector_status') IS NULL").fetchone()[0]:
        return []
    cur = conn.execute("SELECT exchange, kind, name, " + ", ".join(_STATUS_COLUMNS) + ", updated_at "
                       "FROM collector_status ORDER BY exchange, kind, name")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def set_live_writer_password(conn) -> str:
    """``TP_LIVE_WRITER_PASSWORD`` set: ``live_writer`` may log in with it; unset: left as it is (``store/roles.py``
    for every role)."""
    from .roles import set_password

    return set_password(conn, "live_writer")

"""Reads and deletes of the ``features`` table outside the feature pipeline's own write path
(``features/storage.py``).

Every query names the primary key (symbol, timeframe, ts) as its index. A query over all of a symbol's
timeframes walks them one by one (``_TIMEFRAMES``: a skip scan of the key) rather than scanning every row of the
symbol: no second index on a table this wide and this written.
"""

from __future__ import annotations

from datetime import datetime

# the symbol's stored timeframes, each found by one probe of the primary key (PostgreSQL 16 has no skip scan)
_TIMEFRAMES = (
    "WITH RECURSIVE tf AS ("
    " SELECT min(timeframe) AS t FROM features WHERE symbol = %(s)s"
    " UNION ALL"
    " SELECT (SELECT min(f.timeframe) FROM features f WHERE f.symbol = %(s)s AND f.timeframe > tf.t)"
    " FROM tf WHERE tf.t IS NOT NULL) ")


def last_feature_ts(conn, symbol: str, timeframe: str | None = None) -> datetime | None:
    """The newest stored feature row's time of the series (``timeframe``) or of any of the symbol's timeframes;
    None when there is none. One backward probe of the primary key per timeframe."""
    if timeframe is not None:
        return conn.execute("SELECT max(ts) FROM features WHERE symbol = %s AND timeframe = %s",
                            (symbol, timeframe)).fetchone()[0]
    # max(ts) over the symbol alone reads every index entry of the symbol (~70 ms for 3 years of 5m..1d)
    return conn.execute(
        _TIMEFRAMES + "SELECT max((SELECT max(f.ts) FROM features f WHERE f.symbol = %(s)s AND f.timeframe = tf.t)) "
        "FROM tf WHERE tf.t IS NOT NULL", {"s": symbol}).fetchone()[0]


def has_features_from(conn, symbol: str, timeframe: str, ts: datetime) -> bool:
    """Whether the series has a stored feature row at or after ``ts``."""
    return conn.execute("SELECT 1 FROM features WHERE symbol = %s AND timeframe = %s AND ts >= %s LIMIT 1",
                        (symbol, timeframe, ts)).fetchone() is not None


def delete_features_from(conn, symbol: str, timeframe: str, ts: datetime) -> None:
    """Drop the series' feature rows from ``ts`` on (they are recomputed from the state before it)."""
    conn.execute("DELETE FROM features WHERE symbol = %s AND timeframe = %s AND ts >= %s", (symbol, timeframe, ts))


def count_infinite(conn, symbol: str, start: datetime, end: datetime) -> int:
    """Feature rows of the symbol (every timeframe) in ``[start, end)`` with an infinite value in any float
    column. The primary key's symbol prefix with ts checked inside the index: once per features run, over the
    months it has just written."""
    cols = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'features' "
        "AND data_type = 'double precision'").fetchall()]
    cond = " OR ".join(f'abs("{c}") = \'Infinity\'::float8' for c in cols) or "false"
    return conn.execute(f"SELECT count(*) FROM features WHERE symbol = %s AND ts >= %s AND ts < %s AND ({cond})",
                        (symbol, start, end)).fetchone()[0]


def count_rows(conn, symbols: list[str]) -> int:
    """Stored feature rows of the symbols (a report: every row is counted)."""
    return conn.execute("SELECT count(*) FROM features WHERE symbol = ANY(%s)", (symbols,)).fetchone()[0]

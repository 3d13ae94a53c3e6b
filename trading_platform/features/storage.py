"""Features in the market store: table ``features``, one row per candle.

A partition (symbol, timeframe, time range) is replaced as a whole in one
transaction (delete + COPY), so re-materializing is idempotent. Feature columns
are added to the table as specs name them (``double precision``; ``htf_ts`` is a
timestamp); names are checked before they reach SQL.
"""

from __future__ import annotations

import io
import re
from datetime import datetime

import polars as pl

from ..errors import InvalidInput

KEYS = ["symbol", "timeframe", "ts"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _column_types(df: pl.DataFrame) -> dict[str, str]:
    out = {}
    for name, dtype in df.schema.items():
        if name in KEYS:
            continue
        if not _NAME.match(name):
            raise InvalidInput(f"feature name {name!r} is not a valid column name", field="features")
        out[name] = "timestamptz" if dtype.is_temporal() else "double precision"
    return out


def ensure_columns(conn, df: pl.DataFrame) -> list[str]:
    types = _column_types(df)
    existing = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'features'").fetchall()}
    for name, typ in types.items():
        if name not in existing:  # as the schema's owner (the platform's role may not alter tables)
            conn.execute("SELECT tp_features_add_column(%s, %s)", (name, typ))
    return list(types)


def write_features(conn, df: pl.DataFrame, symbol: str, timeframe: str, start: datetime, end: datetime) -> int:
    """Replace the stored features of one series for start <= ts < end with df's rows in that range."""
    from psycopg import sql

    part = df.filter((pl.col("ts") >= start) & (pl.col("ts") < end)) if len(df.columns) else df
    with conn.transaction():
        cols = ensure_columns(conn, part) if len(part) else []
        conn.execute("DELETE FROM features WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s",
                     (symbol, timeframe, start, end))
        if len(part):
            buf = io.BytesIO()
            part.select(KEYS + cols).write_csv(buf, include_header=False, null_value="",
                                               datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z")
            stmt = sql.SQL("COPY features ({}) FROM STDIN (FORMAT csv, NULL '')").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in KEYS + cols))
            with conn.cursor() as cur, cur.copy(stmt) as cp:
                cp.write(buf.getvalue())
    return len(part)


def read_features(conn, symbol: str, timeframe: str, start: datetime | None = None,
                  end: datetime | None = None, *, last: int | None = None) -> pl.DataFrame:
    """Stored features of one series, sorted by ts (``last``: only the newest N rows)."""
    from psycopg import sql

    types = dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'features' "
        "ORDER BY ordinal_position").fetchall())
    select = []
    for c, t in types.items():
        if t.startswith("timestamp"):  # as exact epoch microseconds: no text parsing of time zones
            select.append(sql.SQL("(extract(epoch FROM {c}) * 1000000)::bigint AS {c}").format(c=sql.Identifier(c)))
        else:
            select.append(sql.Identifier(c))
    where = [sql.SQL("symbol = {}").format(sql.Literal(symbol)),
             sql.SQL("timeframe = {}").format(sql.Literal(timeframe))]
    if start is not None:
        where.append(sql.SQL("ts >= {}").format(sql.Literal(start)))
    if end is not None:
        where.append(sql.SQL("ts < {}").format(sql.Literal(end)))
    # ORDER BY the table's ts (an index scan), not the output column of the same name (a sort of the series)
    inner = sql.SQL("SELECT {} FROM features WHERE {} ORDER BY features.ts {}").format(
        sql.SQL(", ").join(select), sql.SQL(" AND ").join(where),
        sql.SQL("DESC LIMIT {}").format(sql.Literal(last)) if last else sql.SQL(""))
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(inner)) as cp:
        for chunk in cp:
            buf += chunk
    schema = {c: (pl.String if t == "text" else pl.Int64 if t.startswith("timestamp") else pl.Float64)
              for c, t in types.items()}
    df = pl.read_csv(bytes(buf), schema_overrides=schema) if buf else pl.DataFrame(schema=schema)
    df = df.with_columns([pl.col(c).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
                          for c, t in types.items() if t.startswith("timestamp")])
    return df.sort("ts")

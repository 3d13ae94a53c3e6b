"""An existing PostgreSQL/TimescaleDB table of candles, read-only.

For example a table ``ohlcv_1h (symbol, ts, open, high, low, close, volume)``
kept by another system. Table and column names are quoted identifiers, never
spliced text; the session is read-only.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from ..core.symbols import SymbolInfo
from ..errors import InvalidInput, SourceUnavailable
from .base import CandleSource


class PostgresTableSource(CandleSource):
    def __init__(self, dsn: str, table: str = "ohlcv_1h", *, symbol_column: str = "symbol",
                 time_column: str = "ts", timeframe_column: str | None = None):
        for field, name in (("table", table), ("symbol_column", symbol_column), ("time_column", time_column)):
            if not name or not all(part.replace("_", "").isalnum() for part in name.split(".")):
                raise InvalidInput(f"invalid {field} {name!r}", field=field)
        self.dsn = dsn
        self.table = table
        self.symbol_column = symbol_column
        self.time_column = time_column
        self.timeframe_column = timeframe_column
        self.name = f"postgres:{table}"

    def fetch(self, info: SymbolInfo, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        import psycopg
        from psycopg import sql

        from ..store.db import describe_dsn

        where = [
            sql.SQL("{} = %(symbol)s").format(sql.Identifier(self.symbol_column)),
            sql.SQL("{} >= %(start)s AND {} < %(end)s").format(
                sql.Identifier(self.time_column), sql.Identifier(self.time_column)),
        ]
        if self.timeframe_column:
            where.append(sql.SQL("{} = %(tf)s").format(sql.Identifier(self.timeframe_column)))
        q = sql.SQL("SELECT {} AS ts, open, high, low, close, volume FROM {} WHERE {} ORDER BY 1").format(
            sql.Identifier(self.time_column),
            sql.Identifier(*self.table.split(".")),
            sql.SQL(" AND ").join(where),
        )
        try:
            with psycopg.connect(self.dsn, connect_timeout=10,
                                 options="-c default_transaction_read_only=on") as conn:
                rows = conn.execute(q, {"symbol": info.symbol, "start": start, "end": end,
                                        "tf": timeframe}).fetchall()
        except psycopg.OperationalError as e:
            raise SourceUnavailable(f"cannot reach source table at {describe_dsn(self.dsn)}: "
                                    f"{str(e).splitlines()[0] if str(e) else e}", field="source_dsn") from None
        except psycopg.errors.UndefinedTable:
            raise InvalidInput(f"source table {self.table!r} does not exist", field="table") from None
        except psycopg.errors.UndefinedColumn as e:
            raise InvalidInput(f"source table {self.table!r}: {str(e).splitlines()[0]}", field="table") from None
        return pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])

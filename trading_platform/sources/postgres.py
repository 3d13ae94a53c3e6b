"""An existing PostgreSQL/TimescaleDB table of candles, read-only.

The table holds ``(symbol, ts, open, high, low, close, volume)`` kept by another
system, and the requested timeframe is honoured in one of three ways:

- a table-name template: ``ohlcv_{timeframe}`` (the default) reads ``ohlcv_5m``
  for 5m candles and ``ohlcv_1h`` for hourly ones;
- a timeframe column: ``candles?timeframe_column=tf`` reads ``candles`` where
  ``tf`` is the timeframe (its canonical name: ``5m``, ``1h``, ``1d``...);
- a single-timeframe table named for it: ``ohlcv_1h`` serves 1h only, and asking
  it for another timeframe is an error naming both.

Table and column names are quoted identifiers, never spliced text; the session
is read-only.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from ..core.symbols import SymbolInfo
from ..core.timeframes import TIMEFRAMES, parse_timeframe
from ..errors import InvalidInput, SourceUnavailable
from .base import CandleSource

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_TABLE = "ohlcv_{timeframe}"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _check_ident(name: str, field: str) -> str:
    if not name or not _IDENT.match(name.replace("{timeframe}", "tf")):
        raise InvalidInput(f"invalid {field} {name!r}", field=field)
    return name


def table_timeframe(table: str) -> str | None:
    """The timeframe a single-timeframe table is named for (``ohlcv_1h`` -> ``1h``), or None."""
    suffix = table.rsplit(".", 1)[-1].rsplit("_", 1)
    if len(suffix) == 2 and suffix[1] in TIMEFRAMES:
        return suffix[1]
    return None


def parse_table_arg(arg: str | None, field: str = "source") -> tuple[str, str | None]:
    """(table or template, timeframe column) of a ``postgres:`` spec argument, checked."""
    table, _, query = (arg or DEFAULT_TABLE).partition("?")
    column = None
    if query:
        key, _, value = query.partition("=")
        if key != "timeframe_column" or not value:
            raise InvalidInput(f"{field}: postgres source option {query!r} is not timeframe_column=COLUMN",
                               field=field)
        column = _check_ident(value, "timeframe_column")
    _check_ident(table, "table")
    if "{timeframe}" not in table and column is None and table_timeframe(table) is None:
        raise InvalidInput(
            f"{field}: postgres source table {table!r} does not say which timeframe it holds: use a template "
            f"(postgres:{table}_{{timeframe}}), a timeframe column (postgres:{table}?timeframe_column=COLUMN), "
            f"or a table named for its one timeframe (ohlcv_1h)",
            field=field,
        )
    return table, column


class PostgresTableSource(CandleSource):
    def __init__(self, dsn: str, table: str = DEFAULT_TABLE, *, symbol_column: str = "symbol",
                 time_column: str = "ts", timeframe_column: str | None = None):
        for field, name in (("symbol_column", symbol_column), ("time_column", time_column)):
            _check_ident(name, field)
        if timeframe_column is None:
            table, timeframe_column = parse_table_arg(table, field="table")
        else:
            _check_ident(table, "table")
            _check_ident(timeframe_column, "timeframe_column")
        self.dsn = dsn
        self.table = table
        self.symbol_column = symbol_column
        self.time_column = time_column
        self.timeframe_column = timeframe_column
        self.name = f"postgres:{table}" + (f"?timeframe_column={timeframe_column}" if timeframe_column else "")

    def table_for(self, timeframe: str) -> str:
        tf = parse_timeframe(timeframe)
        if "{timeframe}" in self.table:
            return self.table.replace("{timeframe}", tf)
        if self.timeframe_column is None:
            fixed = table_timeframe(self.table)
            if fixed is not None and fixed != tf:
                raise InvalidInput(
                    f"source table {self.table!r} holds {fixed} candles, not {tf}: use a template "
                    f"(ohlcv_{{timeframe}}) or a timeframe column", field="timeframe")
        return self.table

    def fetch(self, info: SymbolInfo, timeframe: str, start: datetime, end: datetime) -> "pd.DataFrame":
        import pandas as pd
        import psycopg
        from psycopg import sql

        from ..store.db import describe_dsn

        table = self.table_for(timeframe)
        where = [
            sql.SQL("{} = %(symbol)s").format(sql.Identifier(self.symbol_column)),
            sql.SQL("{} >= %(start)s AND {} < %(end)s").format(
                sql.Identifier(self.time_column), sql.Identifier(self.time_column)),
        ]
        if self.timeframe_column:
            where.append(sql.SQL("{} = %(tf)s").format(sql.Identifier(self.timeframe_column)))
        q = sql.SQL("SELECT {} AS ts, open, high, low, close, volume FROM {} WHERE {} ORDER BY 1").format(
            sql.Identifier(self.time_column),
            sql.Identifier(*table.split(".")),
            sql.SQL(" AND ").join(where),
        )
        try:
            with psycopg.connect(self.dsn, connect_timeout=10,
                                 options="-c default_transaction_read_only=on") as conn:
                rows = conn.execute(q, {"symbol": info.symbol, "start": start, "end": end,
                                        "tf": parse_timeframe(timeframe)}).fetchall()
        except psycopg.OperationalError as e:
            from ..store.db import redact_dsn

            reason = redact_dsn(str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
            raise SourceUnavailable(f"cannot reach source table at {describe_dsn(self.dsn)}: {reason}",
                                    field="source_dsn") from None
        except psycopg.errors.UndefinedTable:
            raise InvalidInput(f"source table {table!r} does not exist (for {info.symbol} {timeframe})",
                               field="table") from None
        except psycopg.errors.UndefinedColumn as e:
            raise InvalidInput(f"source table {table!r}: {str(e).splitlines()[0]}", field="table") from None
        return pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])

"""CSV and Parquet files: one file per symbol and timeframe.

Layout for the source: ``DIR/<symbol>_<timeframe>.csv`` (or ``.parquet``) with
``/`` and ``:`` in the symbol written as ``-`` and ``_`` (``BTC-USDT_1h.csv``,
``BTC-USDT_USDT_5m.parquet``, ``EURUSD=X_1d.csv``). Column names are
case-insensitive; the time may be a column or the index (a ``df.to_csv()``
export loads as it is).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..core.symbols import SymbolInfo
from ..core.timeframes import parse_timeframe
from ..errors import InvalidInput
from .base import CandleSource

if TYPE_CHECKING:
    import numpy as np


def file_stem(symbol: str, timeframe: str) -> str:
    return f"{symbol.replace('/', '-').replace(':', '_')}_{parse_timeframe(timeframe)}"


def _trailing_separator(p: Path, n_columns: int) -> bool:
    """Whether every row of a CSV has one field more than its header and that last field is empty (a comma at the
    end of each row, as some exports write)."""
    extra = pd.read_csv(p, header=None, skiprows=1, dtype=str, keep_default_na=False)
    return extra.shape[1] == n_columns + 1 and bool((extra.iloc[:, -1].str.strip() == "").all())


def read_ohlcv_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file of candles; clear errors for empty or unreadable files."""
    p = Path(path)
    if not p.exists():
        raise InvalidInput(f"file not found: {p}", field="path")
    if p.is_dir():
        raise InvalidInput(f"{p} is a directory, not a file", field="path")
    if p.stat().st_size == 0:
        raise InvalidInput(f"{p} is empty", field="path")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
            if isinstance(df.index, pd.DatetimeIndex) or df.index.name:
                df = df.reset_index()
        elif suffix in (".csv", ".txt", ".gz"):
            df = pd.read_csv(p)
            if not isinstance(df.index, pd.RangeIndex) and _trailing_separator(p, len(df.columns)):
                df = pd.read_csv(p, index_col=False)  # a comma ends every row, the last field empty: read as meant
            if not isinstance(df.index, pd.RangeIndex):
                # every row has more fields than the header: pandas made the first ones an index, shifting every
                # column by one (a date read as the open time 7, the open as the high, ...)
                raise InvalidInput(f"{p}: its rows have more fields than its header ({len(df.columns)}: "
                                   f"{', '.join(map(str, df.columns))}); a column name is missing", field="path")
        else:
            raise InvalidInput(f"{p}: unsupported file type {suffix!r} (use .csv or .parquet)", field="path")
    except InvalidInput:
        raise
    except pd.errors.EmptyDataError:
        raise InvalidInput(f"{p} is empty", field="path") from None
    except Exception as e:  # noqa: BLE001 - the reader's reason is the message
        raise InvalidInput(f"cannot read {p}: {type(e).__name__}: {e}", field="path") from None
    if len(df) == 0:
        raise InvalidInput(f"{p} has no rows after its first line (the header: is it missing?)", field="path")
    return df


class FileSource(CandleSource):
    """Each file is read and parsed once per source object (one load: an asset run builds one),
    however many months are fetched from it; a file changed on disk is read again."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.name = f"files:{self.directory}"
        self._parsed: dict[Path, tuple[tuple[int, int], pd.DataFrame, "np.ndarray"]] = {}

    def path_for(self, symbol: str, timeframe: str) -> Path:
        stem = file_stem(symbol, timeframe)
        for ext in (".parquet", ".csv"):
            p = self.directory / f"{stem}{ext}"
            if p.exists():
                return p
        raise InvalidInput(
            f"no file for {symbol} {timeframe} in {self.directory} (expected {stem}.csv or .parquet)",
            field="path",
        )

    def _read(self, path: Path):
        from ..core.candles import parse_timestamps, standardize_columns

        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._parsed.get(path)
        if cached is None or cached[0] != stamp:
            df = standardize_columns(read_ohlcv_file(path), str(self.directory))
            cached = (stamp, df, parse_timestamps(df["ts"]))
            self._parsed[path] = cached
        return cached[1], cached[2]

    def fetch(self, info: SymbolInfo, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
        df, ts = self._read(self.path_for(info.symbol, timeframe))
        lo, hi = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
        # unparseable times (-1) stay in, so they are quarantined with their reason; the others go out as the times
        # the whole file was read as (a window of a day-first file alone may not say which number is the day)
        keep = (ts == -1) | ((ts >= lo) & (ts < hi))
        out = df[keep].reset_index(drop=True)
        import numpy as np

        kept = ts[keep]
        parsed = pd.Series(pd.to_datetime(np.where(kept == -1, 0, kept), unit="us", utc=True))
        if (kept != -1).all():
            return out.assign(ts=parsed)
        return out.assign(ts=parsed.astype(object).where(kept != -1, out["ts"]))

"""Technical features: export one series' features to Parquet (``tp features export``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInput
from ._context import store_or_open
from .market import require_series


def export_features(symbol: str, timeframe: str, out: str, *, store=None) -> dict:
    """Write one symbol's features to ``out`` (a .parquet file), computing missing or stale months first:
    rows, columns and the months recomputed."""
    from ..core.symbols import validate_symbol
    from ..core.timeframes import parse_timeframe

    symbol, tf = validate_symbol(symbol), parse_timeframe(timeframe)
    path = Path(out)
    if path.suffix.lower() not in (".parquet", ".pq"):
        raise InvalidInput(f"--out must name a .parquet file, got {path.name!r}", field="out")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise InvalidInput(f"--out: cannot write to {path.parent} (not a writable directory)", field="out")
    if path.is_dir():
        raise InvalidInput(f"--out: {path} is a directory, not a file", field="out")
    from ..features.pipeline import export

    with store_or_open(store) as s:
        info = require_series(s, symbol, tf)
        try:
            return export(s, info, tf, path)
        except OSError as e:  # /proc/x.parquet passes the access check as root: the write itself says why
            raise InvalidInput(f"--out: cannot write {path}: {e.strerror or e}", field="out") from None

"""`tp ingest`: a file of candles into the store."""

from __future__ import annotations

from ..api import market as api
from ._base import emit


def cmd_ingest(args) -> int:
    counts = api.ingest_file(args.path, args.symbol, args.timeframe, category=args.category, exchange=args.exchange)
    emit(args, counts, " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def register(sub, cmd) -> None:
    ing = cmd("ingest", cmd_ingest, "load a CSV/Parquet file of candles into the store")
    ing.add_argument("path")
    ing.add_argument("--symbol", required=True)
    ing.add_argument("--timeframe", required=True)
    ing.add_argument("--category")
    ing.add_argument("--exchange")

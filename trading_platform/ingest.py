"""Loading a file into the store (`tp ingest`), recorded in Dagster as well."""

from __future__ import annotations

from pathlib import Path

from .core.symbols import SymbolInfo, validate_symbol
from .core.timeframes import TIMEFRAMES, parse_timeframe
from .store.db import MarketStore, WriteResult


def ingest_file(store: MarketStore, path: str | Path, symbol: str, timeframe: str, *,
                category: str | None = None, exchange: str | None = None, instance=None) -> tuple[WriteResult, dict]:
    """Load one CSV/Parquet file of candles; returns the counts and what was recorded."""
    from .sources.files import read_ohlcv_file
    from .core.candles import normalize_candles

    symbol = validate_symbol(symbol)
    tf = parse_timeframe(timeframe)
    df = read_ohlcv_file(path)
    info = store.get_symbol(symbol)
    if info is None:
        info = SymbolInfo.create(symbol, category=category, exchange=exchange, timeframes=[tf])
        store.add_symbol(info, exist_ok=True)
    elif tf not in info.timeframes:
        info = store.update_symbol(symbol, timeframes=[*info.timeframes, tf])
    norm = normalize_candles(df, tf, where=str(path))
    result = store.write_candles(symbol, tf, norm, source=f"file:{Path(path).name}")
    recorded = {}
    if instance is not None:
        recorded = record_load(instance, store, info, tf, norm.ts_us, result, str(path))
    return result, recorded


def record_load(instance, store: MarketStore, info: SymbolInfo, tf: str, ts_us, result: WriteResult,
                origin: str) -> dict:
    """A runless materialization of each affected symbol-month, so the UI shows what the store holds."""
    import numpy as np
    from dagster import AssetKey, AssetMaterialization

    from .assets.market_data import OHLCV_KEY, RESAMPLED
    from .assets.partitions import market_key, month_bounds, month_partitions
    from .symbols import sync_partitions

    sync_partitions(instance, store)
    if tf == info.base_timeframe:
        key = OHLCV_KEY
    elif tf in RESAMPLED:
        key = AssetKey(["market", f"ohlcv_{tf}"])
    else:
        key = OHLCV_KEY
    months = sorted({np.datetime64(int(t), "us").astype("datetime64[M]").astype(str) + "-01" for t in ts_us})
    valid = set(month_partitions.get_partition_keys())
    recorded, outside = [], []
    for m in months:
        if m not in valid:
            outside.append(m)
            continue
        start, end = month_bounds(m)
        stats = store.candle_stats(info.symbol, tf, start, end)
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=key, partition=str(market_key(info.symbol, m)),
            description=f"loaded from {origin}",
            metadata={"stored_rows": stats["rows"], "timeframe": tf, "origin": origin,
                      **{k: v for k, v in result.counts().items()}},
        ))
        recorded.append(m)
    return {"asset": key.to_user_string(), "months": recorded, "months_outside_partitions": outside,
            "timeframe_seconds": TIMEFRAMES[tf]}

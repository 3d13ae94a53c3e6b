"""Loading a file into the store (`tp ingest`), recorded in Dagster as well."""

from __future__ import annotations

from pathlib import Path

from .core.symbols import SymbolInfo, validate_symbol
from .core.timeframes import TIMEFRAMES, parse_timeframe
from .errors import InvalidInput
from .store.db import MarketStore, WriteResult


def ingest_file(store: MarketStore, path: str | Path, symbol: str, timeframe: str, *,
                category: str | None = None, exchange: str | None = None, instance=None) -> tuple[WriteResult, dict]:
    """Load one CSV/Parquet file of candles; returns the counts and what was recorded."""
    from .sources.files import read_ohlcv_file
    from .core.candles import normalize_candles

    symbol = validate_symbol(symbol)
    tf = parse_timeframe(timeframe)
    df = read_ohlcv_file(path)
    # one transaction: a failure (bad rows, a refused timeframe, the database going away) leaves
    # neither a half-written file nor a symbol registered for it
    with store.conn.transaction():
        info = store.get_symbol(symbol)
        if info is None:  # checked as `tp symbols add` checks them (a crypto symbol's exchange is a ccxt id)
            info = SymbolInfo.create(symbol, category=category, exchange=exchange, timeframes=[tf],
                                     check_exchange=True)
            store.add_symbol(info, exist_ok=True)
        else:
            refuse_changed_options(info, category, exchange)
            refuse_derived(info, tf)
            if tf not in info.timeframes:
                info = store.update_symbol(symbol, timeframes=[*info.timeframes, tf])
        norm = normalize_candles(df, tf, where=str(path))
        result = store.write_candles(symbol, tf, norm, source=f"file:{Path(path).name}")
    recorded = {}
    if instance is not None:
        recorded = record_load(instance, store, info, tf, norm.ts_us, result, str(path))
    return result, recorded


def refuse_changed_options(info: SymbolInfo, category: str | None, exchange: str | None) -> None:
    """--category and --exchange describe the symbol a load registers; for a symbol already registered they must
    say what is stored: another value is refused (never ignored), a bad one as `tp symbols add` refuses it."""
    if category is None and exchange is None:
        return
    given = SymbolInfo.create(info.symbol, category=info.category if category is None else category,
                              exchange=info.exchange if exchange is None else exchange, timeframes=info.timeframes,
                              check_exchange=exchange is not None)
    for option, value, checked, stored in (("category", category, given.category, info.category),
                                           ("exchange", exchange, given.exchange, info.exchange)):
        if value is not None and checked != stored:
            raise InvalidInput(
                f"--{option} {value!r} differs from {info.symbol}'s stored {option} {stored!r}: leave --{option} "
                f"out, or change the symbol first (tp symbols update {info.symbol} --{option} {checked})",
                field=option,
            )


def refuse_derived(info: SymbolInfo, tf: str) -> None:
    """Candles of a timeframe the symbol derives by resampling would be overwritten by it: refuse them."""
    planned = info.timeframes if tf in info.timeframes else [*info.timeframes, tf]
    trial = SymbolInfo.create(info.symbol, category=info.category, exchange=info.exchange, timeframes=planned)
    if trial.resample_source(tf) is None:
        return
    base = trial.base_timeframe
    raise InvalidInput(
        f"{info.symbol} derives {tf} by resampling its base timeframe {base}, so loaded {tf} candles would be "
        f"overwritten: ingest {base} candles (--timeframe {base}), or change the symbol's timeframes so that {tf} "
        f"is its base (tp symbols update {info.symbol} --timeframes {tf},...)",
        field="timeframe",
    )


def record_load(instance, store: MarketStore, info: SymbolInfo, tf: str, ts_us, result: WriteResult,
                origin: str) -> dict:
    """A runless materialization of each affected symbol-month, so the UI shows what the store holds."""
    import numpy as np
    from dagster import AssetMaterialization

    from .assets.market_data import OHLCV_KEY
    from .assets.partitions import market_key, month_bounds, month_partitions_from, store_first_month
    from .symbols import sync_partitions

    sync_partitions(instance, store)
    key = OHLCV_KEY  # only a base timeframe (or 1w, never resampled) is loaded from files
    months = sorted({np.datetime64(int(t), "us").astype("datetime64[M]").astype(str) + "-01" for t in ts_us})
    # the partitions as the code location loads them now: the write has moved the first month back to the
    # file's first one if it is older (its months show as partitions from the next reload on)
    first = store_first_month(store)
    valid = set(month_partitions_from(first).get_partition_keys())
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
            "first_month": first, "timeframe_seconds": TIMEFRAMES[tf]}

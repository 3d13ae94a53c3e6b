"""Ingestion write path vs raw asyncpg COPY, in the same run.

Loads N candles (default 1,000,000: 10 symbols x 100,000 1m candles) through
the platform's write path (normalization + validation + binary COPY / staged
upsert) and through raw ``asyncpg.copy_records_to_table`` into an identical
table with the same primary key. Cases: new candles into an empty table, and a
re-load of the same candles (every row already stored: the upsert path).

Uses TP_DATABASE_URL if set, else a throwaway embedded server in a temp dir.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trading_platform.core.symbols import SymbolInfo  # noqa: E402
from trading_platform.store.db import connect  # noqa: E402
from trading_platform.settings import get_settings  # noqa: E402


def make_frames(n: int, n_symbols: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(1)
    per = n // n_symbols
    out = {}
    for i in range(n_symbols):
        ts = pd.date_range("2023-01-01", periods=per, freq="1min", tz="UTC")
        close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, per)))
        open_ = np.r_[close[0], close[:-1]]
        spread = np.abs(rng.normal(0, 5e-4, per)) * close
        out[f"BENCH{i}/USDT"] = pd.DataFrame({
            "ts": ts, "open": open_, "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread, "close": close,
            "volume": rng.lognormal(3, 1, per),
        })
    return out


async def raw_copy(dsn: str, frames: dict[str, pd.DataFrame]) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_raw_ohlcv")
        await conn.execute("CREATE TABLE bench_raw_ohlcv (LIKE ohlcv INCLUDING ALL)")
        records = {
            s: list(zip([s] * len(f), ["1m"] * len(f), f["ts"].dt.to_pydatetime(),
                        f["open"].tolist(), f["high"].tolist(), f["low"].tolist(),
                        f["close"].tolist(), f["volume"].tolist()))
            for s, f in frames.items()
        }
        t = time.perf_counter()
        for s, recs in records.items():
            await conn.copy_records_to_table(
                "bench_raw_ohlcv", records=recs,
                columns=["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"],
            )
        elapsed = time.perf_counter() - t
        await conn.execute("DROP TABLE bench_raw_ohlcv")
        return elapsed
    finally:
        await conn.close()


def platform_load(store, frames) -> tuple[float, dict]:
    t = time.perf_counter()
    total = None
    for s, f in frames.items():
        r = store.ingest_frame(s, "1m", f, "benchmark")
        total = r if total is None else total + r
    return time.perf_counter() - t, total.counts()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2, help="runs per case; the best is kept")
    args = ap.parse_args()

    settings = get_settings()
    tmp = None
    if settings.database_url:
        dsn = settings.database_url
    else:
        from trading_platform.store.embedded import ensure_embedded, stop_embedded

        tmp = tempfile.mkdtemp(prefix="tp-bench-")
        dsn = ensure_embedded(Path(tmp) / "pg")
    frames = make_frames(args.rows, args.symbols)
    n = sum(len(f) for f in frames.values())
    store = connect(dsn, run_migrations=True)  # the benchmark's own deploy step
    for s in frames:
        store.add_symbol(SymbolInfo.create(s, timeframes=["1m"]), exist_ok=True)

    raw_s, new_s, reload_s = [], [], []
    for _ in range(args.repeat):
        store.conn.execute("DELETE FROM ohlcv WHERE symbol LIKE 'BENCH%%'")
        store.conn.execute("VACUUM ANALYZE ohlcv")
        raw_s.append(asyncio.run(raw_copy(dsn, frames)))
        el, counts = platform_load(store, frames)
        assert counts["inserted"] == n, counts
        new_s.append(el)
        el, counts = platform_load(store, frames)
        assert counts["unchanged"] == n, counts
        reload_s.append(el)
        print(f"raw {n / raw_s[-1]:,.0f} rows/s  new {n / new_s[-1]:,.0f} rows/s  "
              f"reload {n / reload_s[-1]:,.0f} rows/s", file=sys.stderr)
    store.conn.execute("DELETE FROM ohlcv WHERE symbol LIKE 'BENCH%%'")
    store.close()
    if tmp:
        stop_embedded(Path(tmp) / "pg")

    raw = n / min(raw_s)
    new = n / min(new_s)
    reload = n / min(reload_s)
    figures = {
        "rows": n,
        "raw_rows_per_s": round(raw),
        "new_rows_per_s": round(new),
        "reload_rows_per_s": round(reload),
        "ratio_new_vs_raw": round(new / raw, 3),
        "ratio_reload_vs_raw": round(reload / raw, 3),
    }
    print(f"raw asyncpg COPY: {raw:,.0f} rows/s; platform new: {new:,.0f} rows/s "
          f"({new / raw:.2f}x); platform re-load: {reload:,.0f} rows/s ({reload / raw:.2f}x)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

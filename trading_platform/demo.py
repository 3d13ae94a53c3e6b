"""`tp demo`: load the sample market and materialize everything for its latest stretch.

Runs in-process on the local Dagster instance (so the runs show in the UI), one
run per symbol over its months, steps one at a time.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

SAMPLE = [
    ("BTC/USDT", {"category": "crypto", "exchange": "binance", "timeframes": ["5m", "15m", "1h", "4h", "1d"]}),
    ("EURUSD=X", {"category": "forex", "timeframes": ["1h", "4h", "1d"]}),
    ("ETH/USDT", {"category": "crypto", "exchange": "binance", "timeframes": ["5m", "15m", "1h", "4h", "1d"]}),
    ("AAPL", {"category": "stock", "exchange": "NASDAQ", "timeframes": ["1h", "4h", "1d"]}),
]


def demo_plan(quick: bool, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(symbols, months): quick = 2 symbols x the current month; full = 4 symbols x 4 months."""
    from .assets.partitions import month_key

    now = now or datetime.now(timezone.utc)
    n_months = 1 if quick else 4
    months = []
    y, m = now.year, now.month
    for _ in range(n_months):
        months.append(month_key(datetime(y, m, 1, tzinfo=timezone.utc)))
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    symbols = [s for s, _ in SAMPLE[: 2 if quick else 4]]
    return symbols, sorted(months)


def run_demo(quick: bool = False, seed: int = 7, log=print) -> dict:
    from dagster import DagsterEventType, materialize

    from .assets.features import feature_assets
    from .assets.market_data import market_assets
    from .assets.partitions import market_key
    from .instance import get_instance
    from .resources import MarketDB, MarketSource
    from .store.db import connect
    from .store.runtime import database_url
    from .symbols import Symbols

    t0 = time.perf_counter()
    instance = get_instance()
    dsn = database_url()
    symbols, months = demo_plan(quick)
    with connect(dsn) as store:
        api = Symbols(store, instance)
        for sym, fields in SAMPLE:
            if sym in symbols:
                api.add(sym, exist_ok=True, **fields)
    resources = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec=f"synthetic:{seed}")}
    per_asset: dict[str, float] = {}
    checks_failed, runs = [], []
    for sym in symbols:
        log(f"materializing {sym} for {months[0][:7]}..{months[-1][:7]}")
        tags = {
            "dagster/asset_partition_range_start": str(market_key(sym, months[0])),
            "dagster/asset_partition_range_end": str(market_key(sym, months[-1])),
            "trading_platform/demo": "quick" if quick else "full",
        }
        result = materialize([*market_assets, *feature_assets], instance=instance, resources=resources, tags=tags,
                             raise_on_error=False)
        runs.append(result.run_id)
        if not result.success:
            raise RuntimeError(f"demo run for {sym} failed; see run {result.run_id} in the Dagster UI")
        starts = {}
        for rec in instance.all_logs(result.run_id, of_type={DagsterEventType.STEP_START,
                                                             DagsterEventType.STEP_SUCCESS}):
            ev = rec.dagster_event
            if ev.event_type == DagsterEventType.STEP_START:
                starts[ev.step_key] = rec.timestamp
            elif ev.step_key in starts:
                name = ev.step_key.replace("__", "/")
                per_asset[name] = per_asset.get(name, 0.0) + rec.timestamp - starts[ev.step_key]
        for ev in result.all_events:
            if ev.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                data = ev.event_specific_data
                if not data.passed and data.severity.value == "ERROR":
                    checks_failed.append(f"{data.asset_key.to_user_string()}:{data.check_name}")
    with connect(dsn) as store:
        rows = store.conn.execute(
            "SELECT timeframe, count(*) FROM ohlcv WHERE symbol = ANY(%s) GROUP BY 1 ORDER BY 1", (symbols,)
        ).fetchall()
        feature_rows = store.conn.execute(
            "SELECT count(*) FROM features WHERE symbol = ANY(%s)", (symbols,)).fetchone()[0]
    return {
        "quick": quick,
        "symbols": symbols,
        "months": months,
        "runs": runs,
        "asset_seconds": {k: round(v, 2) for k, v in sorted(per_asset.items())},
        "stored_candles": {tf: int(n) for tf, n in rows},
        "feature_rows": int(feature_rows),
        "error_checks_failed": checks_failed,
        "total_seconds": round(time.perf_counter() - t0, 2),
    }

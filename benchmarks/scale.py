"""Cost at scale: work that does not grow with history, runs that do not grow with symbols.

Two parts in one run, on a throwaway PostgreSQL (TP_DATABASE_URL's server if set, else an
embedded one in a temp dir) and a temporary Dagster instance, with the synthetic source:

- History: one symbol with 1h base candles (4h and 1d resampled) over 1 year and,
  separately, over 8 years. After the load, one new hourly candle arrives and its current
  month is materialized exactly as the schedule does it (the schedule's run request, run
  in-process through ``market_cycle_job``: ingest, resample, features, and the model
  outputs, of which there are none here: no model is registered). Reported: the
  features step's time (median of 5, each after one new candle) and the candles it read
  from ``ohlcv``, for both histories, their growth ratios (targets: <= 1.2), and the full
  recomputation of the same month over 8 years, for reference.
- Symbols: N symbols (default 100) over 2 years; one new hourly candle for every symbol;
  the hourly schedule is evaluated and its runs executed with the job's in-process
  executor. Reported: runs per tick (target <= ceil(N / 50)), the tick's wall time from
  schedule evaluation to the last run's end (target <= 60 s for 100 symbols on this
  2-core machine), and the symbol-months whose features show a materialization from the
  tick's runs (target: all N). A run launched by the daemon also pays a process start and
  the code location's import; ``launch_overhead_s`` measures that import once.

    python benchmarks/scale.py [--symbols 100] [--years 8]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOUR = timedelta(hours=1)
SEED = 7


def admin_dsn():
    import os

    if os.environ.get("TP_DATABASE_URL"):
        return os.environ["TP_DATABASE_URL"], None
    from trading_platform.store.embedded import ensure_embedded

    tmp = Path(tempfile.mkdtemp(prefix="tp-scale-pg-"))
    return ensure_embedded(tmp / "pg"), tmp


def fresh_db(admin: str, prefix: str = "scale") -> str:
    """A new database on the server of ``admin``, migrated (the deploy step: with TP_DATABASE_URL set the
    platform migrates nothing on first use); its DSN."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from trading_platform.store.db import connect

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    d = conninfo_to_dict(admin)
    d["dbname"] = name
    dsn = make_conninfo(**d)
    connect(dsn, run_migrations=True).close()
    return dsn


def load(dsn: str, instance, symbols: list[str], start: datetime, end: datetime) -> None:
    """1h candles from the synthetic source up to ``end``, their 4h and 1d buckets, and the features of
    the month before ``end``'s month (what the hourly run continues from)."""
    from trading_platform.core.calendars import slot_open
    from trading_platform.core.months import month_bounds, month_key
    from trading_platform.core.resample import resample
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.core.timeframes import TIMEFRAMES
    from trading_platform.features.pipeline import materialize
    from trading_platform.features.spec import FeatureSpec
    from trading_platform.sources.synthetic import SyntheticSource
    from trading_platform.store.db import connect
    from trading_platform.symbols import sync_partitions

    source = SyntheticSource(SEED)
    current = month_bounds(month_key(end))[0]
    prev_month = month_bounds(month_key(current - timedelta(days=1)))
    with connect(dsn) as store:
        for s in symbols:
            info = SymbolInfo.create(s, timeframes=["1h", "4h", "1d"])
            store.add_symbol(info)
            store.ingest_frame(s, "1h", source.fetch(info, "1h", start, end), "synthetic")
            hourly = store.read_candles(s, "1h")
            for tf in ("4h", "1d"):
                out = resample(hourly, 3600, TIMEFRAMES[tf], now_us=int(end.timestamp() * 1e6),
                               market_open=lambda ts, sec, info=info: slot_open(info.category, info.exchange, ts, sec))
                store.write_candles(s, tf, out.candles, "resample:1h")
            materialize(store, info, FeatureSpec(), [prev_month])
        sync_partitions(instance, store)


def tick(dsn: str, instance, when: datetime) -> dict:
    """Evaluate the hourly schedule at ``when`` and run its requests as the schedule's runs run."""
    from dagster import DagsterEventType, build_schedule_context

    from trading_platform.assets.features import feature_assets
    from trading_platform.assets.market_data import market_assets
    from trading_platform.assets.models import model_assets
    from trading_platform.demo import bound_job
    from trading_platform.resources import MLflowResource, ModelServer
    from trading_platform.sensors.market_data import market_cycle_job
    from trading_platform.resources import MarketDB, MarketSource
    from trading_platform.sensors.market_data import market_data_hourly

    home = Path(tempfile.mkdtemp(prefix="tp-scale-mlflow-"))  # no model registered: the outputs step finds none
    uri = f"sqlite:///{home}/mlflow.db"
    resources = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec=f"synthetic:{SEED}"),
                 "mlflow": MLflowResource(tracking_uri=uri, artifact_root=str(home / "artifacts")),
                 "model_server": ModelServer(tracking_uri=uri, cache_dir=str(home / "cache"), device="cpu")}
    job = bound_job(market_cycle_job, [*market_assets, *feature_assets, *model_assets], resources)
    t0 = time.perf_counter()
    with build_schedule_context(instance=instance, scheduled_execution_time=when,
                                resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        requests = list(market_data_hourly(ctx))
    features_s, read, materialized, ok = [], 0, set(), True
    for req in requests:
        r = job.execute_in_process(instance=instance, tags=req.tags, asset_selection=req.asset_selection,
                                   raise_on_error=False)
        ok &= r.success
        starts = {}
        for rec in instance.all_logs(r.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}):
            ev = rec.dagster_event
            if ev.step_key != "features":
                continue
            if ev.event_type == DagsterEventType.STEP_START:
                starts[ev.step_key] = rec.timestamp
            else:
                features_s.append(rec.timestamp - starts[ev.step_key])
        for m in r.asset_materializations_for_node("features"):
            materialized.add(m.partition)
            read += sum(sum(v.values()) for v in m.metadata["candles_read"].value.values())
    return {"runs": len(requests), "tick_s": time.perf_counter() - t0, "features_s": sum(features_s),
            "candles_read": read, "materialized": materialized, "success": ok}


def drop_newest_hour(dsn: str, symbols: list[str], ts: datetime) -> None:
    """Take the newest candle (and what was derived from it) back out, so the next tick appends it again."""
    from trading_platform.store.db import connect

    with connect(dsn) as store:
        for table in ("ohlcv", "features"):
            store.conn.execute(f"DELETE FROM {table} WHERE symbol = ANY(%s) AND ts >= %s", (symbols, ts))


def history_case(admin: str, years: int, now: datetime, repeats: int = 5) -> dict:
    from dagster import instance_for_test

    dsn = fresh_db(admin)
    last_closed = now.replace(minute=0, second=0, microsecond=0) - HOUR
    with instance_for_test() as instance:
        load(dsn, instance, ["HIST/USDT"], last_closed - timedelta(days=365 * years), last_closed)
        runs = []
        for _ in range(repeats):
            runs.append(tick(dsn, instance, now))
            drop_newest_hour(dsn, ["HIST/USDT"], last_closed)
        full = _full_recompute(dsn, instance, now)
    return {"features_month_s": statistics.median(r["features_s"] for r in runs),
            "rows_read": runs[-1]["candles_read"], "features_full_s": full, "runs": runs[-1]["runs"]}


def _full_recompute(dsn: str, instance, now: datetime) -> float:
    from dagster import DagsterEventType, materialize

    from trading_platform.assets.features import features
    from trading_platform.assets.partitions import market_key
    from trading_platform.core.months import month_key
    from trading_platform.resources import MarketDB

    r = materialize([features], instance=instance, resources={"market_db": MarketDB(database_url=dsn)},
                    partition_key=str(market_key("HIST/USDT", month_key(now))),
                    run_config={"ops": {"features": {"config": {"full_recompute": True}}}})
    recs = {rec.dagster_event.event_type: rec.timestamp for rec in instance.all_logs(
        r.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS})}
    return recs[DagsterEventType.STEP_SUCCESS] - recs[DagsterEventType.STEP_START]


def main() -> None:
    from dagster import instance_for_test

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--years", type=int, default=8)
    ap.add_argument("--symbol-years", type=int, default=2)
    args = ap.parse_args()
    admin, tmp = admin_dsn()
    now = datetime.now(timezone.utc)
    try:
        one = history_case(admin, 1, now)
        many = history_case(admin, args.years, now)
        print(f"history: features of the current month after one new candle: {one['features_month_s']:.3f} s "
              f"reading {one['rows_read']} candles over 1 year, {many['features_month_s']:.3f} s reading "
              f"{many['rows_read']} over {args.years} years (full recomputation: {many['features_full_s']:.2f} s)",
              flush=True)

        dsn = fresh_db(admin)
        symbols = [f"SYM{i:03d}/USDT" for i in range(args.symbols)]
        last_closed = now.replace(minute=0, second=0, microsecond=0) - HOUR
        with instance_for_test() as instance:
            t = time.perf_counter()
            load(dsn, instance, symbols, last_closed - timedelta(days=365 * args.symbol_years), last_closed)
            load_s = time.perf_counter() - t
            result = tick(dsn, instance, now)
        code = "import trading_platform.definitions"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        launch = time.perf_counter() - t
    finally:
        if tmp is not None:
            from trading_platform.store.embedded import stop_embedded

            stop_embedded(tmp / "pg")
            shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "features_month_s_1y": round(one["features_month_s"], 4),
        f"features_month_s_{args.years}y": round(many["features_month_s"], 4),
        "rows_read_1y": one["rows_read"], f"rows_read_{args.years}y": many["rows_read"],
        "history_growth_ratio": round(many["features_month_s"] / one["features_month_s"], 3),
        "rows_read_growth_ratio": round(many["rows_read"] / one["rows_read"], 3),
        f"features_full_s_{args.years}y": round(many["features_full_s"], 3),
        "symbols": args.symbols, "symbol_history_years": args.symbol_years,
        "runs_per_tick": result["runs"], "runs_per_tick_target": math.ceil(args.symbols / 50),
        "tick_s": round(result["tick_s"], 2), "materialized_symbol_months": len(result["materialized"]),
        "tick_success": result["success"], "tick_features_candles_read": result["candles_read"],
        "launch_overhead_s": round(launch, 2), "symbols_load_s": round(load_s, 1),
    }
    print(f"symbols: {args.symbols} symbols in {result['runs']} run(s); tick {result['tick_s']:.1f} s; "
          f"{len(result['materialized'])} symbol-months materialized; a daemon-launched run also pays about "
          f"{launch:.1f} s of process start and imports")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

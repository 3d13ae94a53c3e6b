"""The output record: as-of reads that do not grow with history, corrections that rescore exactly their
window, promotions that write nothing.

Three parts in one run, on a throwaway PostgreSQL (TP_DATABASE_URL's server if set, else an embedded one in a
temp dir), a temporary MLflow store and an ephemeral Dagster instance:

- As-of reads: 100 series (symbols x 1h) of hourly predictions of one champion, over 1 year and, in another
  database, over 8 years (0.9M and 7M rows; every 100th row corrected once, so superseded rows lie among
  them), each row known one candle after its time. Reported: the median time of the latest output per series
  through ``tp_predictions_known_at(now, p_latest => true)`` (20 calls), for both histories, and their ratio
  (target <= 1.2, or the two within 2 ms); beside it the same read as a hand-written query on the current rows
  (``DISTINCT ON`` over ``current_champion_predictions``, the raw PostgreSQL way) and an as-of read one month in
  the past.
- Correction: one crypto symbol, 1h candles over ``--months`` months from the synthetic source, features, a
  pump classifier (its inputs hold no cumulative feature) trained, registered and gated, every month scored.
  A candle in the middle of history is revised through the bulk path (``ingest_frame``); the features-stale
  sensor's run (features, then outputs) corrects it. Reported: the candles inside the version's window after the
  revised one, the ones rescored (target: equal, > 0), the rows superseded, and the correction run's time.
- Promotion: a second version registered as a challenger and scored as a shadow over the same history, then
  promoted (``tp models promote``) and the next scheduled scoring run. Reported: the rows that promotion and
  run changed or added (target 0), and duplicate rows per output key in ``current_champion_predictions``
  after the promotion and the correction (target 0).

    python benchmarks/outputs.py [--series 100] [--months 8]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import admin_dsn, fresh_db  # noqa: E402

HOUR = timedelta(hours=1)
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


# ---- as-of reads -------------------------------------------------------------------------------------------
def load_history(dsn: str, series: int, years: int) -> int:
    """``series`` symbols x ``years`` of hourly predictions of pump_xgb v1 (champion), known an hour after their
    time; every 100th row superseded by a correction a day later."""
    import numpy as np
    import psycopg

    n_hours = years * 8760
    start = NOW - n_hours * HOUR
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO symbols (symbol, category, timeframes) SELECT 'S' || i || '/USDT', 'crypto', '{1h}' "
                  "FROM generate_series(1, %s) i", (series,))
        c.execute("INSERT INTO model_champions (model_name, alias, version, valid_from, moved_by) "
                  "VALUES ('pump_xgb', 'champion', '1', %s, 'gate')", (start - timedelta(days=1),))
        rng = np.random.default_rng(7)
        rows = 0
        t0 = time.perf_counter()
        with c.cursor() as cur, cur.copy("COPY predictions (model_name, model_version, symbol, timeframe, ts, value, "
                                         "label, details, in_sample, known_at, superseded_at) FROM STDIN") as cp:
            hours = [start + h * HOUR for h in range(n_hours)]
            for i in range(1, series + 1):
                sym = f"S{i}/USDT"
                values = rng.random(n_hours)
                for h, ts in enumerate(hours):
                    known = ts + HOUR
                    if h % 100 == 0:  # corrected once: the old row superseded a day later
                        cp.write_row(("pump_xgb", "1", sym, "1h", ts, float(values[h]) / 2, "none", "{}", False,
                                      known, known + 24 * HOUR))
                        known = known + 24 * HOUR
                        rows += 1
                    cp.write_row(("pump_xgb", "1", sym, "1h", ts, float(values[h]), "none", "{}", False, known, None))
                    rows += 1
        c.execute("INSERT INTO output_series SELECT 'predictions', model_name, model_version, symbol, timeframe, "
                  "min(ts), max(ts) FROM predictions GROUP BY 2, 3, 4, 5")
        c.execute("VACUUM ANALYZE predictions")
        print(f"  loaded {rows:,} rows ({years} y x {series} series) in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def time_reads(dsn: str, calls: int = 20) -> dict:
    import psycopg

    out = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        queries = {
            "latest": ("SELECT * FROM tp_predictions_known_at(%s, p_latest => true)", (NOW,)),
            "raw_latest": ("SELECT DISTINCT ON (p.symbol) p.* FROM output_series s CROSS JOIN LATERAL ("
                           " SELECT * FROM current_champion_predictions p WHERE p.model_name = s.model_name"
                           " AND p.symbol = s.symbol AND p.timeframe = s.timeframe ORDER BY p.ts DESC LIMIT 1) p"
                           " WHERE s.output_table = 'predictions' ORDER BY p.symbol", ()),
            "month_ago": ("SELECT * FROM tp_predictions_known_at(%s, p_latest => true)", (NOW - 30 * 24 * HOUR,)),
        }
        for name, (q, args) in queries.items():
            got = c.execute(q, args).fetchall()  # warm
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                c.execute(q, args).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            out[name] = (statistics.median(times), len(got))
    return out


# ---- correction and promotion ---------------------------------------------------------------------------------
def model_flow(admin: str, months: int, tmp: Path) -> dict:
    import psycopg
    from dagster import DagsterInstance, build_sensor_context, materialize

    from trading_platform.assets.features import features
    from trading_platform.assets.market_data import market_assets
    from trading_platform.assets.models import predictions, pump_xgb
    from trading_platform.assets.partitions import market_key
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.models.registry import promote
    from trading_platform.resources import MarketDB, MarketSource, MLflowResource, ModelServer
    from trading_platform.sensors.features import features_stale_sensor
    from trading_platform.store.db import connect
    from trading_platform.symbols import sync_partitions

    dsn = fresh_db(admin, "outputs")
    instance = DagsterInstance.ephemeral()
    first = datetime(2025, 1, 1, tzinfo=timezone.utc)
    month_keys = [f"{2025 + (m // 12)}-{m % 12 + 1:02d}-01" for m in range(months)]
    with connect(dsn) as store:
        store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
        sync_partitions(instance, store)
    uri = f"sqlite:///{tmp}/mlflow.db"
    res = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec="synthetic:7"),
           "mlflow": MLflowResource(tracking_uri=uri, artifact_root=str(tmp / "artifacts")),
           "model_server": ModelServer(tracking_uri=uri, cache_dir=str(tmp / "cache"), device="cpu")}
    rng = {"dagster/asset_partition_range_start": str(market_key("BTC/USDT", month_keys[0])),
           "dagster/asset_partition_range_end": str(market_key("BTC/USDT", month_keys[-1]))}
    t = time.perf_counter()
    assert materialize([*market_assets, features], instance=instance, resources=res, tags=rng).success
    print(f"  {months} months of 1h candles and features in {time.perf_counter() - t:.0f} s", flush=True)
    pump = {"timeframe": "1h", "rise": 0.02, "n_estimators": 60, "n_boot": 200, "min_improvement_auc": -1.0,
            "min_improvement_log_loss": -1.0}

    def train(config):
        r = materialize([pump_xgb], instance=instance, resources=res,
                        run_config={"ops": {"models__pump_xgb": {"config": config}}})
        assert r.success

    def score(tags):
        t0 = time.perf_counter()
        r = materialize([predictions], instance=instance, resources=res, tags=tags)
        assert r.success
        md = {k: v.value for k, v in r.asset_materializations_for_node("predictions")[0].metadata.items()}
        return md, time.perf_counter() - t0

    def snapshot():
        with psycopg.connect(dsn) as c:
            return c.execute("SELECT count(*), max(known_at), count(superseded_at) FROM predictions").fetchone()

    def duplicates():
        with psycopg.connect(dsn) as c:
            return c.execute("SELECT count(*) FROM (SELECT 1 FROM current_champion_predictions GROUP BY model_name, "
                             "symbol, timeframe, ts HAVING count(*) > 1) d").fetchone()[0]

    train(pump)  # version 1: the first champion
    train({**pump, "n_estimators": 80, "min_improvement_vs_champion": 1.0})  # version 2: a challenger
    md, score_s = score(rng)
    print(f"  scored {months} months (champion and shadow) in {score_s:.1f} s: {md['by_model']}", flush=True)
    # promotion: the challenger becomes champion; the next scheduled scoring (the current month: the last)
    before = snapshot()
    client = res["mlflow"].client()
    with connect(dsn) as store:
        promote(client, "pump_xgb", "2", conn=store.conn)
    md_next, _ = score({"dagster/schedule_name": "market_data_hourly",
                        "dagster/asset_partition_range_start": str(market_key("BTC/USDT", month_keys[-1])),
                        "dagster/asset_partition_range_end": str(market_key("BTC/USDT", month_keys[-1]))})
    md_all, _ = score(rng)  # and a scoring of the whole history
    after = snapshot()
    changed = (after[0] - before[0]) + (after[2] - before[2])
    dup_after_promotion = duplicates()
    # correction: a candle in the middle of history revised through the bulk path
    mid = first + timedelta(days=int(months * 30.4 / 2))
    with connect(dsn) as store:
        c = store.read_candles("BTC/USDT", "1h", mid, mid + HOUR)
        fixed = c.to_frame().assign(open=c.open * 1.05, high=c.high * 1.05, low=c.low * 1.05, close=c.close * 1.05,
                                    volume=c.volume * 10)
        assert store.ingest_frame("BTC/USDT", "1h", fixed, "correction").updated == 1
    t0 = time.perf_counter()
    with build_sensor_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)}) as ctx:
        [req] = features_stale_sensor(ctx).run_requests
    assert materialize([features], instance=instance, resources=res, tags=req.tags).success
    features_s = time.perf_counter() - t0
    md_fix, fix_s = score(req.tags)
    fix = md_fix["corrections"]
    return {"rows_scored": sum(md["by_model"].values()), "score_s": round(score_s, 2),
            "rows_changed_by_promotion": changed, "promotion_next_run_rows": md_next["rows"] + md_all["rows"],
            "duplicate_current_rows_after_promotion": dup_after_promotion,
            "revised_candle": mid.isoformat(), "correction_rows_in_window": fix["rows_in_window"],
            "correction_rows_rescored": fix["rows_rescored"], "correction_rows_superseded": fix["rows_superseded"],
            "correction_rows_written": fix.get("rows_written", 0),
            "correction_s": round(fix_s, 2), "correction_features_s": round(features_s, 2),
            "duplicate_current_rows": max(dup_after_promotion, duplicates())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--months", type=int, default=8, help="history of the correction and promotion part")
    ap.add_argument("--years", type=int, default=8, help="the longer history of the as-of part")
    args = ap.parse_args()
    admin, tmp_pg = admin_dsn()
    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-outputs-"))
    out: dict = {"series": args.series}
    try:
        print("correction and promotion:", flush=True)
        out.update(model_flow(admin, args.months, tmp))
        reads = {}
        for years in (1, args.years):
            print(f"as-of reads, {years} y:", flush=True)
            dsn = fresh_db(admin, "asof")
            out[f"rows_{years}y"] = load_history(dsn, args.series, years)
            reads[years] = time_reads(dsn)
            print(f"  latest per series {reads[years]['latest'][0]:.2f} ms ({reads[years]['latest'][1]} rows), "
                  f"raw {reads[years]['raw_latest'][0]:.2f} ms, a month ago {reads[years]['month_ago'][0]:.2f} ms",
                  flush=True)
        one, many = reads[1], reads[args.years]
        out.update({
            "as_of_latest_ms_median_1y": round(one["latest"][0], 3),
            f"as_of_latest_ms_median_{args.years}y": round(many["latest"][0], 3),
            "as_of_growth_ratio": round(many["latest"][0] / one["latest"][0], 3),
            "as_of_latest_rows": many["latest"][1],
            "raw_latest_ms_median_1y": round(one["raw_latest"][0], 3),
            f"raw_latest_ms_median_{args.years}y": round(many["raw_latest"][0], 3),
            "ratio_vs_raw": round(many["latest"][0] / many["raw_latest"][0], 3),
            f"as_of_month_ago_ms_median_{args.years}y": round(many["month_ago"][0], 3),
        })
        ok = (out["as_of_growth_ratio"] <= 1.2 or abs(many["latest"][0] - one["latest"][0]) <= 2.0)
        out["targets_met"] = bool(ok and out["rows_changed_by_promotion"] == 0 and out["duplicate_current_rows"] == 0
                                  and out["correction_rows_rescored"] == out["correction_rows_in_window"] > 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_pg is not None:
            from trading_platform.store.embedded import stop_embedded

            stop_embedded(tmp_pg / "pg")
            shutil.rmtree(tmp_pg, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

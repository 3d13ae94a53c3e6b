"""Paper trading live (issue 26): a live paper run through the real daemon against the backtest on the same candles.

1. **Live.** ``dagster dev`` (the webserver and the daemon, the repository's ``dagster.yaml`` in a temporary
   DAGSTER_HOME) over a throwaway PostgreSQL (an embedded server, or TP_DATABASE_URL's) and a throwaway MLflow store.
   Two symbols with ``--history-days`` of stored 5m (and 1h) history; champions of the pooled pump model (XGBoost)
   and of the pooled NHITS forecaster, both on 5m (tiny configurations). A strategy on both symbols' 5m candles
   (enter when the NHITS forecast return is above 0 unless the pump model fires, stop 1 %, target 1 %, out after 6
   candles, half the equity a position, a 2-candle cooldown, fees and spread) is added and started live with ``tp paper strategies add`` and ``tp paper start``. Then ``tp live feed
   --file`` appends ``--candles`` closed candles (the synthetic continuation of the stored series, written to a CSV)
   at ``--rate`` candles per second through the live write path: the sensor, the live prediction runs and the
   paper consumer after each of them. While it runs, every ``paper`` outbox event is delivered a second time once
   it is done (its queue row set back to pending: a replay of the outbox), stepped by the next live run or the
   sensor's paper catch-up run. ``--restart-at S``: S seconds into the feed, ``dagster dev`` is stopped and started
   again (the daemon, the code location and the live run's processes).
2. **The backtest.** ``tp paper backtest``'s function over the range the live run stepped, with its pins.
   ``parity_mismatches``: the orders (side, intent, quantity, filled, status by series and signal time), fills
   (candle, price, quantity, fee by order) and trades of the live run that the backtest does not have, and the other
   way round (run ids aside). ``duplicate_orders``: order keys (series, signal time, intent) the live run holds more
   than once, plus the orders it holds beyond the backtest's.
3. **Latency.** ``live_p99_s``: from a fed candle's insert (its event's ``created_at``) to the commit of the run
   that wrote its predictions (``benchmarks/live_latency.py``'s measure); ``candle_to_fill_p99_s``: from the insert
   of the candle a fill happened on to the commit of the paper step that wrote the fill (its paper event's first
   done mark: the same transaction).
4. **A step against the history stored.** Without Dagster, on two fresh databases holding 1 and 12 months of the
   two symbols' 5m candles with pump and forecast outputs: the paper consumer's pass for one new candle of each symbol (the
   outputs committed), the median of ``--steps`` (``step_ms_1m``, ``step_ms_12m``).

    python benchmarks/paper_live.py [--candles 500] [--rate 2] [--history-days 30] [--restart-at S] [--steps 40]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# benchmarks/watchdog.py would shadow the watchdog package Dagster's instance imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from benchmarks.live_latency import (  # noqa: E402
    NHITS_TINY, PUMP, drain, live_figures, load_history, log, pct, start_dagster, stop, wait_webserver)
from benchmarks.scale import fresh_db  # noqa: E402

SEED = 7
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
FEED_SOURCE = "tp live feed"


def strategy(name: str = "live_bench") -> dict:
    return {"name": name, "universe": [{"symbol": s, "timeframe": "5m"} for s in SYMBOLS], "cash": 10_000,
            "rules": {"confirm": {"table": "forecasts", "model": "nhits.5m", "min": 0.0},
                      "pump_veto": {"model": "pump_xgb", "threshold": 0.9}, "stop_loss": 0.01, "take_profit": 0.01,
                      "time_exit": 6},
            "costs": {"fee_bps": 10, "spread_bps": 4},
            "risk": {"position_fraction": 0.5, "max_positions": 2, "cooldown_bars": 2}}


def tp(env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", *args], env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        raise RuntimeError(f"tp {' '.join(args)}: rc {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def train(dsn: str, home: Path, uri: str) -> dict:
    """Champions of the pooled pump model and of a regime model per symbol, their artifacts in the serving cache,
    and the champion history written (as the sensor's registry read does)."""
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.models import nhits_assets, pump_xgb
    from trading_platform.models.registry import promote
    from trading_platform.models.scoring import resolve_versions
    from trading_platform.resources import MarketDB, MLflowResource, ModelServer
    from trading_platform.store.champions import sync_from_registry
    from trading_platform.store.db import connect

    from trading_platform.symbols import sync_partitions

    instance = DagsterInstance.ephemeral()
    with connect(dsn) as store:
        sync_partitions(instance, store)
    mlflow = MLflowResource(tracking_uri=uri, artifact_root=str(home / "mlartifacts"))
    res = {"market_db": MarketDB(database_url=dsn), "mlflow": mlflow,
           "model_server": ModelServer(tracking_uri=uri, device="cpu")}
    t = time.perf_counter()

    def run(asset, config, partition_key=None):
        materialize([asset], instance=instance, resources=res, partition_key=partition_key,
                    run_config={"ops": {asset.key.to_python_identifier(): {"config": config}},
                                "loggers": {"console": {"config": {"log_level": "WARNING"}}}})

    run(pump_xgb, PUMP)
    [nhits_5m] = [a for a in nhits_assets if a.key.path[-1] == "nhits_5m"]
    run(nhits_5m, NHITS_TINY)
    client = mlflow.client()
    for rm in client.search_registered_models():
        if "champion" not in (rm.aliases or {}):
            promote(client, rm.name, "1")
    versions = resolve_versions(client)
    server = ModelServer(tracking_uri=uri, device="cpu", cache_dir=str(home / "model_cache"))
    for v in versions:
        server.load(v.name, version=v.version)
    with connect(dsn) as store:
        sync_from_registry(store.conn, client)
    return {"versions": len(versions), "train_s": round(time.perf_counter() - t, 1)}


def feed_file(dsn: str, n: int, path: Path) -> None:
    """The next n closed 5m candles of each symbol (the synthetic source's continuation), as a CSV for --file."""
    import pandas as pd

    from trading_platform.live.feed import next_closed
    from trading_platform.sources.synthetic import SyntheticSource
    from trading_platform.store.db import connect

    parts = []
    with connect(dsn) as store:
        for s in SYMBOLS:
            info = store.get_symbol(s)
            new = next_closed(SyntheticSource(SEED), info, "5m", store.candle_stats(s, "5m")["last_ts"], n)
            df = pd.DataFrame({"ts": pd.to_datetime(new.ts_us, unit="us", utc=True), "open": new.open,
                               "high": new.high, "low": new.low, "close": new.close, "volume": new.volume})
            df.insert(0, "symbol", s)
            parts.append(df)
    pd.concat(parts).to_csv(path, index=False)


class Replayer(threading.Thread):
    """Every paper event, once done, delivered a second time: its queue row set back to pending (the first done
    mark kept for the latency)."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn, self.first_done, self.halt = dsn, {}, threading.Event()

    def sweep(self, conn) -> int:
        rows = conn.execute(
            "UPDATE market_event_queue q SET status = 'pending' FROM (SELECT event_id, done_at FROM market_event_queue "
            "WHERE consumer = 'paper' AND status = 'done' AND NOT (event_id = ANY(%s)) FOR UPDATE) d WHERE "
            "q.consumer = 'paper' AND q.event_id = d.event_id RETURNING q.event_id, d.done_at",
            (list(self.first_done),)).fetchall()
        for eid, done in rows:
            self.first_done[eid] = done
        return len(rows)

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.halt.is_set():
                self.sweep(c)
                time.sleep(1.0)
            self.sweep(c)


def paper_backlog(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM market_event_queue WHERE consumer = 'paper' AND status <> 'done'"
                         ).fetchone()[0]


def wait_paper(dsn: str, timeout: float) -> int:
    deadline = time.time() + timeout
    while True:
        n = paper_backlog(dsn)
        if n == 0 or time.time() > deadline:
            return n
        time.sleep(1)


def records(conn, run_id: str) -> dict[str, list]:
    return {
        "orders": conn.execute("SELECT symbol, timeframe, signal_ts, intent, side, quantity, filled, status FROM orders "
                               "WHERE run_id = %s ORDER BY 1, 2, 3, 4", (run_id,)).fetchall(),
        "fills": conn.execute("SELECT o.symbol, o.timeframe, o.signal_ts, o.intent, f.candle_ts, f.price, f.quantity, "
                              "f.fee FROM fills f JOIN orders o ON o.order_id = f.order_id WHERE f.run_id = %s "
                              "ORDER BY 1, 2, 3, 4, 5", (run_id,)).fetchall(),
        "trades": conn.execute("SELECT symbol, timeframe, entry_ts, entry_price, exit_ts, exit_price, quantity, pnl, "
                               "fees, exit_reason, bars_held FROM trades WHERE run_id = %s ORDER BY 1, 2, 3",
                               (run_id,)).fetchall(),
    }


def mismatches(a: list, b: list) -> int:
    from collections import Counter

    ca, cb = Counter(a), Counter(b)
    return sum(((ca - cb) + (cb - ca)).values())


def live_latency(conn, after_id: int) -> list[float]:
    """Per fed event after the warm-up: from its insert to the commit of the run that wrote its predictions."""
    return [float(r[0]) for r in conn.execute(
        "SELECT extract(epoch FROM q.done_at - e.created_at) FROM market_events e JOIN market_event_queue q ON "
        "q.event_id = e.id AND q.consumer = 'predictions' WHERE e.source = %s AND e.id > %s AND q.status = 'done'",
        (FEED_SOURCE, after_id))]


def fill_latency(conn, run_id: str, first_done: dict, after_id: int) -> list[float]:
    """Per fill after the warm-up: from the insert of the candle it filled on (the series' event at candle_ts) to
    its paper step's commit (that event's first done mark)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (f.order_id, f.candle_ts) e.id, e.created_at, q.done_at FROM fills f JOIN orders o ON "
        "o.order_id = f.order_id JOIN market_events e ON e.symbol = o.symbol AND e.timeframe = o.timeframe AND "
        "e.ts = f.candle_ts AND e.source = %s AND e.id > %s JOIN market_event_queue q ON q.event_id = e.id AND "
        "q.consumer = 'paper' WHERE f.run_id = %s ORDER BY f.order_id, f.candle_ts, e.id",
        (FEED_SOURCE, after_id, run_id)).fetchall()
    return [((first_done.get(eid) or done) - created).total_seconds() for eid, created, done in rows
            if (first_done.get(eid) or done) is not None]


# ---- 4. one step against the history stored -------------------------------------------------------------------------
def step_timing(admin: str, months: int, steps: int) -> float:
    """The median ms of the paper consumer's pass for one new candle of each symbol, with ``months`` of 5m candles
    and pump outputs stored."""
    import numpy as np
    import psycopg

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.paper import live as paper_live
    from trading_platform.paper.spec import parse
    from trading_platform.store.db import connect

    dsn = fresh_db(admin, f"step{months}")
    n = months * 30 * 288
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rng = np.random.default_rng(months)
    with connect(dsn) as store:
        for s in SYMBOLS:
            store.add_symbol(SymbolInfo.create(s, timeframes=["5m"], live=True))
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in ("pump_xgb", "nhits.5m"):
            c.execute("INSERT INTO model_champions (model_name, alias, version, valid_from, moved_by) VALUES "
                      "(%s, 'champion', '1', %s, 'gate')", (name, start - timedelta(days=1)))
        for s in SYMBOLS:
            close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
            ts = [start + timedelta(minutes=5 * i) for i in range(n)]
            with c.cursor() as cur, cur.copy("COPY ohlcv (symbol, timeframe, ts, open, high, low, close, volume) "
                                             "FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((s, "5m", ts[i], close[i], close[i] * 1.002, close[i] * 0.998, close[i], 10.0))
            with c.cursor() as cur, cur.copy("COPY predictions (model_name, model_version, symbol, timeframe, ts, "
                                             "value, label, details, in_sample, known_at) FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row(("pump_xgb", "1", s, "5m", ts[i], float(rng.uniform(0, 0.2)), "", "{}", False,
                                  ts[i] + timedelta(minutes=5)))
            with c.cursor() as cur, cur.copy("COPY forecasts (model_name, model_version, symbol, timeframe, origin_ts, "
                                             "step, median, quantiles, in_sample, known_at) FROM STDIN") as cp:
                for i in range(n):
                    for k in (1, 2, 3):
                        cp.write_row(("nhits.5m", "1", s, "5m", ts[i], k, close[i] * (1 + rng.normal(0, 0.002)), "{}",
                                      False, ts[i] + timedelta(minutes=5)))
        for table, col in (("predictions", "ts"), ("forecasts", "origin_ts")):  # the record's series index
            c.execute("INSERT INTO output_series (output_table, model_name, model_version, symbol, timeframe, first_ts, "
                      f"last_ts) SELECT %s, model_name, model_version, symbol, timeframe, min({col}), max({col}) FROM "
                      f"{table} GROUP BY 2, 3, 4, 5 ON CONFLICT DO NOTHING", (table,))
        c.execute("ANALYZE")
    import pandas as pd

    from trading_platform.models.scoring import Version
    from trading_platform.store.outputs import OutputWriter
    from trading_platform.store.paper import save_strategy

    spec = parse(strategy(f"step{months}"))
    versions = [Version("pump_xgb", "1", "champion", {"tp.family": "pump_xgb"}),
                Version("nhits.5m", "1", "champion", {"tp.family": "nhits"})]
    times = []
    with connect(dsn) as store:
        save_strategy(store.conn, spec)
        paper_live.start(store, spec)
        p = {s: 100.0 for s in SYMBOLS}
        for k in range(steps):
            ts = start + timedelta(minutes=5 * (n + k))
            w = OutputWriter(store.conn, versions, "live")
            for s in SYMBOLS:
                p[s] *= float(np.exp(rng.normal(0, 0.003)))
                df = pd.DataFrame({"ts": [ts], "open": [p[s]], "high": [p[s] * 1.002], "low": [p[s] * 0.998],
                                   "close": [p[s]], "volume": [10.0]})
                store.write_live(s, "5m", df, source="step bench")
                w.add("predictions", [("pump_xgb", "1", s, "5m", ts, 0.1, "", "{}", False)])
                w.add("forecasts", [("nhits.5m", "1", s, "5m", ts, j, p[s] * 1.003, "{}", False) for j in (1, 2, 3)])
            with store.conn.transaction():  # what the live batch commits: the outputs and its events done
                w.flush()
                store.conn.execute("UPDATE market_event_queue SET status = 'done', done_at = clock_timestamp() WHERE "
                                   "consumer = 'predictions' AND status <> 'done'")
            t = time.perf_counter()
            got = paper_live.process(store)
            times.append((time.perf_counter() - t) * 1000)
            assert got["steps"] == 1, got
    return round(statistics.median(times[2:] or times), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candles", type=int, default=500, help="candles fed, in total over the two symbols")
    ap.add_argument("--rate", type=float, default=2.0, help="candles per second, in total")
    ap.add_argument("--history-days", type=int, default=30)
    ap.add_argument("--restart-at", type=float, default=None, metavar="S",
                    help="stop and start dagster dev S seconds into the feed")
    ap.add_argument("--steps", type=int, default=40, help="steps timed per history size")
    ap.add_argument("--port", type=int, default=3331)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    t_all = time.perf_counter()

    tmp = Path(tempfile.mkdtemp(prefix="tp-paper-live-bench-"))
    home = tmp / "home"
    per_symbol = -(-args.candles // len(SYMBOLS))
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    hist_end = (now - timedelta(days=1, minutes=5 * per_symbol)).replace(minute=0)
    hist_start = hist_end - timedelta(days=args.history_days)
    os.environ.update({"TP_EMBEDDED": "1", "TP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                       "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "TP_NHITS_TIMEFRAMES": "5m",
                       "TP_HISTORY_START": hist_start.strftime("%Y-%m-01"), "TP_DEVICE": "cpu",
                       "TP_SOURCE": f"synthetic:{SEED}"})
    admin, pg_tmp = os.environ.get("TP_DATABASE_URL"), None
    if not admin:
        from trading_platform.store.embedded import ensure_embedded

        pg_tmp = tmp / "pg"
        admin = ensure_embedded(pg_tmp)
    dsn = fresh_db(admin, "paperlive")
    os.environ["TP_DATABASE_URL"] = dsn
    figures: dict = {"symbols": len(SYMBOLS), "rate": args.rate, "history_days": args.history_days,
                     "restart_at_s": args.restart_at}
    proc = None
    try:
        from dagster import DagsterInstance

        from trading_platform.instance import ensure_dagster_home
        from trading_platform.store.db import connect
        from trading_platform.symbols import sync_partitions

        ensure_dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with connect(dsn) as store:
            load_history(store, SYMBOLS, hist_start, hist_end, live=True)
            sync_partitions(DagsterInstance.get(), store)
        log(f"market: {len(SYMBOLS)} live symbols x {args.history_days} days of 5m candles "
            f"({time.perf_counter() - t:.0f} s)")
        models = train(dsn, home, os.environ["MLFLOW_TRACKING_URI"])
        log(f"models: {models['versions']} champions ({models['train_s']} s)")
        figures["train_s"] = models["train_s"]

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "TP_LOG_LEVEL": "WARNING"}
        proc = start_dagster(tmp, env, args.port)
        wait_webserver(args.port, proc)
        log("dagster dev is up (webserver and daemon)")

        (tmp / "strategy.json").write_text(json.dumps(strategy()))
        tp(env, "paper", "strategies", "add", str(tmp / "strategy.json"))
        started = json.loads(tp(env, "paper", "start", "live_bench", "--json"))
        log(f"started {started['run_id']} pinned {started['pins']} from {started['stepped_to']}")
        # a warm-up candle per symbol (the first run after a start pays cold caches), then the feed
        feed_file(dsn, 1, tmp / "warmup.csv")
        tp(env, "live", "feed", "--symbols", ",".join(SYMBOLS), "--rate", "10", "--file", str(tmp / "warmup.csv"))
        drain(dsn, 180)
        wait_paper(dsn, 60)
        import psycopg

        with psycopg.connect(dsn) as c:
            warm_id = c.execute("SELECT coalesce(max(id), 0) FROM market_events").fetchone()[0]
        feed_file(dsn, per_symbol, tmp / "feed.csv")
        replayer = Replayer(dsn)
        replayer.start()
        log(f"feeding {2 * per_symbol} candles at {args.rate}/s through tp live feed --file ...")
        feeder = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "live", "feed", "--symbols",
                                   ",".join(SYMBOLS), "--rate", str(args.rate), "--file", str(tmp / "feed.csv"),
                                   "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if args.restart_at is not None:
            time.sleep(args.restart_at)
            log("restarting dagster dev ...")
            t = time.perf_counter()
            stop(proc)
            proc = start_dagster(tmp, env, args.port)
            wait_webserver(args.port, proc)
            figures["restart_s"] = round(time.perf_counter() - t, 1)
            log(f"dagster dev is up again ({figures['restart_s']} s)")
        out, err = feeder.communicate(timeout=3600)
        if feeder.returncode:
            raise RuntimeError(f"tp live feed: rc {feeder.returncode}: {err[-3000:]}")
        fed = json.loads(out.strip().splitlines()[-1])
        backlog = drain(dsn, 300)
        replayer.halt.set()
        replayer.join(timeout=30)
        paper_left = wait_paper(dsn, 120)  # the replayed last events: the sensor's catch-up run
        figures.update(candles=fed["fed"], backlog_end=backlog, paper_backlog_end=paper_left,
                       replayed_events=len(replayer.first_done))
        lf = live_figures(dsn, FEED_SOURCE)
        figures.update(predicted=lf["done"], missing_pump_predictions=lf["missing_pump_predictions"])

        from trading_platform.paper import backtest
        from trading_platform.paper.spec import parse

        with connect(dsn) as store:
            conn = store.conn
            run_id = started["run_id"]
            stepped, pins = conn.execute("SELECT stepped_to, pins FROM paper_runs WHERE run_id = %s",
                                         (run_id,)).fetchone()
            live_rec = records(conn, run_id)
            lat = fill_latency(conn, run_id, replayer.first_done, warm_id)
            live_lat = live_latency(conn, warm_id)
            spec = parse(strategy())
            from_ts = datetime.fromisoformat(started["stepped_to"]) if isinstance(started["stepped_to"], str) \
                else started["stepped_to"]
            t = time.perf_counter()
            bt = backtest.run(store, spec, from_ts, stepped, pins=pins)
            figures["backtest_s"] = round(time.perf_counter() - t, 2)
            bt_rec = records(conn, bt["run_id"])
            dup_keys = conn.execute("SELECT count(*) FROM (SELECT 1 FROM orders WHERE run_id = %s GROUP BY symbol, "
                                    "timeframe, signal_ts, intent HAVING count(*) > 1) d", (run_id,)).fetchone()[0]
            status = json.loads(tp(env, "paper", "status", "--json"))
        figures.update(
            stepped_to=stepped.isoformat(), orders=len(live_rec["orders"]), fills=len(live_rec["fills"]),
            trades=len(live_rec["trades"]), backtest_orders=len(bt_rec["orders"]),
            parity_mismatches=sum(mismatches(live_rec[k], bt_rec[k]) for k in live_rec),
            parity_by_table={k: mismatches(live_rec[k], bt_rec[k]) for k in live_rec},
            duplicate_orders=dup_keys + max(0, len(live_rec["orders"]) - len(bt_rec["orders"])),
            live_p50_s=pct(live_lat, 0.5), live_p99_s=pct(live_lat, 0.99), fills_timed=len(lat), candle_to_fill_p50_s=pct(lat, 0.5), candle_to_fill_p99_s=pct(lat, 0.99),
            consumer=(status.get("consumer") or {}).get("backlog"))
        log(f"live run: {figures['orders']} orders, {figures['fills']} fills, {figures['trades']} trades; backtest "
            f"{figures['backtest_orders']} orders; mismatches {figures['parity_by_table']}")
    finally:
        if proc is not None:
            stop(proc)
    try:
        t = time.perf_counter()
        figures["step_ms_1m"] = step_timing(admin, 1, args.steps)
        figures["step_ms_12m"] = step_timing(admin, 12, args.steps)
        figures["step_timing_s"] = round(time.perf_counter() - t, 1)
        log(f"one step: {figures['step_ms_1m']} ms with 1 month stored, {figures['step_ms_12m']} ms with 12")
    finally:
        if pg_tmp is not None:
            from trading_platform.store.embedded import stop_embedded

            stop_embedded(pg_tmp)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    lp99, fp99 = figures.get("live_p99_s"), figures.get("candle_to_fill_p99_s")
    figures["wall_s"] = round(time.perf_counter() - t_all, 1)
    figures["targets"] = {
        "candles_at_least_500": figures.get("candles", 0) >= 500,
        "parity_mismatches_0": figures.get("parity_mismatches") == 0,
        "duplicate_orders_0": figures.get("duplicate_orders") == 0,
        "candle_to_fill_p99_within_live_p99_plus_2s": lp99 is not None and fp99 is not None and fp99 <= lp99 + 2,
        "step_12m_at_most_1_5x_1m": figures["step_ms_12m"] <= 1.5 * figures["step_ms_1m"],
        "within_20_min": figures["wall_s"] <= 1200,
    }
    print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()

"""Paper trading (issue 25): the engine against an independent numpy reference, a backtest end to end, duplicate
orders, look-ahead, and the power and the false alarms of the comparison with the controls.

1. **Engine vs reference.** ``--symbols`` series of ``--timeframe`` candles over ``--months`` (a random walk whose
   opens gap from the previous close), each traded alone by the benchmark strategy: enter when a seeded signal
   fires (about 15 % of closes), fully invested (``position_fraction`` 1: every entry is resized to the cash, the
   ``cash`` rule), stop 1 %, target 2 %, out after 12 candles, a 2-candle cooldown (refusals), fees, spread,
   slippage and impact. The engine (``Engine.step``, timed alone: candles built beforehand) and a vectorized numpy
   reference written from the rules in docs/paper.md (next-open fills, costs, exits inside a candle's range, a
   window search per trade; it is never fed the engine's fills) give the equity at every close:
   ``equity_rel_diff`` is the largest relative difference, ``engine_candles_per_s`` and
   ``reference_candles_per_s`` their speeds, ``orders`` and ``entry_fraction`` show the strategy trades.
2. **End to end.** The same market (5m candles by default: 4 symbols x 12 months, about 420,000 candles) and a
   signal output per candle are stored in PostgreSQL (an embedded server, or ``TP_DATABASE_URL``'s) as the scoring
   writes them (a champion pinned); ``tp paper backtest``'s function runs the strategy on the stored outputs with
   MLflow (a SQLite store in a temporary home) and ``--replicates`` random entries: ``backtest_s``.
3. **Every month twice.** The months are backtested one after the other as ``paper_backtest`` does (each from the
   previous month's stored end state), then all again: ``duplicate_orders`` counts orders the second pass added
   and order keys stored twice; ``chain_equals_one_run`` compares the chain's orders with the one-range run's.
4. **Look-ahead.** Candles and outputs after the middle of the range are altered (prices tripled, every signal
   0.99) and the backtest run again: ``lookahead_changed`` counts orders and fills before that time that differ.
5. **Controls.** On 20 random walks with costs, random entry (the strategy's trade count and holding times at
   random candles) against buy-and-hold at its exposure: ``random_beats_bh`` counts the markets where the paired
   block-bootstrap interval lies above 0 (target at most 1). On 10 planted-edge markets (log returns AR(1) with
   coefficient 0.15 over 5,000 candles, no costs) a rule on the previous return against 200 random entries:
   ``planted_edge_detected`` (target at least 9).

    python benchmarks/paper.py [--symbols 4] [--months 12] [--timeframe 5m] [--replicates 200]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import admin_dsn, fresh_db  # noqa: E402

# then out of the path (Python put it first too, running this script): benchmarks/watchdog.py would shadow the
# watchdog package Dagster's instance imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT", "BNB/USDT", "DOGE/USDT", "LTC/USDT"]
ENTER_P = 0.15     # the signal fires on this share of closes
THRESHOLD = 0.56   # the strategy's signal threshold (a stored output above it is a firing signal)
SL, TP, HOLD, COOLDOWN = 0.01, 0.02, 12, 2
COSTS = {"fee_bps": 10, "spread_bps": 4, "slippage_bps": 2, "impact": 0.05}


def strategy(universe: list[str], tf: str, name: str = "bench") -> dict:
    return {"name": name, "universe": [{"symbol": s, "timeframe": tf} for s in universe], "cash": 10_000,
            "rules": {"signal": {"model": "signal_lgbm", "min": THRESHOLD}, "stop_loss": SL, "take_profit": TP,
                      "time_exit": HOLD},
            "costs": dict(COSTS), "risk": {"position_fraction": 1.0 / len(universe), "cooldown_bars": COOLDOWN}}


def market(n: int, seed: int) -> dict:
    """A random walk of ``n`` candles (log-return sd 0.2 %), opens gapping from the previous close, and volume."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    prev = np.concatenate([[100.0], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 0.0005, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.001, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.001, n)))
    volume = rng.uniform(50, 500, n)
    signal = rng.random(n)
    signal = np.where(rng.random(n) < ENTER_P, THRESHOLD + (1 - THRESHOLD) * signal, THRESHOLD * signal)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "signal": signal}


# ---- 1. the engine and the reference ------------------------------------------------------------------------------
def reference(m: dict, cash0: float) -> tuple[np.ndarray, int]:
    """Equity at every close of one series traded by the benchmark strategy, from the documented rules alone:
    decide at close d (flat, not cooling down), buy at open d+1 (half-spread, slippage, impact, fee; resized to
    what the cash buys), stop and target from the fill price checked in each candle's range (an open beyond them
    exits at the open; both inside: the stop), else sell at the open after 12 candles held; a 2-candle cooldown.
    Returns the equity and the number of orders."""
    o, h, lo, c, v = m["open"], m["high"], m["low"], m["close"], m["volume"]
    n = len(c)
    fee = COSTS["fee_bps"] / 1e4
    base = (COSTS["spread_bps"] / 2 + COSTS["slippage_bps"]) / 1e4
    cf = (COSTS["spread_bps"] / 2 + COSTS["slippage_bps"] + COSTS["fee_bps"]) / 1e4
    imp = COSTS["impact"]
    fires = np.flatnonzero(m["signal"] >= THRESHOLD)
    eq = np.empty(n)
    cash = cash0
    i, filled_to, orders = 0, 0, 0
    while True:
        k = np.searchsorted(fires, i)
        if k >= len(fires):
            break
        d = int(fires[k])
        orders += 1
        if d + 1 >= n:  # decided on the last candle: the order waits
            break
        eq[filled_to:d + 1] = cash
        notional = min(1.0 * cash, cash / (1.0 + cf))
        q = notional / c[d]
        p = o[d + 1] * (1 + (base + imp * q / v[d + 1]))
        cap = cash / (p * (1 + fee))
        if q > cap * (1 + 1e-12):
            q = cap
            p = o[d + 1] * (1 + (base + imp * q / v[d + 1]))
        cash -= q * p + abs(q * p) * COSTS["fee_bps"] / 1e4
        stop, target = p * (1 - SL), p * (1 + TP)
        end = min(d + HOLD, n - 1)
        w = slice(d + 1, end + 1)
        ow, hw, lw = o[w], h[w], lo[w]
        s_open, t_open = ow <= stop, ow >= target
        s_in, t_in = lw <= stop, hw >= target
        hit = s_open | t_open | s_in | t_in
        if hit.any():
            j = int(np.argmax(hit))
            level = ow[j] if (s_open[j] or t_open[j]) else (stop if s_in[j] else target)
            x = d + 1 + j
            eq[d + 1:x] = cash + q * c[d + 1:x]
            sp = level * (1 - (base + imp * q / v[x]))
            cash += q * sp - q * sp * COSTS["fee_bps"] / 1e4
            orders += 1
            eq[x] = cash
        elif d + HOLD + 1 < n:
            x = d + HOLD + 1
            eq[d + 1:x] = cash + q * c[d + 1:x]
            sp = o[x] * (1 - (base + imp * q / v[x]))
            cash += q * sp - abs(q * sp) * COSTS["fee_bps"] / 1e4
            orders += 1
            eq[x] = cash
        else:
            eq[d + 1:] = cash + q * c[d + 1:]
            return eq, orders + (d + HOLD <= n - 1)  # a time exit decided at the last close waits
        filled_to = x + 1
        i = x + COOLDOWN + 1 if COOLDOWN else x
    if filled_to < n:
        eq[filled_to:] = cash
    return eq, orders


def engine_run(m: dict, symbol: str, tf: str, step_s: int):
    from trading_platform.paper.engine import Bar, Engine, Signal
    from trading_platform.paper.spec import parse

    sp = parse(strategy([symbol], tf))
    n = len(m["close"])
    ts = [START + timedelta(seconds=step_s * (i + 1)) for i in range(n)]
    bars = [Bar(float(m["open"][i]), float(m["high"][i]), float(m["low"][i]), float(m["close"][i]),
                float(m["volume"][i]), i) for i in range(n)]
    yes, no = Signal(True), Signal(False, "below_threshold")
    sig = m["signal"] >= THRESHOLD
    series = (symbol, tf)
    e = Engine(sp, "bench")
    t = time.perf_counter()
    for i in range(n):
        e.step(ts[i], {series: bars[i]}, {series: yes if sig[i] else no})
    return e, time.perf_counter() - t


def part_engine(args, step_s: int, n: int) -> dict:
    diffs, eng_s, ref_s, orders, entries, events, cands = [], 0.0, 0.0, 0, 0, 0, 0
    for k in range(args.symbols):
        m = market(n, seed=100 + k)
        e, dt = engine_run(m, SYMBOLS[k], args.timeframe, step_s)
        eng_s += dt
        t = time.perf_counter()
        ref, ref_orders = reference(m, 10_000.0)
        ref_s += time.perf_counter() - t
        got = np.array([row[1] for row in e.rec.equity])
        diffs.append(float(np.max(np.abs(got - ref) / np.abs(got))))
        orders += len(e.rec.orders)
        entries += sum(1 for o in e.rec.orders if o.intent == "entry")
        events += len(e.rec.risk_events)
        cands += n
        if ref_orders != len(e.rec.orders):
            print(f"  {SYMBOLS[k]}: the reference placed {ref_orders} orders, the engine {len(e.rec.orders)}",
                  flush=True)
        print(f"  {SYMBOLS[k]}: engine {n / dt:,.0f} candles/s, {len(e.rec.orders)} orders, "
              f"{len(e.rec.risk_events)} risk events, equity rel diff {diffs[-1]:.2e}", flush=True)
    return {"equity_rel_diff": max(diffs), "engine_candles_per_s": round(cands / eng_s),
            "reference_candles_per_s": round(cands / ref_s), "ratio_engine_vs_reference": round(ref_s / eng_s, 3),
            "orders": orders, "entry_fraction": round(entries / cands, 4), "risk_events": events,
            "engine_candles": cands}


# ---- 2-4. through PostgreSQL and MLflow ---------------------------------------------------------------------------
def store_market(dsn: str, args, step_s: int, n: int) -> None:
    import psycopg

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.store.db import connect

    with connect(dsn) as store:
        for s in SYMBOLS[:args.symbols]:
            store.add_symbol(SymbolInfo.create(s, exchange="binance", timeframes=[args.timeframe]))
    ts = [START + timedelta(seconds=step_s * i) for i in range(n)]
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO model_champions (model_name, alias, version, valid_from, moved_by) "
                  "VALUES ('signal_lgbm', 'champion', '1', %s, 'gate')", (START - timedelta(days=1),))
        for k, s in enumerate(SYMBOLS[:args.symbols]):
            m = market(n, seed=100 + k)
            with c.cursor() as cur, cur.copy("COPY ohlcv (symbol, timeframe, ts, open, high, low, close, volume) "
                                             "FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((s, args.timeframe, ts[i], m["open"][i], m["high"][i], m["low"][i], m["close"][i],
                                  m["volume"][i]))
            with c.cursor() as cur, cur.copy("COPY predictions (model_name, model_version, symbol, timeframe, ts, "
                                             "value, label, details, in_sample, known_at) FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row(("signal_lgbm", "1", s, args.timeframe, ts[i], float(m["signal"][i]), "up", "{}",
                                  False, ts[i] + timedelta(seconds=step_s)))
        series = c.execute("SELECT count(*) FROM output_series WHERE output_table = 'predictions'").fetchone()[0]
        if not series:  # the record's series index, as the writer keeps it
            c.execute("INSERT INTO output_series (output_table, model_name, model_version, symbol, timeframe, "
                      "first_ts, last_ts) SELECT 'predictions', model_name, model_version, symbol, timeframe, min(ts), "
                      "max(ts) FROM predictions GROUP BY 2, 3, 4, 5")


def months_of(n_months: int) -> list[datetime]:
    out, y, m = [], START.year, START.month
    for _ in range(n_months + 1):
        out.append(datetime(y, m, 1, tzinfo=timezone.utc))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def part_store(args, dsn: str, step_s: int, n: int) -> dict:
    import psycopg

    from trading_platform.api import paper as api
    from trading_platform.assets.paper import backtest_month
    from trading_platform.paper import backtest
    from trading_platform.paper.spec import parse
    from trading_platform.store.db import connect

    spec_raw = strategy(SYMBOLS[:args.symbols], args.timeframe)
    api.add_strategy(json.dumps(spec_raw) + "\n", instance=_Instance())
    bounds = months_of(args.months)
    t0, t1 = bounds[0], bounds[-1]
    out: dict = {}
    t = time.perf_counter()
    got = api.backtest("bench", t0.isoformat(), t1.isoformat(), replicates=args.replicates)
    out["backtest_s"] = round(time.perf_counter() - t, 2)
    out["backtest_orders"] = got["stats"]["orders"]
    out["backtest_trades"] = got["stats"]["trades"]
    out["vs_buy_and_hold_beats"] = got["vs_buy_and_hold"]["beats"]
    out["vs_random_entry_beats"] = got["vs_random_entry"]["beats"]
    out["random_entry_vectorized"] = got["vs_random_entry"].get("vectorized")
    out["random_entry_engine_check_rel_diff"] = got["vs_random_entry"].get("engine_check_rel_diff")
    out["mlflow_logged"] = bool(got["run"].get("mlflow_run_id"))
    print(f"  backtest end to end: {out['backtest_s']} s, {out['backtest_orders']} orders, "
          f"{args.replicates} replicates (vectorized: {out['random_entry_vectorized']}, engine check "
          f"{out['random_entry_engine_check_rel_diff']})", flush=True)

    # 3. every month twice, each from the previous one's stored end state
    one_run = got["run"]["run_id"]
    with connect(dsn) as store:
        passes = []
        for p in range(2):
            t = time.perf_counter()
            for m in bounds[:-1]:
                backtest_month(store, "bench", m.strftime("%Y-%m-01"), replicates=10, start_fresh=(m == t0))
            passes.append(store.conn.execute("SELECT count(*) FROM orders WHERE run_id <> %s",
                                             (one_run,)).fetchone()[0])
            print(f"  months, pass {p + 1}: {passes[-1]} orders, {time.perf_counter() - t:.1f} s", flush=True)
        keys = store.conn.execute(
            "SELECT count(*) - count(DISTINCT (symbol, timeframe, signal_ts, intent)) FROM orders WHERE run_id <> %s",
            (one_run,)).fetchone()[0]
        out["duplicate_orders"] = int(passes[1] - passes[0] + keys)

        def orders(where, arg):
            return store.conn.execute(
                f"SELECT symbol, signal_ts, side, intent, quantity, filled, status FROM orders WHERE {where} "
                "ORDER BY symbol, signal_ts, intent", (arg,)).fetchall()

        out["chain_equals_one_run"] = orders("run_id <> %s", one_run) == orders("run_id = %s", one_run)

        # 4. look-ahead: alter what comes after the middle of the first two months, run them again
        sp = parse(spec_raw)
        end = bounds[min(2, len(bounds) - 1)]
        cut = t0 + (end - t0) / 2
        pins = {"signal_lgbm": "1"}

        def before(e):
            return ([(o.client_order_id, o.status if o.signal_ts + timedelta(seconds=2 * step_s) < cut else None,
                      o.quantity) for o in e.rec.orders if o.signal_ts < cut],
                    [f for f in e.rec.fills if f[1] < cut])

        a = before(backtest.run(store, sp, t0, end, pins=pins, save=False)["engine"])
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("UPDATE ohlcv SET open = open * 3, high = high * 3, low = low * 3, close = close * 3 "
                      "WHERE ts >= %s", (cut,))
            c.execute("UPDATE predictions SET value = 0.99 WHERE ts >= %s", (cut,))
        b = before(backtest.run(store, sp, t0, end, pins=pins, save=False)["engine"])
        out["lookahead_changed"] = (sum(x != y for x, y in zip(a[0], b[0])) + abs(len(a[0]) - len(b[0]))
                                    + sum(x != y for x, y in zip(a[1], b[1])) + abs(len(a[1]) - len(b[1])))
        out["lookahead_orders_checked"] = len(a[0])
    return out


class _Instance:
    """The strategy partitions need a Dagster instance; the benchmark has no daemon: an ephemeral one."""

    def __new__(cls):
        from dagster import DagsterInstance

        return DagsterInstance.ephemeral()


# ---- 5. the controls: false alarms on random walks, power on a planted edge ---------------------------------------
def part_controls(replicates: int) -> dict:
    from trading_platform.paper import controls, vectorized
    from trading_platform.paper.engine import Engine, Signal
    from trading_platform.paper.spec import parse

    H = timedelta(hours=1)
    series = ("BTC/USDT", "1h")

    def candles_of(r, sd=0.01):
        close = 100 * np.exp(np.cumsum(r))
        open_ = np.concatenate([[100.0], close[:-1]])
        hi, lo = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
        ts = [START + (i + 1) * H for i in range(len(r))]
        return {series: controls.bars_from_arrays(series, ts, open_, hi, lo, close, np.full(len(r), 1e9))}

    costs = parse({"name": "rw", "kind": "random_entry", "universe": [{"symbol": series[0], "timeframe": "1h"}],
                   "cash": 10_000, "costs": {"fee_bps": 10, "spread_bps": 4}, "risk": {"position_fraction": 0.5}})
    rng = np.random.default_rng(20)
    beats = 0
    for m in range(20):
        c = candles_of(rng.normal(0, 0.01, 5000))
        trades = [(series, int(rng.integers(5, 30))) for _ in range(60)]
        sched = controls.random_schedule(controls.lengths_of(c), trades, seed=[m])
        rand = controls.run_schedule(costs, c, sched, f"rw{m}")
        bh = controls.buy_and_hold_at(costs, c, controls.mean_exposure(rand), f"bh{m}")
        beats += controls.compare(controls.equity_curve(rand), controls.equity_curve(bh))["beats"]
    planted = 0
    edge = parse({"name": "edge", "universe": [{"symbol": series[0], "timeframe": "1h"}], "cash": 10_000,
                  "rules": {"signal": {"model": "m", "min": 0.5}, "time_exit": 1}, "risk": {"position_fraction": 1.0}})
    rnd = controls.random_entry(edge)
    rng = np.random.default_rng(15)
    percentiles = []
    for m in range(10):
        eps = rng.normal(0, 0.01, 5000)
        r = np.zeros(5000)
        for i in range(1, 5000):
            r[i] = 0.15 * r[i - 1] + eps[i]
        c = candles_of(r)
        e = Engine(edge, f"edge{m}")
        for i, (t, bar) in enumerate(c[series]):  # the rule on the return that just closed
            e.step(t, {series: bar}, {series: Signal(bool(r[i] > 0))})
        scheds = [controls.random_schedule(controls.lengths_of(c), controls.trades_of(e), seed=[m, k])
                  for k in range(replicates)]
        reps = vectorized.replicate_equity(rnd, c, scheds)
        got = controls.compare(controls.equity_curve(e), reps)
        planted += got["beats"]
        percentiles.append(got["percentile"])
    return {"random_beats_bh": int(beats), "random_walk_markets": 20, "planted_edge_detected": int(planted),
            "planted_edge_markets": 10, "planted_edge_percentile_min": min(percentiles)}


def main() -> None:
    from trading_platform.core.timeframes import seconds

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--timeframe", default="5m")
    ap.add_argument("--replicates", type=int, default=200)
    args = ap.parse_args()
    if not 1 <= args.symbols <= len(SYMBOLS):
        ap.error(f"--symbols must be from 1 to {len(SYMBOLS)}")
    step_s = seconds(args.timeframe)
    n = int((months_of(args.months)[-1] - START).total_seconds() // step_s)
    wall = time.perf_counter()
    out: dict = {"symbols": args.symbols, "months": args.months, "timeframe": args.timeframe,
                 "candles_per_series": n, "replicates": args.replicates}
    print(f"1. the engine against the numpy reference: {args.symbols} x {n:,} {args.timeframe} candles", flush=True)
    out.update(part_engine(args, step_s, n))
    print("5. the controls: 20 random walks, 10 planted edges", flush=True)
    out.update(part_controls(args.replicates))
    print(f"  random entry beat buy-and-hold on {out['random_beats_bh']} of 20 random walks; the planted edge was "
          f"found on {out['planted_edge_detected']} of 10", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="tp-paper-bench-"))
    admin, tmp_pg = admin_dsn()
    try:
        dsn = fresh_db(admin, "paper")
        os.environ.update({"TP_DATABASE_URL": dsn, "TP_HOME": str(tmp / "home"),
                           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"})
        (tmp / "home").mkdir()
        t = time.perf_counter()
        store_market(dsn, args, step_s, n)
        print(f"2-4. {args.symbols * n:,} candles and signals stored in {time.perf_counter() - t:.1f} s", flush=True)
        out.update(part_store(args, dsn, step_s, n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_pg is not None:
            from trading_platform.store.embedded import stop_embedded

            stop_embedded(tmp_pg / "pg")
            shutil.rmtree(tmp_pg, ignore_errors=True)
    out["wall_s"] = round(time.perf_counter() - wall, 1)
    out["targets_met"] = bool(out["equity_rel_diff"] <= 1e-9 and out["engine_candles_per_s"] >= 100_000
                              and out["backtest_s"] <= 180 and out["duplicate_orders"] == 0
                              and out["lookahead_changed"] == 0 and out["random_beats_bh"] <= 1
                              and out["planted_edge_detected"] >= 9)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""The exchange collector (`tp live collect`) against local exchanges: nothing lost, nothing written twice,
no forming candle written, the close-to-event latency, the recovery after a `kill -9`, and its CPU cost.

A local Binance (JSON frames) and a local MEXC (binary protobuf frames), each a WebSocket and an HTTP server
in this process (``tests/fake_exchange.py``, ``tests/fake_mexc.py``: the frames and REST answers in the
exchanges' own formats, parsed by ccxt.pro's own handlers in the collector), serve ``--symbols`` symbols each
x 1m from a candle series whose times lie in the past, on a simulated clock running ``--speed`` times real
time that the collector takes by injection. The collector runs in a process of its own (the real
``Collector``; only its clock and the exchanges' URLs are injected) against a throwaway PostgreSQL
(TP_DATABASE_URL's server if set, else an embedded one) through the live write path.

Each simulated minute, per series: the first frame of the new bucket (the frame that proves the previous
bucket closed), a repeat of it, an out-of-order frame of the previous bucket with stale values, a forming
update, and the final values. During the run: ``--disconnects`` forced disconnects of every WebSocket
connection (spread over the run), and one ``kill -9`` of the collector, restarted after ``--down-s``
seconds.

Figures (against the series' truth): ``lost`` (closed candles not stored at the end), ``duplicated``
(candles with more than one outbox event), ``forming_written`` (stored candles whose values are not the
final ones, or forming candles the write path quarantined), ``close_to_event_ms_p50/p99`` (from the real
time the first frame proving a bucket closed was sent to the commit time of that candle's outbox event,
over buckets with no disconnect or kill around them), ``gap_recovered_s`` (from the restart after the kill
until every candle closed by then is stored), ``cpu_s_per_1000_candles`` (the collector processes' user +
system CPU per 1000 candles written).

    python benchmarks/live_collect.py [--symbols 50] [--minutes 24] [--speed 6] [--exchanges binance,mexc]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

T_BASE = 1_709_251_200_000  # 2024-03-01 00:00 UTC: the series' first candle
MIN = 60_000
HISTORY = 10                # candles stored by the exchange before the collector starts


def truth_rows(n: int, k: int) -> list[list]:
    """n one-minute candles of series k (a deterministic walk)."""
    import numpy as np

    rng = np.random.default_rng(k)
    price = 10.0 + k
    rows = []
    for i in range(n):
        o = price
        c = round(o * float(np.exp(rng.normal(0, 0.002))), 8)
        h = round(max(o, c) * (1 + abs(float(rng.normal(0, 0.001)))), 8)
        lo = round(min(o, c) * (1 - abs(float(rng.normal(0, 0.001)))), 8)
        rows.append([T_BASE + i * MIN, o, h, lo, c, round(100 + float(rng.random()) * 50, 6)])
        price = c
    return rows


def partial(row: list, share: float) -> list:
    """The forming candle part of the way through its minute (a valid candle with other values)."""
    ts, o, h, lo, c, v = row
    c1 = round(o + (c - o) * share, 8)
    return [ts, o, max(o, c1), min(o, c1), c1, round(v * share, 6)]


def fakes_for(exchanges: list[str]):
    out = {}
    for ex in exchanges:
        if ex == "binance":
            from fake_exchange import FakeBinance

            out[ex] = FakeBinance
        elif ex == "mexc":
            from fake_mexc import FakeMexc

            out[ex] = FakeMexc
        else:
            raise SystemExit(f"--exchanges: no local fake of {ex!r} (binance, mexc)")
    return out


# ---- the collector process -----------------------------------------------------------------------------------
def worker(args) -> None:
    """The real Collector, with the simulated clock and the local exchanges' URLs injected."""
    from trading_platform.live.collector import Collector, CollectorSettings, default_exchange

    ports = json.loads(args.ports)
    classes = fakes_for(list(ports))
    sim0, real0, speed = args.sim0, args.real0, args.speed

    def clock() -> int:
        return int(sim0 + (time.time() - real0) * speed * 1000)

    def factory(ex_id: str):
        ex = default_exchange(ex_id)
        fake = classes[ex_id]({})
        fake._port = ports[ex_id]  # the running fake's port: configure() rewrites the URLs to it
        fake.configure(ex)
        return ex

    c = Collector(args.dsn, settings=CollectorSettings(reconnect_s=0.2), clock=clock, exchange_factory=factory)

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, c.stop)
        await c.run()

    asyncio.run(main())


# ---- the benchmark -------------------------------------------------------------------------------------------
def database(tmp: Path) -> tuple[str, object]:
    import psycopg

    server = os.environ.get("TP_DATABASE_URL")
    stop = None
    if not server:
        from trading_platform.store.embedded import ensure_embedded, stop_embedded

        server = ensure_embedded(tmp / "pg")
        stop = lambda: stop_embedded(tmp / "pg")  # noqa: E731
    admin = server.replace("/trading?", "/postgres?") if "/trading?" in server else server
    name = f"bench_collect_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    d = conninfo_to_dict(admin)
    d["dbname"] = name
    return make_conninfo(**d), stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=50, help="symbols per exchange")
    ap.add_argument("--minutes", type=int, default=24, help="simulated minutes streamed")
    ap.add_argument("--speed", type=float, default=6.0, help="simulated seconds per real second")
    ap.add_argument("--exchanges", default="binance,mexc")
    ap.add_argument("--disconnects", type=int, default=3)
    ap.add_argument("--down-s", type=float, default=8.0, help="real seconds the collector stays killed")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dsn", help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    ap.add_argument("--sim0", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--real0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    exchanges = [e.strip() for e in args.exchanges.split(",") if e.strip()]
    classes = fakes_for(exchanges)
    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-collect-"))
    dsn, stop_db = database(tmp)
    try:
        figures = asyncio.run(run(args, exchanges, classes, dsn))
    finally:
        if stop_db:
            stop_db()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))


async def run(args, exchanges, classes, dsn) -> dict:
    import psycopg

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.store.db import connect

    n_min = HISTORY + args.minutes + 2
    series = {}  # (exchange, symbol) -> truth rows
    with connect(dsn, run_migrations=True) as store:
        for ex in exchanges:
            for i in range(args.symbols):
                sym = f"S{i:03d}{ex[:2].upper()}/USDT"
                series[(ex, sym)] = truth_rows(n_min, len(series))
                store.add_symbol(SymbolInfo.create(sym, category="crypto", exchange=ex, timeframes=["1m"],
                                                   live=True))
    speed = args.speed
    sim0 = T_BASE + HISTORY * MIN + 5_000          # 5 s into the first streamed minute
    real0 = time.time()

    def sim() -> int:
        return int(sim0 + (time.time() - real0) * speed * 1000)

    fakes = {}
    for ex in exchanges:
        rows = {sym: r for (e, sym), r in series.items() if e == ex}
        # the exchange's REST holds what has opened by the simulated clock (the forming candle with its final
        # values: a collector must not write it before it closes)
        fakes[ex] = await classes[ex](rows, clock=sim).start()
    ports = {ex: f.port for ex, f in fakes.items()}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--dsn", dsn, "--ports", json.dumps(ports),
           "--sim0", str(sim0), "--real0", str(real0), "--speed", str(speed)]
    env = {**os.environ, "TP_LOG_LEVEL": "WARNING"}
    procs = [subprocess.Popen(cmd, env=env)]
    cpu = 0.0
    proof: dict[tuple, float] = {}      # (exchange, symbol, bucket ms) -> real time its closing frame was sent
    disturbed: list[tuple[float, float]] = []  # real-time spans of disconnects and the kill
    sent_phase: dict[tuple, int] = {}
    subscribed: dict[tuple, bool] = {}  # whether the series' stream is subscribed on an open connection now
    since: dict[tuple, list[float]] = {}  # real times it became subscribed (start, reconnects, restart)
    first_bucket = HISTORY
    last_bucket = HISTORY + args.minutes
    drops = [first_bucket + round((k + 1) * args.minutes / (args.disconnects + 2)) for k in range(args.disconnects)]
    kill_bucket = first_bucket + round((args.disconnects + 1) * args.minutes / (args.disconnects + 2))
    killed = restart_at = None
    gap_recovered_s = None
    recover_target = None
    frames = 0

    def wait_cpu(p) -> float:
        _, _, ru = os.wait4(p.pid, 0)
        p.returncode = 0
        return ru.ru_utime + ru.ru_stime

    def stored_count(conn, until_ms) -> int:
        return conn.execute("SELECT count(*) FROM ohlcv WHERE timeframe = '1m' AND ts < to_timestamp(%s / 1000.0)",
                            (until_ms,)).fetchone()[0]

    conn = psycopg.connect(dsn, autocommit=True)
    print(f"{len(series)} series ({', '.join(exchanges)}) x {args.minutes} simulated minutes at {speed}x; "
          f"disconnects at minutes {[d - first_bucket for d in drops]}, kill -9 at minute {kill_bucket - first_bucket}",
          flush=True)
    while True:
        now = sim()
        b = (now - T_BASE) // MIN
        phase = ((now - T_BASE) % MIN) / MIN
        if b > last_bucket:
            break
        for (ex, sym), rows in series.items():
            step = 0 if phase < 0.35 else 1 if phase < 0.75 else 2
            key = (ex, sym, b)
            done = sent_phase.get(key, -1)
            while done < step:
                done += 1
                f = fakes[ex]
                if done == 0:
                    t = time.time()
                    n = await f.push(sym, partial(rows[b], 0.2))          # proves bucket b - 1 closed
                    if n:
                        proof[(ex, sym, rows[b - 1][0])] = t
                    await f.push(sym, partial(rows[b], 0.2))              # repeated
                    await f.push(sym, partial(rows[b - 1], 0.5))          # out of order, stale values
                    frames += 3
                elif done == 1:
                    await f.push(sym, partial(rows[b], 0.6))
                    frames += 1
                else:
                    await f.push(sym, rows[b])                            # the final values
                    frames += 1
            sent_phase[key] = done
        for ex, f in fakes.items():
            active = f.active_subscriptions
            for (e, sym) in series:
                if e == ex:
                    on = f.stream_name(sym, "1m") in active
                    if on and not subscribed.get((ex, sym)):
                        since.setdefault((ex, sym), []).append(time.time())
                    subscribed[(ex, sym)] = on
        if drops and b >= drops[0] and phase > 0.5:
            drops.pop(0)
            t = time.time()
            for f in fakes.values():
                await f.drop()
            disturbed.append((t, time.time()))
            print(f"  minute {b - first_bucket}: every WebSocket connection dropped", flush=True)
        if killed is None and b >= kill_bucket and phase > 0.5:
            killed = time.time()
            procs[-1].send_signal(signal.SIGKILL)
            cpu += wait_cpu(procs[-1])
            print(f"  minute {b - first_bucket}: collector killed (SIGKILL)", flush=True)
        if killed is not None and restart_at is None and time.time() - killed >= args.down_s:
            restart_at = time.time()
            recover_target = sim() // MIN * MIN                 # every candle closed by the restart
            procs.append(subprocess.Popen(cmd, env=env))
            disturbed.append((killed, time.time()))
        if restart_at is not None and gap_recovered_s is None:
            want = sum(1 for rows in series.values() for r in rows if r[0] + MIN <= recover_target)
            if stored_count(conn, recover_target) >= want:
                gap_recovered_s = time.time() - restart_at
                print(f"  gap after the kill recovered {gap_recovered_s:.2f} s after the restart", flush=True)
        await asyncio.sleep(0.02)
    # the last streamed bucket closes with the next one's first frame: wait for the writes, then stop
    end_ms = T_BASE + (last_bucket + 1) * MIN
    deadline = time.time() + 30
    want = sum(1 for rows in series.values() for r in rows if r[0] + MIN <= sim() and r[0] < end_ms - MIN)
    while time.time() < deadline and stored_count(conn, end_ms - MIN) < want:
        await asyncio.sleep(0.2)
    procs[-1].send_signal(signal.SIGTERM)
    cpu += await asyncio.to_thread(wait_cpu, procs[-1])
    for f in fakes.values():
        await f.stop()

    # ---- figures against the truth
    truth = {(sym, r[0]): r for (ex, sym), rows in series.items() for r in rows if r[0] < end_ms - MIN}
    got = {}
    for sym, ts, o, h, lo, c, v in conn.execute(
            "SELECT symbol, (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv "
            "WHERE timeframe = '1m'").fetchall():
        got[(sym, int(ts))] = [o, h, lo, c, v]
    lost = sum(1 for k in truth if k not in got)
    wrong_values = [k for k, vals in got.items() if k in truth and any(
        abs(a - b) > 1e-9 * max(1.0, abs(b)) for a, b in zip(vals, truth[k][1:]))]
    forming = len(wrong_values)
    forming += conn.execute("SELECT count(*) FROM ingest_rejects WHERE reason LIKE 'candle not closed%'").fetchone()[0]
    ev = conn.execute("SELECT symbol, (extract(epoch FROM ts) * 1000)::bigint, count(*), "
                      "min(extract(epoch FROM created_at)) FROM market_events GROUP BY 1, 2").fetchall()
    # written before it closed on the simulated clock (REST gives the forming candle with its final values)
    early = [(s_, int(ts), round(sim0 + (float(at) - real0) * speed * 1000 - int(ts) - MIN)) for s_, ts, _, at in ev
             if sim0 + (float(at) - real0) * speed * 1000 < int(ts) + MIN]
    forming += len(early)
    if wrong_values or early:
        print(f"  forming written: {len(wrong_values)} with other values than the final ones (e.g. "
              f"{wrong_values[:3]}), {len(early)} written before they closed (e.g. {early[:3]}, ms after the close)",
              flush=True)
    duplicated = sum(n - 1 for _, _, n, _ in ev if n > 1)
    first_event = {(s, int(t)): float(at) for s, t, _, at in ev}
    # streamed candles: subscribed before their bucket began, no disconnect or kill until the frame proving them
    # closed. A bucket in progress when the stream (re)connected may lack updates: it is confirmed over REST
    lat, rest_lat, slow = [], [], []
    for (ex, sym, ts), t in proof.items():
        if (sym, ts) not in first_event:
            continue
        began = real0 + (ts - sim0) / speed / 1000
        ms = (first_event[(sym, ts)] - t) * 1000
        # streamed from its start: subscribed before the bucket began, and no disconnect or kill until its proof
        subs = [x for x in since.get((ex, sym), []) if x <= t]
        streamed = bool(subs) and subs[-1] <= began and not any(a <= t and z >= began for a, z in disturbed)
        (lat if streamed else rest_lat).append(ms)
        if streamed:
            slow.append((round(ms), ex, (ts - T_BASE) // MIN - first_bucket))
    lat.sort()
    rest_lat.sort()
    slow.sort(reverse=True)
    if slow and slow[0][0] > 250:
        by = {}
        for ms, ex, minute in slow:
            if ms > 250:
                by[(ex, minute)] = by.get((ex, minute), 0) + 1
        print(f"  streamed candles over 250 ms, by (exchange, minute): {dict(sorted(by.items()))}", flush=True)
    q = (lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)) if lat else (lambda p: None)
    qr = (lambda p: round(rest_lat[min(len(rest_lat) - 1, int(p * len(rest_lat)))], 1)) if rest_lat else (lambda p: None)
    written = len(got)
    status = conn.execute("SELECT kind, sum(reconnects), sum(gap_candles) FROM collector_status GROUP BY 1").fetchall()
    conn.close()
    figures = {
        "series": len(series), "simulated_minutes": args.minutes, "speed": speed, "frames_sent": frames,
        "candles_expected": len(truth), "candles_stored": written,
        "lost": lost, "duplicated": duplicated, "forming_written": forming,
        "close_to_event_ms_p50": q(0.5), "close_to_event_ms_p99": q(0.99), "latency_samples": len(lat),
        "rest_confirmed_close_to_event_ms_p50": qr(0.5), "rest_confirmed_close_to_event_ms_p99": qr(0.99),
        "rest_confirmed_samples": len(rest_lat),
        "gap_recovered_s": round(gap_recovered_s, 2) if gap_recovered_s is not None else None,
        "killed_for_s": args.down_s,
        "cpu_s_per_1000_candles": round(cpu / max(written, 1) * 1000, 3), "collector_cpu_s": round(cpu, 2),
        "status_after_restart": {k: {"reconnects": int(r or 0), "gap_candles": int(g or 0)} for k, r, g in status},
    }
    print(f"lost {lost}, duplicated {duplicated}, forming written {forming}; close -> event p50 "
          f"{figures['close_to_event_ms_p50']} ms, p99 {figures['close_to_event_ms_p99']} ms over {len(lat)} "
          f"streamed candles (confirmed over REST after a reconnect: p50 {figures['rest_confirmed_close_to_event_ms_p50']}"
          f" ms, p99 {figures['rest_confirmed_close_to_event_ms_p99']} ms over {len(rest_lat)}); gap after kill -9 recovered in {figures['gap_recovered_s']} s; "
          f"{figures['cpu_s_per_1000_candles']} CPU s per 1000 candles", flush=True)
    return figures


if __name__ == "__main__":
    main()

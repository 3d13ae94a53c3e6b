"""Watchdog (issue 24): from a fault to the first message, from its end to the `resolved` message.

The platform runs over an embedded PostgreSQL of its own (pgserver, in a temporary directory) as `tp up` runs it,
each service a process of its own: the Dagster daemon (``dagster-daemon run -m trading_platform.definitions``: the
live sensor and ``watchdog_sensor``), the alert delivery worker (``tp alerts deliver``), the watchdog service
(``tp watchdog run``) and a live feed (``tp live feed``: two crypto symbols, 1m candles closing in real time). One
webhook destination takes the watchdog's messages: a local receiver in this process that records each request's
arrival, its ``webhook-id`` and body. The thresholds are shortened (printed at the start; ``TP_WATCHDOG_*``).

Then, in turn, each fault, and its end:

- ``feed_stopped``: ``tp live feed`` is stopped; restarted (it writes the candles it missed at once);
- ``delivery_worker_killed``: ``tp alerts deliver`` is SIGKILLed; restarted;
- ``daemon_killed``: the daemon's process group is SIGKILLed; restarted;
- ``database_stopped``: the embedded server is stopped (``pg_ctl stop -m fast``); started again;
- ``run_failed``: a run fails with no retry left (``dagster/max_retries`` 0: Dagster tags it ``dagster/will_retry``
  false); a later run of the same job succeeds.

``detected_s[fault]`` counts from the moment the check's condition holds (its threshold crossed), computed here from
what the platform stored, not from the message: the newest candle's close plus ``stale_candles`` candles; the worker's
last recorded view plus ``worker_down_s``; the daemon's newest heartbeat plus ``daemon_down_s``; the failed run's end;
for the database, the 3rd failed look, which only the watchdog sees (the message's ``since``; ``from_fault_s`` gives
the time from the stop too). ``resolved_s[fault]`` counts from the fault's end (the restart, the success) to the
``resolved`` message. ``duplicate_messages``: requests whose key the receiver had already taken. ``spool_delivered_once``:
every message the service spooled while the database was down reached the receiver exactly once and is in
``alert_deliveries`` once, ``delivered``, after it returned. ``false_messages``: messages over the quiet stretches: 60 s
of the running platform before the faults, and (in this process, a database of its own, the sensor's checks each
minute of an injected clock) a stock market's Friday close to its Monday open with a crypto series beside it, the
candles written as they close. ``other_messages`` lists what else came during the faults (consequences of a fault,
e.g. a live run failing while the database was down), by check.

    python benchmarks/watchdog.py [--interval 5] [--quiet-s 60] [--fault-timeout 240]

The last line is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

# this file's folder is not a package path: the `watchdog` package Dagster imports is not this file
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import argparse  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Receiver:
    def __init__(self):
        self.got: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.got.append({"t": time.time(), "key": self.headers.get("webhook-id"),
                                      "json": json.loads(body or b"{}")})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def messages(self, since: float = 0.0) -> list[dict]:
        with self.lock:
            return [g for g in self.got if g["t"] >= since]

    def wait(self, check: str, kind: str, since: float, timeout: float) -> dict | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for g in self.messages(since):
                if g["json"].get("check") == check and g["json"].get("type") == kind:
                    return g
            time.sleep(0.1)
        return None


class Service:
    def __init__(self, name: str, argv: list[str], env: dict, logdir: Path, cwd: str | None = None):
        self.name, self.argv, self.env, self.logdir, self.cwd = name, argv, env, logdir, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        out = open(self.logdir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        return time.time()

    def stop(self, sig=signal.SIGINT) -> float:
        t = time.time()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return t

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def q(dsn: str, sql: str, args=()):
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        return c.execute(sql, args).fetchall()


def all_ok(dsn: str) -> bool:
    try:
        rows = q(dsn, "SELECT name, state FROM watchdog_state")
    except Exception:  # noqa: BLE001 - the database coming back
        return False
    return bool(rows) and all(s != "failing" for _, s in rows)


def wait_for(pred, timeout: float, step: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            got = pred()
        except Exception:  # noqa: BLE001 - not yet
            got = None
        if got:
            return got
        time.sleep(step)
    return None


def failing_job():
    from dagster import job, op

    state = {"fail": True}

    @op
    def nightly_export():
        if state["fail"]:
            raise RuntimeError("the export target refused the upload (benchmark fault)")

    @job(tags={"dagster/max_retries": "0"})
    def benchmark_export_job():
        nightly_export()

    return benchmark_export_job, state


# ---- the quiet stretch on an injected clock -----------------------------------------------------------------------
def quiet_stretch(admin_dsn: str, t) -> dict:
    """A stock market's Friday close to Monday's open, each minute of an injected clock: the candles are written as
    they close (the stock's in its open slots only), the sensor's checks look; every message is a false one."""
    import psycopg
    from dagster import DagsterInstance

    from trading_platform.core.calendars import slot_open
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.store.db import connect
    from trading_platform.watchdog import checks, engine

    import numpy as np

    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS quiet")
        c.execute("CREATE DATABASE quiet")
    dsn = admin_dsn.replace("/postgres?", "/quiet?")
    store = connect(dsn)
    store.add_symbol(SymbolInfo.create("AAPL", category="stock", exchange="NASDAQ", timeframes=["5m"], live=True))
    store.add_symbol(SymbolInfo.create("SOL/USDT", timeframes=["1m"], live=True))
    store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env, watchdog) VALUES "
                       "('quiet', 'webhook', 'TP_BENCH_HOOK', true)")
    start = datetime(2025, 3, 7, 19, 0, tzinfo=timezone.utc)   # Friday 14:00 New York
    end = datetime(2025, 3, 10, 15, 0, tzinfo=timezone.utc)    # Monday 11:00 New York
    for tf, sym, step in (("5m", "AAPL", 300), ("1m", "SOL/USDT", 60)):
        ts = start - timedelta(hours=2)
        while ts + timedelta(seconds=step) <= start:
            if sym != "AAPL" or slot_open("stock", "NASDAQ", np.array([int(ts.timestamp() * 1e6)]), step)[0]:
                _candle(store, sym, tf, ts)
            ts += timedelta(seconds=step)
    names = [n for n in checks.for_runner("sensor", t)]
    made, passes, now = [], 0, start
    t0 = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        while now <= end:
            # what closed by now: the crypto minute, the stock's 5 minutes when its market was open
            _candle(store, "SOL/USDT", "1m", now - timedelta(minutes=1))
            if now.minute % 5 == 0:
                ts = now - timedelta(minutes=5)
                if slot_open("stock", "NASDAQ", np.array([int(ts.timestamp() * 1e6)]), 300)[0]:
                    _candle(store, "AAPL", "5m", ts)
            look = checks.Look(store.conn, now, t, instance=instance, tracking=None)
            made += engine.run_pass(store.conn, names, look, "sensor")[1]
            passes += 1
            now += timedelta(minutes=1)
    elapsed = time.perf_counter() - t0
    store.close()
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS quiet WITH (FORCE)")
    return {"passes": passes, "messages": [m.payload["message"] for m in made], "pass_ms": round(elapsed / passes * 1e3, 2),
            "from": start.isoformat(), "to": end.isoformat()}


def _candle(store, symbol, tf, ts, close=100.0):
    store.conn.execute(
        "INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES (%s, %s, %s, %s, %s, %s, "
        "%s, 1) ON CONFLICT DO NOTHING", (symbol, tf, ts, close, close, close, close))


# ---- the platform -----------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=5.0, help="TP_WATCHDOG_INTERVAL_S")
    ap.add_argument("--quiet-s", type=float, default=60.0, help="the running platform's quiet stretch")
    ap.add_argument("--fault-timeout", type=float, default=240.0, help="seconds to wait for each message")
    args = ap.parse_args()
    started = time.time()

    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-watchdog-"))
    home = tmp / "home"
    pgdata = tmp / "pg"
    receiver = Receiver()
    thresholds = {
        "TP_WATCHDOG_INTERVAL_S": str(args.interval),
        "TP_WATCHDOG_STALE_CANDLES": "1",
        "TP_WATCHDOG_WORKER_DOWN_S": "15",
        "TP_WATCHDOG_DAEMON_DOWN_S": "45",
        "TP_WATCHDOG_PROBE_FAILURES": "3",
        "TP_WATCHDOG_PROBE_TIMEOUT_S": "2",
        "TP_WATCHDOG_BACKLOG_AGE_S": "300",
        "TP_WATCHDOG_RUN_FAILED_WINDOW_S": "600",
    }
    log("thresholds: " + " ".join(f"{k}={v}" for k, v in thresholds.items())
        + " (the rest at their defaults: remind 900 s, resolved after 2 passes)")
    from trading_platform.store.embedded import ensure_embedded, stop_embedded

    dsn = ensure_embedded(pgdata)
    admin = dsn.replace("/trading?", "/postgres?")
    env = {**os.environ, "TP_EMBEDDED": "1", "TP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "TP_DATABASE_URL": dsn, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "TP_SOURCE": "synthetic",
           "TP_LOG_LEVEL": "WARNING", "TP_BENCH_HOOK": receiver.url, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "TP_LIVE_BATCH_MAX": "500", **thresholds}
    os.environ.update(env)
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.instance import ensure_dagster_home
    from trading_platform.settings import get_settings
    from trading_platform.store.db import connect
    from trading_platform.watchdog import checks

    ensure_dagster_home(get_settings())
    store = connect(dsn)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    for s in SYMBOLS:
        store.add_symbol(SymbolInfo.create(s, timeframes=["1m"], live=True))
        for i in range(60, 0, -1):
            _candle(store, s, "1m", now - timedelta(minutes=i))
    store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env, watchdog) VALUES "
                       "('ops', 'webhook', 'TP_BENCH_HOOK', true)")
    store.close()

    t = checks.thresholds()
    quiet = quiet_stretch(admin, t)
    log(f"quiet stretch (injected clock, {quiet['from']} .. {quiet['to']}): {quiet['passes']} passes, "
        f"{len(quiet['messages'])} message(s), {quiet['pass_ms']} ms a pass")

    tp = str(BIN / "tp")
    services = {
        "daemon": Service("daemon", [str(BIN / "dagster-daemon"), "run", "-m", "trading_platform.definitions"], env,
                          tmp, cwd=str(home / "dagster")),
        "worker": Service("worker", [tp, "alerts", "deliver"], env, tmp),
        "watchdog": Service("watchdog", [tp, "watchdog", "run"], env, tmp),
        "feed": Service("feed", [tp, "live", "feed", "--symbols", ",".join(SYMBOLS), "--rate", "20"], env, tmp),
    }
    for svc in services.values():
        svc.start()
    from dagster import DagsterInstance

    instance = DagsterInstance.get()
    figures: dict = {"detected_s": {}, "resolved_s": {}, "from_fault_s": {}}
    other: Counter = Counter()
    try:
        log("waiting for the daemon's heartbeat and the sensor's first pass ...")
        ok = wait_for(lambda: instance.get_daemon_heartbeats() and q(
            dsn, "SELECT count(*) FROM watchdog_state WHERE runner = 'sensor' AND checked_at IS NOT NULL")[0][0] > 0
            and q(dsn, "SELECT count(*) FROM watchdog_state WHERE runner = 'service' AND checked_at IS NOT NULL")[0][0] > 0,
            240, 1.0)
        if not ok:
            raise RuntimeError(f"the platform did not come up (logs in {tmp})")
        t_quiet = time.time()
        time.sleep(args.quiet_s)
        live_quiet = receiver.messages(t_quiet)
        log(f"quiet stretch (the running platform, {args.quiet_s:.0f} s): {len(live_quiet)} message(s)")

        def fault(name: str, check: str, begin, onset, end, after=None):
            wait_for(lambda: all_ok(dsn), 120, 1.0)
            t_begin = time.time()
            begin()
            got = receiver.wait(check, "watchdog", t_begin, args.fault_timeout)
            if got is None:
                log(f"{name}: no {check} message within {args.fault_timeout:.0f} s")
                figures["detected_s"][name] = None
                end()
                return None
            cond = onset(got)
            figures["detected_s"][name] = round(got["t"] - cond, 2)
            figures["from_fault_s"][name] = round(got["t"] - t_begin, 2)
            t_end = end()
            res = receiver.wait(check, "watchdog_resolved", t_end, args.fault_timeout)
            figures["resolved_s"][name] = round(res["t"] - t_end, 2) if res else None
            for g in receiver.messages(t_begin):
                if g["json"].get("check") != check:
                    other[g["json"].get("check")] += 1
            log(f"{name}: {check} detected {figures['detected_s'][name]} s after its condition held "
                f"({figures['from_fault_s'][name]} s after the fault), resolved "
                f"{figures['resolved_s'][name]} s after the fault ended")
            if after:
                after(got)
            return got

        # 1. the feed stops: stale once stale_candles candles have closed past the next candle's expected close
        # (crypto: every minute is open; the newest candle opened at `newest`, the next closes at newest + 2 min)
        def feed_onset(_):
            newest = min(r[0] for r in q(dsn, "SELECT max(ts) FROM ohlcv WHERE timeframe = '1m' GROUP BY symbol"))
            return (newest + timedelta(minutes=2 + t.stale_candles)).timestamp()

        fault("feed_stopped", "data_stale", lambda: services["feed"].stop(), feed_onset,
              lambda: services["feed"].start())

        # 2. the delivery worker is killed
        def worker_onset(_):
            seen = q(dsn, "SELECT max(worker_seen_at) FROM alert_destinations")[0][0]
            return seen.timestamp() + t.worker_down_s

        fault("delivery_worker_killed", "delivery_worker_down", lambda: services["worker"].stop(signal.SIGKILL),
              worker_onset, lambda: services["worker"].start())

        # 3. the daemon is killed
        def daemon_onset(_):
            beats = instance.get_daemon_heartbeats()
            return max(hb.timestamp for hb in beats.values()) + t.daemon_down_s

        fault("daemon_killed", "daemon_down", lambda: services["daemon"].stop(signal.SIGKILL), daemon_onset,
              lambda: services["daemon"].start())

        # 4. the database stops (the service spools and sends itself) and starts again
        spooled = {}

        def db_end():
            ensure_embedded(pgdata)
            t_end = time.time()
            for name in ("feed", "worker"):  # what died with its connection comes back as `tp up` would restart it
                if not services[name].alive():
                    services[name].start()
            return t_end

        def db_after(got):
            spooled["key"] = got["key"]

        fault("database_stopped", "db_unreachable", lambda: stop_embedded(pgdata),
              lambda got: datetime.fromisoformat(got["json"]["since"]).timestamp(), db_end, db_after)
        recorded = wait_for(lambda: q(dsn, "SELECT count(*), min(status), max(status) FROM alert_deliveries "
                                           "WHERE key = %s", (spooled.get("key"),))[0], 60, 1.0)
        spool_file = json.loads((home / "watchdog" / "spool.json").read_text())
        wire = [g for g in receiver.messages() if g["key"] == spooled.get("key")]
        figures["spool"] = {"key": spooled.get("key"), "received": len(wire),
                            "recorded": list(recorded) if recorded else None,
                            "left_in_spool": len(spool_file.get("entries") or [])}
        spool_ok = (spooled.get("key") is not None and len(wire) == 1 and recorded is not None
                    and recorded[0] == 1 and recorded[1] == "delivered" and not spool_file.get("entries"))

        # 5. a run fails for good, then a later run of its job succeeds
        job_def, state = failing_job()
        runs = {}

        def run_fail():
            r = job_def.execute_in_process(instance=instance, raise_on_error=False)
            runs["failed"] = r.run_id

        def run_onset(_):
            rec = instance.get_run_records(filters=__import__("dagster").RunsFilter(run_ids=[runs["failed"]]))[0]
            return rec.end_time

        def run_end():
            state["fail"] = False
            job_def.execute_in_process(instance=instance)
            return time.time()

        fault("run_failed", "run_failed", run_fail, run_onset, run_end)
        time.sleep(2 * args.interval + 2)
    finally:
        for svc in services.values():
            svc.stop()
        stop_embedded(pgdata)

    keys = Counter(g["key"] for g in receiver.messages())
    duplicates = sum(n - 1 for n in keys.values() if n > 1)
    false = len(quiet["messages"]) + len(live_quiet)
    det = figures["detected_s"]
    res = figures["resolved_s"]
    ok = (all(v is not None and v <= 60 for v in det.values()) and all(v is not None and v <= 90 for v in res.values())
          and false == 0 and duplicates == 0 and spool_ok)
    out = {
        "detected_s": det, "resolved_s": res, "from_fault_s": figures["from_fault_s"],
        "max_detected_s": max((v for v in det.values() if v is not None), default=None),
        "max_resolved_s": max((v for v in res.values() if v is not None), default=None),
        "false_messages": false, "false_messages_injected_clock": len(quiet["messages"]),
        "false_messages_running": len(live_quiet), "quiet_passes": quiet["passes"], "pass_ms": quiet["pass_ms"],
        "duplicate_messages": duplicates, "messages_received": len(receiver.messages()),
        "spool_delivered_once": spool_ok, "spool": figures["spool"], "other_messages": dict(other),
        "thresholds": {k.removeprefix("TP_WATCHDOG_").lower(): float(v) for k, v in thresholds.items()},
        "elapsed_s": round(time.time() - started, 1), "targets_met": ok,
    }
    if quiet["messages"] or live_quiet:
        log("false messages: " + "; ".join(quiet["messages"] + [g["json"].get("message", "") for g in live_quiet]))
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

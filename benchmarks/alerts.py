"""Alerts (issue 23): alert commit -> signed webhook / Telegram message, at least once, under failures and a kill.

The platform runs as ``benchmarks/live_latency.py`` runs it (its helpers): ``dagster dev`` with the live sensor over
a throwaway PostgreSQL (TP_DATABASE_URL's server if set, else an embedded one) and MLflow store, a champion of every
family registered. A rule on the pump champion (5m) takes as its threshold the 80th percentile of the champion's
out-of-sample outputs over the last 3 days of stored history (scored as the scheduled scoring scores them): about
20 % of its live outputs alert. ``TP_ALERT_MAX_DELAY_S`` is raised to 30 days: the fed candles closed a day or more
ago (so the feed can run at any rate), and every alert would otherwise be ``stale`` and never sent. Two local
receivers run as threads of this process (``http.server.ThreadingHTTPServer`` on 127.0.0.1):

- a Standard Webhooks receiver that verifies every signature, answers 500 to ``--fail-rate`` of the requests and,
  for ``--ambiguous-rate`` of them, reads the body, records its keys as received and then hangs past the worker's
  5 s timeout (an ambiguous delivery: the sender cannot know it arrived);
- a Telegram Bot API receiver (``TP_TELEGRAM_API_URL``) that allows one message per second per chat and answers
  429 with ``parameters.retry_after`` to a faster one, and records which alerts each message names.

The delivery worker is a process of its own (``tp alerts deliver``, the destinations' variables in its
environment), SIGKILLed ``--kill-worker-at`` seconds into the feed and restarted 20 s later. Live candles go through
``tp_live_candle`` (``tp live feed``'s feeder) at ``--rate`` candles per second for ``--duration`` seconds; then the
live backlog and the delivery outbox are drained (at most 90 s for the outbox).

Latency starts at the alert's commit as this process sees it (LISTEN on ``tp_alerts``, which the writer NOTIFYs at
commit, and a poll every 0.1 s) and ends when a receiver wrote its 2xx (webhook: the alert's own key, or a digest
holding it; Telegram: the first accepted message naming its id). ``p50_s``, ``p99_s`` and ``first_try_p99_s`` are the
webhook's, over the alerts delivered before the kill or committed more than 30 s after the restart. ``lost`` counts
(alert, destination) pairs without a 2xx; ``duplicated`` counts keys marked delivered twice for one destination (a
trigger in the throwaway database records each transition to ``delivered``); ``wire_repeats`` counts keys the webhook
receiver took in more than once (digest items included, ambiguous requests included).

``--only-db`` (no Dagster): ``eval_ratio``, the median time of ``core.evaluate(conn)`` over 1,000 pending alerts with
3 new closed candles each beside ``--history-alerts`` resolved alerts vs beside 10,000 (each run rolled back), and
``stats_s``, ``tp alerts stats --json`` over the counters that many alerts leave in ``alert_stats`` (10 symbols x 2
versions x a year of days), in a database of their own on the same server. A full run does this first.

    python benchmarks/alerts.py [--symbols 10] [--rate 10] [--duration 300] [--fail-rate 0.2] [--ambiguous-rate 0.05]
                                [--kill-worker-at S] [--history-alerts 1000000] [--quick] [--only-db] [--skip-db]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import live_latency as ll  # noqa: E402  (the platform's setup, feed and drain)

log, pct = ll.log, ll.pct
WORKER_TIMEOUT_S = 5.0  # the worker's request timeout (run_worker's default): an ambiguous request hangs past it
RESTART_AFTER_S = 20.0
OUTAGE_TAIL_S = 30.0  # the outage window: from the kill to this long after the restart
DRAIN_S = 90.0
WEBHOOK_RATE_PER_MIN = 600
TELEGRAM_INTERVAL_S = 1.0
MAX_DELAY_S = 30 * 86400  # TP_ALERT_MAX_DELAY_S: the fed candles are days old (see below)
PENDING = 1000
SMALL_HISTORY = 10_000
EVAL_SYMBOLS = 10
EVAL_TARGET = "pump: close rises >= 0.003 within 60 bars of 5m"
CANDLES_A_YEAR = 365 * 288
CALIBRATION_DAYS = 3


# ---- eval_ratio and stats_s: no Dagster -----------------------------------------------------------------------
def _eval_symbols() -> list[str]:
    return [f"E{i:02d}/USDT" for i in range(EVAL_SYMBOLS)]


def db_setup(dsn: str) -> dict:
    """Symbols with their last 100 closed 5m candles, a rule, a webhook destination asking for resolutions, and
    1,000 pending alerts (10 symbols x 2 versions x 50 candles) each with 3 new closed candles after the last one it
    applied; the base-rate cursors 63 candles back (3 candles to count)."""
    import psycopg

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.sources.synthetic import SyntheticSource
    from trading_platform.store.db import connect

    now = datetime.now(timezone.utc)
    source = SyntheticSource(ll.SEED)
    with connect(dsn) as store:
        for s in _eval_symbols():
            info = SymbolInfo.create(s, timeframes=["5m"])
            store.add_symbol(info)
            store.ingest_frame(s, "5m", source.fetch(info, "5m", now - timedelta(minutes=5 * 110), now), "synthetic")
    with psycopg.connect(dsn, autocommit=True) as c:
        rules = [c.execute("INSERT INTO alert_rules (name, model_name, threshold) VALUES (%s, 'pump_xgb', 0.8) "
                           "RETURNING id", (name,)).fetchone()[0]
                 for name in ("bench-eval", "bench-history-small", "bench-history-big")]
        dest = c.execute("INSERT INTO alert_destinations (name, kind, url_env, resolutions) VALUES "
                         "('bench-eval', 'webhook', 'TP_BENCH_EVAL_URL', true) RETURNING id").fetchone()[0]
        c.execute(
            "WITH c AS (SELECT symbol, ts, close, row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) AS back "
            " FROM ohlcv WHERE timeframe = '5m' AND symbol = ANY(%(s)s) AND ts <= now() - interval '5 minutes'), "
            "last AS (SELECT symbol, ts AS last_ts FROM c WHERE back = 4) "
            "INSERT INTO alerts (rule_id, model_name, model_version, symbol, timeframe, ts, candle_close, created_at, "
            " role, in_sample, value, current_value, threshold, side, target, kind, horizon, rise, entry, status, "
            " send, candles_seen, last_candle_ts, peak, trough, expires_at) "
            "SELECT %(rule)s, 'pump_xgb', v::text, c.symbol, '5m', c.ts, c.ts + interval '5 minutes', now(), "
            " CASE v WHEN 1 THEN 'champion' ELSE 'shadow' END, false, 0.9, 0.9, 0.8, 'above', %(t)s, 'pump', 60, "
            " 0.003, c.close, 'pending', 'send', (c.back - 4)::int, last.last_ts, c.close * 1.001, c.close * 0.999, "
            " now() + interval '1 day' "
            "FROM c JOIN last USING (symbol) CROSS JOIN generate_series(1, 2) v WHERE c.back BETWEEN 5 AND 54",
            {"s": _eval_symbols(), "rule": rules[0], "t": EVAL_TARGET})
        c.execute("INSERT INTO alert_deliveries (destination_id, alert_id, key, type, payload, status, attempts, "
                  "delivered_at) SELECT %s, id, 'alert:' || id || ':alert', 'alert', '{}', 'delivered', 1, now() "
                  "FROM alerts WHERE status = 'pending'", (dest,))
        c.execute("INSERT INTO alert_base_cursor (target, symbol, timeframe, first_ts, last_ts) "
                  "SELECT %s, symbol, '5m', ts - interval '366 days', ts "
                  "FROM (SELECT symbol, ts, row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) AS back "
                  " FROM ohlcv WHERE timeframe = '5m' AND symbol = ANY(%s) AND ts <= now() - interval '5 minutes') c "
                  "WHERE back = 64", (EVAL_TARGET, _eval_symbols()))
        c.execute("INSERT INTO alert_base (target, symbol, timeframe, day, n, met) SELECT %s, s, '5m', d::date, 288, "
                  "40 FROM unnest(%s::text[]) s, "
                  "generate_series(now() - interval '366 days', now(), interval '1 day') d "
                  "ON CONFLICT DO NOTHING", (EVAL_TARGET, _eval_symbols()))
        pending = c.execute("SELECT count(*) FROM alerts WHERE status = 'pending'").fetchone()[0]
    return {"rules": rules, "destination": dest, "pending": int(pending)}


def add_resolved(dsn: str, rule: int, dest: int, n: int) -> float:
    """``n`` resolved alerts of ``rule`` (success / failed / expired, 20 series, their candles spread over the year
    before the pending ones), an ``alert`` delivery each, and ``alert_stats`` rebuilt from every alert as the
    counters would have counted them; seconds taken."""
    import psycopg

    t = time.perf_counter()
    per_series = max(1, math.ceil(n / (EVAL_SYMBOLS * 2)))
    spacing = max(1, (CANDLES_A_YEAR - 100) // per_series)
    with psycopg.connect(dsn, autocommit=True) as c:
        t0 = c.execute("SELECT max(ts) FROM ohlcv WHERE timeframe = '5m'").fetchone()[0]
        c.execute(
            "INSERT INTO alerts (rule_id, model_name, model_version, symbol, timeframe, ts, candle_close, created_at, "
            " role, in_sample, value, current_value, threshold, side, target, kind, horizon, rise, entry, status, "
            " send, candles_seen, last_candle_ts, peak, trough, deciding_ts, deciding_close, resolved_at, expires_at) "
            "SELECT %(rule)s, 'pump_xgb', (1 + k / 10)::text, 'E' || lpad((k %% 10)::text, 2, '0') || '/USDT', '5m', "
            " x.t, x.t + interval '5 minutes', x.t + interval '5 minutes 2 seconds', "
            " CASE WHEN k < 10 THEN 'champion' ELSE 'shadow' END, j %% 7 = 0, 0.9, 0.9, 0.8, "
            " CASE WHEN j %% 4 = 3 THEN 'below' ELSE 'above' END, %(target)s, 'pump', 60, 0.003, 100, "
            " CASE WHEN j %% 10 < 3 THEN 'success' WHEN j %% 10 < 9 THEN 'failed' ELSE 'expired' END, 'send', 10, "
            " x.t + interval '50 minutes', 101, 99, "
            " CASE WHEN j %% 10 < 9 THEN x.t + interval '50 minutes' END, CASE WHEN j %% 10 < 9 THEN 100.4 END, "
            " x.t + interval '1 hour', x.t + interval '310 minutes' "
            "FROM (SELECT g %% 20 AS k, g / 20 AS j FROM generate_series(0, %(n)s - 1) g) s, "
            "LATERAL (SELECT %(t0)s - (64 + s.j * %(sp)s) * interval '5 minutes' AS t) x",
            {"rule": rule, "target": EVAL_TARGET, "n": n, "t0": t0, "sp": spacing})
        c.execute("INSERT INTO alert_deliveries (destination_id, alert_id, key, type, payload, status, attempts, "
                  "delivered_at) SELECT %s, id, 'alert:' || id || ':alert', 'alert', '{}', 'delivered', 1, "
                  "created_at + interval '1 second' FROM alerts WHERE rule_id = %s", (dest, rule))
        c.execute("TRUNCATE alert_stats")
        c.execute(
            "INSERT INTO alert_stats (model_name, model_version, symbol, timeframe, day, role, in_sample, side, "
            " target, "
            " pending, success, failed, expired, resolved, ranged, success_s, peak_ret, trough_ret) "
            "SELECT model_name, model_version, symbol, timeframe, (ts AT TIME ZONE 'UTC')::date, role, in_sample, "
            " side, "
            " min(target), count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'success'), "
            " count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'expired'), "
            " count(*) FILTER (WHERE status <> 'pending'), "
            " count(*) FILTER (WHERE status <> 'pending' AND candles_seen > 0), "
            " coalesce(sum(extract(epoch FROM deciding_ts + interval "
            " '5 minutes' - candle_close)) FILTER (WHERE status = 'success'), 0), "
            " coalesce(sum(peak / entry - 1) FILTER (WHERE status <> 'pending'), 0), "
            " coalesce(sum(trough / entry - 1) FILTER (WHERE status <> 'pending'), 0) "
            "FROM alerts GROUP BY 1, 2, 3, 4, 5, 6, 7, 8")
        for table in ("alerts", "alert_deliveries", "alert_stats", "alert_base"):
            c.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - t


def time_evaluate(dsn: str, runs: int) -> dict:
    """The median of ``runs`` calls of ``core.evaluate(conn)`` (after one discarded), each rolled back."""
    import psycopg

    from trading_platform.alerts import core

    times, outs = [], []
    with psycopg.connect(dsn) as conn:
        for i in range(runs + 1):
            t = time.perf_counter()
            out = core.evaluate(conn)
            dt = time.perf_counter() - t
            conn.rollback()
            if i:
                times.append(dt)
                outs.append(out)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "last": outs[-1]}


def time_stats(dsn: str, home: Path, runs: int) -> dict:
    """``tp alerts stats --json`` as a user runs it (a new process) and ``core.stats(conn)`` in this process."""
    import psycopg

    from trading_platform.alerts import core

    env = {**os.environ, "TP_DATABASE_URL": dsn, "TP_HOME": str(home), "TP_EMBEDDED": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    tp = Path(sys.executable).parent / "tp"
    cli, rows = [], None
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run([str(tp), "alerts", "stats", "--json"], env=env, capture_output=True, text=True, timeout=120)
        cli.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise RuntimeError(f"tp alerts stats failed ({p.returncode}): {p.stderr[-2000:]}")
        rows = json.loads(p.stdout)
    inproc = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        stats_rows = conn.execute("SELECT count(*), sum(pending + success + failed + expired) FROM alert_stats"
                                  ).fetchone()
        for _ in range(runs + 1):
            t = time.perf_counter()
            core.stats(conn)
            inproc.append(time.perf_counter() - t)
    return {"cli_median_s": round(statistics.median(cli), 3), "core_median_s": round(statistics.median(inproc[1:]), 4),
            "groups": len(rows) if isinstance(rows, list) else None, "alert_stats_rows": int(stats_rows[0]),
            "alerts_counted": int(stats_rows[1] or 0)}


def db_phase(admin: str, history_alerts: int, home: Path, runs: int = 11) -> dict:
    from benchmarks.scale import fresh_db

    dsn = fresh_db(admin, "alerts_eval")
    setup = db_setup(dsn)
    log(f"eval db: {setup['pending']} pending alerts with 3 new closed candles each")
    small = min(SMALL_HISTORY, history_alerts)
    load_small = add_resolved(dsn, setup["rules"][1], setup["destination"], small)
    ev_small = time_evaluate(dsn, runs)
    log(f"evaluate beside {small:,} resolved alerts: median {ev_small['median_s']} s ({load_small:.0f} s to load); "
        f"{ev_small['last']}")
    big = history_alerts - small
    load_big = add_resolved(dsn, setup["rules"][2], setup["destination"], big) if big > 0 else 0.0
    ev_big = time_evaluate(dsn, runs)
    log(f"evaluate beside {history_alerts:,} resolved alerts: median {ev_big['median_s']} s ({load_big:.0f} s to "
        f"load); {ev_big['last']}")
    st = time_stats(dsn, home, 3)
    log(f"stats over {st['alerts_counted']:,} alerts' counters ({st['alert_stats_rows']:,} alert_stats rows, "
        f"{st['groups']} groups): tp alerts stats --json {st['cli_median_s']} s, core.stats {st['core_median_s']} s")
    return {"eval_pending": setup["pending"], "eval_small_history": small, "eval_big_history": history_alerts,
            "eval_small_s": ev_small["median_s"], "eval_big_s": ev_big["median_s"],
            "eval_ratio": round(ev_big["median_s"] / ev_small["median_s"], 3),
            "eval_ratio_of_minimums": round(ev_big["min_s"] / ev_small["min_s"], 3),
            "eval_judged": ev_big["last"].get("judged"), "eval_resolved": ev_big["last"].get("resolved"),
            "eval_deliveries": ev_big["last"].get("deliveries"), "eval_runs": runs,
            "stats_s": st["cli_median_s"], "stats_core_s": st["core_median_s"], "stats_groups": st["groups"],
            "stats_rows": st["alert_stats_rows"], "stats_alerts_counted": st["alerts_counted"],
            "history_load_s": round(load_small + load_big, 1)}


# ---- the receivers --------------------------------------------------------------------------------------------
class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # noqa: D401 - no access log on stderr
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


class WebhookReceiver:
    """Verifies each request's Standard Webhooks signature; answers 500 to ``fail_rate`` of them; for
    ``ambiguous_rate`` records the keys as received and hangs past the sender's timeout; else 200 and records when
    each key (a digest's items included) was accepted."""

    def __init__(self, secret: str, fail_rate: float, ambiguous_rate: float, seed: int = 23):
        self.secret, self.fail_rate, self.ambiguous_rate = secret, fail_rate, ambiguous_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted: dict[str, list[float]] = defaultdict(list)  # key -> times a 2xx was written
        self.ambiguous: dict[str, list[float]] = defaultdict(list)  # key -> times it was taken in and left hanging
        self.counts = Counter()
        self.hanging = 0
        rec = self

        class Handler(_Quiet):
            def do_POST(self):
                rec.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook/bench"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, h: _Quiet) -> None:
        from trading_platform.alerts import adapters

        body = h._body()
        with self.lock:
            self.counts["requests"] += 1
        if not adapters.verify(self.secret, dict(h.headers.items()), body):
            with self.lock:
                self.counts["bad_signatures"] += 1
            return h._answer(401, b'{"error":"bad signature"}')
        try:
            msg = json.loads(body)
            keys = [it["key"] for it in msg["items"]] if msg.get("type") == "digest" else [msg["key"]]
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.counts["bad_bodies"] += 1
            return h._answer(400, b'{"error":"bad body"}')
        with self.lock:
            r = self.rng.random()
            if msg.get("type") == "digest":
                self.counts["digests"] += 1
                self.counts["digest_items"] += len(keys)
        if r < self.fail_rate:
            with self.lock:
                self.counts["answered_500"] += 1
            return h._answer(500, b'{"error":"injected failure"}')
        if r < self.fail_rate + self.ambiguous_rate:
            now = time.time()
            with self.lock:
                self.counts["ambiguous_requests"] += 1
                self.counts["ambiguous_keys"] += len(keys)
                self.hanging += 1
                for k in keys:
                    self.ambiguous[k].append(now)
            try:
                time.sleep(WORKER_TIMEOUT_S + 1.5)  # the sender has given up by now
                h._answer(200, b'{"ok":true,"late":true}')
            except OSError:
                pass
            finally:
                with self.lock:
                    self.hanging -= 1
            return
        h._answer(200, b'{"ok":true}')
        now = time.time()
        with self.lock:
            self.counts["answered_2xx"] += 1
            for k in keys:
                self.accepted[k].append(now)

    def stop(self) -> None:
        self.server.shutdown()


_LINE = re.compile(r"^ALERT (?P<symbol>\S+) (?P<tf>\S+) (?P<model>\S+) v(?P<version>\S+) · p (?P<p>[0-9.]+) \S+ "
                   r"[0-9.]+(?: · price (?P<price>[0-9.,eE+-]+))?")
_ID = re.compile(r"(?:alert:|#)(\d+)\b")


class TelegramReceiver:
    """``/bot<token>/sendMessage``: one message a second per chat (a faster one: 429 with
    ``parameters.retry_after``); records each accepted message's time and text."""

    def __init__(self, token: str):
        self.token = token
        self.lock = threading.Lock()
        self.last_arrival: dict[str, float] = {}
        self.last_accepted: dict[str, float] = {}
        self.messages: list[tuple[float, str, str]] = []  # (time answered, chat, text)
        self.gaps: list[float] = []
        self.counts = Counter()
        rec = self

        class Handler(_Quiet):
            def do_POST(self):
                rec.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, h: _Quiet) -> None:
        arrived = time.time()
        body = h._body()
        if h.path != f"/bot{self.token}/sendMessage":
            with self.lock:
                self.counts["bad_token"] += 1
            return h._answer(401, b'{"ok":false,"error_code":401,"description":"Unauthorized"}')
        try:
            msg = json.loads(body)
            chat, text = str(msg["chat_id"]), str(msg["text"])
        except (ValueError, KeyError, TypeError):
            return h._answer(400, b'{"ok":false,"error_code":400,"description":"Bad Request: bad body"}')
        with self.lock:
            self.counts["requests"] += 1
            prev = self.last_arrival.get(chat)
            if prev is not None and arrived - prev < TELEGRAM_INTERVAL_S:
                self.counts["violations"] += 1
            self.last_arrival[chat] = arrived
            last = self.last_accepted.get(chat)
            wait = None if last is None else TELEGRAM_INTERVAL_S - (arrived - last)
            if wait is not None and wait > 0:
                self.counts["refused_429"] += 1
                refuse = math.ceil(wait)
            else:
                refuse = None
                if last is not None:
                    self.gaps.append(arrived - last)
                self.last_accepted[chat] = arrived
                self.counts["accepted"] += 1
                if len(text) > 4096:
                    self.counts["over_4096"] += 1
        if refuse is not None:
            return h._answer(429, json.dumps({"ok": False, "error_code": 429,
                                              "description": f"Too Many Requests: retry after {refuse}",
                                              "parameters": {"retry_after": refuse}}).encode())
        h._answer(200, json.dumps({"ok": True, "result": {"message_id": self.counts["accepted"],
                                                          "chat": {"id": chat}, "text": text}}).encode())
        with self.lock:
            self.messages.append((time.time(), chat, text))

    def stop(self) -> None:
        self.server.shutdown()


def telegram_lines(text: str) -> list[str]:
    """The alert lines of a message (tags stripped, entities unescaped); the digest header left out."""
    out = []
    for line in text.split("\n"):
        plain = html.unescape(re.sub(r"<[^>]+>", "", line)).strip()
        if plain.startswith(("ALERT", "RESOLVED", "RETRACTED")):
            out.append(plain)
    return out


# ---- the delivery worker --------------------------------------------------------------------------------------
class Worker:
    """``tp alerts deliver`` as a process of its own; SIGKILLed and started again."""

    def __init__(self, env: dict, tmp: Path):
        self.env, self.tmp, self.n, self.proc = env, tmp, 0, None

    def start(self) -> None:
        self.n += 1
        tp = Path(sys.executable).parent / "tp"
        self.proc = subprocess.Popen([str(tp), "alerts", "deliver"], env=self.env, cwd=self.tmp,
                                     stdout=open(self.tmp / f"worker-{self.n}.log", "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ll.stop(self.proc, signal.SIGINT)


def kill_and_restart(worker: Worker, dsn: str, at_s: float, out: dict) -> None:
    """``at_s`` seconds from now SIGKILL the worker, note what it left claimed and pending, restart it 20 s later."""
    import psycopg

    time.sleep(at_s)
    killed_at = time.time()
    worker.kill()
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute("SELECT id, status FROM alert_deliveries WHERE status IN ('pending', 'sending') "
                         "AND created_at <= to_timestamp(%s)", (killed_at,)).fetchall()
    out.update(killed_at=killed_at, pending_ids=[r[0] for r in rows],
               in_flight=sum(1 for r in rows if r[1] == "sending"))
    log(f"worker SIGKILLed: {out['in_flight']} deliveries sending, {len(rows)} pending or sending")
    time.sleep(RESTART_AFTER_S)
    worker.start()
    out["restarted_at"] = time.time()
    log("worker restarted")


def calibrate(dsn: str, live: list[str], home: Path, hist_end: datetime) -> tuple[float, int, str]:
    """The rule's threshold: the 80th percentile of the pump champion's outputs over the last days of history
    (scored as the scheduled scoring would, out-of-sample rows only when there are enough of them)."""
    from trading_platform.models.scoring import resolve_versions, score_range
    from trading_platform.resources import MLflowResource, ModelServer
    from trading_platform.store.db import connect

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MLflowResource(tracking_uri=uri, artifact_root=str(home / "mlartifacts")).client()
    [v] = [v for v in resolve_versions(client) if v.name == "pump_xgb"]
    server = ModelServer(tracking_uri=uri, device="cpu", cache_dir=str(home / "model_cache"))
    rows = []
    with connect(dsn) as store:
        for s in live:
            rows += score_range(store, server, v, store.get_symbol(s), "5m",
                                hist_end - timedelta(days=CALIBRATION_DAYS), hist_end)
    oos = [float(r[5]) for r in rows if not r[8] and r[5] is not None]
    values = oos if len(oos) >= 100 else [float(r[5]) for r in rows if r[5] is not None]
    which = "out-of-sample" if values is oos else "in- and out-of-sample"
    return statistics.quantiles(values, n=100)[79], len(values), which


def setup_commands(env: dict, threshold: float) -> dict:
    """The destinations and the rule, through the CLI as a user adds them."""
    tp = str(Path(sys.executable).parent / "tp")
    cmds = {
        "webhook": [tp, "alerts", "destination", "add", "bench-webhook", "--kind", "webhook", "--url-env",
                    "TP_BENCH_WEBHOOK_URL", "--secret-env", "TP_BENCH_WEBHOOK_SECRET", "--rate-per-min",
                    str(WEBHOOK_RATE_PER_MIN), "--json"],
        "telegram": [tp, "alerts", "destination", "add", "bench-telegram", "--kind", "telegram", "--token-env",
                     "TP_BENCH_TELEGRAM_TOKEN", "--chat-id", "4242", "--json"],
        "rule": [tp, "alerts", "rule", "add", "bench-pump", "--model", "pump_xgb", "--timeframes", "5m",
                 "--threshold", f"{threshold:.6f}", "--json"],
    }
    out = {}
    for name, cmd in cmds.items():
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:5])} failed ({p.returncode}): {p.stderr[-2000:]}")
        out[name] = json.loads(p.stdout)
    return out


def install_marks(dsn: str) -> None:
    """A trigger recording each transition of a delivery into ``delivered`` (duplicated: a key and destination
    marked delivered more than once); the benchmark's own table in its throwaway database."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        # live_latency's bare location is in the workspace: its sensor reads this table (no row: it skips)
        c.execute("CREATE TABLE IF NOT EXISTS bench_marks (id bigserial PRIMARY KEY, phase text, "
                  "created_at timestamptz NOT NULL DEFAULT clock_timestamp(), requested_at timestamptz, "
                  "done_at timestamptz)")
        c.execute("CREATE TABLE bench_delivery_marks (delivery_id bigint, destination_id int, key text, "
                  "attempts int, digest_size int, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        c.execute("CREATE FUNCTION bench_mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "INSERT INTO bench_delivery_marks (delivery_id, destination_id, key, attempts, digest_size) "
                  "VALUES (NEW.id, NEW.destination_id, NEW.key, NEW.attempts, NEW.digest_size); RETURN NEW; END $$")
        c.execute("CREATE TRIGGER bench_mark AFTER INSERT OR UPDATE ON alert_deliveries FOR EACH ROW "
                  "WHEN (NEW.status = 'delivered') EXECUTE FUNCTION bench_mark()")


class CommitWatch:
    """When each alert was committed, seen from this process: it LISTENs on the channel the writer NOTIFYs at
    commit (``tp_alerts``, as the worker does) and stamps the alerts that became visible with the notification's
    arrival; a poll every ``every_s`` catches any other. The start of the delivery latency (an alert's
    ``created_at`` is its output's ``known_at``, taken before the batch's last writes and its commit)."""

    def __init__(self, dsn: str, every_s: float = 0.1):
        self.dsn, self.every_s = dsn, every_s
        self.seen: dict[int, float] = {}
        self.by_notify = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psycopg

        from trading_platform.alerts import CHANNEL

        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(f"LISTEN {CHANNEL}")
            while not self.done.is_set():
                stamp = None
                for _ in c.notifies(timeout=self.every_s, stop_after=1):
                    stamp = time.time()
                low = max(self.seen, default=0) - 500  # ids may commit out of order: look back
                ids = c.execute("SELECT id FROM alerts WHERE id > %s", (low,)).fetchall()
                now = time.time()
                for (i,) in ids:
                    if i not in self.seen:
                        self.seen[i] = stamp if stamp is not None else now
                        self.by_notify += stamp is not None

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)


def outbox_backlog(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT count(*) FROM alert_deliveries WHERE status IN ('pending', 'sending')").fetchone()[0]


def drain_outbox(dsn: str, hook: WebhookReceiver, timeout: float) -> tuple[int, float]:
    t = time.time()
    while True:
        backlog = outbox_backlog(dsn)
        if (backlog == 0 and hook.hanging == 0) or time.time() - t > timeout:
            return backlog, time.time() - t
        time.sleep(0.5)


# ---- the figures ----------------------------------------------------------------------------------------------
def alert_figures(dsn: str, hook: WebhookReceiver, tg: TelegramReceiver, killed: dict, feed_name: str,
                  watch: CommitWatch) -> dict:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        dests = dict(c.execute("SELECT kind, id FROM alert_destinations WHERE name LIKE 'bench-%'").fetchall())
        alerts = c.execute(
            "SELECT a.id, a.symbol, a.timeframe, a.model_name, a.model_version, a.value, a.entry, "
            " extract(epoch FROM a.created_at), extract(epoch FROM (SELECT min(lc.committed_at) FROM live_commits lc "
            "  WHERE e.id = ANY(lc.event_ids))), extract(epoch FROM e.created_at), "
            " extract(epoch FROM (SELECT min(b.created_at) FROM market_event_queue q JOIN live_batches b "
            "  ON b.id = q.batch_id WHERE q.event_id = e.id)) "
            "FROM alerts a LEFT JOIN market_events e ON e.symbol = a.symbol AND e.timeframe = a.timeframe "
            " AND e.ts = a.ts AND e.source = %s "
            "WHERE a.send = 'send' AND a.status <> 'suppressed' ORDER BY a.id", (feed_name,)).fetchall()
        by_status = dict(c.execute("SELECT send || '/' || status, count(*) FROM alerts GROUP BY 1").fetchall())
        deliveries = c.execute(
            "SELECT d.id, d.destination_id, d.alert_id, d.key, d.status, d.attempts, "
            " extract(epoch FROM d.delivered_at), d.digest_size FROM alert_deliveries d WHERE d.type = 'alert'"
        ).fetchall()
        dup = c.execute("SELECT count(*) FROM (SELECT destination_id, key FROM bench_delivery_marks GROUP BY 1, 2 "
                        "HAVING count(*) > 1) x").fetchone()[0]
        preds = c.execute("SELECT count(*) FROM predictions p JOIN market_events e ON e.symbol = p.symbol AND "
                          "e.timeframe = p.timeframe AND e.ts = p.ts AND e.source = %s WHERE p.model_name = 'pump_xgb' "
                          "AND p.superseded_at IS NULL", (feed_name,)).fetchone()[0]
    a_by_id = {r[0]: r for r in alerts}
    commit = {r[0]: watch.seen.get(r[0], float(r[8] if r[8] is not None else r[7])) for r in alerts}
    unwatched = sum(1 for r in alerts if r[0] not in watch.seen)
    before_live_commit = [r for r in alerts if r[8] is not None and r[0] in watch.seen
                          and watch.seen[r[0]] < float(r[8])]
    made_before_claim = [r for r in alerts if r[10] is not None and float(r[7]) < float(r[10])]
    for r in before_live_commit[:3]:
        log(f"alert {r[0]} ({r[1]} {r[3]} v{r[4]}): made {r[7]}, seen {watch.seen[r[0]]:.3f}, its candle's batch "
            f"claimed {r[10]} and committed {r[8]}")
    inserted = {r[0]: r[9] for r in alerts}
    kill_t, restart_t = killed.get("killed_at"), killed.get("restarted_at")
    out_lo, out_hi = kill_t, (restart_t + OUTAGE_TAIL_S if restart_t else None)

    def outside(aid: int, done: float) -> bool:
        if out_lo is None:
            return True
        return done < out_lo or float(commit[aid]) > out_hi

    # webhook: the first 2xx of each alert's key
    hook_dest, tg_dest = dests.get("webhook"), dests.get("telegram")
    d_by = {(d[1], d[2]): d for d in deliveries}
    lat, first_try, c2w, lost_hook = [], [], [], []
    for aid in a_by_id:
        got = hook.accepted.get(f"alert:{aid}:alert")
        if not got:
            lost_hook.append(aid)
            continue
        done = min(got)
        if outside(aid, done):
            lat.append(done - float(commit[aid]))
            if inserted[aid] is not None:
                c2w.append(done - float(inserted[aid]))
            d = d_by.get((hook_dest, aid))
            if d is not None and d[4] == "delivered" and d[5] == 1:
                first_try.append(done - float(commit[aid]))
    receipts = Counter()
    for k, ts in hook.accepted.items():
        receipts[k] += len(ts)
    for k, ts in hook.ambiguous.items():
        receipts[k] += len(ts)
    wire_repeats = sum(1 for n in receipts.values() if n > 1)

    # telegram: which alerts the accepted messages name
    index: dict[tuple, list[int]] = defaultdict(list)
    for aid, sym, tf, model, ver, value, entry, *_ in alerts:
        index[(sym, tf, model, str(ver), format(float(value), ".2f"), format(float(entry), ",.8g"))].append(aid)
    ambiguous_lines = sum(1 for v in index.values() if len(v) > 1)
    covered: dict[int, float] = {}
    by_id_lines = unmatched = 0
    for t, _, text in sorted(tg.messages):
        for line in telegram_lines(text):
            m = _ID.search(line)
            if m and int(m.group(1)) in a_by_id:
                by_id_lines += 1
                covered.setdefault(int(m.group(1)), t)
                continue
            m = _LINE.match(line)
            ids = index.get((m["symbol"], m["tf"], m["model"], m["version"], m["p"], m["price"])) if m else None
            if not ids:
                unmatched += 1
                continue
            aid = next((i for i in ids if i not in covered), ids[0])
            covered.setdefault(aid, t)
    tg_sent = [aid for aid in a_by_id if (tg_dest, aid) in d_by]
    tg_lat = [covered[a] - float(commit[a]) for a in tg_sent if a in covered and outside(a, covered[a])]

    # after the restart: every delivery pending at the kill delivered
    after = None
    if restart_t is not None:
        pend = set(killed.get("pending_ids", []))
        times = [d[6] for d in deliveries if d[0] in pend]
        if pend and all(d[4] == "delivered" for d in deliveries if d[0] in pend):
            after = round(max(float(x) for x in times) - restart_t, 3) if times else 0.0
    dead = sum(1 for d in deliveries if d[4] == "dead")
    return {
        "alerts": len(alerts), "alerts_by_send_status": by_status, "commit_seen_every_s": watch.every_s,
        "alerts_commit_unseen": unwatched, "alerts_committed_before_their_live_batch": len(before_live_commit),
        "alerts_made_before_their_batch_claim": len(made_before_claim), "alerts_stamped_by_notify": watch.by_notify,
        "pump_predictions_fed": int(preds),
        "alert_fraction": round(len(alerts) / preds, 3) if preds else None,
        "lost": len(lost_hook) + len([a for a in tg_sent if a not in covered]),
        "lost_webhook": len(lost_hook), "lost_telegram": len([a for a in tg_sent if a not in covered]),
        "duplicated": int(dup), "wire_repeats": wire_repeats,
        "ambiguous_injected": hook.counts["ambiguous_keys"], "ambiguous_requests": hook.counts["ambiguous_requests"],
        "in_flight_at_kill": killed.get("in_flight"), "pending_at_kill": len(killed.get("pending_ids", [])),
        "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99), "max_s": round(max(lat), 3) if lat else None,
        "latency_samples": len(lat), "first_try_p99_s": pct(first_try, 0.99), "first_try_samples": len(first_try),
        "candle_to_webhook_p50_s": pct(c2w, 0.5), "candle_to_webhook_p99_s": pct(c2w, 0.99),
        "after_restart_s": after,
        "telegram_rate_violations": tg.counts["violations"], "telegram_refusals": tg.counts["refused_429"],
        "telegram_messages": tg.counts["accepted"], "telegram_min_gap_s": round(min(tg.gaps), 3) if tg.gaps else None,
        "telegram_uncovered": len([a for a in tg_sent if a not in covered]),
        "telegram_lines_by_id": by_id_lines, "telegram_lines_unmatched": unmatched,
        "telegram_ambiguous_line_keys": ambiguous_lines, "telegram_over_4096": tg.counts["over_4096"],
        "telegram_p50_s": pct(tg_lat, 0.5), "telegram_p99_s": pct(tg_lat, 0.99),
        "webhook": dict(hook.counts), "dead": dead,
        "delivered_in_digests": sum(1 for d in deliveries if d[7]),
    }


TARGETS = {  # figure: (test, text)
    "lost": (lambda v, f: v == 0, "0"),
    "duplicated": (lambda v, f: v == 0, "0"),
    "wire_repeats": (lambda v, f: v <= (f.get("ambiguous_injected") or 0) + (f.get("in_flight_at_kill") or 0),
                     "<= ambiguous_injected + in_flight_at_kill"),
    "p50_s": (lambda v, f: v <= 2, "<= 2 s"),
    "p99_s": (lambda v, f: v <= 10, "<= 10 s"),
    "first_try_p99_s": (lambda v, f: v <= 3, "<= 3 s"),
    "after_restart_s": (lambda v, f: v <= 30, "<= 30 s"),
    "telegram_rate_violations": (lambda v, f: v == 0, "0"),
    "telegram_uncovered": (lambda v, f: v == 0, "0"),
    "eval_ratio": (lambda v, f: v <= 1.5, "<= 1.5"),
    "stats_s": (lambda v, f: v <= 2, "<= 2 s"),
    "backlog_end": (lambda v, f: v == 0, "0"),
}


def judge_targets(fig: dict) -> dict:
    out = {}
    for k, (test, text) in TARGETS.items():
        if k in fig:
            v = fig[k]
            out[k] = {"value": v, "target": text, "met": v is not None and bool(test(v, fig))}
    return out


# ---- the run --------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=None, help="live symbols (default 10; --quick 3)")
    ap.add_argument("--rate", type=float, default=None, help="candles per second in total (default 10; --quick 5)")
    ap.add_argument("--duration", type=float, default=None, help="seconds of the live feed (default 300; --quick 80)")
    ap.add_argument("--fail-rate", type=float, default=0.2, help="webhook requests answered 500")
    ap.add_argument("--ambiguous-rate", type=float, default=0.05, help="webhook requests taken in, then left hanging")
    ap.add_argument("--kill-worker-at", type=float, default=None, metavar="S",
                    help="SIGKILL the delivery worker S seconds into the feed (default: a third of --duration; --quick "
                         "15), restart it 20 s later")
    ap.add_argument("--history-alerts", type=int, default=None,
                    help="resolved alerts beside the pending ones for eval_ratio and stats_s (default 1,000,000; "
                         "--quick 100,000)")
    ap.add_argument("--history-days", type=int, default=None, help="days of stored 5m history (default 120)")
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--only-db", action="store_true", help="only eval_ratio and stats_s (no Dagster)")
    ap.add_argument("--skip-db", action="store_true", help="leave eval_ratio and stats_s out")
    ap.add_argument("--port", type=int, default=3323)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    q = args.quick
    symbols = args.symbols or (3 if q else 10)
    rate = args.rate or (5.0 if q else 10.0)
    duration = args.duration or (80.0 if q else 300.0)
    kill_at = args.kill_worker_at if args.kill_worker_at is not None else (15.0 if q else round(duration / 3))
    history_alerts = args.history_alerts or (100_000 if q else 1_000_000)
    history_days = args.history_days or 120

    tmp = Path(tempfile.mkdtemp(prefix="tp-alerts-bench-"))
    home = tmp / "home"
    home.mkdir(parents=True)
    figures: dict = {"machine": f"{os.cpu_count()} CPUs", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                     "note": "other test runs may share these CPUs"}
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    per_symbol_candles = rate * (duration + 200) / symbols
    hist_end = (now - timedelta(days=1, minutes=5 * per_symbol_candles)).replace(minute=0)
    hist_start = hist_end - timedelta(days=history_days)
    os.environ.update({"TP_EMBEDDED": "1", "TP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                       "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "TP_NHITS_TIMEFRAMES": "5m",
                       "TP_HISTORY_START": (hist_start - timedelta(days=31)).strftime("%Y-%m-01"), "TP_DEVICE": "cpu",
                       "TP_SOURCE": f"synthetic:{ll.SEED}",
                       # the fed candles closed a day or more ago (so the feed can run at any rate): without this every
                       # alert would be stale (committed more than 300 s after its candle closed) and none sent
                       "TP_ALERT_MAX_DELAY_S": str(MAX_DELAY_S)})
    admin, pg_tmp = os.environ.get("TP_DATABASE_URL"), None
    if not admin:
        from trading_platform.store.embedded import ensure_embedded

        pg_tmp = tmp / "pg"
        admin = ensure_embedded(pg_tmp)
    proc = worker = hook = tg = None
    try:
        if not args.skip_db:
            t = time.perf_counter()
            figures.update(db_phase(admin, history_alerts, home))
            figures["db_phase_s"] = round(time.perf_counter() - t, 1)
        if not args.only_db:
            figures.update(symbols=symbols, rate=rate, duration_s=duration, fail_rate=args.fail_rate,
                           ambiguous_rate=args.ambiguous_rate, kill_worker_at_s=kill_at,
                           webhook_rate_per_min=WEBHOOK_RATE_PER_MIN,
                           webhook_rate_why=(f"{WEBHOOK_RATE_PER_MIN}/min instead of the default 60: about "
                                             f"{rate * 0.2:g} "
                                             f"alerts/s plus {args.fail_rate:.0%} retried, and the backlog of the "
                                             f"{RESTART_AFTER_S:g} s outage to catch up; Telegram keeps its default"),
                           alert_max_delay_s=MAX_DELAY_S)
            proc, worker, hook, tg = live_phase(args, tmp, home, admin, figures, symbols, rate, duration, kill_at,
                                                hist_start, hist_end)
    finally:
        if worker is not None:
            worker.stop()
        if proc is not None:
            ll.stop(proc)
        for r in (hook, tg):
            if r is not None:
                r.stop()
        if pg_tmp is not None:
            from trading_platform.store.embedded import stop_embedded

            stop_embedded(pg_tmp)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    figures["targets"] = judge_targets(figures)
    missed = [k for k, v in figures["targets"].items() if not v["met"]]
    log("targets: " + ", ".join(f"{k} {v['value']} ({v['target']}: {'met' if v['met'] else 'MISSED'})"
                                for k, v in figures["targets"].items()))
    figures["targets_missed"] = missed
    print(json.dumps(figures, default=str))


def live_phase(args, tmp: Path, home: Path, admin: str, figures: dict, symbols: int, rate: float, duration: float,
               kill_at: float, hist_start: datetime, hist_end: datetime):
    from benchmarks.scale import fresh_db
    from trading_platform.live.settings import live_settings

    dsn = fresh_db(admin, "alerts")
    os.environ["TP_DATABASE_URL"] = dsn
    from dagster import DagsterInstance

    from trading_platform.instance import ensure_dagster_home
    from trading_platform.store.db import connect
    from trading_platform.symbols import sync_partitions

    ensure_dagster_home()
    live = [f"L{i:02d}/USDT" for i in range(symbols)]
    t = time.perf_counter()
    with connect(dsn) as store:
        ll.load_history(store, live, hist_start, hist_end, live=True)
    with connect(dsn) as store:
        sync_partitions(DagsterInstance.get(), store)
    log(f"market: {symbols} live symbols x {(hist_end - hist_start).days} days of 5m candles "
        f"({time.perf_counter() - t:.0f} s)")
    models = ll.train_models(dsn, live, symbols, home, os.environ["MLFLOW_TRACKING_URI"])
    figures["models_registered"] = models["versions"]
    log(f"models: {models['versions']} champions of {', '.join(models['families'])} ({models['train_s']} s)")
    install_marks(dsn)

    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    token = "424242:bench-" + base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")
    hook = WebhookReceiver(secret, args.fail_rate, args.ambiguous_rate)
    tg = TelegramReceiver(token)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TP_LOG_LEVEL": "WARNING"}
    worker_env = {**env, "TP_LOG_LEVEL": "INFO", "TP_BENCH_WEBHOOK_URL": hook.url, "TP_BENCH_WEBHOOK_SECRET": secret,
                  "TP_BENCH_TELEGRAM_TOKEN": token, "TP_TELEGRAM_API_URL": tg.url}
    proc = ll.start_dagster(tmp, env, args.port)
    worker = None
    try:
        ll.wait_webserver(args.port, proc)
        log("dagster dev is up (webserver and daemon)")
        # a warm-up candle per symbol; the rule's threshold from the champion's own outputs
        ll.feed_phase(dsn, live, rate, None, "bench warmup", count=len(live))
        ll.drain(dsn, 180)
        threshold, n_values, which = calibrate(dsn, live, home, hist_end)
        figures["threshold"] = round(threshold, 6)
        figures["threshold_from"] = (f"80th percentile of the pump champion's {n_values} {which} predictions over "
                                     f"the last {CALIBRATION_DAYS} days of stored history")
        made = setup_commands(worker_env, threshold)
        log(f"rule bench-pump on pump_xgb 5m >= {threshold:.4f} ({figures['threshold_from']}); destinations "
            f"bench-webhook ({WEBHOOK_RATE_PER_MIN}/min) and bench-telegram (default rate): "
            f"{[made[k].get('name') for k in ('webhook', 'telegram', 'rule')]}")
        watch = CommitWatch(dsn)
        worker = Worker(worker_env, tmp)
        worker.start()
        time.sleep(3)
        killed: dict = {}
        killer = threading.Thread(target=kill_and_restart, args=(worker, dsn, kill_at, killed), daemon=True)
        log(f"feeding {rate} candles/s over {symbols} symbols for {duration:.0f} s; the worker is killed at "
            f"{kill_at:g} s ...")
        killer.start()
        fed = ll.feed_phase(dsn, live, rate, duration, "bench feed")
        killer.join(timeout=RESTART_AFTER_S + 60)
        live_backlog = ll.drain(dsn, max(180.0, live_settings().retry_after_s * 3))
        backlog, waited = drain_outbox(dsn, hook, DRAIN_S)
        log(f"drained: live backlog {live_backlog}, outbox backlog {backlog} after {waited:.0f} s")
        lf = ll.live_figures(dsn, "bench feed")
        figures.update(fed=fed["fed"], fed_rate=fed["rate"], predicted=lf["done"], live_lost=fed["fed"] - lf["done"],
                       live_p50_s=lf["p50_s"], live_p99_s=lf["p99_s"], live_backlog_end=live_backlog,
                       live_duplicated=ll.duplicated(dsn), outbox_drain_s=round(waited, 1))
        watch.stop()
        figures.update(alert_figures(dsn, hook, tg, killed, "bench feed", watch))
        figures["backlog_end"] = backlog
        log(f"alerts: {json.dumps({k: v for k, v in figures.items() if not isinstance(v, (dict, list))})}")
    except BaseException:
        if worker is not None:
            worker.stop()
        ll.stop(proc)
        hook.stop()
        tg.stop()
        raise
    return proc, worker, hook, tg


if __name__ == "__main__":
    main()

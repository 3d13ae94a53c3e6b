"""The watchdog's checks: what each one looks at, its threshold, and where it runs.

Each check is a function of a :class:`Look` (a database connection or None, the Dagster instance, the injected
``now`` and the thresholds) returning an :class:`Observation`: failing or not (None: it could not tell, and its
state stays as it was), since when its condition holds (its threshold crossed: the moment a detection is timed
from), what fails (series, runs, destinations) and one line of detail. The engine (``engine.py``) turns the
observations into edge-triggered messages.

``runner`` says who looks: ``sensor`` (``watchdog_sensor`` in the Dagster daemon: what needs the store) or
``service`` (``tp watchdog run``: what the daemon cannot check about itself, its own heartbeat and the store
being reachable, and the delivery worker, whose message cannot travel through the worker it reports).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..errors import InvalidInput, redact_secrets

# check -> (runner, severity, the asset whose checks show it in the Dagster UI (None: no asset watches it), what)
SPECS: dict[str, tuple[str, str, tuple[str, ...] | None, str]] = {
    "data_stale": ("sensor", "ERROR", ("market", "ohlcv"),
                   "a live series has no closed candle N candles past the expected close (its market's calendar)"),
    "collector_down": ("sensor", "ERROR", ("market", "ohlcv"),
                       "the exchange collector is disconnected, or stopped reporting, longer than a minute"),
    "stream_stale": ("sensor", "WARN", ("market", "ohlcv"),
                     "a collected series received no frame for 2 minutes while its market is open"),
    "live_backlog": ("sensor", "ERROR", ("predictions",),
                     "more than 500 live events wait, or the oldest is older than 120 s"),
    "live_batch_retrying": ("sensor", "WARN", ("predictions",), "a live batch is at its third attempt"),
    "run_failed": ("sensor", "ERROR", None, "a run failed and will not be retried (its retries are spent)"),
    "mlflow_unreachable": ("sensor", "ERROR", None, "the MLflow tracking store failed 3 looks in a row"),
    "deliveries_dead": ("sensor", "WARN", ("alerts",), "alert deliveries went dead (retries spent or refused)"),
    "model_refused": ("sensor", "ERROR", ("predictions",),
                      "an alias points at a model version the serving resource refuses (unsigned, or its signature "
                      "wrong): its predecessor serves, or nothing"),
    "daemon_down": ("service", "ERROR", None, "no Dagster daemon heartbeat for 5 minutes"),
    "db_unreachable": ("service", "ERROR", None, "the platform's database failed 3 looks in a row"),
    "delivery_worker_down": ("service", "ERROR", ("alerts",),
                             "the alert delivery worker has not claimed due deliveries (or not been seen) for a minute"),
}
CHECK_NAMES = tuple(SPECS)
PROBES = ("mlflow_unreachable", "db_unreachable")  # fail after `probe_failures` failed looks in a row


@dataclass(frozen=True)
class Thresholds:
    """Every threshold, from ``TP_WATCHDOG_*`` (:func:`thresholds`)."""

    interval_s: float = 30.0          # a look every this often (the sensor's interval, the service's loop)
    remind_s: float = 900.0           # a reminder while a check fails (the seed's 15-minute cooldown)
    resolve_passes: int = 2           # passed looks in a row before `resolved`
    stale_candles: int = 3            # data_stale: candles overdue past the expected close
    collector_down_s: float = 60.0
    stream_stale_s: float = 120.0
    backlog_events: int = 500
    backlog_age_s: float = 120.0
    batch_attempts: int = 3
    run_failed_window_s: float = 3600.0   # a failed run counts this long (unless a later run of its job succeeds)
    daemon_down_s: float = 300.0
    probe_failures: int = 3
    probe_timeout_s: float = 5.0
    dead_window_s: float = 86400.0        # deliveries dead within this long count
    worker_down_s: float = 60.0
    disabled: tuple[str, ...] = ()        # TP_WATCHDOG_DISABLE: checks not run


YEAR_S = 365 * 86400.0   # the most any seconds threshold may be (a longer one is a typo: and its timedelta overflows)
COUNT_MAX = 1_000_000    # the most any count may be
_ENV = {  # field -> (variable, cast, minimum, maximum)
    "interval_s": ("TP_WATCHDOG_INTERVAL_S", float, 1.0, YEAR_S),
    "remind_s": ("TP_WATCHDOG_REMIND_S", float, 1.0, YEAR_S),
    "resolve_passes": ("TP_WATCHDOG_RESOLVE_PASSES", int, 1, COUNT_MAX),
    "stale_candles": ("TP_WATCHDOG_STALE_CANDLES", int, 1, 1000),  # candles past a close, counted by the calendar
    "collector_down_s": ("TP_WATCHDOG_COLLECTOR_DOWN_S", float, 0.0, YEAR_S),
    "stream_stale_s": ("TP_WATCHDOG_STREAM_STALE_S", float, 0.0, YEAR_S),
    "backlog_events": ("TP_WATCHDOG_BACKLOG_EVENTS", int, 0, COUNT_MAX),
    "backlog_age_s": ("TP_WATCHDOG_BACKLOG_AGE_S", float, 0.0, YEAR_S),
    "batch_attempts": ("TP_WATCHDOG_BATCH_ATTEMPTS", int, 2, COUNT_MAX),
    "run_failed_window_s": ("TP_WATCHDOG_RUN_FAILED_WINDOW_S", float, 1.0, YEAR_S),
    "daemon_down_s": ("TP_WATCHDOG_DAEMON_DOWN_S", float, 1.0, YEAR_S),
    "probe_failures": ("TP_WATCHDOG_PROBE_FAILURES", int, 1, COUNT_MAX),
    "probe_timeout_s": ("TP_WATCHDOG_PROBE_TIMEOUT_S", float, 0.1, 3600.0),  # PostgreSQL's statement_timeout: ms
    "dead_window_s": ("TP_WATCHDOG_DEAD_WINDOW_S", float, 1.0, YEAR_S),
    "worker_down_s": ("TP_WATCHDOG_WORKER_DOWN_S", float, 1.0, YEAR_S),
}


def thresholds(environ=None, **overrides) -> Thresholds:
    """The thresholds from ``TP_WATCHDOG_*`` (``overrides`` win; ``labels``: field -> (error field, label) for an
    override its user gave as an option, ``--interval``): plain decimal numbers (core/numbers), within each one's minimum and maximum (a year for
    seconds, a million for counts); anything else is refused naming its variable."""
    from ..core.numbers import number

    env = os.environ if environ is None else environ
    labels = overrides.pop("labels", None) or {}
    values = {}
    for name, (var, cast, minimum, maximum) in _ENV.items():
        raw = overrides.get(name, env.get(var))
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        field, label = labels.get(name, (var, var))
        what = (f"{label} must be a whole number from {minimum:g} to {maximum:.0f}" if cast is int else
                f"{label} must be a number of seconds from {minimum:g} to {maximum:.0f}"
                + (" (a year)" if maximum == YEAR_S else "")) + f", got {repr(raw)[:40]}"
        try:
            v = number(raw, field, label, low=minimum, high=maximum)
        except InvalidInput:
            raise InvalidInput(what, field=field) from None
        if cast is int:
            if not v.is_integer():
                raise InvalidInput(what, field=field)
            v = int(v)
        values[name] = v
    disabled = overrides.get("disabled", env.get("TP_WATCHDOG_DISABLE", ""))
    names = tuple(x.strip() for x in (disabled.split(",") if isinstance(disabled, str) else disabled) if x.strip())
    unknown = [x for x in names if x not in SPECS]
    if unknown:
        raise InvalidInput(f"TP_WATCHDOG_DISABLE names unknown check(s) {', '.join(unknown)} "
                           f"(known: {', '.join(CHECK_NAMES)})", field="TP_WATCHDOG_DISABLE")
    return Thresholds(**values, disabled=names)


def check_name(name: str, field: str = "check") -> str:
    if name not in SPECS:
        raise InvalidInput(f"unknown watchdog check {name!r} (known: {', '.join(CHECK_NAMES)})", field=field)
    return name


@dataclass
class Observation:
    failing: bool | None             # None: the look could not tell (the state stays as it was)
    since: datetime | None = None    # when the condition began to hold (its threshold crossed)
    subjects: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class Look:
    """What a check looks with: ``conn`` (psycopg, autocommit; None when the store is unreachable), ``instance``
    (a function returning the Dagster instance), ``now`` (injected clock), ``t`` the thresholds, ``started``
    (when the looking process started: a heartbeat never seen counts from there), ``dsn`` and ``tracking``
    (the MLflow tracking URI) for the probes."""

    conn: object
    now: datetime
    t: Thresholds
    instance: object = None
    started: datetime | None = None
    connected_at: datetime | None = None  # when this look's database connection was opened (after an outage)
    dsn: str | None = None
    tracking: str | None = None


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    s = (now - then).total_seconds()
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def _iso(ts: datetime | None) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts is not None else "-"


# ---- the store's checks (watchdog_sensor) ---------------------------------------------------------------------
def data_stale(look: Look) -> Observation:
    """A live series whose newest candle is older than ``stale_candles`` candles past its next expected close,
    counted in open slots of its market's calendar (a stock over a weekend or a holiday is not stale). A live
    series with no candle yet is not watched."""
    from ..alerts.core import expires_at

    rows = look.conn.execute(
        "SELECT s.symbol, s.category, s.exchange, tf, (SELECT max(o.ts) FROM ohlcv o WHERE o.symbol = s.symbol "
        "AND o.timeframe = tf) FROM symbols s CROSS JOIN LATERAL unnest(s.timeframes) AS tf "
        "WHERE s.enabled AND s.live ORDER BY s.symbol, tf").fetchall()
    stale, first = [], None
    for symbol, category, exchange, tf, last in rows:
        if last is None:
            continue
        # the close of the (stale_candles + 1)-th open slot after the newest candle: the next candle is then
        # stale_candles candles past its expected close
        due = expires_at(category, exchange, tf, last, look.t.stale_candles - 1)
        if due <= look.now:
            stale.append(f"{symbol} {tf}")
            first = due if first is None else min(first, due)
            detail_one = f"{symbol} {tf}: newest candle {_iso(last)}"
    if not stale:
        return Observation(False, detail=f"{len(rows)} live series current")
    more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
    return Observation(True, first, stale, f"{detail_one}{more}: no closed candle {look.t.stale_candles} candles "
                                           "past the expected close")


def collector_down(look: Look) -> Observation:
    """A collector connection (of an exchange a live symbol names) disconnected longer than ``collector_down_s``,
    or a collector that stopped writing its status (killed, stopped) that long ago."""
    t = look.t.collector_down_s
    rows = look.conn.execute(
        "SELECT c.exchange, c.name, c.state, c.connected, c.last_frame_at, c.updated_at FROM collector_status c "
        "WHERE c.kind = 'connection' AND c.exchange IN (SELECT exchange FROM symbols WHERE enabled AND live "
        "AND exchange IS NOT NULL) ORDER BY c.exchange, c.name").fetchall()
    down, first, why = [], None, ""
    for exchange, name, state, connected, last_frame, updated in rows:
        heartbeat = updated + timedelta(seconds=t)
        lost = (last_frame or updated) + timedelta(seconds=t)
        since = heartbeat if heartbeat <= look.now else lost if (not connected and lost <= look.now) else None
        if since is None:
            continue
        down.append(f"{exchange} {name}")
        first = since if first is None else min(first, since)
        why = (f"{exchange} {name}: no status since {_iso(updated)} (the collector is not running)"
               if since == heartbeat else f"{exchange} {name}: {state}, last frame {_ago(look.now, last_frame)}")
    if not down:
        return Observation(False, detail=f"{len(rows)} collector connection(s) up")
    return Observation(True, first, down, why + (f" and {len(down) - 1} more" if len(down) > 1 else ""))


def stream_stale(look: Look) -> Observation:
    """A collected series (state streaming) with no frame for ``stream_stale_s`` while its market is open."""
    from ..core.calendars import slot_open

    import numpy as np

    t = look.t.stream_stale_s
    rows = look.conn.execute(
        "SELECT c.exchange, c.symbol, c.timeframe, c.last_frame_at, s.category, s.exchange FROM collector_status c "
        "JOIN symbols s ON s.symbol = c.symbol WHERE c.kind = 'series' AND c.state = 'streaming' AND s.enabled "
        "AND s.live ORDER BY c.symbol, c.timeframe").fetchall()
    stale, first = [], None
    for exchange, symbol, tf, last_frame, category, sym_exchange in rows:
        if last_frame is None:
            continue
        since = last_frame + timedelta(seconds=t)
        if since > look.now:
            continue
        now_us = int(look.now.timestamp() * 1_000_000)
        if not slot_open(category, sym_exchange, np.array([now_us - now_us % 60_000_000]), 60)[0]:
            continue  # the market is closed: no frame is expected
        stale.append(f"{symbol} {tf}")
        first = since if first is None else min(first, since)
    if not stale:
        return Observation(False, detail=f"{len(rows)} stream(s) receiving")
    return Observation(True, first, stale, f"no frame for {t:g} s: {', '.join(stale[:5])}"
                                           + (f" and {len(stale) - 5} more" if len(stale) > 5 else ""))


def live_backlog(look: Look) -> Observation:
    """More than ``backlog_events`` live events not yet predicted, or the oldest older than ``backlog_age_s``
    (``tp live status``'s own figures)."""
    from ..store.outbox import status

    st = status(look.conn)
    n, lag = st["backlog"], st["lag_s"] if st["backlog"] else 0.0
    detail = f"{n} event(s) waiting, the oldest {lag:.0f} s old"
    if lag > look.t.backlog_age_s and st["oldest_event_at"]:
        since = datetime.fromisoformat(st["oldest_event_at"]) + timedelta(seconds=look.t.backlog_age_s)
        return Observation(True, min(since, look.now), ["live events"], detail)
    if n > look.t.backlog_events:
        return Observation(True, look.now, ["live events"], detail)
    return Observation(False, detail=detail)


def live_batch_retrying(look: Look) -> Observation:
    """A live batch not done at its ``batch_attempts``-th attempt (or later)."""
    rows = look.conn.execute(
        "SELECT id, attempt, requested_at, last_error FROM live_batches WHERE status <> 'done' AND attempt >= %s "
        "ORDER BY id", (look.t.batch_attempts,)).fetchall()
    if not rows:
        return Observation(False, detail="no live batch retrying")
    b = rows[0]
    err = f": {redact_secrets(b[3])[:200]}" if b[3] else ""
    return Observation(True, min(r[2] for r in rows), [f"batch {r[0]}" for r in rows],
                       f"live batch {b[0]} at attempt {b[1]}{err}")


def run_failed(look: Look) -> Observation:
    """Runs failed within ``run_failed_window_s`` whose retries are spent (Dagster's ``dagster/will_retry`` tag
    ``false``; a run that will be retried is not reported), unless a later run of the same job (and partition)
    succeeded since. Subjects: job (and partition)."""
    from dagster import DagsterRunStatus, RunsFilter

    instance = look.instance() if callable(look.instance) else look.instance
    window = look.now - timedelta(seconds=look.t.run_failed_window_s)
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE], updated_after=window),
                                       limit=500)
    failed: dict[str, tuple[datetime, str]] = {}
    for rec in records:
        run = rec.dagster_run
        will = run.tags.get("dagster/will_retry")
        if will == "true":
            continue
        end = datetime.fromtimestamp(rec.end_time, timezone.utc) if rec.end_time else rec.update_timestamp
        if end.tzinfo is None:
            end = end.replace(tzinfo=timezone.utc)
        if will is None and instance.run_retries_enabled and (look.now - end).total_seconds() < 60:
            continue  # the retry decision is being made
        part = run.tags.get("dagster/partition")
        subject = run.job_name + (f" [{part}]" if part else "")
        if subject not in failed or failed[subject][0] < end:
            failed[subject] = (end, run.run_id)
    out = {}
    for subject, (end, run_id) in failed.items():
        run = instance.get_run_by_id(run_id)
        tags = {"dagster/partition": run.tags["dagster/partition"]} if run.tags.get("dagster/partition") else None
        later = instance.get_run_records(RunsFilter(job_name=run.job_name, statuses=[DagsterRunStatus.SUCCESS],
                                                    updated_after=end, tags=tags), limit=1)
        if not later:
            out[subject] = (end, run_id)
    if not out:
        return Observation(False, detail="no run failed for good")
    subjects = sorted(out)
    end, run_id = out[subjects[0]]
    return Observation(True, min(e for e, _ in out.values()), subjects,
                       f"{subjects[0]} failed (run {run_id[:8]}, {_iso(end)}), no retry left"
                       + (f"; and {len(subjects) - 1} more" if len(subjects) > 1 else ""))


def _probe_mlflow(uri: str, timeout_s: float) -> str | None:
    """None when the tracking store answers, else why not (scrubbed of secrets)."""
    import urllib.error
    import urllib.request

    if uri.startswith(("http://", "https://")):
        import base64
        from urllib.parse import unquote, urlsplit, urlunsplit

        parts = urlsplit(uri)
        user = unquote(parts.username) if parts.username else os.environ.get("MLFLOW_TRACKING_USERNAME") or ""
        password = unquote(parts.password) if parts.password else os.environ.get("MLFLOW_TRACKING_PASSWORD") or ""
        bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))  # never the credentials
        req = urllib.request.Request(bare.rstrip("/") + "/health")
        if user or password:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout_s) as r:
                return None if 200 <= r.status < 300 else f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            return None if e.code in (401, 403) else f"HTTP {e.code}"  # it answers: behind auth is reachable
        except Exception as e:  # noqa: BLE001 - a refused connection, a timeout: unreachable
            why = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            return redact_secrets(why.replace(password, "***") if password else why)
    if uri.startswith("sqlite:///"):
        import sqlite3
        from pathlib import Path

        path = uri[len("sqlite:///"):]
        if not Path(path).exists():
            return None  # not created yet: MLflow creates it on first use
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s) as c:
                c.execute("SELECT 1").fetchone()
            return None
        except sqlite3.Error as e:
            return f"sqlite: {e}"
    if uri.startswith(("postgresql", "postgres://")):
        import psycopg

        try:
            with psycopg.connect(uri.replace("postgresql+psycopg2://", "postgresql://")
                                 .replace("postgresql+psycopg://", "postgresql://"),
                                 connect_timeout=max(1, int(timeout_s))) as c:
                c.execute("SELECT 1")
            return None
        except psycopg.Error as e:
            return redact_secrets(f"PostgreSQL: {str(e).strip().splitlines()[0] if str(e).strip() else e}")
    if uri.startswith("file:") or "://" not in uri:
        from pathlib import Path

        return None if Path(uri.removeprefix("file://").removeprefix("file:")).exists() else "the store's folder is missing"
    return None  # a scheme the watchdog cannot look at (databricks...): never reported


def _bare_uri(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    return redact_secrets(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])) if "@" in parts.netloc
                          else uri)


def mlflow_unreachable(look: Look) -> Observation:
    why = _probe_mlflow(look.tracking, look.t.probe_timeout_s) if look.tracking else None
    if why is None:
        return Observation(False, detail="MLflow answers")
    return Observation(True, look.now, ["mlflow"], f"MLflow ({_bare_uri(look.tracking)}): {why}")


def deliveries_dead(look: Look) -> Observation:
    """Alert deliveries ``dead`` whose last error is within ``dead_window_s`` (``tp alerts retry`` brings them
    back; they age out after the window)."""
    rows = look.conn.execute(
        "SELECT t.name, count(*), min(d.last_error_at) FROM alert_deliveries d JOIN alert_destinations t "
        "ON t.id = d.destination_id WHERE d.status = 'dead' AND coalesce(d.last_error_at, d.created_at) > %s "
        "GROUP BY t.name ORDER BY t.name", (look.now - timedelta(seconds=look.t.dead_window_s),)).fetchall()
    if not rows:
        return Observation(False, detail="no dead delivery")
    since = min((r[2] for r in rows if r[2] is not None), default=look.now)
    return Observation(True, min(since, look.now), [r[0] for r in rows],
                       "dead deliveries: " + ", ".join(f"{r[0]} {r[1]}" for r in rows)
                       + " (tp alerts deliveries --status dead; tp alerts retry)")


def model_refused(look: Look) -> Observation:
    """Open refusals (``store.refusals``): an alias of the registry points at a version this platform did not sign
    (or whose artifacts changed since); recorded by every resolution of the versions to serve, cleared once the
    alias moves on or the version verifies (``tp models sign``)."""
    from ..store.refusals import open_refusals

    rows = open_refusals(look.conn)
    if not rows:
        return Observation(False, detail="every aliased model version verifies")
    return Observation(True, min(min(r["since"] for r in rows), look.now),
                       [f"{r['model']} v{r['version']}" for r in rows],
                       "; ".join(f"{r['model']} version {r['version']} ({r['alias']}) refused: {r['reason']}"
                                 for r in rows)[:400] + " (tp models list)")


# ---- the service's checks (tp watchdog run) -------------------------------------------------------------------
def sensor_lag_s(t: Thresholds) -> float:
    """How long ``watchdog_sensor`` may go without a look before the service says so."""
    return max(5 * t.interval_s, 120.0)


def daemon_down(look: Look) -> Observation:
    """No Dagster daemon heartbeat for ``daemon_down_s`` (a heartbeat never seen counts from when the watchdog
    started); or the daemon beats but ``watchdog_sensor`` has not looked for ``sensor_lag_s`` (stopped in the UI,
    its code location failing to load): the store's checks are then blind."""
    instance = look.instance() if callable(look.instance) else look.instance
    beats = instance.get_daemon_heartbeats()
    stamps = [datetime.fromtimestamp(hb.timestamp, timezone.utc) for hb in beats.values()]
    newest = max(stamps, default=None)
    base = newest if newest is not None else (look.started or look.now)
    since = base + timedelta(seconds=look.t.daemon_down_s)
    detail = f"newest daemon heartbeat {_ago(look.now, newest)}"
    if since <= look.now:
        return Observation(True, since, ["dagster-daemon"], detail + " (schedules, sensors and the run queue stop)")
    if look.conn is not None and for_runner("sensor", look.t):
        looked = look.conn.execute("SELECT max(checked_at) FROM watchdog_state WHERE runner = 'sensor'").fetchone()[0]
        base = max(x for x in (looked, look.started or look.now) if x is not None)
        since = base + timedelta(seconds=sensor_lag_s(look.t))
        if since <= look.now:
            return Observation(True, since, ["watchdog_sensor"],
                               f"the daemon beats but watchdog_sensor last looked {_ago(look.now, looked)} (stopped "
                               "in the Dagster UI, or the code location fails to load): the store's checks are blind")
    return Observation(False, detail=detail)


def connect_options(timeout_s: float) -> dict:
    """A connection that never hangs the watchdog: connect and statement timeouts, TCP keepalives (a half-open
    connection to a vanished server is noticed in seconds)."""
    ms = max(1000, int(timeout_s * 1000))
    return {"connect_timeout": max(1, int(math.ceil(timeout_s))), "options": f"-c statement_timeout={ms}",
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def db_unreachable(look: Look) -> Observation:
    import psycopg

    try:
        with psycopg.connect(look.dsn, autocommit=True, **connect_options(look.t.probe_timeout_s)) as c:
            c.execute("SELECT 1")
        return Observation(False, detail="the database answers")
    except psycopg.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Observation(True, look.now, ["database"], redact_secrets(f"the database does not answer: {msg}"))


def delivery_worker_down(look: Look) -> Observation:
    """Enabled destinations exist and the delivery worker has not recorded its view of them (it does every
    ``REPORT_S``, 10 s, whatever it sends: a worker held back by a receiver's rate limit still records) for
    ``worker_down_s``. Right after the service (re)connects (a database outage: the worker could not record either)
    it cannot tell until the worker has had the whole threshold to show up."""
    t = timedelta(seconds=look.t.worker_down_s)
    seen, n = look.conn.execute(
        "SELECT max(worker_seen_at), count(*) FROM alert_destinations WHERE enabled").fetchone()
    if not n:
        return Observation(False, detail="no enabled destination")
    if seen is not None and seen + t > look.now:
        return Observation(False, detail=f"the delivery worker was seen {_ago(look.now, seen)}")
    grace = look.connected_at or look.started
    if grace is not None and grace + t > look.now:
        return Observation(None, detail=f"the delivery worker was last seen {_ago(look.now, seen)}; waiting "
                                        f"{look.t.worker_down_s:g} s from {_iso(grace)} for it to record")
    since = max(x for x in (seen, grace) if x is not None) + t if (seen or grace) else look.now
    return Observation(True, since, ["tp alerts deliver"],
                       f"the alert delivery worker was last seen {_ago(look.now, seen)}")


FUNCTIONS = {
    "data_stale": data_stale, "collector_down": collector_down, "stream_stale": stream_stale,
    "live_backlog": live_backlog, "live_batch_retrying": live_batch_retrying, "run_failed": run_failed,
    "mlflow_unreachable": mlflow_unreachable, "deliveries_dead": deliveries_dead, "model_refused": model_refused,
    "daemon_down": daemon_down,
    "db_unreachable": db_unreachable, "delivery_worker_down": delivery_worker_down,
}


def for_runner(runner: str, t: Thresholds) -> list[str]:
    return [name for name, spec in SPECS.items() if spec[0] == runner and name not in t.disabled]

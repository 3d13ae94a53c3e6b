"""`tp watchdog run`: the checks the daemon cannot make about itself, and the spool.

Every ``interval_s`` it looks at the Dagster daemon's heartbeat (``daemon_down``), the database (``db_unreachable``:
its own connection, 3 failed looks in a row) and the alert delivery worker (``delivery_worker_down``). Its
states live in memory and in ``watchdog_state`` (saved whenever the database answers; loaded at start) and in
the spool file (a restart during an outage goes on where it was).

The spool (``$TP_HOME/watchdog/spool.json``) holds the messages this process sends itself: those of
``delivery_worker_down`` (they cannot travel through the worker they report) and every message made while the
database is down. They go to the destinations it last read from the database (a local copy of their rows:
variable names only, never a value; the secrets are read from this process's environment, as the worker does),
each under its outbox key, retried with backoff for 24 h. Once the database answers, each one sent (or refused
for good) is recorded in ``alert_deliveries`` as ``delivered`` (``dead``) under the same key, once, and leaves
the spool: the worker never sends it again, and `tp alerts deliveries` shows it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ..core.files import replace_text
from ..errors import redact_secrets
from . import checks, engine

logger = logging.getLogger(__name__)
SPOOL_MAX_AGE_S = 24 * 3600.0
APPLICATION_NAME = "tp watchdog run"


def spool_path(home: Path) -> Path:
    return Path(home) / "watchdog" / "spool.json"


_ENTRY_STATUSES = ("pending", "undirected", "sent", "dead")
_STATES = ("ok", "failing", "unknown")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _aware(v) -> bool:
    try:
        return isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


def _destination_problem(d) -> str | None:
    if not isinstance(d, dict):
        return f"a destination is {type(d).__name__}, not an object"
    if not _is_int(d.get("id")) or not isinstance(d.get("name"), str) or d.get("kind") not in ("webhook", "telegram"):
        return "a destination lacks its id, name or kind"
    return None


def _spool_problem(data) -> str | None:
    """Why ``data`` (the spool file's JSON) is not a spool this process wrote, or None: an object of
    ``destinations`` (objects with id, name, kind), ``entries`` (each with its key, type, check, payload,
    destination, a known status, attempts, next_at and an aware created_at) and ``states`` (check -> a state)."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    dests, entries, states = data.get("destinations"), data.get("entries"), data.get("states")
    for name, v, kind in (("destinations", dests, list), ("entries", entries, list), ("states", states, dict)):
        if v is not None and not isinstance(v, kind):
            return f"its {name} is a JSON {type(v).__name__}, not an {'array' if kind is list else 'object'}"
    for d in dests or []:
        if (why := _destination_problem(d)) is not None:
            return why
    for i, e in enumerate(entries or []):
        if not isinstance(e, dict):
            return f"entry {i} is a JSON {type(e).__name__}, not an object"
        ok = (all(isinstance(e.get(k), str) for k in ("key", "type", "check")) and isinstance(e.get("payload"), dict)
              and e.get("status") in _ENTRY_STATUSES and _is_int(e.get("attempts"))
              and isinstance(e.get("next_at"), (int, float)) and not isinstance(e.get("next_at"), bool)
              and math.isfinite(e["next_at"]) and _aware(e.get("created_at")))
        if not ok:
            return f"entry {i} lacks its key, type, check, payload, status, attempts, next_at or created_at"
        d = e.get("destination")
        if (d is not None or e["status"] != "undirected") and _destination_problem(d) is not None:
            return f"entry {i} ({e['status']}) has no usable destination"
    for name, st in (states or {}).items():
        try:
            s = engine.State.from_json(st)
        except (TypeError, ValueError, AttributeError) as e:
            return f"the state of {name!r} cannot be read: {type(e).__name__}"
        stamps = (s.since, s.next_reminder_at, s.last_message_at, s.checked_at)
        if s.name != name or s.state not in _STATES or not all(_is_int(x) for x in (s.streak, s.passes, s.messages)) \
                or any(x is not None and x.tzinfo is None for x in stamps) \
                or not all(isinstance(x, str) for x in (*s.subjects, *s.announced)):
            return f"the state of {name!r} is not a check's state"
    return None


class Spool:
    """The service's file: its states, the destinations it last read, and the messages it sends itself."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.destinations: list[dict] = []
        self.entries: list[dict] = []
        self.states: dict[str, dict] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_bytes().decode("utf-8"))
                why = _spool_problem(data)
            except (OSError, ValueError, RecursionError) as e:  # not UTF-8, not JSON, nested past reading
                why = f"it is not readable JSON: {type(e).__name__}: {str(e)[:200]}"
            if why is None:
                self.destinations = list(data.get("destinations") or [])
                self.entries = list(data.get("entries") or [])
                self.states = dict(data.get("states") or {})
            else:
                self._set_aside(why)

    def _set_aside(self, why: str) -> None:
        """A spool this process cannot use is renamed aside, never written over (the messages it spooled during
        an outage stay there, for a person to read); the service starts with an empty one."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            self.path.rename(aside)
        except OSError as e:
            logger.error("watchdog: the spool %s is unusable (%s) and could not be renamed aside (%s); starting a new "
                         "one", self.path, why, e)
            return
        logger.warning("watchdog: the spool %s is unusable (%s); moved aside to %s (its messages are kept there); "
                       "starting a new one", self.path, why, aside)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_text(self.path, json.dumps({"destinations": self.destinations, "entries": self.entries,
                                            "states": self.states}, default=str))

    def set_destinations(self, rows: list[dict]) -> None:
        keep = ("id", "name", "kind", "url_env", "secret_env", "token_env", "chat_id", "rate_per_min", "enabled")
        self.destinations = [{k: r.get(k) for k in keep} for r in rows]  # the names of variables, never values

    def add(self, messages: list[engine.Message], now: float) -> int:
        """One entry per message and destination known; a message made while no destination is known (the
        database was down before the service ever read them) waits undirected, and goes to the outbox once the
        database answers."""
        have = {((e["destination"] or {}).get("id"), e["key"]) for e in self.entries}
        n = 0
        created = datetime.fromtimestamp(now, timezone.utc).isoformat()
        for m in messages:
            for d in self.destinations or [None]:
                if ((d or {}).get("id"), m.key) in have:
                    continue
                self.entries.append({"key": m.key, "type": m.type, "check": m.check, "payload": m.payload,
                                     "destination": d, "status": "pending" if d else "undirected", "attempts": 0,
                                     "next_at": now, "created_at": created})
                n += 1
        if messages and not self.destinations:
            logger.warning("watchdog: no destination known to send to now (none read yet, or none with --watchdog "
                           "on); kept for the outbox: %s", "; ".join(m.payload["message"] for m in messages))
        return n

    def undirected(self) -> list[dict]:
        return [e for e in self.entries if e["status"] == "undirected"]

    def send_due(self, timeout_s: float = 5.0, now=None) -> int:
        """Send what is due, one request each (a handful of messages: no digest). Returns how many were sent."""
        from ..alerts import adapters
        from ..alerts.delivery import Delivery, backoff_s, build_request

        sent = 0
        for e in self.entries:
            t = time.time() if now is None else now
            if e["status"] != "pending" or e["next_at"] > t:
                continue
            age = t - datetime.fromisoformat(e["created_at"]).timestamp()
            target = adapters.resolve(e["destination"])
            if isinstance(target, adapters.Misconfigured):
                e["error"], e["next_at"] = target.reason, t + 30.0
                if age >= SPOOL_MAX_AGE_S:
                    e["status"] = "dead"
                continue
            e["attempts"] += 1
            unit = [Delivery(0, target.id, e["key"], e["type"], e["payload"], e["attempts"],
                             datetime.fromisoformat(e["created_at"]))]
            res = adapters.send(target, build_request(target, unit, False), timeout_s)
            e["http_status"] = res.status
            if res.ok:
                e["status"], e["sent_at"], e["error"] = "sent", datetime.now(timezone.utc).isoformat(), None
                sent += 1
                continue
            e["error"] = target.scrub(res.error or "")[:500]
            if res.retry and age < SPOOL_MAX_AGE_S:
                e["next_at"] = t + max(backoff_s(e["attempts"]), res.retry_after_s or 0.0)
            else:
                e["status"] = "dead"
                logger.error("watchdog: %s refused %s: %s", e["destination"]["name"], e["key"], e["error"])
        return sent

    def finished(self) -> list[dict]:
        return [e for e in self.entries if e["status"] in ("sent", "dead")]

    def drop(self, entries: list[dict]) -> None:
        ids = {id(e) for e in entries}
        self.entries = [e for e in self.entries if id(e) not in ids]


class Service:
    """One ``tp watchdog run`` process: ``tick()`` is one pass (tests call it with an injected clock)."""

    def __init__(self, dsn: str, *, home: Path, t: checks.Thresholds | None = None, instance=None, clock=None,
                 report=None, timeout_s: float = 5.0):
        self.dsn, self.t = dsn, t or checks.thresholds()
        self.clock = clock or engine.now_utc
        self.started = self.clock()
        self.instance_fn = instance
        self.report = report
        self.timeout_s = timeout_s
        self.names = checks.for_runner("service", self.t)
        self.spool = Spool(spool_path(home))
        self.conn = None
        self.connected_at = None
        self.states = {n: engine.State.from_json(self.spool.states[n]) if n in self.spool.states
                       else engine.State.new(n) for n in self.names}
        self._loaded = False

    def _connect(self):
        import psycopg
        from psycopg.conninfo import make_conninfo

        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.execute("SELECT 1")
                return self.conn
            except psycopg.Error:
                self._close()
        try:
            self.conn = psycopg.connect(make_conninfo(self.dsn, application_name=APPLICATION_NAME), autocommit=True,
                                        **checks.connect_options(self.t.probe_timeout_s))
            self.connected_at = self.clock()
        except psycopg.Error:
            self.conn = None
        return self.conn

    def _close(self) -> None:
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        self.conn = None

    def tick(self) -> list[engine.Message]:
        import psycopg

        now = self.clock()
        conn = self._connect()
        if conn is not None and not self._loaded:
            try:  # the stored states win over the spool's copy when the spool has none newer
                stored = engine.load(conn, self.names)
                for n, st in stored.items():
                    mine = self.states[n]
                    if mine.checked_at is None or (st.checked_at and st.checked_at >= mine.checked_at):
                        self.states[n] = st
                self._loaded = True
            except psycopg.Error:
                self._close()
                conn = None
        look = checks.Look(conn, now, self.t, instance=self.instance_fn, started=self.started,
                           connected_at=self.connected_at, dsn=self.dsn)
        observations = {n: engine.observe(n, look) for n in self.names}
        before = {n: self.states[n].state for n in self.names}
        messages = []
        for n in self.names:
            messages += engine.step(self.states[n], observations[n], now, self.t)
        direct = [m for m in messages if m.check == "delivery_worker_down"]
        queued = [m for m in messages if m.check != "delivery_worker_down"]
        # what this process sends itself is in the spool file before its state is committed: a crash in between
        # sends it again under the same key, never loses it
        if direct:
            self.spool.add(direct, time.time())
            self.spool.states = {n: s.as_json() for n, s in self.states.items()}
            self.spool.save()
        if conn is not None:
            try:
                waiting = self.spool.undirected()
                with conn.transaction():
                    engine.save(conn, list(self.states.values()))
                    engine.enqueue(conn, queued + [engine.Message(e["type"], e["key"], e["check"], e["payload"])
                                                   for e in waiting])
                    self.spool.set_destinations(engine.watchdog_destinations(conn))
                self.spool.drop(waiting)
                queued = []
            except psycopg.Error as e:
                logger.warning("watchdog: the database failed mid-pass (%s); sending from the spool",
                               redact_secrets(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
                self._close()
                conn = None
        self.spool.add(queued, time.time())
        self.spool.send_due(self.timeout_s)
        if conn is not None and self.spool.finished():
            try:
                with conn.transaction():
                    done = self.spool.finished()
                    engine.record_sent(conn, done)
                self.spool.drop(done)
            except psycopg.Error:
                self._close()
        self.spool.states = {n: s.as_json() for n, s in self.states.items()}
        self.spool.save()
        for m in messages:
            logger.log(logging.WARNING if m.type == "watchdog" else logging.INFO, "watchdog: %s", m.payload["message"])
        if self.report is not None:
            for n in self.names:
                try:
                    self.report(self.states[n], self.states[n].state != before[n])
                except Exception:  # noqa: BLE001 - the UI's view is best effort
                    logger.debug("watchdog: could not report %s to Dagster", n, exc_info=True)
        return messages

    def close(self) -> None:
        self._close()


def run(dsn: str, *, home: Path, t: checks.Thresholds | None = None, stop: threading.Event | None = None,
        once: bool = False, instance=None, report=None) -> dict:
    """Look every ``interval_s`` until ``stop`` is set (SIGINT/SIGTERM) or once."""
    stop = stop or threading.Event()
    lock = _single(spool_path(home).with_name("service.lock"), stop)
    if lock is None:
        return {"messages": 0, "states": {}, "spooled": 0}
    svc = Service(dsn, home=home, t=t, instance=instance, report=report)
    sent = 0
    logger.info("watchdog: looking at %s every %g s", ", ".join(svc.names), svc.t.interval_s)
    try:
        while True:
            t0 = time.monotonic()
            sent += len(svc.tick())
            if once or stop.wait(max(0.0, svc.t.interval_s - (time.monotonic() - t0))):
                break
    finally:
        svc.close()
        lock.close()
    return {"messages": sent, "states": {n: s.state for n, s in svc.states.items()},
            "spooled": len(svc.spool.entries)}


def _single(path: Path, stop: threading.Event):
    """One `tp watchdog run` per TP_HOME: an exclusive lock on ``path`` (it holds while the database is down,
    unlike an advisory lock). A second one waits, as a standby, until the first stops (or it is stopped: None)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    said = False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except OSError:
            if not said:
                logger.warning("watchdog: another tp watchdog run holds %s; standing by until it stops", path)
                said = True
        if stop.wait(1.0):
            f.close()
            return None

"""The alert delivery worker (`tp alerts deliver`): the delivery outbox's consumer, at least once and never lost.

Protocol. The writer that creates an alert inserts one ``alert_deliveries`` row per destination in its own
transaction (status ``pending``, ``next_attempt_at`` now, the ``key`` fixed: ``alert:<id>:<type>``) and
``NOTIFY tp_alerts``. The worker LISTENs on its own connection before its first look, then loops:

1. **Claim** (``claim``): in one short transaction, the due rows of a destination (``pending`` with
   ``next_attempt_at <= now()``, or ``sending`` with ``claimed_at`` older than ``2 × timeout_s``: a worker died
   between claiming and recording) are selected oldest first ``FOR UPDATE SKIP LOCKED`` and set to ``sending``
   with ``claimed_at`` now and ``attempts + 1``. Rows are chosen by their status, never by an id cursor (a
   lower id can commit after a higher one, see ``store/outbox.py``).
2. **Send** (``adapters``), outside any transaction, in a thread pool of at most ``max_in_flight`` requests per
   destination, always under the row's key (``webhook-id`` / ``Idempotency-Key``): a re-send after a crash is
   recognisable by the receiver. More than ``DIGEST_AT`` (10) due at once go out as digests (a webhook's
   ``{"type": "digest", "items": [...]}``, Telegram's one message of many lines, at most 4,096 characters).
3. **Record**, guarded: ``delivered`` only ``WHERE status = 'sending' AND attempts = <the attempt claimed>``, so
   a row re-claimed meanwhile is never marked twice. A retryable failure puts the row back to ``pending`` with a
   jittered exponential backoff (``Retry-After`` and Telegram's ``retry_after`` win when longer) until 24 h after
   its creation, then ``dead``; any other 4xx (or a 3xx: a POST is not re-sent elsewhere) makes it ``dead`` at
   once, its error naming the status and the start of the answer. ``retry`` brings dead rows back.

A SIGKILL at any point loses nothing: before the claim's commit the row is still pending; after it, the row is
``sending`` and is re-claimed once its claim is older than ``2 × timeout_s`` (the same key is sent again: at least
once, deduplicated by the receiver); after the record's commit it is done.

Ownership and rate limits. A worker sends to a destination only while it holds the session advisory lock
(``_LOCK_CLASS``, destination id) on its listening connection: two workers never send to one destination at
once (their claims would not collide anyway: SKIP LOCKED and the status), so each destination's rate limit is
kept by one process exactly. A worker that dies drops its connection and with it the lock; another takes over
at its next look. The limits (``RateLimit``): a webhook ``rate_per_min`` (default 60) requests per minute; a
Telegram chat one message per second (or per ``60 / rate_per_min`` s, never faster), 20 per minute for a group,
and 30 per second for a bot overall, where a request holds its place from its start until the window after its
answer (the receiver, which sees it in between, never counts more). A 429 blocks the destination for what it
asked. Limits are per worker process: two destinations naming the same chat are one limit only when one worker
holds both.

Destinations whose environment variables are unset here are ``misconfigured``: their deliveries are not
claimed and wait (``destination_status`` names the variable, never a value). No URL, token or secret reaches a
log line, an error or a returned dict: errors are scrubbed (``adapters.Target.scrub``) before they are stored.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import InvalidInput, StoreUnavailable, redact_secrets
from . import CHANNEL, adapters

logger = logging.getLogger(__name__)

DIGEST_AT = 10  # more deliveries than this due at once for one destination go out as digests
DIGEST_MAX = 100  # items in one webhook digest
REPORT_S = 10.0  # the worker records its view of the destinations at least this often
WORKER_FRESH_S = 60.0  # a report older than this is not the worker's current view (no worker running)
MAX_AGE_S = 24 * 3600.0  # a delivery is retried for this long after its creation, then dead
BACKOFF_MAX_S = 600.0
WEBHOOK_RATE_PER_MIN = 60.0
TELEGRAM_CHAT_INTERVAL_S = 1.0  # Telegram: one message per second in a chat
TELEGRAM_GROUP_PER_MIN = 20  # and at most 20 a minute in a group
TELEGRAM_BOT_PER_S = 30  # and 30 a second for a bot overall
_LOCK_CLASS = 7_302_116  # pg_advisory_lock(_LOCK_CLASS, destination id): the worker sending to that destination
APPLICATION_NAME = "tp alerts deliver"  # the worker's connections, as pg_stat_activity shows them
_STATUSES = ("pending", "sending", "delivered", "dead", "stale")
_DEST_COLUMNS = ("id", "name", "kind", "url_env", "secret_env", "token_env", "chat_id", "send_mode",
                 "rate_per_min", "enabled")


def enqueue_opted_in(conn, option: str, messages: list[tuple[str, str, dict]]) -> int:
    """Each (type, key, payload) into the outbox once per enabled destination with ``option`` on (``watchdog``,
    ``paper``), its key unique there (a message made again adds nothing); NOTIFY the worker. Returns the rows
    added."""
    from psycopg.types.json import Jsonb

    from . import CHANNEL

    if option not in ("watchdog", "paper"):
        raise ValueError(f"no destination option {option!r}")
    if not messages:
        return 0
    dests = [r[0] for r in conn.execute(f"SELECT id FROM alert_destinations WHERE enabled AND {option} "
                                        "ORDER BY id").fetchall()]
    n = 0
    for kind, key, payload in messages:
        for d in dests:
            n += conn.execute(
                "INSERT INTO alert_deliveries (destination_id, key, type, payload) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (destination_id, key) DO NOTHING", (d, key, kind, Jsonb(payload))).rowcount
    if n:
        conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return n


@dataclass
class Delivery:
    """A claimed row: ``attempts`` is the attempt this claim made (the guard of its record)."""

    id: int
    destination_id: int
    key: str
    type: str
    payload: dict
    attempts: int
    created_at: datetime


# ---- the outbox's SQL -----------------------------------------------------------------------------------------
_DUE = ("((d.status = 'pending' AND d.next_attempt_at <= now()) OR (d.status = 'sending' AND d.claimed_at < now() "
        "- make_interval(secs => %(reclaim)s) AND NOT d.id = ANY(%(mine)s::bigint[])))")


def destinations(conn) -> list[dict]:
    """Every destination row (the columns the worker reads), by name."""
    rows = conn.execute(f"SELECT {', '.join(_DEST_COLUMNS)} FROM alert_destinations ORDER BY name").fetchall()
    return [dict(zip(_DEST_COLUMNS, r)) for r in rows]


def _destination(conn, name: str, field: str = "name") -> dict:
    row = conn.execute(f"SELECT {', '.join(_DEST_COLUMNS)} FROM alert_destinations WHERE name = %s",
                       (name,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT name FROM alert_destinations ORDER BY name").fetchall()]
        raise InvalidInput(f"no alert destination named {name!r} (known: {', '.join(known) or 'none'})", field=field)
    return dict(zip(_DEST_COLUMNS, row))


def claim(conn, destination_id: int, limit: int, *, reclaim_after_s: float = 10.0, exclude=(),
          take=None) -> list[list[Delivery]]:
    """Claim due deliveries of one destination, oldest first, in one transaction: up to ``limit`` rows are
    locked ``FOR UPDATE SKIP LOCKED`` (rows another claimer holds are passed over, never waited for); ``take``
    (rows -> list of units, each a list of rows sent as one request) picks what is claimed, by default each row
    its own unit; the rows taken become ``sending`` (``claimed_at`` now, ``attempts + 1``). ``exclude``: ids this
    process is sending (never re-claimed from itself however long they take). Returns the units claimed."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT d.id, d.destination_id, d.key, d.type, d.payload, d.attempts, d.created_at "
            f"FROM alert_deliveries d WHERE d.destination_id = %(dest)s AND {_DUE} "
            "ORDER BY d.id LIMIT %(n)s FOR UPDATE SKIP LOCKED",
            {"dest": destination_id, "reclaim": float(reclaim_after_s), "mine": list(exclude),
             "n": int(limit)}).fetchall()
        if not rows:
            return []
        items = [Delivery(*r) for r in rows]
        units = [u for u in (take(items) if take else [[x] for x in items]) if u]
        ids = [x.id for u in units for x in u]
        if not ids:
            return []
        attempts = dict(conn.execute(
            "UPDATE alert_deliveries SET status = 'sending', claimed_at = now(), attempts = attempts + 1 "
            "WHERE id = ANY(%s::bigint[]) RETURNING id, attempts", (ids,)).fetchall())
    for u in units:
        for x in u:
            x.attempts = attempts[x.id]
    return units


def _pairs(unit: list[Delivery]) -> dict:
    return {"ids": [x.id for x in unit], "att": [x.attempts for x in unit]}


_GUARD = ("FROM unnest(%(ids)s::bigint[], %(att)s::int[]) AS u(id, attempts) "
          "WHERE d.id = u.id AND d.attempts = u.attempts AND d.status = 'sending'")


def mark_delivered(conn, unit: list[Delivery], http_status: int | None, digest_size: int | None = None) -> int:
    """Mark the unit's rows delivered, each only if it is still in the attempt that was claimed (a row
    re-claimed meanwhile by another worker is left to that worker). Returns the rows marked."""
    return len(conn.execute(
        "UPDATE alert_deliveries d SET status = 'delivered', delivered_at = now(), last_status = %(st)s, "
        f"digest_size = %(dg)s {_GUARD} RETURNING d.id",
        {**_pairs(unit), "st": http_status, "dg": digest_size}).fetchall())


def mark_failed(conn, unit: list[Delivery], http_status: int | None, error: str, *, retry: bool, delay_s: float,
                max_age_s: float = MAX_AGE_S) -> list[tuple[int, str]]:
    """Record a failed attempt (guarded like ``mark_delivered``): back to pending in ``delay_s`` when
    ``retry`` and the row is younger than ``max_age_s``, else dead. Returns (id, new status) of the rows."""
    return conn.execute(
        "UPDATE alert_deliveries d SET status = CASE WHEN %(retry)s AND coalesce(d.retry_until, d.created_at "
        "+ make_interval(secs => %(age)s)) > now() THEN 'pending' ELSE 'dead' END, "
        "next_attempt_at = now() + make_interval(secs => %(delay)s), last_status = %(st)s, last_error = %(err)s, "
        "last_error_at = now() "
        f"{_GUARD} RETURNING d.id, d.status",
        {**_pairs(unit), "retry": retry, "age": float(max_age_s), "delay": float(delay_s), "st": http_status,
         "err": redact_secrets(error)[:2000]}).fetchall()


def backoff_s(attempt: int, base_s: float = 1.0, max_s: float = BACKOFF_MAX_S) -> float:
    """The wait before attempt ``attempt + 1``: base, 2 × base, 4 × base ... at most max_s, each drawn between half
    and all of it ("equal jitter": retries of many deliveries spread out, and none waits longer than the step)."""
    return min(max_s, base_s * 2 ** min(max(attempt - 1, 0), 30) * random.uniform(0.5, 1.0))


# ---- rate limits ----------------------------------------------------------------------------------------------
class RateLimit:
    """At most ``n`` requests in any ``window_s``, for each (n, window_s) of ``limits``: a token bucket whose
    tokens come back ``window_s`` after the request that took one was answered. A request holds its place from
    its start until then, so the receiver (which sees it in between) never counts more than n in a window,
    whatever the network's delays; and none starts before ``blocked_until`` (what a 429 asked). Not thread-safe:
    the worker calls it under its lock. Times are ``time.monotonic()``."""

    def __init__(self, limits: list[tuple[int, float]]):
        self.limits = [(max(1, int(n)), float(w)) for n, w in limits]
        self.horizon = max(w for _, w in self.limits)
        self.active = 0
        self.ends: deque[float] = deque()
        self.blocked_until = 0.0

    def _recent(self, now: float, window: float) -> list[float]:
        while self.ends and self.ends[0] <= now - self.horizon:
            self.ends.popleft()
        return [e for e in self.ends if e > now - window]

    def room(self, now: float) -> int:
        """How many requests may start now."""
        if now < self.blocked_until:
            return 0
        return max(0, min(n - self.active - len(self._recent(now, w)) for n, w in self.limits))

    def wait_s(self, now: float) -> float | None:
        """Seconds until a request may start; None when only an answer to one in flight can free a place."""
        wait = max(0.0, self.blocked_until - now)
        for n, w in self.limits:
            if self.active >= n:
                return None
            recent = self._recent(now, w)
            k = self.active + len(recent) - n + 1  # answers that must leave the window first
            if k > 0:
                wait = max(wait, recent[k - 1] + w - now)
        return wait

    def start(self) -> None:
        self.active += 1

    def end(self, now: float) -> None:
        self.active -= 1
        self.ends.append(now)

    def block(self, until: float) -> None:
        self.blocked_until = max(self.blocked_until, until)


def rate_limits(target: adapters.Target) -> list[tuple[tuple, list[tuple[int, float]]]]:
    """(shared key, limits) of the rate limits a destination is under; the first is its own (a 429 blocks it)."""
    keys = target.limiter_keys
    rate = float(target.rate_per_min) if target.rate_per_min else None
    if target.kind == "webhook":
        rate = rate or WEBHOOK_RATE_PER_MIN
        n = max(1, int(rate))
        return [(keys[0], [(n, 60.0 * n / rate)])]
    chat = [(1, max(TELEGRAM_CHAT_INTERVAL_S, 60.0 / rate if rate else 0.0))]
    if str(target.chat_id).startswith("-"):  # a group or channel
        chat.append((TELEGRAM_GROUP_PER_MIN, 60.0))
    return [(keys[0], chat), (keys[1], [(TELEGRAM_BOT_PER_S, 1.0)])]


# ---- what one unit sends --------------------------------------------------------------------------------------
def digest_key(destination_id: int, unit: list[Delivery]) -> str:
    return f"digest:{destination_id}:{unit[0].id}-{unit[-1].id}-{len(unit)}"


def build_request(target: adapters.Target, unit: list[Delivery], digest: bool) -> adapters.Request:
    """The request of a unit: one delivery's payload as it is (webhook) or its line (Telegram); a digest's items
    (webhook) or lines (Telegram)."""
    if target.kind == "telegram":
        lines = [adapters.alert_line(x.payload) for x in unit]
        return adapters.telegram_request(target, adapters.digest_text(lines) if digest else lines[0])
    if not digest:
        return adapters.webhook_request(target, unit[0].key, unit[0].payload)
    key = digest_key(target.id, unit)
    return adapters.webhook_request(target, key, {"type": "digest", "key": key, "schema_version": 1,
                                                  "items": [x.payload for x in unit]})


def units_for(target: adapters.Target, items: list[Delivery], room: int,
              digest_at: int = DIGEST_AT) -> list[list[Delivery]]:
    """At most ``room`` units of the due ``items`` (oldest first): one each when ``digest_at`` or fewer are due,
    else digests (Telegram: as many lines as fit in a message; webhooks: at most ``DIGEST_MAX`` items, the
    chunks of even size)."""
    if len(items) <= digest_at:
        return [[x] for x in items[:room]]
    if target.kind == "telegram":
        groups = adapters.pack_lines([adapters.alert_line(x.payload) for x in items])
        return [[items[i] for i in g] for g in groups[:room]]
    chunks = -(-len(items) // DIGEST_MAX)
    size = -(-len(items) // chunks)
    return [items[i:i + size] for i in range(0, len(items), size)][:room]


# ---- the worker -----------------------------------------------------------------------------------------------
def _worker_dsn(dsn: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, application_name=APPLICATION_NAME)


class _Recorder:
    """The connection sender threads record results on (psycopg serializes its use), reopened once when lost."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn = None
        self.lock = threading.Lock()

    def run(self, fn, *args, **kwargs):
        import psycopg

        from ..store.db import connect

        with self.lock:
            for attempt in (1, 2):
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = connect(self.dsn, run_migrations=False, check_schema=False).conn
                    return fn(self.conn, *args, **kwargs)
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    self.close()
                    if attempt == 2:
                        raise

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # already broken: nothing to close
                pass
            self.conn = None


class _Worker:
    def __init__(self, dsn: str, *, poll_s: float, timeout_s: float, max_in_flight: int, log,
                 backoff_base_s: float, backoff_max_s: float, max_age_s: float, digest_at: int):
        self.dsn, self.poll_s, self.timeout_s = _worker_dsn(dsn), float(poll_s), float(timeout_s)
        self.max_in_flight, self.log = max(1, int(max_in_flight)), log
        self.backoff_base_s, self.backoff_max_s, self.max_age_s = backoff_base_s, backoff_max_s, max_age_s
        self.digest_at = digest_at
        self.reclaim_after_s = 2 * self.timeout_s
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.in_flight: dict[int, int] = {}
        self.mine: set[int] = set()  # ids being sent by this process
        self.limiters: dict[tuple, RateLimit] = {}
        self.executors: dict[int, ThreadPoolExecutor] = {}
        self.owned: set[int] = set()
        self.states: dict[int, str] = {}
        self.reported: dict = {}
        self.reported_at = float("-inf")
        self.recorder = _Recorder(self.dsn)
        self.counts = {"delivered": 0, "requests": 0, "failed_attempts": 0, "dead": 0}

    def say(self, level: int, message: str) -> None:
        message = redact_secrets(message)
        logger.log(level, message)
        if self.log is not None:
            self.log(message)

    # -- the loop
    def run(self, stopped) -> dict:
        import psycopg

        from ..store.db import connect

        conn = connect(self.dsn).conn  # migrates an embedded store, else checks the schema
        self._listen(conn)
        failures = 0
        try:
            while not stopped():
                try:
                    if conn is None:
                        conn = connect(self.dsn, run_migrations=False, check_schema=False).conn
                        self._listen(conn)
                        self.say(logging.INFO, "alert delivery: reconnected to the market store")
                    self.wake.clear()
                    wait = self.tick(conn)
                    self._wait(conn, wait, stopped)
                    failures = 0
                except (psycopg.OperationalError, psycopg.InterfaceError, StoreUnavailable) as e:
                    failures += 1
                    self.say(logging.WARNING, f"alert delivery: lost the market store ({type(e).__name__}: "
                                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                                              "retrying")
                    self._drop(conn)
                    conn = None
                    deadline = time.monotonic() + min(30.0, 0.5 * 2 ** min(failures, 6))
                    while not stopped() and time.monotonic() < deadline:
                        time.sleep(0.1)
        finally:
            for ex in self.executors.values():
                ex.shutdown(wait=True)  # answers come within the timeout; their records are written
            self.recorder.close()
            self._drop(conn)
        return dict(self.counts)

    def _listen(self, conn) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        # a worker whose host vanishes holds its destinations until the server notices: make that soon
        for setting, value in (("tcp_keepalives_idle", 30), ("tcp_keepalives_interval", 10),
                               ("tcp_keepalives_count", 3)):
            try:
                conn.execute(f"SET {setting} = {value}")
            except Exception:  # not a TCP connection (a Unix socket): nothing to keep alive
                pass

    def _drop(self, conn) -> None:
        self.owned.clear()  # the session's advisory locks go with it
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                pass

    def _wait(self, conn, timeout: float, stopped) -> None:
        """Until a NOTIFY, an answer (``wake``), ``stop`` or ``timeout`` (like ``outbox.wait_for``)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not stopped() and not self.wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            got = False
            for _ in conn.notifies(timeout=min(left, 0.1), stop_after=1):
                got = True
            if got:
                return

    def tick(self, conn) -> float:
        """One look: claim and dispatch what is due and may be sent; returns how long to wait at most."""
        summary = {r[0]: r[1:] for r in conn.execute(
            "SELECT d.destination_id, count(*) FILTER (WHERE " + _DUE + "), "
            "extract(epoch FROM min(d.next_attempt_at) FILTER (WHERE d.status = 'pending') - now()), "
            "extract(epoch FROM min(d.claimed_at) FILTER (WHERE d.status = 'sending' AND NOT d.id = "
            "ANY(%(mine)s::bigint[])) + make_interval(secs => %(reclaim)s) - now()) "
            "FROM alert_deliveries d WHERE d.status IN ('pending', 'sending') GROUP BY d.destination_id",
            {"reclaim": self.reclaim_after_s, "mine": self._mine()}).fetchall()}
        wait = self.poll_s
        rows = destinations(conn)
        self._report(conn, rows)
        for row in rows:
            due, next_s, reclaim_s = summary.get(row["id"], (0, None, None))
            target = adapters.resolve(row)
            if not self._sendable(row, target):
                continue
            for s in (next_s, reclaim_s):
                if s is not None and float(s) > 0:
                    wait = min(wait, float(s))
            if not due or not self._own(conn, target):
                continue
            limiters = self._limiters(target)
            with self.lock:
                now = time.monotonic()
                room = min(self.max_in_flight - self.in_flight.get(target.id, 0),
                           *(lim.room(now) for lim in limiters))
                if room <= 0:
                    waits = [lim.wait_s(now) for lim in limiters]
                    if all(w is not None for w in waits) and max(waits) > 0:
                        wait = min(wait, max(waits))
                    continue
            digest = due > self.digest_at
            units = claim(conn, target.id, room * DIGEST_MAX if digest else room,
                          reclaim_after_s=self.reclaim_after_s, exclude=self._mine(),
                          take=lambda items: units_for(target, items, room, self.digest_at))
            for unit in units:
                self._dispatch(target, unit, len(unit) > 1, limiters)
            if units:
                wait = 0.0  # look again at once: what is left waits for its limits, computed there
        return wait

    def _mine(self) -> list[int]:
        with self.lock:
            return list(self.mine)

    def _sendable(self, row: dict, target) -> bool:
        state = ("disabled" if not row["enabled"] else
                 "misconfigured" if isinstance(target, adapters.Misconfigured) else "ok")
        if state != self.states.get(row["id"]):
            self.states[row["id"]] = state
            if state == "misconfigured":
                self.say(logging.WARNING, f"alert destination {row['name']!r} is misconfigured: {target.reason}; "
                                          "its deliveries wait until it is fixed")
            elif state == "disabled":
                self.say(logging.INFO, f"alert destination {row['name']!r} is disabled: its deliveries wait")
        return state == "ok"

    def _report(self, conn, rows: list[dict]) -> None:
        """Record, every ``REPORT_S`` or when it changes, how this worker sees each destination in its own
        environment (where the variables must be set): ``destination_status`` in any other process reads it."""
        view = {}
        for row in rows:
            target = adapters.resolve(row)
            view[row["id"]] = (("misconfigured", target.reason) if isinstance(target, adapters.Misconfigured)
                               else ("ok", None))
        now = time.monotonic()
        if view == self.reported and now - self.reported_at < REPORT_S:
            return
        conn.cursor().executemany(
            "UPDATE alert_destinations SET worker_state = %s, worker_note = %s, worker_seen_at = now() WHERE id = %s",
            [(st, note, i) for i, (st, note) in sorted(view.items())])
        self.reported, self.reported_at = view, now

    def _own(self, conn, target: adapters.Target) -> bool:
        if target.id in self.owned:
            return True
        if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, target.id)).fetchone()[0]:
            self.owned.add(target.id)
            self.say(logging.INFO, f"alert delivery: sending to {target.name!r} ({target.kind})")
            return True
        return False  # another worker sends to it

    def _limiters(self, target: adapters.Target) -> list[RateLimit]:
        with self.lock:
            return [self.limiters.setdefault(key, RateLimit(limits)) for key, limits in rate_limits(target)]

    def _dispatch(self, target: adapters.Target, unit: list[Delivery], digest: bool,
                  limiters: list[RateLimit]) -> None:
        with self.lock:
            self.in_flight[target.id] = self.in_flight.get(target.id, 0) + 1
            self.mine.update(x.id for x in unit)
            for lim in limiters:
                lim.start()
        ex = self.executors.get(target.id)
        if ex is None:
            ex = self.executors[target.id] = ThreadPoolExecutor(self.max_in_flight,
                                                                thread_name_prefix=f"tp-alerts-{target.id}")
        ex.submit(self._deliver, target, unit, digest, limiters)

    # -- one request, in a sender thread
    def _deliver(self, target: adapters.Target, unit: list[Delivery], digest: bool,
                 limiters: list[RateLimit]) -> None:
        try:
            try:
                res = adapters.send(target, build_request(target, unit, digest), self.timeout_s)
            except Exception as e:  # anything unforeseen: a failed attempt, retried (scrubbed like the rest)
                res = adapters.Result(False, None, retry=True, error=target.scrub(f"{type(e).__name__}: {e}"))
            with self.lock:
                now = time.monotonic()
                for lim in limiters:
                    lim.end(now)
                if res.retry and res.retry_after_s:
                    limiters[0].block(now + res.retry_after_s)
                self.counts["requests"] += 1
            self._record(target, unit, digest, res)
        except Exception as e:  # the record failed (the store is gone): the claim expires and it is sent again
            self.say(logging.ERROR, f"alert delivery: could not record {len(unit)} deliveries to {target.name!r}: "
                                    f"{target.scrub(f'{type(e).__name__}: {e}')}")
        finally:
            with self.lock:
                self.in_flight[target.id] -= 1
                self.mine.difference_update(x.id for x in unit)
            self.wake.set()

    def _record(self, target: adapters.Target, unit: list[Delivery], digest: bool, res: adapters.Result) -> None:
        what = (f"digest of {len(unit)} ({unit[0].key} … {unit[-1].key})" if digest else
                f"delivery {unit[0].id} ({unit[0].key})")
        attempt = max(x.attempts for x in unit)
        if res.ok:
            n = self.recorder.run(mark_delivered, unit, res.status, len(unit) if digest else None)
            with self.lock:
                self.counts["delivered"] += n
            self.say(logging.INFO, f"alert delivery: {what} to {target.name!r} delivered (HTTP {res.status}, "
                                   f"attempt {attempt}, {res.elapsed_s:.2f} s)")
            return
        delay = backoff_s(attempt, self.backoff_base_s, self.backoff_max_s) if res.retry else 0.0
        if res.retry and res.retry_after_s:
            delay = max(delay, res.retry_after_s)
        rows = self.recorder.run(mark_failed, unit, res.status, res.error or "failed", retry=res.retry,
                                 delay_s=delay, max_age_s=self.max_age_s)
        dead = sum(1 for _, s in rows if s == "dead")
        with self.lock:
            self.counts["failed_attempts"] += 1
            self.counts["dead"] += dead
        if dead:
            self.say(logging.WARNING, f"alert delivery: {what} to {target.name!r} is dead after attempt {attempt}: "
                                      f"{res.error}" + ("" if not res.retry else " (retried for "
                                                        f"{self.max_age_s / 3600:g} h)"))
        else:
            self.say(logging.INFO, f"alert delivery: {what} to {target.name!r} failed (attempt {attempt}: "
                                   f"{res.error}); next attempt in {delay:.1f} s")


def run_worker(dsn: str, *, stop=None, poll_s: float = 1.0, timeout_s: float = 5.0, max_in_flight: int = 8,
               log=None, backoff_base_s: float = 1.0, backoff_max_s: float = BACKOFF_MAX_S,
               max_age_s: float = MAX_AGE_S, digest_at: int = DIGEST_AT) -> dict:
    """Deliver alerts until ``stop`` (a ``threading.Event``, or a callable returning True) is set: the loop of
    the module's doc. Woken by ``NOTIFY tp_alerts`` and looking every ``poll_s`` anyway; a request waits at most
    ``timeout_s`` for its answer (a claim older than ``2 × timeout_s`` is taken back); at most ``max_in_flight``
    requests per destination at once; ``backoff_base_s`` the first retry's wait (doubled each time, at most
    ``backoff_max_s``); retried for ``max_age_s`` after creation. ``log``: a callable given each line (also
    logged to this module's logger), never holding a secret. A lost store connection is reopened. Returns
    counts: deliveries delivered, requests sent, failed attempts, deliveries dead."""
    if stop is None:
        stopped = lambda: False  # noqa: E731
    elif hasattr(stop, "is_set"):
        stopped = stop.is_set
    else:
        stopped = stop
    if timeout_s <= 0 or poll_s <= 0:
        raise InvalidInput("poll_s and timeout_s must be positive", field="timeout_s" if timeout_s <= 0 else "poll_s")
    worker = _Worker(dsn, poll_s=poll_s, timeout_s=timeout_s, max_in_flight=max_in_flight, log=log,
                     backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s, max_age_s=max_age_s,
                     digest_at=digest_at)
    return worker.run(stopped)


# ---- reports and actions --------------------------------------------------------------------------------------
def destination_status(conn) -> list[dict]:
    """Each destination as the delivery worker sees it (its last report, when under a minute old: the variables
    count where it runs; ``checked_by`` says ``worker``), else as this process does (``here``): name, kind,
    send_mode, enabled, ``state`` (``ok``,
    ``misconfigured``: ``unset`` names the environment variable and ``reason`` says what is wrong, or
    ``disabled``), its deliveries by status, the age of its oldest waiting one (pending or sending) in seconds,
    and the last error recorded (redacted). Deliveries are counted by status except ``delivered``, counted over
    the last hour (``delivered_last_hour``): partial indexes, never the delivered history. Never a URL, token
    or secret."""
    counts: dict[int, dict] = {}
    # the rows not delivered (a partial index) and those delivered in the last hour: never the whole history
    for dest, status, n in conn.execute(
            "SELECT destination_id, status, count(*) FROM alert_deliveries WHERE status <> 'delivered' GROUP BY 1, 2 "
            "UNION ALL SELECT destination_id, 'delivered_last_hour', count(*) FROM alert_deliveries "
            "WHERE status = 'delivered' AND delivered_at > now() - interval '1 hour' GROUP BY 1").fetchall():
        counts.setdefault(dest, {})[status] = int(n)
    oldest = dict(conn.execute(
        "SELECT destination_id, extract(epoch FROM now() - min(created_at)) FROM alert_deliveries "
        "WHERE status IN ('pending', 'sending') GROUP BY 1").fetchall())
    # each destination's last error: one index probe each (alert_deliveries_errors), never the errored history
    errors = {r[0]: r[1:] for r in conn.execute(
        "SELECT t.id, e.id, e.last_error FROM alert_destinations t CROSS JOIN LATERAL (SELECT d.id, d.last_error "
        "FROM alert_deliveries d WHERE d.destination_id = t.id AND d.last_error_at IS NOT NULL "
        "ORDER BY d.last_error_at DESC LIMIT 1) e").fetchall()}
    seen = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, worker_state, worker_note, extract(epoch FROM now() - worker_seen_at) FROM alert_destinations "
        "WHERE worker_seen_at IS NOT NULL").fetchall()}
    out = []
    for row in destinations(conn):
        target = adapters.resolve(row)
        state = ("disabled" if not row["enabled"] else
                 "misconfigured" if isinstance(target, adapters.Misconfigured) else "ok")
        worker = seen.get(row["id"])
        checked_by = "here"
        if row["enabled"] and worker is not None and worker[2] is not None and float(worker[2]) <= WORKER_FRESH_S:
            # the delivery worker's own environment is the one that counts
            checked_by = "worker"
            if worker[0] == "ok" and isinstance(target, adapters.Misconfigured):
                state, target = "ok", None
            elif worker[0] == "misconfigured" and not isinstance(target, adapters.Misconfigured):
                state = "misconfigured"
                target = adapters.Misconfigured(field="worker", variable=None, reason=worker[1] or "misconfigured")
        err = errors.get(row["id"])
        error = None
        if err is not None:
            error = target.scrub(err[1]) if isinstance(target, adapters.Target) else redact_secrets(err[1])
        age = oldest.get(row["id"])
        out.append({
            "name": row["name"], "kind": row["kind"], "send_mode": row["send_mode"], "enabled": row["enabled"],
            "state": state, "checked_by": checked_by,
            "unset": target.variable if isinstance(target, adapters.Misconfigured) else None,
            "reason": target.reason if isinstance(target, adapters.Misconfigured) else None,
            "deliveries": {s: counts.get(row["id"], {}).get(s, 0)
                           for s in (*(x for x in _STATUSES if x != "delivered"), "delivered_last_hour")},
            "oldest_pending_age_s": round(float(age), 3) if age is not None else None,
            "last_error": error, "last_error_delivery": err[0] if err else None,
        })
    return out


def send_test(conn, name: str, *, timeout_s: float = 5.0) -> dict:
    """Send one ``test`` message to the destination named ``name`` now (signed like any other, through the same
    adapter; no worker, no outbox row) and say what the receiver answered. An unknown name or a destination
    misconfigured here is an InvalidInput (naming the unset variable, never its value)."""
    row = _destination(conn, name)
    target = adapters.resolve(row)
    if isinstance(target, adapters.Misconfigured):
        raise InvalidInput(f"alert destination {name!r} is misconfigured: {target.reason}", field=target.field)
    now = datetime.now(timezone.utc)
    key = f"test:{target.id}:{int(now.timestamp() * 1000)}"
    payload = {"type": "test", "key": key, "schema_version": 1, "destination": name,
               "ts": now.isoformat(timespec="seconds"), "text": f"test message from trading_platform to {name}"}
    req = (adapters.telegram_request(target, adapters.alert_line(payload)) if target.kind == "telegram"
           else adapters.webhook_request(target, key, payload))
    res = adapters.send(target, req, timeout_s)
    return {"destination": name, "status": res.status, "ok": res.ok, "error": res.error,
            "elapsed_s": round(res.elapsed_s, 3)}


def status(conn) -> dict:
    """The outbox at a glance: backlog (pending + sending), dead, delivered in the last hour with the p50 / p95 /
    max of its enqueue-to-delivered latency, and the age of the oldest waiting delivery."""
    pending, sending, oldest = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'sending'), "
        "extract(epoch FROM now() - min(created_at)) FROM alert_deliveries "
        "WHERE status IN ('pending', 'sending')").fetchone()
    dead = conn.execute("SELECT count(*) FROM alert_deliveries WHERE status = 'dead'").fetchone()[0]
    done, p50, p95, mx = conn.execute(
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.95) WITHIN GROUP "
        "(ORDER BY s), max(s) FROM (SELECT extract(epoch FROM delivered_at - created_at)::float8 AS s "
        "FROM alert_deliveries WHERE status = 'delivered' AND delivered_at > now() - interval '1 hour') x"
    ).fetchone()
    return {
        "backlog": int(pending + sending), "pending": int(pending), "sending": int(sending), "dead": int(dead),
        "delivered_last_hour": int(done),
        "latency_last_hour_s": ({"p50": round(p50, 3), "p95": round(p95, 3), "max": round(float(mx), 3)}
                                if done else None),
        "oldest_pending_age_s": round(float(oldest), 3) if oldest is not None else None,
    }


def retry(conn, ids=None, destination: str | None = None) -> int:
    """Dead deliveries (those of ``ids``, of the destination named ``destination``, or all) back to pending:
    attempts from zero, due now, a new retry window of ``MAX_AGE_S`` (``retry_until``), and the worker woken
    (NOTIFY). Returns how many."""
    where, params = ["status = 'dead'"], {}
    if ids is not None:
        where.append("id = ANY(%(ids)s::bigint[])")
        params["ids"] = [int(i) for i in ids]
    if destination is not None:
        where.append("destination_id = %(dest)s")
        params["dest"] = _destination(conn, destination, field="destination")["id"]
    with conn.transaction():
        n = conn.execute("UPDATE alert_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), "
                         "claimed_at = NULL, retry_until = now() + make_interval(secs => %(age)s) "
                         f"WHERE {' AND '.join(where)}", {**params, "age": MAX_AGE_S}).rowcount
        if n:
            conn.execute(f"NOTIFY {CHANNEL}")
    return n


DELIVERY_RETENTION_DAYS = 30.0


def retention_days() -> float:
    """TP_ALERT_DELIVERY_RETENTION_DAYS (default 30): finished deliveries older than this are pruned. A finite
    number of days within [1, settings.MAX_DAYS]."""
    from ..settings import env_days

    return env_days("TP_ALERT_DELIVERY_RETENTION_DAYS", DELIVERY_RETENTION_DAYS, minimum=1)


def prune(conn, days: float | None = None, *, batch: int = 20_000, max_batches: int = 50) -> int:
    """Delete finished deliveries (delivered, dead, stale) created more than ``days`` ago, in batches of ``batch``
    rows (short transactions beside the worker's claims); pending and sending ones are never pruned, whatever their
    age. The alerts and their counters stay. Returns how many were deleted."""
    days = retention_days() if days is None else days
    total = 0
    for _ in range(max_batches):
        n = conn.execute(
            "DELETE FROM alert_deliveries WHERE id IN (SELECT id FROM alert_deliveries WHERE status IN "
            "('delivered', 'dead', 'stale') AND created_at < now() - make_interval(secs => %s) ORDER BY id LIMIT %s)",
            (days * 86400, batch)).rowcount
        total += n
        if n < batch:
            break
    return total

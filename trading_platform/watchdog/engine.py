"""Edge-triggered messages from the checks' observations, their state in ``watchdog_state``, and their way out.

A check's state goes ``ok`` -> ``failing`` when its condition holds (a probe after ``probe_failures`` failed looks
in a row): one ``watchdog`` message. While it fails: a reminder every ``remind_s`` (15 min), and a message at
once when a new subject fails (a second series, another job). After ``resolve_passes`` (2) passed looks in a row:
one ``watchdog_resolved`` message and ``ok``. A look that cannot tell (``None``) changes nothing. Every message of
one failure shares its ``incident`` (``<check>:<ms since epoch of its start>``); its key is
``watchdog:<incident>:<n>`` (``:resolved`` for the last), fixed before it is sent and sent on every attempt.

Messages go through the alert delivery outbox (``alert_deliveries``, types ``watchdog`` | ``watchdog_resolved``)
to every enabled destination with ``watchdog`` on, in the transaction that records the state. Where the outbox
cannot carry them (the database is down; the delivery worker is the one reported) the service sends them itself
from its spool (``spool.py``) and records them in the outbox as delivered when it can.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from ..errors import redact_secrets
from .checks import FUNCTIONS, PROBES, SPECS, Look, Observation, Thresholds

logger = logging.getLogger(__name__)

_LOCK = 7_302_118  # pg_advisory_xact_lock(_LOCK, hashtext(runner)): one pass of a runner at a time
COLUMNS = ("name", "state", "severity", "runner", "since", "streak", "passes", "incident", "messages", "subjects",
           "announced", "detail", "next_reminder_at", "last_message", "last_message_at", "last_error", "checked_at")
JSON_COLUMNS = ("subjects", "announced")
UPDATE_EVERY_S = 60.0  # new subjects of a failing check are announced at most this often (a flapping one never again)


@dataclass
class State:
    name: str
    runner: str
    severity: str = "ERROR"
    state: str = "unknown"
    since: datetime | None = None
    streak: int = 0
    passes: int = 0
    incident: str | None = None
    messages: int = 0
    subjects: list = field(default_factory=list)
    announced: list = field(default_factory=list)
    detail: str | None = None
    next_reminder_at: datetime | None = None
    last_message: str | None = None
    last_message_at: datetime | None = None
    last_error: str | None = None
    checked_at: datetime | None = None

    @classmethod
    def new(cls, name: str) -> "State":
        runner, severity = SPECS[name][0], SPECS[name][1]
        return cls(name=name, runner=runner, severity=severity)

    def as_json(self) -> dict:
        d = asdict(self)
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict) -> "State":
        d = dict(d)
        for k in ("since", "next_reminder_at", "last_message_at", "checked_at"):
            if d.get(k):
                d[k] = datetime.fromisoformat(d[k])
        return cls(**{k: d.get(k) for k in COLUMNS if k in d}
                   | {c: list(d.get(c) or []) for c in JSON_COLUMNS})


@dataclass
class Message:
    type: str       # watchdog | watchdog_resolved
    key: str
    check: str
    payload: dict


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def message_text(p: dict) -> str:
    """One plain line: what fails and since when, or what recovered after how long."""
    if p["type"] == "watchdog_resolved":
        return f"resolved: {p['check']} after {_duration(p.get('failed_for_s'))} — {p.get('detail') or 'passing'}"
    what = "reminder: " if p.get("reminder") else "new failure: " if p.get("update") else ""
    return f"{what}{p['check']} ({p['severity']}) since {p['since'][:16].replace('T', ' ')} UTC — {p.get('detail') or ''}"


def _duration(s) -> str:
    if s is None:
        return "?"
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _message(st: State, kind: str, now: datetime, *, reminder: bool = False, update: bool = False,
             new_subjects=()) -> Message:
    n = st.messages
    key = f"watchdog:{st.incident}:" + ("resolved" if kind == "watchdog_resolved" else str(n))
    payload = {"type": kind, "key": key, "check": st.name, "severity": st.severity, "runner": st.runner,
               "state": "resolved" if kind == "watchdog_resolved" else "failing", "incident": st.incident,
               "since": st.since.isoformat() if st.since else None, "subjects": list(st.subjects),
               "detail": redact_secrets(st.detail or "")[:1000], "at": now.isoformat(), "reminder": n if reminder else 0,
               "update": bool(update), "new_subjects": list(new_subjects), "schema_version": 1}
    if kind == "watchdog_resolved":
        payload["failed_for_s"] = round((now - st.since).total_seconds(), 1) if st.since else None
    payload["message"] = message_text(payload)
    return Message(kind, key, st.name, payload)


def step(st: State, obs: Observation, now: datetime, t: Thresholds) -> list[Message]:
    """Apply one look to a check's state; the messages it makes (none, the first, a reminder, an update, the
    resolution)."""
    st.checked_at = now
    if obs.failing is None:
        st.last_error = redact_secrets(obs.detail or "could not look")[:500]
        return []
    st.last_error = None
    need = t.probe_failures if st.name in PROBES else 1
    if obs.failing:
        st.streak += 1
        st.passes = 0
        if st.state != "failing":
            if st.streak < need:
                st.detail = f"{obs.detail} (look {st.streak} of {need})"
                if st.state == "unknown":
                    st.state = "ok"
                return []
            since = (obs.since or now).astimezone(timezone.utc)
            incident = f"{st.name}:{_ms(since)}"
            if incident == st.incident:  # the same start as the last failure (cannot be the same failure)
                incident = f"{st.name}:{_ms(now)}"
            st.state, st.since, st.incident, st.messages = "failing", since, incident, 0
            st.subjects, st.detail = list(obs.subjects), obs.detail
            st.announced = list(obs.subjects)
            st.next_reminder_at = now + timedelta(seconds=t.remind_s)
            return [_sent(st, _message(st, "watchdog", now), now)]
        # a subject this incident has not named yet (a second series, another job) is said at once, at most every
        # UPDATE_EVERY_S (a burst of failing partitions is one message); one that comes and goes is said once
        new = [s for s in obs.subjects if s not in st.announced]
        st.subjects, st.detail = list(obs.subjects), obs.detail
        if new and (st.last_message_at is None
                    or (now - st.last_message_at).total_seconds() >= min(UPDATE_EVERY_S, t.remind_s)):
            st.announced = st.announced + new
            return [_sent(st, _message(st, "watchdog", now, update=True, new_subjects=new), now)]
        if st.next_reminder_at is not None and now >= st.next_reminder_at:
            while st.next_reminder_at <= now:
                st.next_reminder_at += timedelta(seconds=t.remind_s)
            return [_sent(st, _message(st, "watchdog", now, reminder=True), now)]
        return []
    st.streak = 0
    if st.state == "failing":
        st.passes += 1
        if st.passes >= t.resolve_passes:
            st.detail = obs.detail
            msg = _sent(st, _message(st, "watchdog_resolved", now), now)
            st.state, st.passes, st.next_reminder_at, st.subjects, st.announced = "ok", 0, None, [], []
            return [msg]
        return []
    st.state, st.detail = "ok", obs.detail
    return []


def _sent(st: State, msg: Message, now: datetime) -> Message:
    st.messages += 1
    st.last_message, st.last_message_at = msg.type, now
    return msg


def observe(name: str, look: Look) -> Observation:
    """Run one check; an error while looking is an observation that cannot tell (never a failure of the check)."""
    try:
        return FUNCTIONS[name](look)
    except Exception as e:  # noqa: BLE001 - the store or the instance unreachable, a bug: say it, decide nothing
        logger.debug("watchdog check %s could not look", name, exc_info=True)
        return Observation(None, detail=redact_secrets(f"{type(e).__name__}: {str(e).strip()[:300]}"))


# ---- the store ------------------------------------------------------------------------------------------------
def load(conn, names: list[str], lock: bool = False) -> dict[str, State]:
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM watchdog_state WHERE name = ANY(%s)"
                        + (" FOR UPDATE" if lock else ""), (list(names),)).fetchall()
    out = {n: State.new(n) for n in names}
    for r in rows:
        d = dict(zip(COLUMNS, r))
        for c in JSON_COLUMNS:
            d[c] = list(d[c] or [])
        out[d["name"]] = State(**d)
    return out


def save(conn, states: list[State]) -> None:
    from psycopg.types.json import Jsonb

    cols = ", ".join(COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "name")
    conn.cursor().executemany(
        f"INSERT INTO watchdog_state ({cols}) VALUES ({marks}) ON CONFLICT (name) DO UPDATE SET {sets}, "
        "updated_at = now()",
        [tuple(Jsonb(getattr(s, c)) if c in JSON_COLUMNS else getattr(s, c) for c in COLUMNS) for s in states])


def watchdog_destinations(conn) -> list[dict]:
    """The enabled destinations that take the watchdog's messages (the columns the worker reads: variable names,
    never a value)."""
    from ..alerts.delivery import _DEST_COLUMNS

    rows = conn.execute(f"SELECT {', '.join(_DEST_COLUMNS)} FROM alert_destinations WHERE enabled AND watchdog "
                        "ORDER BY id").fetchall()
    return [dict(zip(_DEST_COLUMNS, r)) for r in rows]


def enqueue(conn, messages: list[Message]) -> int:
    """Each message into the delivery outbox once per watchdog destination (its key unique there); NOTIFY the
    worker. Returns the rows added."""
    from ..alerts.delivery import enqueue_opted_in

    return enqueue_opted_in(conn, "watchdog", [(m.type, m.key, m.payload) for m in messages])


def record_sent(conn, entries: list[dict]) -> int:
    """Spooled messages that were sent (or refused) directly, into the outbox as ``delivered`` (``dead``) under
    their key, once: a key already there is left as it is. Returns the rows added."""
    from psycopg.types.json import Jsonb

    n = 0
    for e in entries:
        n += conn.execute(
            "INSERT INTO alert_deliveries (destination_id, key, type, payload, status, attempts, created_at, "
            "next_attempt_at, delivered_at, last_status, last_error, last_error_at) "
            "SELECT %(d)s, %(key)s, %(type)s, %(payload)s, %(status)s, %(attempts)s, %(created)s, %(created)s, "
            "%(delivered)s, %(http)s, %(error)s, CASE WHEN %(error)s::text IS NULL THEN NULL ELSE now() END "
            "WHERE EXISTS (SELECT 1 FROM alert_destinations WHERE id = %(d)s) "
            "ON CONFLICT (destination_id, key) DO NOTHING",
            {"d": e["destination"]["id"], "key": e["key"], "type": e["type"], "payload": Jsonb(e["payload"]),
             "status": "delivered" if e["status"] == "sent" else "dead", "attempts": e["attempts"],
             "created": e["created_at"], "delivered": e.get("sent_at"), "http": e.get("http_status"),
             "error": e.get("error")}).rowcount
    return n


def report_states(conn, names=None, disabled=()) -> list[dict]:
    """Every check (or those named) with its state, since when, what fails and the last message; a check never
    run shows ``unknown``, one in ``disabled`` (``TP_WATCHDOG_DISABLE``) says so."""
    names = list(names or SPECS)
    states = load(conn, names)
    last = {}
    rows = conn.execute(
        "SELECT DISTINCT ON (payload->>'check') payload->>'check', key, type, status, created_at, delivered_at "
        "FROM alert_deliveries WHERE type IN ('watchdog', 'watchdog_resolved') AND payload->>'check' = ANY(%s) "
        "ORDER BY payload->>'check', created_at DESC, id DESC", (names,)).fetchall()
    for r in rows:
        last[r[0]] = {"key": r[1], "type": r[2], "status": r[3], "created_at": r[4].isoformat(),
                      "delivered_at": r[5].isoformat() if r[5] else None}
    out = []
    for n in names:
        s = states[n].as_json()
        s["description"] = SPECS[n][3]
        s["asset"] = "/".join(SPECS[n][2]) if SPECS[n][2] else None
        s["last_delivery"] = last.get(n)
        s["disabled"] = n in disabled
        out.append(s)
    return out


def run_pass(conn, names: list[str], look: Look, runner: str, *, report=None) -> tuple[list[State], list[Message]]:
    """One pass of ``names`` in one transaction: look, step each state, save them and enqueue the messages.
    ``report(state, changed)``: called for each check (the Dagster asset check evaluations). Returns the states
    and the messages made."""
    observations = {n: observe(n, look) for n in names}  # outside the transaction: probes take their time
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK, runner))
        states = load(conn, names, lock=True)
        messages = []
        changed = {}
        for n in names:
            before = states[n].state
            changed[n] = False
            if states[n].checked_at is not None and states[n].checked_at >= look.now:
                continue  # a newer look was applied already (an overlapping, slower tick): never step back
            messages += step(states[n], observations[n], look.now, look.t)
            changed[n] = states[n].state != before
        save(conn, list(states.values()))
        enqueue(conn, messages)
    for m in messages:
        logger.log(logging.WARNING if m.type == "watchdog" else logging.INFO, "watchdog: %s", m.payload["message"])
    if report is not None:
        for n in names:
            try:
                report(states[n], changed[n])
            except Exception:  # noqa: BLE001 - the UI's view is best effort; the state and messages are stored
                logger.warning("watchdog: could not report %s to Dagster", n, exc_info=True)
    return list(states.values()), messages


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def dumps(obj) -> str:
    return json.dumps(obj, default=str)

"""The live path's outbox: claim, re-request, prune, report; and one batch's reads and writes.

Events are selected by their processing state in ``market_event_queue`` (``pending`` -> ``claimed``
by a batch -> ``done``), never by an id cursor alone: a ``bigserial`` id is taken at insert and
becomes visible at commit, so a slow writer can commit a lower id after a higher one has been
processed, and a cursor would have passed it. Claims use ``FOR UPDATE SKIP LOCKED``, so two
claimers (two sensor ticks, or a second consumer's worker on its own queue rows) never take the
same event. A batch keeps its events and its pinned versions for every attempt; an attempt is
one run, and only the run that commits marks the events done (``live/process.py``: ``claimed_events``,
``mark_done``, ``commit_batch`` here, in the batch's transaction).

Indexes (migration 10): pending events by ``market_event_queue_open_idx`` (consumer, status, event_id); a
batch's events by the queue's primary key (consumer, event_id) or ``market_event_queue_batch_idx``; batches by
their id, open ones by ``live_batches_open_idx``; prunes by ``market_events_created_idx``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from . import metrics

CONSUMER = "predictions"
CHANNEL = "tp_market_events"


@dataclass
class Batch:
    id: int
    attempt: int
    event_ids: list[int]
    pins: dict
    note: str = ""

    @property
    def run_key(self) -> str:
        return f"batch-{self.id}-attempt-{self.attempt}"


@dataclass
class StaleBatch:
    id: int
    attempt: int
    requested_at: object
    events: int
    extra: dict = field(default_factory=dict)


# Symbols with a batch in flight: claimed events of a batch not done and not overdue (requested less than
# ``busy_s`` ago, times the retry backoff of ``stale_batches``).
# A new batch for such a symbol would only wait on that batch's per-symbol lock, and hold up the other
# symbols of its batch meanwhile; its events wait (pending) for the next claim instead. A batch overdue
# (to be re-requested) no longer holds its symbols back.
_NOT_BUSY = (" AND e.symbol NOT IN (SELECT e2.symbol FROM market_event_queue q2 "
             "JOIN live_batches b ON b.id = q2.batch_id JOIN market_events e2 ON e2.id = q2.event_id "
             "WHERE q2.consumer = %(c)s AND q2.status = 'claimed' "
             "AND b.status = 'requested' AND b.requested_at > clock_timestamp() "
             "- make_interval(secs => %(busy)s * least(power(2, b.attempt - 1), 16)))")


def _pending_sql(busy_s: float | None) -> str:
    return ("FROM market_event_queue q JOIN market_events e ON e.id = q.event_id WHERE q.consumer = %(c)s "
            "AND q.status = 'pending'" + (_NOT_BUSY if busy_s else ""))


def has_pending(conn, consumer: str = CONSUMER, busy_s: float | None = None) -> bool:
    """Whether an event is pending (``busy_s``: one whose symbol has no batch in flight, see ``claim``)."""
    return conn.execute(f"SELECT EXISTS (SELECT 1 {_pending_sql(busy_s)})",
                        {"c": consumer, "busy": float(busy_s or 0)}).fetchone()[0]


def claim(conn, limit: int, pins: dict, versions: list[dict], consumer: str = CONSUMER,
          busy_s: float | None = None) -> Batch | None:
    """Claim up to ``limit`` pending events (oldest first) into a new batch; None when nothing is pending.
    ``busy_s``: leave pending the events of symbols with a batch requested less than ``busy_s`` ago and
    not done (it holds their per-symbol lock; they go into a batch of their own once it is done)."""
    with conn.transaction():
        ids = [r[0] for r in conn.execute(
            f"SELECT q.event_id {_pending_sql(busy_s)} ORDER BY q.event_id LIMIT %(n)s FOR UPDATE OF q SKIP LOCKED",
            {"c": consumer, "busy": float(busy_s or 0), "n": limit}).fetchall()]
        if not ids:
            return None
        batch_id = conn.execute(
            "INSERT INTO live_batches (consumer, events, pins, versions) VALUES (%s, %s, %s, %s) RETURNING id",
            (consumer, len(ids), json.dumps(pins), json.dumps(versions))).fetchone()[0]
        conn.execute("UPDATE market_event_queue SET status = 'claimed', batch_id = %s "
                     "WHERE consumer = %s AND event_id = ANY(%s)", (batch_id, consumer, ids))
    return Batch(batch_id, 1, ids, pins)


def claim_split(conn, limit: int, parts: int, pins: dict, versions: list[dict],
                consumer: str = CONSUMER, busy_s: float | None = None) -> list[Batch]:
    """Claim pending events (oldest first) into up to ``parts`` batches of at most ``limit`` events each, split
    by symbol so that the batches run side by side (one symbol's events stay in one batch: a symbol's runs are
    serialized anyway). The symbols are dealt largest first to the smallest batch; events that do not fit
    stay pending for the next claim. ``parts`` 1 is ``claim``; ``busy_s`` as there. Empty list when nothing is
    pending."""
    if parts <= 1:
        one = claim(conn, limit, pins, versions, consumer, busy_s)
        return [one] if one else []
    with conn.transaction():
        rows = conn.execute(
            f"SELECT q.event_id, e.symbol {_pending_sql(busy_s)} ORDER BY q.event_id LIMIT %(n)s "
            "FOR UPDATE OF q SKIP LOCKED", {"c": consumer, "busy": float(busy_s or 0), "n": limit * parts}).fetchall()
        by_symbol: dict[str, list[int]] = {}
        for eid, symbol in rows:
            by_symbol.setdefault(symbol, []).append(eid)
        bins: list[list[int]] = [[] for _ in range(min(parts, len(by_symbol)))]
        for symbol in sorted(by_symbol, key=lambda k: (-len(by_symbol[k]), by_symbol[k][0])):
            min(bins, key=len).extend(by_symbol[symbol])
        out = []
        for ids in sorted((sorted(b)[:limit] for b in bins if b), key=lambda b: b[0]):
            batch_id = conn.execute(
                "INSERT INTO live_batches (consumer, events, pins, versions) VALUES (%s, %s, %s, %s) RETURNING id",
                (consumer, len(ids), json.dumps(pins), json.dumps(versions))).fetchone()[0]
            conn.execute("UPDATE market_event_queue SET status = 'claimed', batch_id = %s "
                         "WHERE consumer = %s AND event_id = ANY(%s)", (batch_id, consumer, ids))
            out.append(Batch(batch_id, 1, ids, pins))
    return out


def stale_batches(conn, retry_after_s: float, consumer: str = CONSUMER) -> list[StaleBatch]:
    """Batches claimed but not done whose last request is older than ``retry_after_s`` times a backoff
    (1, 2, 4, ... 16 by attempt): a batch that keeps failing is retried less and less often, never dropped."""
    rows = conn.execute(
        "SELECT id, attempt, requested_at, events FROM live_batches WHERE consumer = %s AND status = 'requested' "
        "AND requested_at < clock_timestamp() - make_interval(secs => %s * least(power(2, attempt - 1), 16)) "
        "ORDER BY id", (consumer, float(retry_after_s))).fetchall()
    return [StaleBatch(*r) for r in rows]


def rerequest(conn, batch_id: int, attempt: int, note: str, consumer: str = CONSUMER) -> Batch | None:
    """The next attempt of a batch (same events not yet done, same pins), or None if another claimer
    re-requested it first or it is done. ``note`` (why) heads the batch's last error, before the error the
    failed run recorded, if any."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE live_batches SET attempt = attempt + 1, requested_at = clock_timestamp(), "
            "last_error = CASE WHEN last_error_at >= requested_at THEN %(n)s || ': ' || last_error ELSE %(n)s END, "
            "last_error_at = clock_timestamp() WHERE id = %(id)s AND attempt = %(a)s AND status = 'requested' "
            "RETURNING attempt, pins", {"n": note, "id": batch_id, "a": attempt}).fetchone()
        if row is None:
            return None
        metrics.count(conn, "tp_live_batch_retries_total", {"consumer": consumer})
        ids = [r[0] for r in conn.execute(
            "SELECT event_id FROM market_event_queue WHERE consumer = %s AND batch_id = %s AND status = 'claimed' "
            "ORDER BY event_id", (consumer, batch_id)).fetchall()]
    return Batch(batch_id, row[0], ids, row[1], note)


def record_error(conn, batch_id: int, message: str) -> None:
    """The failed run's error on its batch, counted in ``tp_live_batch_errors_total`` (one transaction)."""
    with conn.transaction():
        row = conn.execute("UPDATE live_batches SET last_error = %s, last_error_at = clock_timestamp() WHERE id = %s "
                           "RETURNING consumer", (message[:2000], batch_id)).fetchone()
        if row is not None:
            metrics.count(conn, "tp_live_batch_errors_total", {"consumer": row[0]})


def listen(conn, channel: str = CHANNEL) -> None:
    """LISTEN on the channel ``tp_live_candle()`` NOTIFYs (before the first look: nothing slips in between)."""
    conn.execute(f"LISTEN {channel}")


def wait_for(conn, ready, timeout_s: float, poll_s: float, listen: bool) -> bool:
    """Wait until ``ready()`` is true, at most ``timeout_s``: woken at once by a NOTIFY on the channel
    (when ``listen``; the caller LISTENs before its first check, so nothing falls in between) and
    re-checking every ``poll_s`` anyway, so the wait works without NOTIFY too (later, by up to poll_s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if listen:
            for _ in conn.notifies(timeout=min(poll_s, left), stop_after=1):
                pass
        else:
            time.sleep(min(poll_s, left))


def prune(conn, retention_h: float, limit: int = 20_000) -> dict:
    """Delete processed events (done for every consumer) older than the retention, and done batches and
    commit records older than it. Unprocessed events are never pruned, whatever their age."""
    with conn.transaction():
        events = conn.execute(
            "DELETE FROM market_events WHERE id IN (SELECT e.id FROM market_events e "
            "WHERE e.created_at < clock_timestamp() - make_interval(secs => %s) AND NOT EXISTS "
            "(SELECT 1 FROM market_event_queue q WHERE q.event_id = e.id AND q.status <> 'done') "
            "ORDER BY e.id LIMIT %s)", (retention_h * 3600, limit)).rowcount
        batches = conn.execute(
            "DELETE FROM live_batches WHERE status = 'done' AND done_at < clock_timestamp() - make_interval(secs => %s)",
            (retention_h * 3600,)).rowcount
        conn.execute("DELETE FROM live_commits WHERE committed_at < clock_timestamp() - make_interval(secs => %s)",
                     (retention_h * 3600,))
    return {"events": events, "batches": batches}


def status(conn, consumer: str = CONSUMER) -> dict:
    """The backlog (events not yet predicted), the lag of the oldest, batches in flight and retried, the
    last error, and the insert-to-done latency of the latest events."""
    pending, claimed, oldest, lag = conn.execute(
        "SELECT count(*) FILTER (WHERE q.status = 'pending'), count(*) FILTER (WHERE q.status = 'claimed'), "
        "min(e.created_at), extract(epoch FROM clock_timestamp() - min(e.created_at)) "
        "FROM market_event_queue q JOIN market_events e ON e.id = q.event_id "
        "WHERE q.consumer = %s AND q.status <> 'done'", (consumer,)).fetchone()
    in_flight, retried, attempts = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'requested'), count(*) FILTER (WHERE attempt > 1), "
        "coalesce(sum(attempt - 1), 0) FROM live_batches WHERE consumer = %s", (consumer,)).fetchone()
    err = conn.execute(
        "SELECT id, last_error, last_error_at FROM live_batches WHERE consumer = %s AND last_error IS NOT NULL "
        "ORDER BY last_error_at DESC LIMIT 1", (consumer,)).fetchone()
    done_1h, p50, p95, mx = conn.execute(
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.95) WITHIN GROUP "
        "(ORDER BY d), max(d) FROM (SELECT extract(epoch FROM q.done_at - e.created_at) AS d "
        "FROM market_event_queue q JOIN market_events e ON e.id = q.event_id WHERE q.consumer = %s "
        "AND q.status = 'done' AND q.done_at > clock_timestamp() - interval '1 hour') x", (consumer,)).fetchone()
    return {
        "consumer": consumer,
        "backlog": int(pending + claimed), "pending": int(pending), "claimed": int(claimed),
        "oldest_event_at": oldest.isoformat() if oldest else None,
        "lag_s": round(float(lag), 3) if lag is not None else 0.0,
        "batches_in_flight": int(in_flight), "batches_retried": int(retried), "retries": int(attempts),
        "last_error": ({"batch": int(err[0]), "error": err[1], "at": err[2].isoformat()} if err else None),
        "done_last_hour": int(done_1h),
        "latency_last_hour_s": ({"p50": round(p50, 3), "p95": round(p95, 3), "max": round(float(mx), 3)}
                                if done_1h else None),
    }


# ---- one batch (live/process.py) -------------------------------------------------------------------------
def lock_symbol(conn, symbol: str) -> None:
    """The live path's per-symbol lock, for this transaction: a live batch takes it before it writes the symbol's
    features, outputs and revisions; the output assets before they read and write the same."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"live|{symbol}",))


def batch_pins(conn, batch_id: int) -> tuple[dict, list[dict]] | None:
    """(pins, versions) the sensor stored with the batch; None when the batch row is gone."""
    row = conn.execute("SELECT pins, versions FROM live_batches WHERE id = %s", (batch_id,)).fetchone()
    return (row[0], row[1]) if row is not None else None


def lock_batch(conn, batch_id: int) -> bool:
    """Lock the batch row for this transaction (its attempts run one at a time); False when it does not exist."""
    return conn.execute("SELECT 1 FROM live_batches WHERE id = %s FOR UPDATE", (batch_id,)).fetchone() is not None


def claimed_events(conn, event_ids: list[int], batch_id: int, consumer: str = CONSUMER,
                   lock: bool = False) -> list[tuple]:
    """(id, symbol, timeframe, ts) of the events still claimed by the batch, by id; ``lock``: their queue rows
    locked for this transaction."""
    return conn.execute(
        "SELECT e.id, e.symbol, e.timeframe, e.ts FROM market_event_queue q JOIN market_events e ON e.id = q.event_id "
        "WHERE q.consumer = %s AND q.event_id = ANY(%s) AND q.batch_id = %s AND q.status = 'claimed' ORDER BY e.id"
        + (" FOR UPDATE OF q" if lock else ""), (consumer, list(event_ids), batch_id)).fetchall()


def write_derived_candle(conn, symbol: str, timeframe: str, ts, open_: float, high: float, low: float,
                         close: float, volume: float, source: str, batch_id: int,
                         consumer: str = CONSUMER) -> int | None:
    """A candle the batch derived (a higher timeframe's bucket its candles complete), written through
    ``tp_live_candle()``; its event, if it made one, is claimed into the batch at once. Returns the event id."""
    _, event_id = conn.execute(
        "SELECT * FROM tp_live_candle(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (symbol, timeframe, ts, open_, high, low, close, volume, source)).fetchone()
    if event_id is None:
        return None
    conn.execute("UPDATE market_event_queue SET status = 'claimed', batch_id = %s "
                 "WHERE consumer = %s AND event_id = %s", (batch_id, consumer, event_id))
    return int(event_id)


def mark_done(conn, batch_id: int, event_ids: list[int], consumer: str = CONSUMER) -> list[int]:
    """Mark the batch's events done (those it still claims); returns their ids, sorted."""
    done = conn.execute(
        "UPDATE market_event_queue SET status = 'done', done_at = clock_timestamp() WHERE consumer = %s "
        "AND batch_id = %s AND event_id = ANY(%s) AND status = 'claimed' RETURNING event_id",
        (consumer, batch_id, event_ids)).fetchall()
    return sorted(r[0] for r in done)


def not_done(conn, batch_id: int, consumer: str = CONSUMER) -> int:
    """How many of the batch's events are not done."""
    return conn.execute("SELECT count(*) FROM market_event_queue WHERE consumer = %s AND batch_id = %s "
                        "AND status <> 'done'", (consumer, batch_id)).fetchone()[0]


def commit_batch(conn, batch_id: int, run_id: str, attempt: int, remaining: int, done_ids: list[int],
                 stats: dict, consumer: str = CONSUMER) -> None:
    """Close the batch (done when ``remaining`` is 0), record the run's commit with the events it did, and count
    them (``tp_live_events_processed_total``, ``tp_live_latency_seconds``)."""
    conn.execute("UPDATE live_batches SET status = CASE WHEN %s = 0 THEN 'done' ELSE status END, "
                 "done_at = clock_timestamp(), run_id = %s WHERE id = %s", (remaining, run_id, batch_id))
    conn.execute("INSERT INTO live_commits (batch_id, run_id, attempt, event_ids, stats) VALUES (%s, %s, %s, %s, %s)",
                 (batch_id, run_id, attempt, done_ids, json.dumps(stats)))
    metrics.count_events_done(conn, consumer, done_ids)  # last: the counter rows are locked only to the commit

"""Counters that survive (migration 22): incremented in the transaction that does the counted work, so a process
exit loses none, the outbox's prune keeps them, and a batch rolled back (to be retried) counts nothing.
``faces/metrics.py`` exports them."""

from __future__ import annotations

import json
import logging
from collections import Counter

log = logging.getLogger(__name__)


def count(conn, family: str, labels: dict, n: float = 1.0) -> None:
    """Add ``n`` to the counter ``family{labels}``, in the caller's transaction: its row stays locked to the commit,
    so call it last (or in a transaction of its own)."""
    if n:
        conn.execute("SELECT tp_count(%s, %s::jsonb, %s)", (family, json.dumps(labels, sort_keys=True), float(n)))


def count_events_done(conn, consumer: str, event_ids: list[int]) -> None:
    """``consumer``'s events just marked done: ``tp_live_events_processed_total`` and their insert -> done seconds
    in ``tp_live_latency_seconds``. Called last in the batch's transaction (the counter rows stay locked to its
    commit: concurrent batches wait for each other only that long)."""
    if event_ids:
        conn.execute("SELECT tp_count_events_done(%s, %s::bigint[])", (consumer, list(event_ids)))


def _ingest_args(outcomes: Counter) -> tuple[list, list, list] | None:
    items = [(s, o, float(n)) for (s, o), n in outcomes.items() if n]
    if not items:
        return None
    return [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]


def count_ingest(conn, outcomes: Counter) -> None:
    """``tp_ingest_rows_total``: ``outcomes`` maps (source, outcome) to rows (the source's kind, before ':', is the
    label)."""
    args = _ingest_args(outcomes)
    if args is not None:
        conn.execute("SELECT tp_count_ingest(%s::text[], %s::text[], %s::float8[])", args)


_ASYNC_MAY_COUNT: dict[int, bool] = {}


async def count_ingest_async(conn, outcomes: Counter) -> None:
    """:func:`count_ingest` on the collector's async connection. A login that may not call ``tp_count_ingest()``
    (a writer role made before migration 22 granted it) writes its candles uncounted, said once: the metric never
    stops the data."""
    args = _ingest_args(outcomes)
    if args is None:
        return
    may = _ASYNC_MAY_COUNT.get(id(conn))
    if may is None:
        cur = await conn.execute("SELECT has_function_privilege('tp_count_ingest(text[], text[], float8[])', "
                                 "'EXECUTE')")
        may = _ASYNC_MAY_COUNT[id(conn)] = bool((await cur.fetchone())[0])
        if not may:
            log.warning("tp_ingest_rows_total: this login may not call tp_count_ingest() (grant EXECUTE on it, or "
                        "run tp db migrate): candles are written uncounted")
    if may:
        await conn.execute("SELECT tp_count_ingest(%s::text[], %s::text[], %s::float8[])", args)


def fold(conn) -> int:
    """Fold the deltas the triggers appended into the counters (the live sensor every 10 minutes, the maintenance
    job hourly); returns how many it folded."""
    return int(conn.execute("SELECT tp_fold_metrics()").fetchone()[0])


def write_counts(result, source: str) -> Counter:
    """(source, outcome) -> rows of a ``WriteResult`` (rejected rows are 'quarantined')."""
    return Counter({(source, "inserted"): result.inserted, (source, "updated"): result.updated,
                    (source, "unchanged"): result.unchanged, (source, "quarantined"): result.rejected})

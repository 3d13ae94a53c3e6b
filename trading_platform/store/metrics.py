"""Counters that survive (migration 22): incremented in the transaction that does the counted work, so a process
exit loses none, the outbox's prune keeps them, and a batch rolled back (to be retried) counts nothing.
``faces/metrics.py`` exports them."""

from __future__ import annotations

import json
from collections import Counter


def count(conn, family: str, labels: dict, n: float = 1.0) -> None:
    """Add ``n`` to the counter ``family{labels}``, in the caller's transaction."""
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


async def count_ingest_async(conn, outcomes: Counter) -> None:
    """:func:`count_ingest` on the collector's async connection (``live_writer`` may call it)."""
    args = _ingest_args(outcomes)
    if args is not None:
        await conn.execute("SELECT tp_count_ingest(%s::text[], %s::text[], %s::float8[])", args)


def write_counts(result, source: str) -> Counter:
    """(source, outcome) -> rows of a ``WriteResult`` (rejected rows are 'quarantined')."""
    return Counter({(source, "inserted"): result.inserted, (source, "updated"): result.updated,
                    (source, "unchanged"): result.unchanged, (source, "quarantined"): result.rejected})

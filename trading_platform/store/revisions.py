"""``ohlcv_revisions`` by state, the features' side: what the features sensor, the features asset and a live batch
read and mark. The outputs' side (``predictions_done_at`` ...) is ``store/outputs.py``'s ``pending_revisions``
and ``mark_revisions``, which marks the features too.

Revisions are read by state, never by id (an id is visible only at commit). Indexes (migrations 3 and 13): the open
ones by ``ohlcv_revisions_features_open`` (id, where features are not done) and ``ohlcv_revisions_outputs_open``
(symbol, timeframe, id, where an output is not done); one by its id (the primary key).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .outputs import mark_revisions


def claim_for_features(conn, retry_after: timedelta, limit: int) -> list[tuple]:
    """(id, symbol, first_ts) of the revisions whose features are not done and not requested within
    ``retry_after``, oldest first, locked for this transaction (another tick skips them)."""
    return conn.execute(
        "SELECT id, symbol, first_ts FROM ohlcv_revisions WHERE features_done_at IS NULL "
        "AND (features_requested_at IS NULL OR features_requested_at < clock_timestamp() - %s) "
        "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (retry_after, limit)).fetchall()


def mark_features_requested(conn, ids: list[int]) -> datetime:
    """Record that a run was requested for the revisions now; returns that time."""
    return conn.execute("UPDATE ohlcv_revisions SET features_requested_at = clock_timestamp() "
                        "WHERE id = ANY(%s) RETURNING features_requested_at", (ids,)).fetchone()[0]


def see_features_pending(conn, symbol: str) -> list[tuple]:
    """(id, timeframe, first_ts) of the symbol's revisions whose features are not recomputed yet, recorded as
    seen now (``features_seen_at``: every state stored after this reflects them). The open revisions by
    ``ohlcv_revisions_features_open``, filtered by symbol."""
    return conn.execute("UPDATE ohlcv_revisions SET features_seen_at = coalesce(features_seen_at, clock_timestamp()) "
                        "WHERE symbol = %s AND features_done_at IS NULL RETURNING id, timeframe, first_ts",
                        (symbol,)).fetchall()


def mark_features_done(conn, ids: list[int]) -> None:
    """The revisions' features are recomputed (those not marked already)."""
    mark_revisions(conn, "features_done_at", ids)


def mark_live_done(conn, symbol: str, timeframe: str, first_ts: list[datetime]) -> None:
    """The one-candle revisions ``tp_live_candle`` recorded for these candles of the series: a live batch redid
    their features and outputs, and re-judged the alerts they touch, in its transaction, so no other path redoes
    them. A bitmap OR of the two open
    indexes (the open revisions only, however many are stored)."""
    conn.execute(
        "UPDATE ohlcv_revisions SET features_done_at = coalesce(features_done_at, clock_timestamp()), "
        "predictions_done_at = coalesce(predictions_done_at, clock_timestamp()), "
        "forecasts_done_at = coalesce(forecasts_done_at, clock_timestamp()), "
        "patterns_done_at = coalesce(patterns_done_at, clock_timestamp()), "
        "alerts_done_at = coalesce(alerts_done_at, clock_timestamp()) "
        "WHERE symbol = %s AND timeframe = %s AND rows = 1 AND first_ts = ANY(%s) "
        "AND (features_done_at IS NULL OR predictions_done_at IS NULL OR forecasts_done_at IS NULL "
        "OR patterns_done_at IS NULL OR alerts_done_at IS NULL)", (symbol, timeframe, first_ts))

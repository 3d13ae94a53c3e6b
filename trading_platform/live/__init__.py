"""The live path: candles written by live writers become predictions within seconds, exactly once.

- ``store.db.MarketStore.write_live`` / the SQL function ``tp_live_candle()`` write a candle and, in the
  same transaction, its ``market_events`` outbox row (one ``market_event_queue`` row per consumer) and a
  NOTIFY on ``tp_market_events`` (migration 10). Historical loads never create events.
- ``store.outbox`` (its SQL, with the other queries in ``store/``): claims pending events into bounded
  batches by processing state (never by an id cursor alone), finds batches to re-request, prunes processed
  events, reports the backlog, and a batch's own reads and writes.
- ``process``: one batch: the candles' features (incremental), every pinned version that applies,
  the rows written and the events marked done in one transaction.
- ``feed``: synthetic or replayed closed candles at a chosen rate through the live write path.

The Dagster shell is ``sensors/live.py`` (the sensor and the live job). Nothing here imports Dagster.
"""

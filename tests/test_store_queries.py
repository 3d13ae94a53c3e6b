"""Queries moved into store/ whose plan was chosen on purpose (real PostgreSQL)."""

from datetime import datetime, timezone

from trading_platform.store.features import _TIMEFRAMES, last_feature_ts


def _rows_read(plan: dict) -> int:
    """Rows the scans of ``features`` returned, over the whole plan (loops counted)."""
    own = plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1) if plan.get("Relation Name") == "features" else 0
    return own + sum(_rows_read(p) for p in plan.get("Plans", []))


def test_the_newest_feature_of_a_symbol_is_found_without_reading_its_rows(store):
    c = store.conn
    c.execute("INSERT INTO features (symbol, timeframe, ts) SELECT 'BTC/USDT', tf, g FROM (VALUES ('5m', "
              "interval '5 min', timestamptz '2025-03-01'), ('1h', interval '1 hour', timestamptz '2025-04-01'), "
              "('1d', interval '1 day', timestamptz '2025-02-01')) t(tf, step, last), "
              "generate_series(timestamptz '2024-12-01', last, step) g")
    c.execute("INSERT INTO features (symbol, timeframe, ts) VALUES ('ETH/USDT', '5m', '2026-01-01')")
    c.execute("ANALYZE features")
    assert last_feature_ts(c, "BTC/USDT") == datetime(2025, 4, 1, tzinfo=timezone.utc)
    assert last_feature_ts(c, "BTC/USDT") == c.execute(
        "SELECT max(ts) FROM features WHERE symbol = 'BTC/USDT'").fetchone()[0]
    assert last_feature_ts(c, "BTC/USDT", "5m") == datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert last_feature_ts(c, "SOL/USDT") is None and last_feature_ts(c, "SOL/USDT", "5m") is None
    # a probe or two of the primary key per timeframe, not the symbol's ~26,000 rows
    [[plan]] = c.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + _TIMEFRAMES + "SELECT max((SELECT max(f.ts) FROM features f "
        "WHERE f.symbol = %(s)s AND f.timeframe = tf.t)) FROM tf WHERE tf.t IS NOT NULL", {"s": "BTC/USDT"}).fetchone()
    assert _rows_read(plan["Plan"]) < 20

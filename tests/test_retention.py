"""The retention of superseded output rows (TP_SUPERSEDED_RETENTION_DAYS): the maintenance job deletes the rows
corrected longer ago than the retention, never a current row; as-of reads inside the retention stay exact, and
older ones lose the corrected rows (what docs/outputs.md says). Real PostgreSQL and Dagster."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import InvalidInput
from trading_platform.models.scoring import Version
from trading_platform.store.champions import record_move
from trading_platform.store.outputs import OutputWriter, compact_superseded, known_at, superseded_retention_days

T = datetime(2025, 3, 3, 12, tzinfo=timezone.utc)
PUMP = Version("pump_xgb", "1", "champion", {"tp.family": "pump_xgb"})


def _write(store, ts, value):
    w = OutputWriter(store.conn, [PUMP], "backfill")
    w.add("predictions", [("pump_xgb", "1", "BTC/USDT", "1h", ts, value, None, "{}", False)])
    with store.conn.transaction():
        w.flush()


def _values(store, as_of):
    return sorted((r[4], r[5]) for r in known_at(store.conn, "predictions", as_of, symbols=["BTC/USDT"]))


@pytest.fixture
def corrected(store):
    """Two predictions; the first corrected once: three rows, one superseded. Returns (before the correction,
    when it was corrected)."""
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
    record_move(store.conn, "pump_xgb", "champion", "1", "gate", at=datetime.now(timezone.utc) - timedelta(hours=1))
    _write(store, T, 0.2)
    _write(store, T + timedelta(hours=1), 0.4)
    before = datetime.now(timezone.utc)
    _write(store, T, 0.3)  # a correction: supersedes 0.2
    at = store.conn.execute("SELECT superseded_at FROM predictions WHERE superseded_at IS NOT NULL").fetchone()[0]
    return before, at


def test_rows_superseded_longer_ago_than_the_retention_go_and_current_rows_stay(store, corrected):
    before, corrected_at = corrected
    assert _values(store, before) == [(T, 0.2), (T + timedelta(hours=1), 0.4)]  # what was known before
    # inside the retention: nothing goes, the as-of read is exact
    assert compact_superseded(store.conn, 7, now=corrected_at + timedelta(days=6)) == \
        {"predictions": 0, "forecasts": 0, "patterns": 0}
    assert _values(store, before) == [(T, 0.2), (T + timedelta(hours=1), 0.4)]
    # past it: the corrected row goes, the current ones stay
    assert compact_superseded(store.conn, 7, now=corrected_at + timedelta(days=8))["predictions"] == 1
    rows = store.conn.execute("SELECT ts, value, superseded_at FROM predictions ORDER BY ts").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(T, 0.3, None), (T + timedelta(hours=1), 0.4, None)]
    now = datetime.now(timezone.utc)
    assert _values(store, now) == [(T, 0.3), (T + timedelta(hours=1), 0.4)]  # today's reads unchanged
    # an as-of read before the correction no longer sees the corrected row (documented)
    assert _values(store, before) == [(T + timedelta(hours=1), 0.4)]


def test_the_maintenance_job_compacts_with_the_retention_and_names_a_bad_value(store, dsn, corrected, monkeypatch):
    from dagster import DagsterInstance

    from trading_platform.resources import MarketDB
    from trading_platform.sensors.maintenance import maintenance_job

    # the correction made 10 days ago
    store.conn.execute("UPDATE predictions SET superseded_at = superseded_at - interval '10 days' "
                       "WHERE superseded_at IS NOT NULL")
    store.conn.execute("UPDATE predictions SET known_at = known_at - interval '10 days'")
    with DagsterInstance.ephemeral() as instance:
        monkeypatch.delenv("TP_SUPERSEDED_RETENTION_DAYS", raising=False)
        r = maintenance_job.execute_in_process(instance=instance, resources={"market_db": MarketDB(database_url=dsn)})
        assert r.success and store.conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 3  # kept
        monkeypatch.setenv("TP_SUPERSEDED_RETENTION_DAYS", "7")
        r = maintenance_job.execute_in_process(instance=instance, resources={"market_db": MarketDB(database_url=dsn)})
        assert r.success and r.output_for_node("compact_superseded_outputs")["predictions"] == 1
        assert store.conn.execute("SELECT count(*), count(superseded_at) FROM predictions").fetchone() == (2, 0)
        monkeypatch.setenv("TP_SUPERSEDED_RETENTION_DAYS", "a week")
        r = maintenance_job.execute_in_process(instance=instance, resources={"market_db": MarketDB(database_url=dsn)},
                                               raise_on_error=False)
        assert not r.success
        [failure] = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"]
        error = failure.event_specific_data.error
        assert "TP_SUPERSEDED_RETENTION_DAYS='a week' is not a number of days" in (error.cause or error).message


@pytest.mark.parametrize("raw", ["0", "-3", "0.5", "nan", "x"])
def test_a_retention_under_a_day_or_not_a_number_is_refused(raw):
    with pytest.raises(InvalidInput, match="TP_SUPERSEDED_RETENTION_DAYS"):
        superseded_retention_days({"TP_SUPERSEDED_RETENTION_DAYS": raw})
    assert superseded_retention_days({}) is None and superseded_retention_days({"TP_SUPERSEDED_RETENTION_DAYS": "30"}) == 30

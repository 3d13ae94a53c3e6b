"""Alerts: made with the outputs (same transaction, once), judged on later closed candles only, retracted on a
correction, counted for statistics; on a real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from trading_platform.alerts import core
from trading_platform.core.symbols import SymbolInfo
from trading_platform.models.scoring import Version
from trading_platform.store.outputs import OutputWriter

H = timedelta(hours=1)
T0 = datetime(2025, 3, 3, 0, tzinfo=timezone.utc)  # a Monday
PUMP = Version("pump_xgb", "1", "champion", {"tp.family": "pump_xgb",
                                             "tp.target": "pump: close rises >= 0.05 within 4 bars of 1h"})
SIGNAL = Version("signal_lgbm", "1", "champion", {"tp.family": "signal_lgbm",
                                                  "tp.target": "signal: sign of close[t+3] - close[t] on 1h"})


def candle(store, symbol, ts, close, high=None, low=None, tf="1h"):
    high = close if high is None else high
    low = close if low is None else low
    store.conn.execute(
        "INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES (%s, %s, %s, %s, %s, %s, "
        "%s, 1) ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, "
        "low = EXCLUDED.low, close = EXCLUDED.close", (symbol, tf, ts, close, high, low, close))


def predict(store, version, symbol, ts, value, origin="live", tf="1h"):
    w = OutputWriter(store.conn, [version], origin)
    w.add("predictions", [(version.name, version.version, symbol, tf, ts, value, None, "{}", False)])
    with store.conn.transaction():
        w.flush()
    return w.alerts


def rule(store, model="pump_xgb", threshold=0.7, side="above", cooldown=0.0, name=None):
    return store.conn.execute(
        "INSERT INTO alert_rules (name, model_name, threshold, side, cooldown_s) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING id", (name or f"{model}-{side}-{threshold}", model, threshold, side, cooldown)).fetchone()[0]


def alerts(store):
    rows = store.conn.execute("SELECT id, status, candles_seen, deciding_ts, retracted_at, send, value, current_value "
                              "FROM alerts ORDER BY id").fetchall()
    return [dict(zip(("id", "status", "seen", "deciding", "retracted", "send", "value", "current"), r)) for r in rows]


def evaluate(store, now, **kw):
    with store.conn.transaction():
        return core.evaluate(store.conn, now=now, **kw)


@pytest.fixture
def btc(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
    for i in range(2):
        candle(store, "BTC/USDT", T0 + i * H, 100.0)
    return store


def test_pump_success_on_the_third_later_candle_never_on_its_own_or_an_unclosed_one(btc):
    store = btc
    rule(store)
    assert predict(store, PUMP, "BTC/USDT", T0 + H, 0.4)["alerts"] == 0  # below the threshold: nothing
    got = predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)  # a correction that now crosses (same candle)
    assert got["alerts"] == 1
    # the target met on the alert's own candle (its high) and before it: no later candle yet, stays pending
    candle(store, "BTC/USDT", T0 + H, 100.0, high=120.0)
    candle(store, "BTC/USDT", T0, 130.0)
    evaluate(store, T0 + 2 * H + timedelta(minutes=30))
    assert alerts(store)[0]["status"] == "pending" and alerts(store)[0]["seen"] == 0
    # later candles: +1 %, +2 %, then +6 % (the third), which is still open at `now`: not decided yet
    for i, close in enumerate((101.0, 102.0, 106.0), start=2):
        candle(store, "BTC/USDT", T0 + i * H, close, high=close + 10)  # highs above the target do not decide
    evaluate(store, T0 + 4 * H + timedelta(minutes=59))
    a = alerts(store)[0]
    assert (a["status"], a["seen"]) == ("pending", 2)
    evaluate(store, T0 + 5 * H)  # the third later candle has closed
    a = alerts(store)[0]
    assert (a["status"], a["seen"], a["deciding"]) == ("success", 3, T0 + 4 * H)
    # altering candles after the deciding one changes nothing
    candle(store, "BTC/USDT", T0 + 5 * H, 50.0)
    evaluate(store, T0 + 7 * H, series=[("BTC/USDT", "1h")], revised={("BTC/USDT", "1h"): [T0 + 5 * H]})
    assert alerts(store)[0]["status"] == "success" and alerts(store)[0]["deciding"] == T0 + 4 * H


def test_pump_failed_exactly_at_the_horizon_and_a_revised_deciding_candle_rejudges(btc):
    store = btc
    rule(store)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.8)
    for i in range(2, 5):  # three quiet candles
        candle(store, "BTC/USDT", T0 + i * H, 101.0)
    evaluate(store, T0 + 5 * H)
    assert alerts(store)[0]["status"] == "pending"  # 3 of 4
    candle(store, "BTC/USDT", T0 + 5 * H, 101.0)
    evaluate(store, T0 + 6 * H)
    a = alerts(store)[0]
    assert (a["status"], a["seen"], a["deciding"]) == ("failed", 4, T0 + 5 * H)
    # the deciding candle is revised: +10 % -> judged again, success on it
    candle(store, "BTC/USDT", T0 + 5 * H, 110.0)
    got = evaluate(store, T0 + 6 * H, series=[("BTC/USDT", "1h")], revised={("BTC/USDT", "1h"): [T0 + 5 * H]})
    assert got["rejudged"] == 1
    a = alerts(store)[0]
    assert (a["status"], a["deciding"]) == ("success", T0 + 5 * H)
    [s] = core.stats(store.conn)
    assert (s["success"], s["failed"], s["pending"]) == (1, 0, 0)  # the first outcome was taken back


def test_signal_sign_at_the_horizon_and_side_below(btc):
    store = btc
    rule(store, "signal_lgbm", 0.65, "above", name="up")
    rule(store, "signal_lgbm", 0.6, "below", name="down")
    for i, close in enumerate((99.0, 98.0, 97.0, 103.0), start=2):
        candle(store, "BTC/USDT", T0 + i * H, close)
    predict(store, SIGNAL, "BTC/USDT", T0 + H, 0.7)   # up
    predict(store, SIGNAL, "BTC/USDT", T0 + 2 * H, 0.6)  # down only (0.6 <= 0.6, not >= 0.65)
    evaluate(store, T0 + 6 * H)
    got = {(r[0], r[1]) for r in store.conn.execute("SELECT side, status FROM alerts").fetchall()}
    # up at 01:00 (entry 100): close at +3 (04:00) is 97 -> failed; down at 02:00 (entry 99): close at +3 (05:00)
    # is 103 -> failed too
    assert got == {("above", "failed"), ("below", "failed")}


def test_stopped_candles_expire_and_a_weekend_does_not_expire_a_forex_alert(store):
    store.add_symbol(SymbolInfo.create("EURUSD", category="forex", timeframes=["1h"]))
    store.add_symbol(SymbolInfo.create("ETH/USDT", timeframes=["1h"]))
    rule(store)
    fri = datetime(2025, 3, 7, 19, tzinfo=timezone.utc)  # Friday 19:00 UTC: 14:00 New York, the roll is 17:00
    candle(store, "EURUSD", fri, 1.0)
    candle(store, "ETH/USDT", fri, 1.0)
    predict(store, PUMP, "EURUSD", fri, 0.9)
    predict(store, PUMP, "ETH/USDT", fri, 0.9)
    # Saturday noon: crypto has had its 4 + 2 slots with no candle -> expired; forex is closed for the weekend
    evaluate(store, datetime(2025, 3, 8, 12, tzinfo=timezone.utc))
    got = dict(store.conn.execute("SELECT symbol, status FROM alerts").fetchall())
    assert got == {"ETH/USDT": "expired", "EURUSD": "pending"}
    # Sunday evening after the open, plus 6 open slots: the forex alert expires too
    evaluate(store, datetime(2025, 3, 10, 6, tzinfo=timezone.utc))
    assert dict(store.conn.execute("SELECT symbol, status FROM alerts").fetchall())["EURUSD"] == "expired"


def test_a_correction_that_no_longer_crosses_retracts_and_stats_keep_the_original_decision(btc):
    store = btc
    rule(store)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.85)  # still crosses: the new value recorded, not retracted
    a = alerts(store)[0]
    assert a["retracted"] is None and a["current"] == pytest.approx(0.85) and a["value"] == pytest.approx(0.9)
    got = predict(store, PUMP, "BTC/USDT", T0 + H, 0.3)
    assert got["retracted"] == 1
    a = alerts(store)[0]
    assert a["retracted"] is not None and a["current"] == pytest.approx(0.3) and len(alerts(store)) == 1
    for i in range(2, 6):
        candle(store, "BTC/USDT", T0 + i * H, 100.0)
    evaluate(store, T0 + 6 * H)
    [s] = core.stats(store.conn)
    assert (s["failed"], s["retracted"], s["n"]) == (1, 1, 1)


def test_retry_adds_nothing_cooldown_suppresses_backfill_and_late_alerts_are_stale(btc, monkeypatch):
    store = btc
    rule(store, cooldown=3 * 3600)
    for i in range(2, 8):
        candle(store, "BTC/USDT", T0 + i * H, 100.0)
    assert predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)["alerts"] == 1
    # the same rows again (a retried batch, a re-run of the scoring): nothing new
    assert predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)["alerts"] == 0
    assert predict(store, PUMP, "BTC/USDT", T0 + 2 * H, 0.9)["suppressed"] == 1   # 1 h after: inside 3 h
    assert predict(store, PUMP, "BTC/USDT", T0 + 4 * H, 0.9)["alerts"] == 1       # 3 h after the first: outside
    assert predict(store, PUMP, "BTC/USDT", T0 + 7 * H, 0.9, origin="backfill")["alerts"] == 1
    rows = store.conn.execute("SELECT ts, status, send FROM alerts ORDER BY ts").fetchall()
    # every candle here closed long ago (2025): committed more than TP_ALERT_MAX_DELAY_S after -> stale
    assert [(r[0], r[1]) for r in rows] == [(T0 + H, "pending"), (T0 + 2 * H, "suppressed"),
                                            (T0 + 4 * H, "pending"), (T0 + 7 * H, "pending")]
    assert {r[2] for r in rows} == {"stale"}
    [s] = core.stats(store.conn)
    assert (s["pending"], s["suppressed"], s["stale"]) == (3, 1, 4)


def test_a_fresh_live_alert_is_enqueued_once_per_destination_a_shadow_never(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1m"]))
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    ts = now - timedelta(minutes=1)  # closed just now
    candle(store, "BTC/USDT", ts, 100.0, tf="1m")
    rule(store)
    store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('n8n', 'webhook', 'N8N_URL')")
    store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env, send_mode) "
                       "VALUES ('shorts', 'webhook', 'SHORTS_URL', 'negative_only')")
    shadow = Version("pump_xgb", "2", "shadow", PUMP.tags)
    assert predict(store, PUMP, "BTC/USDT", ts, 0.9, tf="1m")["deliveries"] == 1
    assert predict(store, shadow, "BTC/USDT", ts, 0.95, tf="1m").get("deliveries", 0) == 0
    predict(store, PUMP, "BTC/USDT", ts, 0.9, tf="1m")  # again: nothing
    rows = store.conn.execute("SELECT d.name, x.key, x.type, x.payload FROM alert_deliveries x "
                              "JOIN alert_destinations d ON d.id = x.destination_id").fetchall()
    assert len(rows) == 1
    name, key, typ, body = rows[0]
    assert (name, typ) == ("n8n", "alert") and key.startswith("alert:") and body["key"] == key
    assert body["model"] == "pump_xgb" and body["probability"] == pytest.approx(0.9) and body["price"] == 100.0
    assert {r[0]: r[1] for r in store.conn.execute("SELECT model_version, send FROM alerts").fetchall()} == {
        "1": "send", "2": "shadow"}


def test_send_modes_each_yield_exactly_their_messages(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1m"]))
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    t0 = now - timedelta(minutes=4)  # the alerts' candles closed less than TP_ALERT_MAX_DELAY_S ago
    for i in range(4):
        candle(store, "BTC/USDT", t0 + timedelta(minutes=i), 100.0, tf="1m")
    v = Version("signal_lgbm", "1", "champion", {"tp.target": "signal: sign of close[t+2] - close[t] on 1m"})
    rule(store, "signal_lgbm", 0.6, "above", name="up")
    rule(store, "signal_lgbm", 0.4, "below", name="down")
    for mode, res, ret in (("alerts_only", False, False), ("all", False, False), ("positive_only", True, False),
                           ("negative_only", False, True)):
        store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env, send_mode, resolutions, retractions) "
                           "VALUES (%s, 'webhook', 'U', %s, %s, %s)", (mode, mode, res, ret))
    predict(store, v, "BTC/USDT", t0, 0.8, tf="1m")             # up
    predict(store, v, "BTC/USDT", t0 + timedelta(minutes=1), 0.2, tf="1m")  # down
    store.conn.execute("UPDATE alert_deliveries SET status = 'delivered'")  # sent (the worker's part)
    predict(store, v, "BTC/USDT", t0 + timedelta(minutes=1), 0.1, tf="1m")  # down, corrected: still crosses
    predict(store, v, "BTC/USDT", t0 + timedelta(minutes=1), 0.5, tf="1m")  # no longer: retracted
    evaluate(store, now)  # both resolved (flat closes: failed)
    got = {}
    for name, typ, side in store.conn.execute(
            "SELECT d.name, x.type, x.payload->>'side' FROM alert_deliveries x JOIN alert_destinations d "
            "ON d.id = x.destination_id").fetchall():
        got.setdefault(name, set()).add((typ, side))
    assert got == {
        "alerts_only": {("alert", "above"), ("alert", "below")},
        "all": {("alert", "above"), ("alert", "below"), ("alert_resolved", "above"), ("alert_resolved", "below"),
                ("alert_retracted", "below")},
        "positive_only": {("alert", "above"), ("alert_resolved", "above")},
        "negative_only": {("alert", "below"), ("alert_retracted", "below")},
    }


def test_wilson_interval_against_reference_values():
    # Wilson 95 % score interval: 8 of 10 -> [0.4902, 0.9433] (the standard worked example, z = 1.96)
    lo, hi = core.wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    lo, hi = core.wilson(0, 20)
    assert lo == 0.0 and round(hi, 4) == 0.1611
    assert core.wilson(0, 0) is None


def test_stats_base_rate_and_lift_over_the_same_candles(btc):
    store = btc
    rule(store)
    # 20 candles, every 5th jumps 10 %: the pump target (>= 5 % within 4 bars) is met by the candles before it
    price = 100.0
    for i in range(2, 30):
        price = price * (1.1 if i % 5 == 0 else 1.0)
        candle(store, "BTC/USDT", T0 + i * H, price)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)
    evaluate(store, T0 + 31 * H)
    [s] = core.stats(store.conn)
    assert s["success"] == 1 and s["hit_rate"] == 1.0 and s["hit_rate_ci95"][0] < 0.5
    # candles 00:00 .. 25:00 have 4 later closed candles; each one within 4 bars of a jump meets it: all of them
    # (a jump every 5th candle) except the candle at a jump itself
    # counted here from the candles themselves, over the alert's day (2025-03-03): every candle of the day whose
    # 4 later candles have closed by 31:00, met when one of their closes is >= 1.05 x its own
    closes = dict(store.conn.execute("SELECT ts, close FROM ohlcv WHERE symbol = 'BTC/USDT' ORDER BY ts").fetchall())
    stamps = sorted(closes)
    n = met = 0
    for i, t in enumerate(stamps):
        later = stamps[i + 1:i + 5]
        if t.date() != T0.date() or t < T0 + H or len(later) < 4 or later[-1] + H > T0 + 31 * H:
            continue  # counted from the first alert's candle on
        n += 1
        met += any(closes[x] >= 1.05 * closes[t] for x in later)
    assert (s["base_candles"], round(s["base_rate"] * n)) == (n, met) and 0 < met < n
    assert s["lift"] == round(1.0 / (met / n), 3)


def test_the_alerts_asset_judges_what_is_due_and_the_schedule_skips_when_nothing_is(btc, dsn, monkeypatch):
    from dagster import DagsterInstance, RunRequest, SkipReason, build_schedule_context, materialize

    from trading_platform.assets.alerts import alerts_asset, alerts_schedule
    from trading_platform.resources import MarketDB

    store = btc
    res = {"market_db": MarketDB(database_url=dsn)}
    rule(store)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)
    tick = lambda: alerts_schedule(build_schedule_context(resources=res))  # noqa: E731
    # pending, but no later candle yet and its expiry (a long time ago here: 2025) has passed: due
    assert isinstance(tick(), RunRequest)
    for i in range(2, 4):
        candle(store, "BTC/USDT", T0 + i * H, 106.0)
    store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('hook', 'webhook', 'TP_NO_SUCH')")
    monkeypatch.delenv("TP_NO_SUCH", raising=False)
    with DagsterInstance.ephemeral() as instance:
        result = materialize([alerts_asset], instance=instance, resources=res)
    assert result.success
    meta = result.asset_materializations_for_node("alerts")[0].metadata
    assert meta["pending"].value == 0 and meta["resolved_now"].value == 1
    assert meta["hit_rates"].value == {"pump_xgb": 1.0}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["alerts_judged_on_time"].passed
    assert not checks["deliveries_healthy"].passed  # the destination's variable is unset: misconfigured
    assert checks["deliveries_healthy"].metadata["misconfigured"].value == ["hook"]
    assert a_status(store) == "success"
    assert isinstance(tick(), SkipReason)  # nothing pending: the minute's tick starts no run


def a_status(store):
    return store.conn.execute("SELECT status FROM alerts").fetchone()[0]


def test_a_correction_stored_by_an_ingestion_rejudges_at_the_next_scheduled_pass(btc):
    import pandas as pd

    store = btc
    rule(store)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)
    for i in range(2, 6):
        candle(store, "BTC/USDT", T0 + i * H, 101.0)
    evaluate(store, T0 + 6 * H)
    assert (a_status(store), alerts(store)[0]["deciding"]) == ("failed", T0 + 5 * H)
    assert not core.due(store.conn, T0 + 6 * H)
    # a file corrects 03:00 to +8 %: the write path records the revision; the next pass judges the alert again
    fixed = pd.DataFrame({"ts": [pd.Timestamp(T0 + 3 * H)], "open": [101.0], "high": [108.0], "low": [101.0],
                          "close": [108.0], "volume": [1.0]})
    store.ingest_frame("BTC/USDT", "1h", fixed, "correction")
    assert core.due(store.conn, T0 + 6 * H)
    got = evaluate(store, T0 + 6 * H)
    assert got["rejudged"] == 1
    assert (a_status(store), alerts(store)[0]["deciding"]) == ("success", T0 + 3 * H)
    assert not core.due(store.conn, T0 + 6 * H)  # the revision is applied: nothing due


def test_a_pass_reads_a_bounded_stretch_and_expires_only_what_its_candles_cover(btc):
    """A backfill's old alerts are judged over several passes when their candles exceed one pass's read; none is
    expired for candles a pass did not read."""
    store = btc
    rule(store)
    for i in range(2, 40):
        candle(store, "BTC/USDT", T0 + i * H, 100.0)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)
    predict(store, PUMP, "BTC/USDT", T0 + 30 * H, 0.9)
    now = T0 + 41 * H
    with store.conn.transaction():
        core._evaluate_series(store.conn, "BTC/USDT", "1h", now, max_candles=10)
    got = [(a["status"], a["seen"]) for a in alerts(store)]
    assert got == [("failed", 4), ("pending", 0)]  # the second's candles lie beyond the 10 read: not expired
    evaluate(store, now)
    assert [(a["status"], a["seen"]) for a in alerts(store)][1] == ("failed", 4)


def test_an_alert_retracted_before_it_was_sent_is_never_sent_nor_retracted(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1m"]))
    ts = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)
    candle(store, "BTC/USDT", ts, 100.0, tf="1m")
    rule(store)
    store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env, send_mode) VALUES ('n8n', 'webhook', "
                       "'U', 'all')")
    predict(store, PUMP, "BTC/USDT", ts, 0.9, tf="1m")
    predict(store, PUMP, "BTC/USDT", ts, 0.2, tf="1m")  # corrected before the worker got to it
    got = store.conn.execute("SELECT type, status FROM alert_deliveries").fetchall()
    assert got == [("alert", "stale")]
    assert alerts(store)[0]["retracted"] is not None


def test_a_fresh_alert_from_a_backfill_is_stale_the_same_from_the_live_path_is_sent(store):
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1m"]))
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    for i in (1, 2):
        candle(store, "BTC/USDT", now - timedelta(minutes=i), 100.0, tf="1m")
    rule(store)
    store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('n8n', 'webhook', 'U')")
    predict(store, PUMP, "BTC/USDT", now - timedelta(minutes=2), 0.9, origin="backfill", tf="1m")
    predict(store, PUMP, "BTC/USDT", now - timedelta(minutes=1), 0.9, origin="live", tf="1m")
    got = store.conn.execute("SELECT a.ts, a.send, count(d.id) FROM alerts a LEFT JOIN alert_deliveries d "
                             "ON d.alert_id = a.id GROUP BY 1, 2 ORDER BY 1").fetchall()
    assert got == [(now - timedelta(minutes=2), "stale", 0), (now - timedelta(minutes=1), "send", 1)]


def test_the_minute_pass_waits_for_a_live_batch_holding_the_symbol(btc, dsn):
    """A live batch holds its symbols' lock while it judges their alerts: the minute's pass takes the same lock
    first, so the two never judge one alert at once (each candle counted once, the counters never doubled)."""
    import threading

    import psycopg

    from trading_platform.store.outbox import lock_symbol

    store = btc
    rule(store)
    predict(store, PUMP, "BTC/USDT", T0 + H, 0.9)
    for i in range(2, 6):
        candle(store, "BTC/USDT", T0 + i * H, 101.0)
    with psycopg.connect(dsn, autocommit=True) as other:
        with other.transaction():
            lock_symbol(other, "BTC/USDT")  # the live batch, mid-transaction
            done = threading.Event()
            t = threading.Thread(target=lambda: (core.evaluate(store.conn, now=T0 + 6 * H), done.set()), daemon=True)
            t.start()
            assert not done.wait(1.5)  # the pass waits
            with other.transaction():  # the batch judges first, under its lock
                core.evaluate(other, series=[("BTC/USDT", "1h")], revised={("BTC/USDT", "1h"): [T0 + 5 * H]},
                              now=T0 + 6 * H, scheduled=False)
        assert done.wait(20)
    t.join(5)
    [s] = core.stats(store.conn)
    # judged once (by the batch, had the alert not been past its expiry by the clock; else by the pass), counted once
    assert (s["failed"], s["pending"]) == (1, 0)
    assert alerts(store)[0]["seen"] == 4


def test_deliveries_healthy_warns_on_a_backlog_and_no_secret_reaches_dagster(btc, dsn, monkeypatch):
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.alerts import alerts_asset
    from trading_platform.resources import MarketDB

    store = btc
    secret_url = "https://n8n.example.com/webhook/0f3b9c2d-secret-path?token=tok_9d8c7b6a"
    monkeypatch.setenv("TP_SECRET_HOOK", secret_url)
    monkeypatch.setenv("TP_ALERT_BACKLOG_WARN_S", "60")
    did = store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('hook', 'webhook', "
                             "'TP_SECRET_HOOK') RETURNING id").fetchone()[0]
    store.conn.execute("INSERT INTO alert_deliveries (destination_id, key, type, payload, created_at, last_error, "
                       "last_error_at) VALUES (%s, 'alert:1:alert', 'alert', '{}', now() - interval '10 minutes', "
                       "%s, now())", (did, f"connection refused by {secret_url}"))
    with DagsterInstance.ephemeral() as instance:
        result = materialize([alerts_asset], instance=instance, resources={"market_db": MarketDB(database_url=dsn)})
        events = [str(e) for e in instance.all_logs(result.run_id)]
        tags = str(instance.get_run_by_id(result.run_id).tags)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["deliveries_healthy"].passed
    assert checks["deliveries_healthy"].metadata["oldest_pending_s"].value >= 600
    for text in events + [tags]:
        for secret in ("0f3b9c2d-secret-path", "tok_9d8c7b6a", secret_url):
            assert secret not in text


def test_an_alert_on_earlier_candles_extends_the_base_rate_back_to_them(btc):
    store = btc
    rule(store)
    for i in range(2, 40):
        candle(store, "BTC/USDT", T0 + i * H, 100.0 * (1.1 if i % 5 == 0 else 1.0))
    predict(store, PUMP, "BTC/USDT", T0 + 20 * H, 0.9)
    evaluate(store, T0 + 41 * H)
    first = store.conn.execute("SELECT min(day), sum(n) FROM alert_base").fetchone()
    predict(store, PUMP, "BTC/USDT", T0 + 2 * H, 0.9, origin="backfill")  # a backfill's alert, 18 candles earlier
    evaluate(store, T0 + 41 * H)
    n = store.conn.execute("SELECT sum(n) FROM alert_base").fetchone()[0]
    assert n == first[1] + 18  # the 18 candles from 02:00 to 19:00, counted once each
    assert store.conn.execute("SELECT todo_from FROM alert_base_cursor").fetchone()[0] is None
    evaluate(store, T0 + 41 * H)
    assert store.conn.execute("SELECT sum(n) FROM alert_base").fetchone()[0] == n  # nothing counted twice

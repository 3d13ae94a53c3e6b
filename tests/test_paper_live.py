"""paper/live.py on a real PostgreSQL: candles written through the live write path
(``tp_live_candle``), their outputs committed and their ``predictions`` events done as a live batch leaves them;
the ``paper`` consumer steps the live run from the store. It never acts on a candle before its outputs are
committed, a replayed event places nothing, its records equal a backtest's over the same candles, and stopping
the last live run lets the outbox prune."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from trading_platform.paper.spec import parse

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)
H = timedelta(hours=1)
SERIES = [("BTC/USDT", "1h"), ("ETH/USDT", "1h")]
HISTORY, LIVE = 40, 60
SPEC = parse({"name": "live", "universe": [{"symbol": s, "timeframe": tf} for s, tf in SERIES], "cash": 10_000,
              "rules": {"signal": {"model": "signal_lgbm", "min": 0.6}, "stop_loss": 0.01, "time_exit": 4},
              "costs": {"fee_bps": 10, "spread_bps": 4}, "risk": {"position_fraction": 0.45, "cooldown_bars": 1}})


def _candle(rng, p):
    o = p * (1 + rng.gauss(0, 0.002))
    c = o * (1 + rng.gauss(0, 0.01))
    return o, max(o, c) * 1.002, min(o, c) * 0.998, c


@pytest.fixture
def market(store):
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.models.scoring import Version
    from trading_platform.store.outputs import OutputWriter

    rng = random.Random(5)
    for s, _ in SERIES:
        store.add_symbol(SymbolInfo.create(s, timeframes=["1h"], live=True))
    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                       "('signal_lgbm', '1', now() - interval '1 day', 'seed')")
    last = {}
    v = Version("signal_lgbm", "1", "champion", {"tp.family": "signal_lgbm"})
    w = OutputWriter(store.conn, [v], "backfill")
    for s, tf in SERIES:  # the stored history, before the live run starts
        p = 100.0
        for i in range(HISTORY):
            o, h, lo, c = _candle(rng, p)
            store.conn.execute("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES "
                               "(%s, %s, %s, %s, %s, %s, %s, 1e6)", (s, tf, T0 + i * H, o, h, lo, c))
            w.add("predictions", [("signal_lgbm", "1", s, tf, T0 + i * H, rng.random(), "up", "{}", False)])
            p = c
        last[s] = p
    with store.conn.transaction():
        w.flush()
    return store, rng, last


def _feed(store, rng, last, i, s, tf):
    """Candle HISTORY + i of ``s`` through the live write path (its events for both consumers)."""
    o, h, lo, c = _candle(rng, last[s])
    last[s] = c
    store.conn.execute("SELECT * FROM tp_live_candle(%s, %s, %s, %s, %s, %s, %s, 1e6, 'test')",
                       (s, tf, T0 + (HISTORY + i) * H, o, h, lo, c))
    return T0 + (HISTORY + i) * H


def _score_and_commit(store, rng, s, tf, ts, value=None):
    """What a live prediction batch leaves: the candle's output written, its predictions events done."""
    from trading_platform.models.scoring import Version
    from trading_platform.store import outbox
    from trading_platform.store.outputs import OutputWriter

    v = Version("signal_lgbm", "1", "champion", {"tp.family": "signal_lgbm"})
    w = OutputWriter(store.conn, [v], "live")
    w.add("predictions", [("signal_lgbm", "1", s, tf, ts, rng.random() if value is None else value, "up", "{}",
                           False)])
    with store.conn.transaction():
        w.flush()
        ids = [r[0] for r in store.conn.execute(
            "SELECT e.id FROM market_events e JOIN market_event_queue q ON q.event_id = e.id AND q.consumer = "
            "'predictions' WHERE e.symbol = %s AND e.ts = %s AND q.status = 'pending'", (s, ts)).fetchall()]
        b = store.conn.execute("INSERT INTO live_batches (consumer, events, pins, versions) VALUES "
                               "('predictions', %s, '{}', '[]') RETURNING id", (len(ids),)).fetchone()[0]
        store.conn.execute("UPDATE market_event_queue SET status = 'claimed', batch_id = %s WHERE consumer = "
                           "'predictions' AND event_id = ANY(%s)", (b, ids))
        outbox.mark_done(store.conn, b, ids)


def _records(conn, run_id):
    orders = conn.execute("SELECT symbol, signal_ts, side, intent, quantity, filled, status FROM orders WHERE run_id "
                          "= %s ORDER BY signal_ts, symbol, intent", (run_id,)).fetchall()
    fills = conn.execute("SELECT o.symbol, f.candle_ts, f.price, f.quantity, f.fee FROM fills f JOIN orders o ON "
                         "o.order_id = f.order_id WHERE f.run_id = %s ORDER BY 2, 1, 3", (run_id,)).fetchall()
    equity = conn.execute("SELECT ts, equity FROM paper_equity WHERE run_id = %s ORDER BY ts", (run_id,)).fetchall()
    return orders, fills, equity


def test_the_live_run_steps_after_the_outputs_and_equals_the_backtest(market):
    from trading_platform.paper import backtest, live

    store, rng, last = market
    conn = store.conn
    started = live.start(store, SPEC)
    assert started["stepped_to"] == T0 + HISTORY * H and started["pins"] == {"signal_lgbm": "1"}
    assert conn.execute("SELECT count(*) FROM live_consumers WHERE consumer = 'paper'").fetchone()[0] == 1
    order = [(i, s) for i in range(LIVE) for s in SERIES]
    rng.shuffle(order)
    order.sort(key=lambda r: r[0] + rng.random() * 2)  # the series interleaved, ETH sometimes a candle behind
    seen = {s: -1 for s in SERIES}
    for i, (s, tf) in order:
        if i != seen[(s, tf)] + 1:  # each series in its own order
            continue
        seen[(s, tf)] = i
        ts = _feed(store, rng, last, i, s, tf)
        # before its outputs are committed, the paper consumer leaves the candle alone
        before = conn.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s", (started["run_id"],)).fetchone()
        assert live.process(store)["events"] == 0
        assert conn.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s",
                            (started["run_id"],)).fetchone() == before
        _score_and_commit(store, rng, s, tf, ts)
        live.process(store)
    for s, tf in SERIES:  # what the interleaving left behind
        for i in range(seen[(s, tf)] + 1, LIVE):
            ts = _feed(store, rng, last, i, s, tf)
            _score_and_commit(store, rng, s, tf, ts)
            live.process(store)
    got = _records(conn, started["run_id"])
    assert len(got[0]) > 10 and got[1]
    # the backtest over the same candles with the same pins, from the same (fresh) state
    bt = backtest.run(store, SPEC, T0 + HISTORY * H, T0 + (HISTORY + LIVE) * H, pins=started["pins"])
    assert _records(conn, bt["run_id"]) == got

    # every paper event delivered again: nothing new
    conn.execute("UPDATE market_event_queue SET status = 'pending' WHERE consumer = 'paper'")
    again = live.process(store)
    assert again["events"] == 2 * LIVE and again["orders"] == 0
    assert _records(conn, started["run_id"]) == got


def test_a_candle_whose_outputs_are_not_committed_holds_the_step(market):
    """BTC's event is ready, ETH's candle of the same hour is stored but not yet scored: the hour waits for it, and
    ETH's decision is made on its committed output, not on a missing one."""
    from trading_platform.paper import live

    store, rng, last = market
    run = live.start(store, SPEC)["run_id"]
    btc = _feed(store, rng, last, 0, *SERIES[0])
    eth = _feed(store, rng, last, 0, *SERIES[1])
    _score_and_commit(store, rng, *SERIES[0], btc, value=0.1)
    assert live.process(store)["steps"] == 0
    _score_and_commit(store, rng, *SERIES[1], eth, value=0.99)
    assert live.process(store)["steps"] == 1
    orders = store.conn.execute("SELECT symbol, intent, signal_ts FROM orders WHERE run_id = %s", (run,)).fetchall()
    assert orders == [("ETH/USDT", "entry", eth + H)]


def test_stopping_the_last_live_run_lets_the_outbox_prune(market):
    from trading_platform.paper import live
    from trading_platform.store import outbox

    store, rng, last = market
    live.start(store, SPEC)
    ts = _feed(store, rng, last, 0, *SERIES[0])
    _score_and_commit(store, rng, *SERIES[0], ts)
    conn = store.conn
    conn.execute("UPDATE market_events SET created_at = created_at - interval '2 days'")
    assert outbox.prune(conn, retention_h=1)["events"] == 0  # the paper consumer has not taken it
    out = live.stop(store, "live")
    assert out["consumer_removed"]
    assert outbox.prune(conn, retention_h=1)["events"] == 1
    with pytest.raises(Exception, match="not running live"):
        live.stop(store, "live")


def test_a_stopped_strategy_started_again_resumes_its_positions(market, instance):
    from trading_platform.paper import live

    from test_metrics import scrape, value

    store, rng, last = market
    first = live.start(store, SPEC)["run_id"]
    i = 0
    while not store.conn.execute("SELECT count(*) FROM positions WHERE run_id = %s", (first,)).fetchone()[0]:
        for s, tf in SERIES:
            ts = _feed(store, rng, last, i, s, tf)
            _score_and_commit(store, rng, s, tf, ts, value=0.9)
        live.process(store)
        i += 1
        assert i < 10
    held = store.conn.execute("SELECT symbol, quantity, entry_price FROM positions WHERE run_id = %s ORDER BY 1",
                              (first,)).fetchall()
    # /metrics says what `tp paper status` says of the running strategy, and counts the paper consumer's events
    [run] = live.status(store)["runs"]
    text, _ = scrape(store.dsn, instance)
    assert value(text, "tp_paper_open_positions", strategy="live") == len(run["positions"]) == len(held)
    assert value(text, "tp_paper_equity", strategy="live") == pytest.approx(run["equity"])
    assert value(text, "tp_paper_risk_locks", strategy="live") == len(run["risk_locks"])
    done = store.conn.execute("SELECT count(*) FROM market_event_queue WHERE consumer = 'paper' AND status = 'done'"
                              ).fetchone()[0]
    assert done and value(text, "tp_live_events_processed_total", consumer="paper") == done
    live.stop(store, "live")
    again = live.start(store, SPEC)
    assert again["resumed_from"] == first and again["positions"] == len(held)
    assert store.conn.execute("SELECT symbol, quantity, entry_price FROM positions WHERE run_id = %s ORDER BY 1",
                              (again["run_id"],)).fetchall() == held
    # the resumed run trades on: the held positions leave by their time exit in it
    for j in range(i, i + 6):
        for s, tf in SERIES:
            ts = _feed(store, rng, last, j, s, tf)
            _score_and_commit(store, rng, s, tf, ts, value=0.1)
        live.process(store)
    exits = store.conn.execute("SELECT count(*) FROM trades WHERE run_id = %s", (again["run_id"],)).fetchone()[0]
    assert exits >= len(held)
    live.stop(store, "live")
    fresh = live.start(store, SPEC, fresh=True)
    assert fresh["resumed_from"] is None and fresh["positions"] == 0


def test_a_refusal_by_a_risk_rule_reaches_a_paper_destination_once(market, dsn, monkeypatch):
    """Both series signal at once, max_positions 1: the second entry is refused. The message goes to the webhook
    that asks for paper messages (a local receiver), once, through the delivery worker, and not to the one that
    does not; the events replayed make no second message."""
    from test_alerts_delivery import Receiver, add_destination, wait_until, worker

    from trading_platform.paper import live

    store, rng, last = market
    conn = store.conn
    hook = Receiver()
    try:
        monkeypatch.setenv("PAPER_HOOK", hook.url())
        add_destination(conn, "trader", url_env="PAPER_HOOK", paper=True)
        add_destination(conn, "alerts_only", url_env="PAPER_HOOK")
        spec = parse({**SPEC.raw, "risk": {"position_fraction": 0.45, "max_positions": 1}})
        live.start(store, spec)
        for s, tf in SERIES:
            ts = _feed(store, rng, last, 0, s, tf)
            _score_and_commit(store, rng, s, tf, ts, value=0.9)
        live.process(store)
        rows = conn.execute("SELECT d.name, a.payload FROM alert_deliveries a JOIN alert_destinations d ON d.id = "
                            "a.destination_id WHERE a.type = 'paper'").fetchall()
        assert {name for name, _ in rows} == {"trader"}
        (refusal,) = [p for _, p in rows if p["event"] == "risk"]
        assert refusal["rule"] == "max_positions" and refusal["symbol"] == "ETH/USDT"
        conn.execute("UPDATE market_event_queue SET status = 'pending' WHERE consumer = 'paper'")
        live.process(store)
        assert conn.execute("SELECT count(*) FROM alert_deliveries WHERE type = 'paper'").fetchone()[0] == len(rows)
        with worker(dsn):
            wait_until(lambda: len(hook.requests) >= len(rows))
            time.sleep(0.5)
        assert sorted(r["json"]["key"] for r in hook.requests) == sorted(p["key"] for _, p in rows)
        assert any(r["json"]["event"] == "risk" and "max_positions" in r["json"]["message"] for r in hook.requests)
    finally:
        hook.close()


def test_paper_live_in_dagster_reports_the_run_and_turns_its_checks_red(market, dsn, instance):
    """The paper_live asset of a live strategy: its equity and positions in the metadata; its checks fail while the
    drawdown breaker holds, and when the paper consumer falls behind."""
    from dagster import materialize

    from trading_platform.assets.paper import paper_live
    from trading_platform.paper import live
    from trading_platform.resources import MarketDB

    store, rng, last = market
    conn = store.conn
    # a drawdown breaker the first fee trips
    spec = parse({**SPEC.raw, "risk": {"position_fraction": 0.45, "max_drawdown": 0.0001}})
    live.start(store, spec)
    instance.add_dynamic_partitions("strategy", ["live"])

    def checks():
        r = materialize([paper_live], instance=instance, partition_key="live",
                        resources={"market_db": MarketDB(database_url=dsn)})
        assert r.success
        md = r.get_asset_materialization_events()[0].materialization.metadata
        got = {e.event_specific_data.check_name: e.event_specific_data.passed for e in r.all_events
               if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        return md, got

    md, got = checks()
    assert got == {"paper_live_no_risk_lock": True, "paper_live_keeping_up": True}
    assert md["equity"].value == 10_000 and md["positions"].value == 0
    for i in range(3):
        for s, tf in SERIES:
            ts = _feed(store, rng, last, i, s, tf)
            _score_and_commit(store, rng, s, tf, ts, value=0.9)
        live.process(store)
    md, got = checks()
    assert md["positions"].value >= 1 and md["equity"].value < 10_000
    assert got["paper_live_no_risk_lock"] is False and "max_drawdown" in md["risk_locks"].value
    # a live candle whose outputs never come: the paper consumer's oldest event ages
    _feed(store, rng, last, 3, *SERIES[0])
    conn.execute("UPDATE market_events SET created_at = created_at - interval '1 hour' WHERE id = "
                 "(SELECT max(id) FROM market_events)")
    md, got = checks()
    assert got["paper_live_keeping_up"] is False and md["consumer_lag_s"].value > 3000


def test_the_daily_schedule_asks_for_the_running_strategies_only(market, dsn, instance):
    from dagster import SkipReason, build_schedule_context

    from trading_platform.assets.paper import paper_live_schedule
    from trading_platform.paper import live
    from trading_platform.resources import MarketDB

    store, _, _ = market

    def tick():
        with build_schedule_context(instance=instance, resources={"market_db": MarketDB(database_url=dsn)},
                                    scheduled_execution_time=datetime(2025, 3, 6, 0, 5, tzinfo=timezone.utc)) as ctx:
            return paper_live_schedule(ctx)

    assert isinstance(tick(), SkipReason)
    live.start(store, SPEC)
    (req,) = tick()
    assert req.partition_key == "live" and req.run_key == "paper_live|live|2025-03-06"
    live.stop(store, "live")
    assert isinstance(tick(), SkipReason)


def test_a_mixed_portfolio_steps_its_crypto_through_the_weekend_as_the_backtest_does(store):
    """BTC/USD (around the clock) with AAPL (NYSE hours): on Saturday the stock market is closed, so no AAPL candle is
    coming. The live run steps each Saturday BTC candle as its outputs are committed (the calendar says AAPL is not
    expected), instead of holding the whole portfolio until Monday's open, and its records equal the backtest's."""
    from trading_platform.core.calendars import slot_open
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.paper import backtest, live

    conn = store.conn
    store.add_symbol(SymbolInfo.create("BTC/USD", category="crypto", timeframes=["1h"], live=True))
    store.add_symbol(SymbolInfo.create("AAPL", category="stock", exchange="NYSE", timeframes=["1h"], live=True))
    from trading_platform.models.scoring import Version
    from trading_platform.store.outputs import OutputWriter

    spec = parse({"name": "mixed", "universe": [{"symbol": "BTC/USD", "timeframe": "1h"},
                                                {"symbol": "AAPL", "timeframe": "1h"}], "cash": 10_000,
                  "rules": {"signal": {"model": "signal_lgbm", "min": 0.6}, "time_exit": 3},
                  "risk": {"position_fraction": 0.45}})
    conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                 "('signal_lgbm', '1', now() - interval '1 day', 'seed')")
    version = Version("signal_lgbm", "1", "champion", {"tp.family": "signal_lgbm"})
    rng = random.Random(9)
    price = {"BTC/USD": 60_000.0, "AAPL": 200.0}
    thu = datetime(2025, 3, 6, tzinfo=timezone.utc)

    def is_open(s, ts):
        return s == "BTC/USD" or bool(slot_open("stock", "NYSE", [int(ts.timestamp() * 1e6)], 3600)[0])

    def candle(s, ts, live_path):
        o = price[s]
        c = o * (1 + rng.gauss(0, 0.01))
        price[s] = c
        row = (s, "1h", ts, o, max(o, c) * 1.001, min(o, c) * 0.999, c)
        w = OutputWriter(conn, [version], "live" if live_path else "backfill")
        w.add("predictions", [("signal_lgbm", "1", s, "1h", ts, rng.random(), "up", "{}", False)])
        with conn.transaction():  # the candle, then what its live batch commits: the output and the events done
            if live_path:
                conn.execute("SELECT * FROM tp_live_candle(%s, %s, %s, %s, %s, %s, %s, 1e6, 'test')", row)
            else:
                conn.execute("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES "
                             "(%s, %s, %s, %s, %s, %s, %s, 1e6)", row)
            w.flush()
            conn.execute("UPDATE market_event_queue SET status = 'done', done_at = now() WHERE consumer = "
                         "'predictions' AND status <> 'done'")

    hours = [thu + i * H for i in range(48)]  # Thursday and Friday stored
    for ts in hours:
        for s in price:
            if is_open(s, ts):
                candle(s, ts, False)
    started = live.start(store, spec)
    sat_noon = datetime(2025, 3, 8, 12, tzinfo=timezone.utc)
    ts = thu + 48 * H
    while ts < sat_noon:  # Saturday: BTC only; each candle is stepped as it comes
        candle("BTC/USD", ts, True)
        live.process(store)
        assert conn.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s",
                            (started["run_id"],)).fetchone()[0] == ts + H
        ts += H
    monday = datetime(2025, 3, 10, 18, tzinfo=timezone.utc)
    while ts < monday:  # through Monday's open: AAPL's candles come back
        for s in price:
            if is_open(s, ts):
                candle(s, ts, True)
        live.process(store)
        ts += H
    assert conn.execute("SELECT count(*) FROM ohlcv WHERE symbol = 'AAPL' AND ts > %s", (sat_noon,)).fetchone()[0] >= 3
    stepped = conn.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s", (started["run_id"],)).fetchone()[0]
    assert stepped >= monday - H
    got = _records(conn, started["run_id"])
    assert got[0] and any(o[0] == "AAPL" for o in got[0])
    bt = backtest.run(store, spec, started["stepped_to"], stepped, pins=started["pins"])
    assert _records(conn, bt["run_id"]) == got

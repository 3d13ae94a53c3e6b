"""Paper trading's records in PostgreSQL (migration 18, store/paper.py): a run keyed by what decides it, saved
again without a second copy of anything."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from trading_platform.paper.engine import Bar, Engine, Signal
from trading_platform.paper.spec import parse
from trading_platform.store import paper as paper_store

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)
H = timedelta(hours=1)
BTC = ("BTC/USDT", "1h")


def _engine(run_id):
    sp = parse({"name": "s", "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}], "cash": 10_000,
                "rules": {"signal": {"model": "signal_lgbm", "min": 0.56}, "time_exit": 2, "stop_loss": 0.05},
                "costs": {"fee_bps": 10}, "risk": {"position_fraction": 0.5, "cooldown_bars": 1}})
    e = Engine(sp, run_id)
    closes = [100, 101, 103, 99, 90, 92, 95, 97, 99, 100]
    for i, c in enumerate(closes):
        o = closes[i - 1] if i else 100
        e.step(T0 + i * H, {BTC: Bar(o, max(o, c) + 1, min(o, c) - 1, c, 1e6, i)}, {BTC: Signal(i % 3 == 0)})
    return sp, e


def test_a_run_saved_twice_keeps_its_id_and_its_orders_once(store):
    sp, _ = _engine("x")
    start, end = T0, T0 + 10 * H
    run_id = paper_store.run_key(sp.version, start, end, {"signal_lgbm.BTC_USDT": "3"})
    assert run_id == paper_store.run_key(sp.version, start, end, {"signal_lgbm.BTC_USDT": "3"})
    assert run_id != paper_store.run_key(sp.version, start, end, {"signal_lgbm.BTC_USDT": "4"})
    counts = []
    for _ in range(2):
        sp, e = _engine(run_id)
        with store.conn.transaction():
            counts.append(paper_store.save_run(store.conn, run_id, sp, e, start=start, end=end,
                                               pins={"signal_lgbm.BTC_USDT": "3"}))
    assert counts[0] == counts[1] and counts[0]["orders"] >= 3 and counts[0]["trades"] >= 1
    n = {t: store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
         for t in ("paper_runs", "strategies", "orders", "order_events", "fills", "trades", "paper_equity")}
    assert n["paper_runs"] == 1 and n["strategies"] == 1 and n["orders"] == counts[0]["orders"]
    assert n["fills"] == counts[0]["fills"] and n["paper_equity"] == 10
    rows = paper_store.orders(store.conn, run_id)
    entries = [o for o in rows if o["intent"] == "entry" and o["status"] == "filled"]
    # each entry decided at a close filled at the next candle's open (the previous close here), plus its fee-free price
    for o in entries:
        assert o["first_fill_ts"] == o["signal_ts"] + H
    assert paper_store.run(store.conn, run_id)["status"] == "done"
    assert [t["exit_reason"] for t in paper_store.trades(store.conn, run_id)]


# ---- the backtest driver over stored candles and pinned outputs -----------------------------------------------------
def _market(store, closes, opens=None):
    from trading_platform.core.symbols import SymbolInfo

    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]), exist_ok=True)
    for i, c in enumerate(closes):
        o = opens[i] if opens else c
        store.conn.execute(
            "INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES ('BTC/USDT', '1h', %s, "
            "%s, %s, %s, %s, 1e6) ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET open = EXCLUDED.open, "
            "high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close",
            (T0 + i * H, o, max(o, c), min(o, c), c))


def _outputs(store, version, values, role="champion", in_sample=()):
    from trading_platform.models.scoring import Version
    from trading_platform.store.outputs import OutputWriter

    v = Version("signal_lgbm.BTC_USDT", version, role, {"tp.family": "signal_lgbm"})
    w = OutputWriter(store.conn, [v], "backfill")
    w.add("predictions", [(v.name, version, "BTC/USDT", "1h", T0 + i * H, val, "up" if val >= 0.5 else "down",
                           "{}", i in in_sample) for i, val in values.items()])
    with store.conn.transaction():
        w.flush()


def _spec():
    return parse({"name": "sig", "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}], "cash": 10_000,
                  "rules": {"signal": {"model": "signal_lgbm", "min": 0.56}, "time_exit": 1},
                  "costs": {"fee_bps": 10, "spread_bps": 20}})


def test_a_buy_decided_at_close_100_fills_at_the_next_open_110_through_the_store(store):
    from trading_platform.paper import backtest

    _market(store, [100, 110, 111, 112, 113, 114], opens=[100, 110, 110, 111, 112, 113])
    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                       "('signal_lgbm.BTC_USDT', '1', now() - interval '1 day', 'seed')")
    _outputs(store, "1", {0: 0.9, 1: 0.1, 2: 0.1, 3: 0.9, 4: 0.1, 5: 0.1}, in_sample={3})
    _outputs(store, "2", {2: 0.99}, role="shadow")  # a challenger's output: never trades
    out = backtest.run(store, _spec(), T0, T0 + 6 * H)
    assert out["pins"] == {"signal_lgbm.BTC_USDT": "1"}
    e = out["engine"]
    entry = [o for o in e.rec.orders if o.intent == "entry"]
    assert len(entry) == 1 and entry[0].signal_ts == T0 + H  # decided at candle 0's close
    (fill,) = [f for f in e.rec.fills if f[0] == entry[0].client_order_id]
    assert fill[2] == pytest.approx(110 * (1 + 10e-4)) and fill[2] > 100 * 1.01
    assert e.rec.skipped.get("in_sample") == 1
    again = backtest.run(store, _spec(), T0, T0 + 6 * H)
    assert again["run_id"] == out["run_id"]
    assert store.conn.execute("SELECT count(*) FROM orders").fetchone()[0] == len(e.rec.orders)


def test_altering_stored_candles_and_outputs_after_t_changes_nothing_before_t(store):
    import random

    from trading_platform.paper import backtest

    rng = random.Random(2)
    closes = [100.0]
    for _ in range(99):
        closes.append(closes[-1] * (1 + rng.gauss(0, 0.01)))
    _market(store, closes)
    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                       "('signal_lgbm.BTC_USDT', '1', now() - interval '1 day', 'seed')")
    _outputs(store, "1", {i: rng.random() for i in range(100)})
    cut = T0 + 50 * H
    sp = _spec()

    def before(e):
        return [(o.client_order_id, o.status if o.signal_ts + 2 * H < cut else None) for o in e.rec.orders
                if o.signal_ts < cut], [f for f in e.rec.fills if f[1] < cut]

    a = before(backtest.run(store, sp, T0, T0 + 100 * H, save=False)["engine"])
    _market(store, closes[:50] + [c * 3 for c in closes[50:]])
    _outputs(store, "1", {i: 0.99 for i in range(50, 100)})
    b = before(backtest.run(store, sp, T0, T0 + 100 * H, save=False)["engine"])
    assert a == b and len(a[0]) > 5


@pytest.mark.parametrize("reject_rate", [0.0, 0.3])
def test_a_chain_of_ranges_each_from_the_last_ones_end_state_trades_as_one_run(store, reject_rate):
    """What a month partition of paper_backtest does: each range starts from the state stored at the previous one's
    end. Orders carried over a boundary fill in the next range; the chain's orders, fills and equity equal one
    run's, and running an earlier range again changes nothing the later ones recorded."""
    import random

    from trading_platform.paper import backtest

    rng = random.Random(7)
    closes, opens = [100.0], [100.0]
    for _ in range(119):
        opens.append(closes[-1] * (1 + rng.gauss(0, 0.004)))
        closes.append(opens[-1] * (1 + rng.gauss(0, 0.012)))
    _market(store, closes, opens)
    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                       "('signal_lgbm.BTC_USDT', '1', now() - interval '1 day', 'seed')")
    _outputs(store, "1", {i: rng.random() for i in range(120)})
    sp = parse({"name": "chain", "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}], "cash": 10_000,
                "rules": {"signal": {"model": "signal_lgbm", "min": 0.4}, "time_exit": 7, "stop_loss": 0.01,
                          "take_profit": 0.02},
                "costs": {"fee_bps": 10, "spread_bps": 4}, "reject_rate": reject_rate,
                "risk": {"position_fraction": 0.6, "cooldown_bars": 2, "stop_guard": {"stops": 2, "window": 20,
                                                                                       "lock": 5}}})
    one = backtest.run(store, sp, T0, T0 + 120 * H)
    # cut where an entry was just decided (it fills in the next range), and where a position is open
    decided = sorted(o.signal_ts for o in one["engine"].rec.orders if o.intent == "entry" and o.signal_ts > T0 + 20 * H)
    held = [ts for ts, _, _, exposure in one["engine"].rec.equity if exposure > 0 and ts > decided[0] + 20 * H]
    cuts = [T0, decided[0], held[0], T0 + 120 * H]
    state = parent = None
    carried = 0
    chain = []
    for a, b in zip(cuts, cuts[1:]):
        out = backtest.run(store, sp, a, b, state=state, parent=parent)
        carried += len(out["engine"].pending) + len(out["engine"].positions) if b != cuts[-1] else 0
        state, parent = out["state"], out["run_id"]
        chain.append(out["run_id"])
    assert carried >= 1  # something crossed a boundary: the case this test is for

    def records(run_ids):
        orders = store.conn.execute(
            "SELECT signal_ts, side, intent, quantity, filled, status FROM orders WHERE run_id = ANY(%s) "
            "ORDER BY signal_ts, intent", (run_ids,)).fetchall()
        fills = store.conn.execute(
            "SELECT f.candle_ts, f.price, f.quantity, f.fee FROM fills f WHERE f.run_id = ANY(%s) ORDER BY 1, 2",
            (run_ids,)).fetchall()
        equity = store.conn.execute("SELECT ts, equity FROM paper_equity WHERE run_id = ANY(%s) ORDER BY ts",
                                    (run_ids,)).fetchall()
        events = store.conn.execute("SELECT ts, rule FROM risk_events WHERE run_id = ANY(%s) ORDER BY ts, rule",
                                    (run_ids,)).fetchall()
        return orders, fills, equity, events

    whole = records([one["run_id"]])
    assert len(whole[0]) > 10 and {o[5] for o in whole[0]} >= {"filled"}
    assert records(chain) == whole
    # the middle range again, after the last: the carried orders keep the status the next range gave them
    backtest.run(store, sp, cuts[1], cuts[2], state=backtest.run(store, sp, cuts[0], cuts[1], save=False)["state"],
                 parent=chain[0])
    assert records(chain) == whole


def _series(store, symbol, rows, values, model="signal_lgbm"):
    """``rows``: (ts, open, close); ``values``: ts -> the signal's output; a pooled champion version 1."""
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.models.scoring import Version
    from trading_platform.store.outputs import OutputWriter

    store.add_symbol(SymbolInfo.create(symbol, timeframes=["1h"]), exist_ok=True)
    for ts, o, c in rows:
        store.conn.execute("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES "
                           "(%s, '1h', %s, %s, %s, %s, %s, 1e6)", (symbol, ts, o, max(o, c), min(o, c), c))
    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                       "(%s, '1', now() - interval '1 day', 'seed') ON CONFLICT DO NOTHING", (model,))
    v = Version(model, "1", "champion", {"tp.family": "signal_lgbm"})
    w = OutputWriter(store.conn, [v], "backfill")
    w.add("predictions", [(model, "1", symbol, "1h", ts, values.get(ts, 0.1), "up", "{}", False) for ts, _, _ in rows])
    with store.conn.transaction():
        w.flush()


def test_a_friday_forex_signal_fills_at_mondays_first_open(store):
    from trading_platform.paper import backtest

    friday, monday = datetime(2025, 3, 7, tzinfo=timezone.utc), datetime(2025, 3, 10, tzinfo=timezone.utc)
    rows = [(friday + i * H, 1.08, 1.08) for i in range(21)]            # Friday to its last candle (20:00)
    rows += [(monday + i * H, 1.10 + i * 1e-3, 1.10 + i * 1e-3) for i in range(6)]  # Monday opens higher
    _series(store, "EURUSD=X", rows, {friday + 20 * H: 0.9})
    sp = parse({"name": "fx", "universe": [{"symbol": "EURUSD=X", "timeframe": "1h"}], "cash": 10_000,
                "rules": {"signal": {"model": "signal_lgbm", "min": 0.56}}, "costs": {"spread_bps": 2}})
    e = backtest.run(store, sp, friday, monday + 6 * H, save=False)["engine"]
    (entry,) = [o for o in e.rec.orders if o.intent == "entry"]
    assert entry.signal_ts == friday + 21 * H  # decided at Friday's last close
    (fill,) = [f for f in e.rec.fills if f[0] == entry.client_order_id]
    assert fill[1] == monday and fill[2] == pytest.approx(1.10 * (1 + 1e-4))  # Monday's first open, not 1.08


def test_stocks_trade_whole_shares(store):
    from trading_platform.paper import backtest

    rows = [(T0 + i * H, 150.0, 150.0) for i in range(6)]
    for symbol in ("AAPL", "SOL/USDT"):
        _series(store, symbol, rows, {T0: 0.9})
    quantities = {}
    for symbol in ("AAPL", "SOL/USDT"):
        sp = parse({"name": symbol, "universe": [{"symbol": symbol, "timeframe": "1h"}], "cash": 1000,
                    "rules": {"signal": {"model": "signal_lgbm", "min": 0.56}}})
        e = backtest.run(store, sp, T0, T0 + 6 * H, save=False)["engine"]
        (pos,) = e.positions.values()
        quantities[symbol] = pos.quantity
    assert quantities["AAPL"] == 6  # 1000 / 150 = 6.67: six whole shares
    assert quantities["SOL/USDT"] == pytest.approx(1000 / 150)


def test_a_confirmation_reads_the_forecast_return_and_the_pattern_probability(store):
    """rules.confirm on forecasts: the last step's median over the candle's close; on patterns: the best pattern
    at the candle, 0 where the scan wrote none."""
    from trading_platform.models.scoring import Version
    from trading_platform.paper import backtest
    from trading_platform.store.outputs import OutputWriter

    rows = [(T0 + i * H, 100.0, 100.0) for i in range(12)]
    _series(store, "BTC/USDT", rows, {T0 + i * H: 0.9 for i in range(12)})
    for name in ("nhits", "tcn_patterns"):
        store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                           "(%s, '1', now() - interval '1 day', 'seed')", (name,))
    f = Version("nhits", "1", "champion", {"tp.family": "nhits"})
    p = Version("tcn_patterns", "1", "champion", {"tp.family": "tcn_patterns"})
    w = OutputWriter(store.conn, [f, p], "backfill")
    # a 3 % rise forecast at candle 2 only (step 1 says flat: the horizon's step counts), a falling one at 6
    w.add("forecasts", [("nhits", "1", "BTC/USDT", "1h", T0 + i * H, step,
                         100.0 * (1 + (0.03 if i == 2 else -0.02 if i == 6 else 0.0) * (step == 3)), "{}", False)
                        for i in range(12) for step in (1, 2, 3)])
    w.add("patterns", [("tcn_patterns", "1", "BTC/USDT", "1h", T0 + 8 * H, "double_bottom", 0.8, 20, False),
                       ("tcn_patterns", "1", "BTC/USDT", "1h", T0 + 8 * H, "head_shoulders", 0.6, 20, False)])
    with store.conn.transaction():
        w.flush()

    def entries(confirm):
        sp = parse({"name": "c", "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}], "cash": 1000,
                    "rules": {"signal": {"model": "signal_lgbm", "min": 0.56}, "confirm": confirm, "time_exit": 1}})
        e = backtest.run(store, sp, T0, T0 + 12 * H, save=False)["engine"]
        return [o.signal_ts - H for o in e.rec.orders if o.intent == "entry"]  # the candle decided on

    assert entries({"table": "forecasts", "model": "nhits", "min": 0.02}) == [T0 + 2 * H]
    assert entries({"table": "patterns", "model": "tcn_patterns", "min": 0.7}) == [T0 + 8 * H]
    assert len(entries({"table": "patterns", "model": "tcn_patterns", "max": 0.5})) > 3  # no pattern: 0

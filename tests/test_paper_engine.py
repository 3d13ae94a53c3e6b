"""The paper-trading engine's pure core (trading_platform/paper/): specs, the order state machine, next-open
fills and costs, exits inside a candle's range, the risk rules. Each case fails on the broken rule it names."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from trading_platform.errors import InvalidInput
from trading_platform.paper import risk as risk_rules
from trading_platform.paper.engine import Bar, Engine, Signal
from trading_platform.paper.orders import IllegalTransition, Order, exit_in_range, rejects
from trading_platform.paper.spec import content_hash, parse

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)
H = timedelta(hours=1)
BTC = ("BTC/USDT", "1h")


def spec(**over):
    d = {"name": "s", "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}], "cash": 10_000,
         "rules": {"signal": {"model": "signal_lgbm", "min": 0.56}}}
    d.update(over)
    return parse(d)


def run(sp, candles, enter_at=(), series=BTC):
    """candles: [(open, high, low, close, volume)]; enter_at: candle indexes whose close says enter."""
    e = Engine(sp, "run-1")
    for i, (o, h, lo, c, v) in enumerate(candles):
        dec = {series: Signal(i in enter_at, "" if i in enter_at else "below_threshold")}
        e.step(T0 + i * H, {series: Bar(o, h, lo, c, v, i)}, dec)
    return e


# ---- specs --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, field", [
    ({"colour": "red"}, "colour"),
    ({"rules": {"signal": {"model": "signal_lgbm", "min": 1.2}}}, "rules.signal.min"),
    ({"costs": {"fee_bps": -1}}, "costs.fee_bps"),
    ({"rules": {"signal": {"model": "signal_lgbm", "min": 0.5, "typo": 1}}}, "rules.signal.typo"),
    ({"cash": 0}, "cash"),
    ({"rules": {"regime": {"model": "regime_hmm", "allow": ["moon"]}}}, "rules.regime.allow"),
    ({"universe": [{"symbol": "BTC/USDT", "timeframe": "1M"}]}, "universe[0].timeframe"),
    ({"risk": {"position_fraction": 0.5, "risk_per_trade": 0.01}}, "risk.risk_per_trade"),
    ({"risk": {"stop_guard": {"stops": 2, "window": 10}}}, "risk.stop_guard.lock"),
    ({"risk": {"risk_per_trade": 0.01}}, "risk.risk_per_trade"),  # sized by the stop: needs rules.stop_loss
    ({"rules": {"signal": {"model": "signal_lgbm", "min": 0.7, "max": 0.6}}}, "rules.signal.max"),  # never enters
])
def test_a_bad_spec_names_its_field(bad, field):
    with pytest.raises(InvalidInput) as e:
        spec(**bad)
    assert e.value.field == field


def test_the_version_is_the_content_not_its_spelling():
    a = parse('{"name": "s", "cash": 100, "universe": [{"symbol": "X", "timeframe": "1h"}], "kind": "buy_and_hold"}')
    b = parse("kind: buy_and_hold\nuniverse:\n  - {timeframe: 1h, symbol: X}\ncash: 100\nname: s\n")
    assert a.version == b.version
    assert parse({**a.raw, "cash": 101}).version != a.version
    assert content_hash(a.raw) == a.version


# ---- orders and fills ---------------------------------------------------------------------------------------------
def test_an_illegal_transition_raises():
    o = Order("x", "BTC/USDT", "1h", "buy", 1.0, T0, "entry")
    o.to("accepted")
    o.to("filled")
    with pytest.raises(IllegalTransition):
        o.to("cancelled")
    with pytest.raises(IllegalTransition):
        Order("y", "BTC/USDT", "1h", "buy", 1.0, T0, "entry").to("filled")  # never accepted


def test_a_buy_decided_at_close_100_fills_at_the_next_open_110_plus_costs_never_at_100():
    sp = spec(costs={"fee_bps": 10, "spread_bps": 20, "slippage_bps": 5})
    e = run(sp, [(100, 100, 100, 100, 1e6), (110, 111, 109, 110, 1e6)], enter_at={0})
    (_, ts, price, qty, fee), = e.rec.fills
    assert ts == T0 + H and price == pytest.approx(110 * (1 + 15e-4))
    assert fee == pytest.approx(qty * price * 10e-4)
    assert e.cash == pytest.approx(10_000 - qty * price - fee)


def test_an_order_on_the_last_candle_stays_accepted():
    e = run(spec(), [(100, 100, 100, 100, 1e6)] * 3, enter_at={2})
    assert [o.status for o in e.rec.orders] == ["accepted"] and e.rec.fills == []


def test_latency_bars_delay_the_fill():
    e = run(spec(latency_bars=2), [(100 + i, 100 + i, 100 + i, 100 + i, 1e6) for i in range(5)], enter_at={0})
    assert [f[1] for f in e.rec.fills] == [T0 + 3 * H]


def test_an_open_through_the_stop_exits_at_the_open_and_both_inside_a_candle_take_the_stop():
    assert exit_in_range(90, 95, 85, stop=95, target=110) == ("stop_loss", 90)
    assert exit_in_range(100, 112, 94, stop=95, target=110) == ("stop_loss", 95)
    assert exit_in_range(100, 112, 99, stop=95, target=110) == ("take_profit", 110)
    sp = spec(rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.05})
    e = run(sp, [(100, 100, 100, 100, 1e6), (100, 101, 99, 100, 1e6), (80, 82, 79, 81, 1e6)], enter_at={0})
    (trade,) = e.rec.trades
    assert trade["exit_reason"] == "stop_loss" and trade["exit_price"] == pytest.approx(80)


def test_a_participation_cap_fills_partially_over_the_next_candles():
    sp = spec(costs={"participation": 0.1})
    e = run(sp, [(100, 100, 100, 100, 50.0)] * 5, enter_at={0})  # wants 100 units, 5 a candle
    statuses = [ev[3] for ev in e.rec.order_events]
    assert statuses[:3] == ["accepted", "partially_filled", "partially_filled"]
    assert all(f[3] <= 5.0 + 1e-9 for f in e.rec.fills)


def test_the_reject_rate_is_reproducible_by_order_id():
    ids = [f"order-{i}" for i in range(2000)]
    first = [rejects(i, 0.05) for i in ids]
    assert first == [rejects(i, 0.05) for i in ids]
    assert 60 <= sum(first) <= 140


def test_a_time_exit_fills_at_the_open_after_the_holding_time():
    sp = spec(rules={"signal": {"model": "m", "min": 0.5}, "time_exit": 3})
    e = run(sp, [(100 + i, 100 + i, 100 + i, 100 + i, 1e6) for i in range(8)], enter_at={0})
    (trade,) = e.rec.trades
    assert trade["entry_ts"] == T0 + H and trade["exit_reason"] == "time_exit"
    assert trade["exit_ts"] == T0 + 4 * H  # held through candles 1, 2, 3; decided at 3's close; filled at 4's open
    assert trade["exit_price"] == pytest.approx(104) and trade["bars_held"] == 3


# ---- risk ---------------------------------------------------------------------------------------------------------
def test_over_random_signals_no_cap_is_ever_exceeded():
    rng = random.Random(7)
    uni = [{"symbol": s, "timeframe": "1h"} for s in ("A/USDT", "B/USDT", "C/USDT", "D/USDT")]
    sp = spec(universe=uni, risk={"position_fraction": 0.6, "max_symbol_fraction": 0.4, "max_total_fraction": 0.9,
                                  "max_positions": 3},
              rules={"signal": {"model": "m", "min": 0.5}, "time_exit": 5})
    e = Engine(sp, "r")
    price = {u["symbol"]: 100.0 for u in uni}
    closes = {}
    for i in range(400):
        bars, dec = {}, {}
        t = T0 + i * H
        for u in uni:
            p = price[u["symbol"]] = price[u["symbol"]] * (1 + rng.gauss(0, 0.01))
            s = (u["symbol"], "1h")
            bars[s] = Bar(p * (1 + rng.gauss(0, 0.003)), p * 1.01, p * 0.99, p, 1e9, i)
            dec[s] = Signal(rng.random() < 0.3)
            closes[(u["symbol"], t)] = p
        e.step(t, bars, dec)
        equity = e.rec.equity[-1][1]
        entries = [o for o in e.rec.orders if o.intent == "entry" and o.signal_ts == t]
        notional = [o.quantity * closes[(o.symbol, t)] for o in entries]
        assert all(n <= 0.4 * equity * (1 + 1e-9) for n in notional)            # per symbol
        assert len(set(e.book.exposure) | set(e.book.pending)) <= 3              # max positions, entries included
        if entries:  # at this close, held and being entered together
            held = sum(e.book.exposure.values()) + sum(e.book.pending.values()) / (1 + e.cost_fraction)
            assert held <= 0.9 * equity * (1 + 1e-9)
        assert e.cash >= -1e-6                                                   # no leverage: never below 0
    rules = {ev[3] for ev in e.rec.risk_events}
    assert {"max_symbol_fraction", "max_positions"} <= rules


def test_daily_loss_limit_blocks_entries_until_the_next_utc_day():
    sp = spec(risk={"daily_loss_limit": 0.02}, rules={"signal": {"model": "m", "min": 0.5}, "time_exit": 1})
    e = Engine(sp, "r")
    p = 100.0
    rows = []
    for i in range(48):
        t = T0 + i * H
        if i == 2:
            p = 90.0  # a 10 % drop while invested
        e.step(t, {BTC: Bar(p, p, p, p, 1e9, i)}, {BTC: Signal(True)})
        rows.append(t)
    refused = [ev for ev in e.rec.risk_events if ev[3] == "daily_loss_limit"]
    assert refused and all(ev[0].date() == T0.date() for ev in refused)
    assert any(o.signal_ts.date() > T0.date() and o.intent == "entry" for o in e.rec.orders)


def test_cooldown_after_an_exit_and_the_stop_guard_lock():
    sp = spec(risk={"cooldown_bars": 3}, rules={"signal": {"model": "m", "min": 0.5}, "time_exit": 1})
    e = run(sp, [(100, 100, 100, 100, 1e6)] * 12, enter_at=set(range(12)))
    entries = [o for o in e.rec.orders if o.intent == "entry"]
    gaps = [(b.signal_ts - a.signal_ts) / H for a, b in zip(entries, entries[1:])]
    assert gaps and min(gaps) > 3
    assert "cooldown" in {ev[3] for ev in e.rec.risk_events}
    guard = {"stops": 2, "window": 10, "lock": 5}
    sp = spec(risk={"stop_guard": guard}, rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.01})
    falling = [(100 - 2 * i, 100 - 2 * i, 97 - 2 * i, 98 - 2 * i, 1e6) for i in range(20)]
    e = run(sp, falling, enter_at=set(range(20)))
    locks = [ev for ev in e.rec.risk_events if ev[3] == "stop_guard"]
    assert locks, "two stop-outs within 10 candles lock entries"
    assert sum(1 for t in e.rec.trades if t["exit_reason"] == "stop_loss") >= 2


def test_whole_shares_for_a_lot_of_one():
    sp = spec(risk={"position_fraction": 0.5, "lot": 1})
    d = risk_rules.entry(sp, risk_rules.Book(cash=1000, equity=1000, peak=1000), BTC, 333.0, 0)
    assert d.quantity == 1.0
    d = risk_rules.entry(sp, risk_rules.Book(cash=100, equity=100, peak=100), BTC, 333.0, 0)
    assert d.rejected and d.events[-1][0] in ("lot", "size")


# ---- rules on outputs ---------------------------------------------------------------------------------------------
def test_rules_enter_only_when_every_rule_agrees_and_count_why_not():
    from trading_platform.paper.rules import Output, decide

    sp = spec(rules={"signal": {"model": "signal_lgbm", "min": 0.56}, "regime": {"model": "regime_hmm",
                     "allow": ["bull", "sideways"]}, "pump_veto": {"model": "pump_xgb", "threshold": 0.7}})
    ok = {"signal": Output(0.6), "regime": Output(0.8, "bull"), "pump_veto": Output(0.1, "none")}
    assert decide(sp, ok).enter and decide(sp, ok).risk_score == 0.6
    assert decide(sp, {**ok, "signal": Output(0.55)}).reason == "below_threshold"
    assert decide(sp, {**ok, "regime": Output(0.9, "bear")}).reason == "regime"
    assert decide(sp, {**ok, "pump_veto": Output(0.7, "pump")}).reason == "pump_veto"
    assert decide(sp, {**ok, "signal": Output(float("nan"))}).reason == "missing_output"
    assert decide(sp, {k: v for k, v in ok.items() if k != "regime"}).reason == "missing_output"
    assert decide(sp, {**ok, "signal": Output(0.9, in_sample=True)}).reason == "in_sample"
    allowed = parse({**sp.raw, "allow_in_sample": True})
    assert decide(allowed, {**ok, "signal": Output(0.9, in_sample=True)}).enter


def test_missing_outputs_place_no_order_and_are_counted():
    from trading_platform.paper.rules import Output, decide

    sp = spec()
    e = Engine(sp, "r")
    for i in range(5):
        sig = decide(sp, {"signal": Output(None if i < 4 else 0.9)})
        e.step(T0 + i * H, {BTC: Bar(100, 100, 100, 100, 1e6, i)}, {BTC: sig})
    assert e.rec.skipped == {"missing_output": 4} and len(e.rec.orders) == 1


# ---- statistics -----------------------------------------------------------------------------------------------------
def test_statistics_match_a_hand_computed_ten_candle_curve():
    import math

    from trading_platform.paper.stats import periods_per_year, summary

    eq = [100, 102, 101, 105, 103, 99, 104, 108, 107, 110]
    trades = [{"pnl": 5.0, "pnl_pct": 0.05}, {"pnl": -2.0, "pnl_pct": -0.02}, {"pnl": 7.0, "pnl_pct": 0.07}]
    s = summary(eq, trades, ppy=8760, fees=1.5)
    rets = [eq[i + 1] / eq[i] - 1 for i in range(9)]
    mean = sum(rets) / 9
    sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / 8)
    down = math.sqrt(sum(min(r, 0) ** 2 for r in rets) / 9)
    assert s["total_return"] == pytest.approx(0.10)
    assert s["sharpe"] == pytest.approx(mean / sd * math.sqrt(8760))
    assert s["sortino"] == pytest.approx(mean / down * math.sqrt(8760))
    assert s["max_drawdown"] == pytest.approx(1 - 99 / 105)   # the peak 105, the trough 99 after it
    assert s["hit_rate"] == pytest.approx(2 / 3) and s["profit_factor"] == pytest.approx(12 / 2)
    r = [0.05, -0.02, 0.07]
    m = sum(r) / 3
    assert s["sqn"] == pytest.approx(math.sqrt(3) * m / math.sqrt(sum((x - m) ** 2 for x in r) / 2))
    # the candles a year really has: 24/7 crypto, forex weekdays, a stock's sessions
    crypto = periods_per_year([("crypto", None, 3600)])
    forex = periods_per_year([("forex", None, 3600)])
    stock = periods_per_year([("stock", "NASDAQ", 3600)])
    assert crypto == 366 * 24 and 6000 < forex < 6400 and 1500 < stock < 2000
    assert periods_per_year([("crypto", None, 3600), ("forex", None, 3600)]) == crypto  # the union


def test_risk_per_trade_sizes_by_the_stops_distance_within_the_caps():
    sp = spec(risk={"risk_per_trade": 0.01, "max_symbol_fraction": 0.4},
              rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.05})
    d = risk_rules.entry(sp, risk_rules.Book(cash=10_000, equity=10_000, peak=10_000), BTC, 100.0, 0)
    assert d.quantity == pytest.approx(0.01 * 10_000 / 0.05 / 100.0) and d.events == ()  # 2,000 at risk 100
    sp = spec(risk={"risk_per_trade": 0.03, "max_symbol_fraction": 0.4},
              rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.05})
    d = risk_rules.entry(sp, risk_rules.Book(cash=10_000, equity=10_000, peak=10_000), BTC, 100.0, 0)
    assert d.quantity == pytest.approx(40.0) and d.events[0][0] == "max_symbol_fraction"  # 6,000 capped at 4,000


def test_altering_the_future_changes_nothing_before_it():
    rng = random.Random(3)
    sp = spec(rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.02, "take_profit": 0.03, "time_exit": 6},
              costs={"fee_bps": 5, "spread_bps": 2, "participation": 0.5}, risk={"position_fraction": 0.5,
                                                                                 "cooldown_bars": 1})
    p, candles, enter = 100.0, [], set()
    for i in range(300):
        o = p * (1 + rng.gauss(0, 0.002))
        c = o * (1 + rng.gauss(0, 0.01))
        candles.append((o, max(o, c) * 1.004, min(o, c) * 0.996, c, rng.uniform(50, 500)))
        p = c
        if rng.random() < 0.2:
            enter.add(i)
    cut = 150
    altered = candles[:cut] + [(x[0] * 1.3, x[1] * 1.5, x[2] * 0.6, x[3] * 0.7, x[4] * 0.1) for x in candles[cut:]]
    a = run(sp, candles, enter_at=enter)
    b = run(sp, altered, enter_at=enter - set(range(cut, 300)) | {i for i in range(cut, 300) if i % 3 == 0})
    t_cut = T0 + cut * H

    def before(e):
        return ([(o.client_order_id, o.quantity) for o in e.rec.orders if o.signal_ts < t_cut],
                [f for f in e.rec.fills if f[1] < t_cut], [x for x in e.rec.equity if x[0] < t_cut],
                [x for x in e.rec.risk_events if x[0] < t_cut])

    assert before(a) == before(b) and len(before(a)[0]) > 10
    assert [f for f in a.rec.fills if f[1] >= t_cut] != [f for f in b.rec.fills if f[1] >= t_cut]


# ---- controls -------------------------------------------------------------------------------------------------------
def _market(rng, n, phi=0.0, sd=0.01):
    """Candles whose log returns are AR(1) with coefficient ``phi`` (0: a random walk); open = previous close."""
    import numpy as np

    r = np.zeros(n)
    eps = rng.normal(0, sd, n)
    for i in range(1, n):
        r[i] = phi * r[i - 1] + eps[i]
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    ts = [T0 + i * H for i in range(n)]
    from trading_platform.paper.controls import bars_from_arrays

    return {BTC: bars_from_arrays(BTC, ts, open_, high, low, close, np.full(n, 1e9))}, r


def test_random_entry_does_not_beat_exposure_matched_buy_and_hold_on_random_walks():
    import numpy as np

    from trading_platform.paper import controls

    sp = spec(costs={"fee_bps": 5, "spread_bps": 2}, risk={"position_fraction": 0.5})
    rng = np.random.default_rng(11)
    beats = 0
    for m in range(8):
        candles, _ = _market(rng, 1500)
        trades = [(BTC, int(rng.integers(5, 20))) for _ in range(30)]
        sched = controls.random_schedule(controls.lengths_of(candles), trades, seed=[m, 0])
        rand = controls.run_schedule(controls.random_entry(sp), candles, sched, f"r{m}")
        bh = controls.buy_and_hold_at(sp, candles, controls.mean_exposure(rand), f"b{m}")
        assert abs(controls.mean_exposure(bh) - controls.mean_exposure(rand)) < 0.02  # like for like
        beats += controls.compare(controls.equity_curve(rand), controls.equity_curve(bh), n_boot=500)["beats"]
    assert beats <= 1


def test_a_planted_edge_is_detected_against_random_entry():
    import numpy as np

    from trading_platform.paper import controls

    sp = spec(rules={"signal": {"model": "m", "min": 0.5}, "time_exit": 1}, risk={"position_fraction": 1.0})
    rng = np.random.default_rng(5)
    detected = 0
    for m in range(4):
        candles, r = _market(rng, 3000, phi=0.15)
        e = Engine(sp, f"s{m}")
        for i, (t, bar) in enumerate(candles[BTC]):  # the rule on the previous return, known at this close
            e.step(t, {BTC: bar}, {BTC: Signal(bool(r[i] > 0))})
        strat = controls.equity_curve(e)
        reps = []
        for k in range(20):
            sched = controls.random_schedule(controls.lengths_of(candles), controls.trades_of(e), seed=[m, k])
            reps.append(controls.equity_curve(controls.run_schedule(controls.random_entry(sp), candles, sched, "x")))
        got = controls.compare(strat, np.array(reps), n_boot=500)
        detected += got["beats"]
        assert got["percentile"] is not None
    assert detected >= 3


# ---- the review's cases: partial fills, rejected exits, round trips, breakers, locks, expiry ------------------------
def test_a_partly_filled_entry_is_cancelled_when_the_stop_hits_and_the_round_trip_is_one_trade():
    sp = spec(rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.05}, costs={"participation": 0.1})
    candles = [(100, 100, 100, 100, 100.0), (100, 101, 99, 100, 100.0), (100, 100, 90, 91, 100.0),
               (91, 91, 91, 91, 100.0)]
    e = run(sp, candles, enter_at={0})
    entry = [o for o in e.rec.orders if o.intent == "entry"][0]
    # 10 a candle: 10 at candle 1's open, 10 at candle 2's, then the stop inside candle 2: the rest is cancelled
    assert entry.status == "cancelled" and entry.filled == pytest.approx(20.0) and entry.quantity == 100.0
    (trade,) = e.rec.trades
    assert trade["quantity"] == pytest.approx(20.0) and trade["exit_reason"] == "stop_loss"
    assert e.cash == pytest.approx(10_000 + trade["pnl"])
    assert all(o.status in ("filled", "cancelled", "rejected", "expired") for o in e.rec.orders)


def test_an_exit_split_by_the_cap_is_one_trade_and_the_pnl_adds_up_to_the_cash():
    sp = spec(rules={"signal": {"model": "m", "min": 0.5}, "time_exit": 2}, costs={"participation": 0.5,
                                                                                    "fee_bps": 10})
    candles = [(100, 100, 100, 100, 1e9), (100, 100, 100, 100, 1e9), (101, 101, 101, 101, 1e9)] + \
        [(103, 103, 103, 103, 60.0)] * 7  # the exit (decided at candle 2's close) meets 30 units a candle
    e = run(sp, candles, enter_at={0})
    assert len(e.rec.trades) == 1 and not e.positions
    sells = [f for f in e.rec.fills if f[0] != e.rec.orders[0].client_order_id]
    assert len(sells) >= 2  # the exit took several candles
    assert e.cash - 10_000 == pytest.approx(e.rec.trades[0]["pnl"])


def test_a_rejected_time_exit_is_decided_again_at_the_next_close():
    sp = spec(rules={"signal": {"model": "m", "min": 0.5}, "time_exit": 1}, reject_rate=0.6)
    e = run(sp, [(100, 100, 100, 100, 1e9)] * 400, enter_at=set(range(0, 400, 20)))
    exits = [o for o in e.rec.orders if o.intent == "exit:time_exit"]
    assert any(o.status == "rejected" for o in exits) and any(o.status == "filled" for o in exits)
    # every position left within a few candles of its time exit, rejections or not
    assert all(t["bars_held"] <= 12 for t in e.rec.trades) and len(e.rec.trades) >= 3


def test_the_day_loss_limit_trips_at_the_close_and_stays_tripped_when_equity_recovers():
    sp = spec(risk={"daily_loss_limit": 0.02, "position_fraction": 1.0},
              rules={"signal": {"model": "m", "min": 0.5}})
    e = Engine(sp, "r")
    prices = [100, 100, 95, 99, 101, 101]  # entered at 100; the 95 close trips the limit; equity recovers later
    for i, p in enumerate(prices):
        e.step(T0 + i * H, {BTC: Bar(p, p, p, p, 1e9, i)}, {BTC: Signal(i == 0)})
    e.exit(BTC, T0 + 5 * H, Bar(101, 101, 101, 101, 1e9, 5), "manual")
    for i in range(6, 12):  # flat again, same UTC day, signals every close: refused all day
        e.step(T0 + i * H, {BTC: Bar(101, 101, 101, 101, 1e9, i)}, {BTC: Signal(True)})
    trips = [ev for ev in e.rec.risk_events if ev[3] == "daily_loss_limit"]
    assert trips[0][0] == T0 + 2 * H  # at the close that crossed it, no entry being tried
    assert [o for o in e.rec.orders if o.intent == "entry" and o.signal_ts.hour >= 6] == []


def test_the_stop_guard_refuses_entries_for_exactly_k_candles():
    sp = spec(risk={"stop_guard": {"stops": 1, "window": 5, "lock": 3}},
              rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.05})
    candles = [(100, 100, 100, 100, 1e9), (100, 100, 90, 91, 1e9)] + [(91, 91, 91, 91, 1e9)] * 8
    e = run(sp, candles, enter_at=set(range(0, 10)))
    refused = sorted({ev[0] for ev in e.rec.risk_events if ev[3] == "stop_guard" and ev[1] != "*"})
    entries = sorted(o.signal_ts for o in e.rec.orders if o.intent == "entry")
    stopped_at = T0 + 1 * H
    # 3 decisions refused: the stop candle's close and the next two; the third candle after it enters
    assert refused == [stopped_at + k * H for k in (0, 1, 2)]
    assert stopped_at + 3 * H in entries


def test_an_order_the_cap_can_never_fill_expires_and_frees_its_series():
    sp = spec(risk={"position_fraction": 0.5, "lot": 10}, costs={"participation": 0.01})
    e = run(sp, [(100, 100, 100, 100, 100.0)] * 30, enter_at={0, 15})  # 1 unit a candle, lots of 10
    statuses = [o.status for o in e.rec.orders if o.intent == "entry"]
    assert statuses[0] == "expired" and len(statuses) == 2


def test_invariants_over_a_random_run_with_caps_rejects_stops_and_partial_fills():
    rng = random.Random(17)
    uni = [{"symbol": s, "timeframe": "1h"} for s in ("A/USDT", "B/USDT")]
    sp = spec(universe=uni, reject_rate=0.1,
              rules={"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.02, "take_profit": 0.03, "time_exit": 4},
              costs={"fee_bps": 7, "spread_bps": 3, "slippage_bps": 1, "impact": 0.05, "participation": 0.2},
              risk={"position_fraction": 0.45, "cooldown_bars": 1, "lot": 0.5})
    e = Engine(sp, "inv")
    price = {u["symbol"]: 100.0 for u in uni}
    n = 600
    for i in range(n):
        bars, dec = {}, {}
        for u in uni:
            o = price[u["symbol"]]
            c = o * (1 + rng.gauss(0, 0.01))
            price[u["symbol"]] = c
            s = (u["symbol"], "1h")
            bars[s] = Bar(o, max(o, c) * 1.003, min(o, c) * 0.997, c, rng.uniform(20, 400), i)
            dec[s] = Signal(i < n - 40 and rng.random() < 0.15)
        e.step(T0 + i * H, bars, dec)
        assert e.cash >= -1e-6
        for s, o in e.pending.items():
            assert o.status in ("accepted", "partially_filled") and (o.symbol, o.timeframe) == s
    pending = {id(o) for o in e.pending.values()}
    assert all(o.status in ("filled", "rejected", "cancelled", "expired") or id(o) in pending for o in e.rec.orders)
    assert not e.positions and not e.pending  # the last 40 candles enter nothing: everything left
    assert e.cash - sp.cash == pytest.approx(sum(t["pnl"] for t in e.rec.trades), rel=1e-9, abs=1e-6)
    bought = sum(f[3] for f in e.rec.fills if f[0] in {o.client_order_id for o in e.rec.orders if o.side == "buy"})
    assert bought == pytest.approx(sum(t["quantity"] for t in e.rec.trades))  # every unit bought was sold once
    reasons = {t["exit_reason"] for t in e.rec.trades}
    statuses = {o.status for o in e.rec.orders}
    assert {"stop_loss", "time_exit"} <= reasons and {"rejected", "filled"} <= statuses


def test_lots_round_to_whole_lots_at_the_entry_and_at_the_fill():
    """5 lots of 0.1 are 0.5, not 4 (float 0.5 // 0.1 is 4.0): the order fills whole, nothing left hanging."""
    sp = spec(risk={"position_fraction": 0.005, "lot": 0.1})  # 50 at 100: 0.5
    e = run(sp, [(100, 101, 99, 100, 1e6), (100, 101, 99, 100, 1e6), (100, 101, 99, 100, 1e6)], enter_at={0})
    (o,) = e.rec.orders
    assert o.quantity == pytest.approx(0.5) and o.status == "filled" and o.filled == pytest.approx(0.5)
    assert not e.pending


def test_the_buy_and_hold_control_invests_whatever_the_strategys_reject_rate():
    import numpy as np

    from trading_platform.paper import controls

    sp = spec(reject_rate=0.9)
    candles, _ = _market(np.random.default_rng(1), 200)
    bh = controls.run_schedule(controls.buy_and_hold(sp), candles, {BTC: {0: 200}}, "bh")
    assert controls.mean_exposure(bh) > 0.9  # one rejected first order would have left it in cash


def test_random_entry_places_every_holding_that_fits_even_when_invested_most_of_the_time():
    import numpy as np

    from trading_platform.paper import controls

    trades = [(BTC, 12)] * 60  # 60 x (12 + 2) = 840 of 1000 candles
    for seed in range(5):
        sched = controls.random_schedule({BTC: 1000}, trades, seed=[seed])[BTC]
        assert len(sched) == 60
        spans = sorted((i, i + h + 2) for i, h in sched.items())
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= 1000
    # the positions still open at the end are holdings too
    sp = spec(rules={"signal": {"model": "m", "min": 0.5}})
    e = run(sp, [(100, 101, 99, 100, 1e6)] * 10, enter_at={2})
    assert controls.trades_of(e) == [(BTC, 7)]


@pytest.mark.parametrize("over", [
    {"costs": {"fee_bps": 10, "spread_bps": 4, "slippage_bps": 1, "impact": 0.2}, "rules": {"stop_loss": 0.01,
                                                                                            "take_profit": 0.015}},
    {"costs": {"fee_bps": 5}, "risk": {"position_fraction": 0.45, "max_positions": 2, "cooldown_bars": 3,
                                       "daily_loss_limit": 0.004, "max_drawdown": 0.03, "max_symbol_fraction": 0.6},
     "rules": {"stop_loss": 0.008}, "latency_bars": 1},
    {"costs": {"spread_bps": 10}, "risk": {"risk_per_trade": 0.004, "lot": 0.5, "max_total_fraction": 0.9},
     "rules": {"stop_loss": 0.01}},
    {"costs": {"fee_bps": 10}, "risk": {"position_fraction": 0.55, "lot": 0.1}, "rules": {"take_profit": 0.01}},
])
def test_the_vectorized_replicates_are_the_engine_to_rounding(over):
    """Random entry's replicates all at once (paper/vectorized.py) against each one through Engine.step, on a
    three-series portfolio (two symbols share a quote; one series misses candles): the same equity at every step."""
    import numpy as np

    from trading_platform.paper import controls, vectorized

    rng = np.random.default_rng(3)
    universe = [{"symbol": "BTC/USDT", "timeframe": "1h"}, {"symbol": "ETH/USDT", "timeframe": "1h"},
                {"symbol": "SOL/USDT", "timeframe": "1h"}]
    sp = parse({"name": "v", "universe": universe, "cash": 10_000, "kind": "random_entry", **over})
    candles = {}
    for k, u in enumerate(universe):
        c, _ = _market(rng, 600, sd=0.008)
        rows = c[BTC]
        if k == 2:  # a series with a gap: steps where it has no candle
            rows = [(t, b) for t, b in rows if not 200 <= b.index < 230]
            rows = [(t, Bar(b.open, b.high, b.low, b.close, b.volume, i)) for i, (t, b) in enumerate(rows)]
        candles[(u["symbol"], u["timeframe"])] = rows
    trades = [(s, int(rng.integers(2, 15))) for s in candles for _ in range(25)]
    lengths = controls.lengths_of(candles)
    scheds = [controls.random_schedule(lengths, trades, seed=[r]) for r in range(6)]
    fast = vectorized.replicate_equity(sp, candles, scheds)
    for r, sched in enumerate(scheds):
        e = controls.run_schedule(sp, candles, sched, f"r{r}")
        slow = controls.equity_curve(e)
        assert len(e.rec.trades) > 10
        assert np.max(np.abs(fast[r] - slow) / slow) <= 1e-9, r

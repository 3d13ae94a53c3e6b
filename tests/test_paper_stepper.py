"""paper/stepper.py: candles arriving series by series, interleaved at random, late or twice, give the engine the
steps the backtest gives it: the same orders, fills and equity (the live driver's parity rests on this)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np

from trading_platform.paper.engine import Bar, Engine, Signal
from trading_platform.paper.spec import parse
from trading_platform.paper.stepper import Stepper

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)
H = timedelta(hours=1)
UNIVERSE = [("BTC/USDT", "1h"), ("ETH/USDT", "1h"), ("SOL/USDT", "1h")]
SPEC = parse({"name": "p", "universe": [{"symbol": s, "timeframe": tf} for s, tf in UNIVERSE], "cash": 10_000,
              "rules": {"signal": {"model": "m", "min": 0.5}, "stop_loss": 0.01, "time_exit": 5},
              "costs": {"fee_bps": 10, "spread_bps": 4},
              "risk": {"position_fraction": 0.5, "max_positions": 2, "cooldown_bars": 1}})


def _candles(n=300, seed=1):
    """series -> [(close time, Bar, decision)] in order; SOL misses candles 100-119 (a gap)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, series in enumerate(UNIVERSE):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        open_ = np.concatenate([[100.0], close[:-1]])
        rows, i = [], 0
        for j in range(n):
            if k == 2 and 100 <= j < 120:
                continue
            bar = Bar(open_[j], max(open_[j], close[j]) * 1.002, min(open_[j], close[j]) * 0.998, close[j], 1e6, i,
                      T0 + j * H)
            rows.append((T0 + (j + 1) * H, bar, Signal(bool(rng.random() < 0.3))))
            i += 1
        out[series] = rows
    return out


def _run(feed, expects=None):
    e = Engine(SPEC, "run")
    st = Stepper(UNIVERSE, expects)
    for series, close, bar, decision in feed:
        for t, bars, decisions in st.add(series, close, bar, decision):
            e.step(t, bars, decisions)
    for t, bars, decisions in st.flush():
        e.step(t, bars, decisions)
    return e, st


def _records(e):
    return ([(o.client_order_id, o.status, o.quantity, o.filled) for o in e.rec.orders], e.rec.fills, e.rec.equity,
            e.rec.risk_events)


def test_any_interleaving_with_replays_steps_as_the_backtest():
    candles = _candles()
    in_order = sorted(((close, s, bar, d) for s, rows in candles.items() for close, bar, d in rows),
                      key=lambda r: (r[0], UNIVERSE.index(r[1])))
    backtest, _ = _run([(s, c, b, d) for c, s, b, d in in_order])
    assert len(backtest.rec.orders) > 20 and backtest.rec.trades
    for seed in range(5):
        rng = random.Random(seed)
        queues = {s: list(rows) for s, rows in candles.items()}
        feed, sent = [], []
        while any(queues.values()):
            s = rng.choice([s for s, q in queues.items() if q])
            close, bar, d = queues[s].pop(0)
            feed.append((s, close, bar, d))
            sent.append((s, close, bar, d))
            if rng.random() < 0.1:  # an event delivered again, now or later
                feed.append(rng.choice(sent))
        live, st = _run(feed)
        assert st.duplicates > 0
        assert _records(live) == _records(backtest), seed


def test_a_gap_holds_the_step_until_the_series_next_candle_or_the_calendar_says_so():
    bar = Bar(100, 101, 99, 100, 1e6, 0)
    st = Stepper(UNIVERSE[:2])
    assert st.add(UNIVERSE[0], T0 + H, bar) == []  # ETH's candle of that hour has not come
    assert st.add(UNIVERSE[0], T0 + 2 * H, bar) == []
    (t1, bars1, _), (t2, bars2, _) = st.add(UNIVERSE[1], T0 + 2 * H, bar)  # ETH's next: it had none at T0 + H
    assert (t1, list(bars1)) == (T0 + H, [UNIVERSE[0]]) and (t2, list(bars2)) == (T0 + 2 * H, UNIVERSE[:2])
    assert st.add(UNIVERSE[0], T0 + H, bar) == [] and st.duplicates == 1  # a replay of a stepped candle

    closed = Stepper(UNIVERSE[:2], expects=lambda s, t: s != UNIVERSE[1])  # ETH's market closed
    ((t, bars, _),) = closed.add(UNIVERSE[0], T0 + H, bar)
    assert t == T0 + H and list(bars) == [UNIVERSE[0]]

"""Paper trading's records in PostgreSQL (migration 18, store/paper.py): a run keyed by what decides it, saved
again without a second copy of anything."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

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

"""The live driver: the engine stepped by the live outbox, as the backtest steps it.

A live run is a ``paper_runs`` row of mode ``live``: the strategy's version, the versions pinned at its start
(today's champions), the engine's state and ``stepped_to``, the last close time it stepped. While a live run is
running, the outbox has a ``paper`` consumer (``live_consumers``): every live candle's event gets a ``paper`` queue
row next to the ``predictions`` one. ``process`` takes the ``paper`` rows whose ``predictions`` row is done (the
candle's outputs are committed: it never acts before them) and, for each running live run whose universe holds
one of their series, rebuilds what is new since ``stepped_to`` from the store: the candles of the universe whose
outputs are committed, fed in close order through the same ``Stepper`` the backtest uses, so the engine gets the
backtest's steps. The records (appended), the state, ``stepped_to`` and the events' done marks are written in one
transaction. An event is only a wake-up: one delivered twice finds nothing new and places nothing.

The step runs in the live prediction run, after its batch committed (``sensors/live.py``: ``_paper_step``); paper
events left pending with no live run in flight (a paper step that failed, an event delivered again, the last
candles of a feed) get a paper-only run of the live job from the sensor (``_paper_catchup``). Stopping the last
live run removes the ``paper`` consumer (and its queue rows), so the outbox keeps pruning.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from ..errors import InvalidInput
from .spec import Spec

CONSUMER = "paper"


def register(conn) -> None:
    conn.execute("INSERT INTO live_consumers (consumer) VALUES (%s) ON CONFLICT DO NOTHING", (CONSUMER,))


def unregister_if_idle(conn) -> bool:
    """Remove the ``paper`` consumer when no live run is running (its queue rows go with it). True if removed."""
    running = conn.execute("SELECT 1 FROM paper_runs WHERE mode = 'live' AND status = 'running' LIMIT 1").fetchone()
    if running:
        return False
    return conn.execute("DELETE FROM live_consumers WHERE consumer = %s", (CONSUMER,)).rowcount > 0


def _last_close(conn, spec: Spec):
    from ..core.timeframes import seconds

    last = None
    for symbol, tf in spec.universe:
        ts = conn.execute("SELECT max(ts) FROM ohlcv WHERE symbol = %s AND timeframe = %s", (symbol, tf)).fetchone()[0]
        if ts is not None:
            close = ts + timedelta(seconds=seconds(tf))
            last = close if last is None or close > last else last
    return last


def start(store, spec: Spec, *, cash: float | None = None, pins: dict | None = None, now=None,
          fresh: bool = False) -> dict:
    """Open a live run of ``spec`` (today's champions pinned unless ``pins``), stepping from the candles that close
    after the newest one stored now. One running live run per strategy name. A strategy stopped before resumes
    where its last live run of the same version stopped (its cash, positions, open orders and risk book; the
    candles that closed while it was stopped are not traded) unless ``fresh`` or ``cash`` is given."""
    from ..store import paper as paper_store
    from . import backtest
    from .engine import Engine

    conn = store.conn
    if cash is not None:
        from .spec import cash_value

        spec = replace(spec, cash=cash_value(cash, "--cash"))  # the spec's rule: finite, above 0, at most 1e15
    with conn.transaction():
        if conn.execute("SELECT 1 FROM paper_runs WHERE mode = 'live' AND status = 'running' AND strategy_name = %s",
                        (spec.name,)).fetchone():
            raise InvalidInput(f"{spec.name} is already running live (tp paper stop {spec.name} first)",
                               field="strategy")
        models = backtest.resolve_models(conn, spec, live=True) if spec.kind == "rules" else {}
        pins = dict(pins) if pins else backtest.champion_pins(conn, models.values())
        now = now or datetime.now(timezone.utc)
        prev = None if fresh or cash is not None else conn.execute(
            "SELECT run_id, state, cash FROM paper_runs WHERE mode = 'live' AND status = 'done' AND strategy_name = %s "
            "AND strategy_version = %s ORDER BY range_end DESC LIMIT 1", (spec.name, spec.version)).fetchone()
        parent = prev[0] if prev else None
        run_id = paper_store.run_key(spec.version, now, None, pins, mode="live", parent=parent)
        lots = backtest.series_lots(store, spec)
        if prev:
            spec = replace(spec, cash=float(prev[2]))
            e, next_index = Engine.resume(spec, run_id, bytes(prev[1]), lots=lots)
        else:
            e, next_index = Engine(spec, run_id, lots=lots), {s: 0 for s in spec.universe}
        stepped_to = _last_close(conn, spec)
        paper_store.save_run(conn, run_id, spec, e, start=now, pins=pins, mode="live", status="running",
                             state=e.snapshot(next_index), parent=parent)
        conn.execute("UPDATE paper_runs SET stepped_to = %s WHERE run_id = %s", (stepped_to, run_id))
        register(conn)
    return {"run_id": run_id, "strategy": spec.name, "version": spec.version, "pins": pins, "cash": spec.cash,
            "stepped_to": stepped_to, "resumed_from": parent, "positions": len(e.positions)}


def stop(store, name: str, now=None) -> dict:
    """Close the running live run of ``name``: its positions stay, marked at the last close."""
    conn = store.conn
    with conn.transaction():
        row = conn.execute("UPDATE paper_runs SET status = 'done', range_end = %s, updated_at = now() WHERE mode = "
                           "'live' AND status = 'running' AND strategy_name = %s RETURNING run_id",
                           (now or datetime.now(timezone.utc), name)).fetchone()
        if row is None:
            raise InvalidInput(f"{name} is not running live", field="strategy")
        removed = unregister_if_idle(conn)
    return {"run_id": row[0], "strategy": name, "consumer_removed": removed}


def process(store, limit: int = 1000) -> dict:
    """One pass of the ``paper`` consumer: the events whose outputs are committed, the live runs they concern
    stepped from the store, all in one transaction. Returns what it did."""
    conn = store.conn
    with conn.transaction():
        events = conn.execute(
            "SELECT q.event_id, e.symbol, e.timeframe FROM market_event_queue q JOIN market_events e ON e.id = "
            "q.event_id WHERE q.consumer = %s AND q.status = 'pending' AND EXISTS (SELECT 1 FROM market_event_queue "
            "p WHERE p.consumer = 'predictions' AND p.event_id = q.event_id AND p.status = 'done') ORDER BY "
            "q.event_id LIMIT %s FOR UPDATE OF q SKIP LOCKED", (CONSUMER, limit)).fetchall()
        if not events:
            return {"events": 0, "runs": 0, "steps": 0, "orders": 0}
        series = {(s, tf) for _, s, tf in events}
        steps = orders = runs = 0
        for run_id, raw in conn.execute(
                "SELECT r.run_id, s.spec FROM paper_runs r JOIN strategies s ON s.name = r.strategy_name AND "
                "s.version = r.strategy_version WHERE r.mode = 'live' AND r.status = 'running' ORDER BY r.run_id "
                "FOR UPDATE OF r").fetchall():
            from .spec import parse

            spec = parse(raw, stored=True)
            if not series & set(spec.universe):
                continue
            got = _step_run(store, run_id, spec)
            runs += 1
            steps += got["steps"]
            orders += got["orders"]
        ids = [r[0] for r in events]
        conn.execute("UPDATE market_event_queue SET status = 'done', done_at = clock_timestamp() WHERE consumer = %s "
                     "AND event_id = ANY(%s)", (CONSUMER, ids))
        from ..store.metrics import count_events_done

        count_events_done(conn, CONSUMER, ids)
    return {"events": len(events), "runs": runs, "steps": steps, "orders": orders}


RESIZES = ("resized",)  # a risk event whose detail starts so resized an entry; the others refused or locked


def paper_messages(run_id: str, spec: Spec, e) -> list[tuple[str, str, dict]]:
    """(type, key, payload) of what a live step did that a trader wants to hear of: fills (a stop or target exit
    named so), orders the venue rejected, entries a risk rule refused and locks tripped. The key is fixed by the
    event (the run, the order or rule, the time): made again (a replay), it adds nothing."""
    out = []
    base = {"type": "paper", "strategy": spec.name, "version": spec.version, "run_id": run_id, "schema_version": 1}

    def add(key: str, event: str, text: str, **fields):
        payload = {**base, "key": key, "event": event, **fields}
        payload["message"] = f"{spec.name}: {text}"
        out.append(("paper", key, payload))

    for coid, ts, price, qty, fee in e.rec.fills:
        o = e.rec.touched.get(coid)
        if o is None:
            continue
        reason = o.intent.split(":", 1)[1] if ":" in o.intent else ""
        event = {"stop_loss": "stop_hit", "take_profit": "target_hit"}.get(reason, "filled")
        add(f"paper:{run_id}:{coid}:{ts.isoformat()}", event,
            f"{o.side} {qty:.8g} {o.symbol} {o.timeframe} at {price:.8g} ({o.intent}, fee {fee:.4g})",
            symbol=o.symbol, timeframe=o.timeframe, side=o.side, intent=o.intent, quantity=qty, price=price, fee=fee,
            ts=ts.isoformat(), order_id=coid)
    for coid, ts, _from, to, why in e.rec.order_events:
        if to == "rejected":
            o = e.rec.touched.get(coid)
            add(f"paper:{run_id}:{coid}:rejected", "rejected",
                f"the venue rejected {o.side} {o.symbol} {o.timeframe} ({why})" if o else f"order rejected ({why})",
                symbol=o.symbol if o else None, timeframe=o.timeframe if o else None, order_id=coid,
                ts=ts.isoformat(), detail=why)
    for ts, symbol, tf, rule, detail in e.rec.risk_events:
        if str(detail).startswith(RESIZES):
            continue
        add(f"paper:{run_id}:risk:{ts.isoformat()}:{symbol}:{tf}:{rule}", "risk",
            f"{rule} on {symbol} {tf}: {detail}" if symbol != "*" else f"{rule}: {detail}",
            symbol=None if symbol == "*" else symbol, timeframe=None if tf == "*" else tf, rule=rule,
            detail=detail, ts=ts.isoformat())
    return out


def _ready_candles(conn, symbol: str, tf: str, after) -> list[tuple]:
    """(ts, open, high, low, close, volume) of the series' candles closing after ``after`` whose outputs are
    committed: a candle whose newest live event the predictions consumer has not done, and every later one, wait."""
    from ..core.timeframes import seconds

    step = timedelta(seconds=seconds(tf))
    rows = conn.execute(
        "SELECT c.ts, c.open, c.high, c.low, c.close, c.volume, (SELECT q.status = 'done' FROM market_events e JOIN "
        "market_event_queue q ON q.event_id = e.id AND q.consumer = 'predictions' WHERE e.symbol = c.symbol AND "
        "e.timeframe = c.timeframe AND e.ts = c.ts ORDER BY e.id DESC LIMIT 1) FROM ohlcv c WHERE c.symbol = %s AND "
        "c.timeframe = %s AND c.ts > %s ORDER BY c.ts", (symbol, tf, after - step)).fetchall()
    out = []
    for ts, o, h, lo, c, v, done in rows:
        if done is False:
            break
        out.append((ts, o, h, lo, c, v))
    return out


def _step_run(store, run_id: str, spec: Spec) -> dict:
    from ..core.timeframes import seconds
    from ..store import paper as paper_store
    from . import backtest
    from .engine import Bar, Engine
    from .stepper import Stepper

    conn = store.conn
    pins, state, stepped_to, cash, start = conn.execute(
        "SELECT pins, state, stepped_to, cash, range_start FROM paper_runs WHERE run_id = %s", (run_id,)).fetchone()
    spec = replace(spec, cash=float(cash))
    e, next_index = Engine.resume(spec, run_id, bytes(state), lots=backtest.series_lots(store, spec))
    after = stepped_to or start
    candles = {}
    for symbol, tf in spec.universe:
        step = timedelta(seconds=seconds(tf))
        rows = _ready_candles(conn, symbol, tf, after)
        base = next_index.get((symbol, tf), 0)
        candles[(symbol, tf)] = [(ts + step, ts, Bar(float(o), float(h), float(lo), float(c), float(v), base + i, ts))
                                 for i, (ts, o, h, lo, c, v) in enumerate(rows)]
    first = min((rows[0][1] for rows in candles.values() if rows), default=None)
    if first is None:
        return {"steps": 0, "orders": 0}
    models = backtest.resolve_models(conn, spec, live=True) if spec.kind == "rules" else {}
    last = max(rows[-1][1] for rows in candles.values() if rows)
    outputs = backtest.load_outputs(conn, spec, models, pins, first, last + timedelta(microseconds=1),
                                    {s: {ts: b.close for _, ts, b in rows} for s, rows in candles.items()})
    stepper = Stepper(spec.universe, backtest.calendar_expects(store, spec), after=stepped_to)
    used = {s: 0 for s in candles}
    n_steps = 0
    for close, series, ts, bar in sorted(((c, s, ts, b) for s, rows in candles.items() for c, ts, b in rows),
                                         key=lambda r: (r[0], spec.universe.index(r[1]))):
        for t, bars, decisions in stepper.add(series, close, bar, backtest.decision_for(spec, outputs, series, ts)):
            e.step(t, bars, decisions)
            n_steps += 1
            for s in bars:
                used[s] += 1
    if not n_steps:
        return {"steps": 0, "orders": 0}
    from ..alerts.delivery import enqueue_opted_in

    messages = paper_messages(run_id, spec, e)
    enqueue_opted_in(conn, "paper", messages)
    new_index = {s: next_index.get(s, 0) + used.get(s, 0) for s in map(tuple, spec.universe)}
    paper_store.save_run(conn, run_id, spec, e, start=start, pins=pins, mode="live", status="running",
                         state=e.snapshot(new_index), append=True)
    conn.execute("UPDATE paper_runs SET stepped_to = %s WHERE run_id = %s", (stepper.done, run_id))
    return {"steps": n_steps, "orders": len(e.rec.orders)}


def risk_locks(b, stepped_to) -> list[str]:
    """The risk locks in force in a run's book at its last step (``tp paper status``, ``tp_paper_risk_locks``)."""
    locks = []
    if b.halted:
        locks.append("max_drawdown")
    if b.day_locked is not None and b.day_locked == b.day:
        locks.append("daily_loss_limit")
    if b.locked_until is not None and stepped_to is not None and stepped_to < b.locked_until:
        locks.append(f"stop_guard until {b.locked_until.isoformat()}")
    return locks


def status(store) -> dict:
    """What ``tp paper status`` shows (see ``api.paper.live_status``)."""
    from ..store import outbox
    from .engine import Engine
    from .spec import parse

    conn = store.conn
    runs = []
    rows = conn.execute(
        "SELECT r.run_id, r.strategy_name, r.strategy_version, r.status, r.pins, r.cash, r.range_start, r.range_end, "
        "r.stepped_to, r.state, s.spec FROM paper_runs r JOIN strategies s ON s.name = r.strategy_name AND s.version "
        "= r.strategy_version WHERE r.mode = 'live' AND (r.status = 'running' OR r.range_end > now() - interval "
        "'7 days') ORDER BY r.status DESC, r.range_start DESC").fetchall()
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    for run_id, name, version, st, pins, cash, started, stopped, stepped_to, state, raw in rows:
        spec = replace(parse(raw, stored=True), cash=float(cash))
        e, _ = Engine.resume(spec, run_id, bytes(state))
        b = e.book
        last = conn.execute("SELECT ts, equity, cash, exposure FROM paper_equity WHERE run_id = %s ORDER BY ts DESC "
                            "LIMIT 1", (run_id,)).fetchone()
        day_open = conn.execute("SELECT equity FROM paper_equity WHERE run_id = %s AND ts <= %s ORDER BY ts DESC "
                                "LIMIT 1", (run_id, today)).fetchone()
        equity = last[1] if last else float(cash)
        base = day_open[0] if day_open else float(cash)
        champions = dict(conn.execute("SELECT model_name, version FROM model_champions WHERE alias = 'champion' AND "
                                      "valid_to IS NULL AND model_name = ANY(%s)", (list(pins),)).fetchall())
        promoted = {m: {"pinned": v, "champion": champions.get(m)} for m, v in pins.items() if champions.get(m) != v}
        locks = risk_locks(b, stepped_to)
        runs.append({
            "run_id": run_id, "strategy": name, "version": version, "status": st, "started_at": started,
            "stopped_at": stopped, "stepped_to": stepped_to, "pins": pins, "cash": float(cash),
            "equity": float(equity), "day_pnl": float(equity - base), "exposure": float(last[3]) if last else 0.0,
            "positions": [{"symbol": s_[0], "timeframe": s_[1], "quantity": p.quantity, "entry_price": p.entry_price,
                           "entry_ts": p.entry_ts, "stop": p.stop, "target": p.target, "held": p.held,
                           "mark": e.last_close.get(s_)} for s_, p in e.positions.items()],
            "open_orders": [{"order_id": o.client_order_id, "symbol": o.symbol, "timeframe": o.timeframe,
                             "side": o.side, "intent": o.intent, "quantity": o.quantity, "filled": o.filled,
                             "status": o.status, "signal_ts": o.signal_ts} for o in e.pending.values()],
            "risk_locks": locks,
            "promoted_since_start": promoted,  # picked up by tp paper stop, then start
        })
    registered = conn.execute("SELECT 1 FROM live_consumers WHERE consumer = %s", (CONSUMER,)).fetchone()
    return {"runs": runs, "consumer": outbox.status(conn, CONSUMER) if registered else None}

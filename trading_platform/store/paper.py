"""SQL of paper trading (``trading_platform/paper/``): strategies by version, and a run's records.

A backtest run is keyed by what decides its results: the strategy's version, its range and the pinned model
versions (``run_key``). Saving it again (a re-run, a retried asset) keeps its ``run_id`` and replaces its rows
in one transaction: the same orders under the same ids, never a second copy.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from psycopg.types.json import Jsonb

RECORD_TABLES = ("risk_events", "paper_equity", "trades", "positions", "order_events", "fills")  # orders: upserted


def save_strategy(conn, spec) -> tuple[str, str]:
    """Store a spec's version (once: the same content is the same version); (name, version)."""
    conn.execute("INSERT INTO strategies (name, version, kind, spec) VALUES (%s, %s, %s, %s) "
                 "ON CONFLICT (name, version) DO NOTHING", (spec.name, spec.version, spec.kind, Jsonb(spec.raw)))
    return spec.name, spec.version


def strategy(conn, name: str, version: str | None = None) -> dict | None:
    """A strategy's stored spec: the version given, else its newest."""
    row = conn.execute(
        "SELECT name, version, kind, spec, created_at FROM strategies WHERE name = %s AND (%s::text IS NULL OR "
        "version = %s) ORDER BY created_at DESC LIMIT 1", (name, version, version)).fetchone()
    return None if row is None else dict(zip(("name", "version", "kind", "spec", "created_at"), row))


def list_strategies(conn) -> list[dict]:
    rows = conn.execute("SELECT DISTINCT ON (name) name, version, kind, created_at FROM strategies "
                        "ORDER BY name, created_at DESC").fetchall()
    return [dict(zip(("name", "version", "kind", "created_at"), r)) for r in rows]


def run_key(version: str, start: datetime | None, end: datetime | None, pins: dict, mode: str = "backtest",
            parent: str | None = None) -> str:
    """The run id of a backtest: a hash of the strategy version, the range, the pins and, for a run that continues
    another's end state (a month of ``paper_backtest``), that run's id: a fresh run of the same range is another."""
    key = [mode, version, start.isoformat() if start else None, end.isoformat() if end else None,
           sorted((pins or {}).items())]
    if parent:
        key.append(parent)
    raw = json.dumps(key, separators=(",", ":"))
    return f"{mode[:2]}-" + hashlib.sha256(raw.encode()).hexdigest()[:20]


def save_run(conn, run_id: str, spec, engine, *, start=None, end=None, pins=None, stats=None,
             mode: str = "backtest", status: str = "done", parent: str | None = None,
             state: bytes | None = None, partition: str | None = None, append: bool = False) -> dict:
    """The run's row and every record of ``engine`` (``paper.engine.Engine``), replacing what the run had: in the
    caller's transaction. Returns the counts written. ``append`` (a live run's step): the engine's records are new
    ones, added to the run's; its positions are replaced and its skipped decisions added up.

    A month that continues the previous one (``parent``) may fill or end an order the previous month placed: its
    events and fills are this run's rows, and that order's status and filled quantity are derived from all its
    events and fills, whichever run recorded them (so running an earlier month again keeps what later ones did)."""
    save_strategy(conn, spec)
    skipped = dict(engine.rec.skipped)
    if append:
        before = conn.execute("SELECT skipped FROM paper_runs WHERE run_id = %s", (run_id,)).fetchone()
        for k, v in ((before[0] or {}) if before else {}).items():
            skipped[k] = skipped.get(k, 0) + int(v)
    conn.execute(
        "INSERT INTO paper_runs (run_id, mode, strategy_name, strategy_version, pins, range_start, range_end, cash, "
        "status, stats, skipped, parent_run, state, partition_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, stats = EXCLUDED.stats, "
        "skipped = EXCLUDED.skipped, parent_run = EXCLUDED.parent_run, state = EXCLUDED.state, "
        "partition_key = coalesce(EXCLUDED.partition_key, paper_runs.partition_key), updated_at = now()",
        (run_id, mode, spec.name, spec.version, Jsonb(pins or {}), start, end, spec.cash, status,
         Jsonb(stats) if stats is not None else None, Jsonb(skipped), parent, state, partition))
    rec = engine.rec
    ids = [o.client_order_id for o in rec.orders]
    # the orders an earlier save of this run filled or moved (carried in from the previous month): their status and
    # filled quantity are derived again below, from what is left
    prior = [r[0] for r in conn.execute("SELECT order_id FROM order_events WHERE run_id = %s UNION "
                                        "SELECT order_id FROM fills WHERE run_id = %s", (run_id, run_id)).fetchall()]
    for table in RECORD_TABLES if not append else ("positions",):
        conn.execute(f"DELETE FROM {table} WHERE run_id = %s", (run_id,))
    if not append:
        conn.execute("DELETE FROM orders WHERE run_id = %s AND order_id <> ALL(%s)", (run_id, ids))
    # COPY, not one INSERT a row: a year of 5-minute candles of four series is 420,000 equity rows
    order_cols = ("order_id", "run_id", "symbol", "timeframe", "signal_ts", "side", "intent", "quantity", "filled",
                  "status", "stop", "target", "risk_score", "reason")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS paper_orders_in (LIKE orders) ON COMMIT DELETE ROWS")
    conn.execute("TRUNCATE paper_orders_in")
    _copy(conn, "paper_orders_in", order_cols,
          ((o.client_order_id, run_id, o.symbol, o.timeframe, o.signal_ts, o.side, o.intent, o.quantity, o.filled,
            o.status, o.stop, o.target, o.risk_score, o.reason) for o in rec.orders))
    cols = ", ".join(order_cols)
    conn.execute(f"INSERT INTO orders ({cols}) SELECT {cols} FROM paper_orders_in ON CONFLICT (order_id) DO UPDATE "
                 "SET quantity = EXCLUDED.quantity, filled = EXCLUDED.filled, status = EXCLUDED.status, "
                 "stop = EXCLUDED.stop, target = EXCLUDED.target, risk_score = EXCLUDED.risk_score, "
                 "reason = EXCLUDED.reason")
    _copy(conn, "order_events", ("order_id", "run_id", "ts", "from_status", "to_status", "reason"),
          ((e[0], run_id, *e[1:]) for e in rec.order_events))
    _copy(conn, "fills", ("order_id", "run_id", "candle_ts", "price", "quantity", "fee"),
          ((f[0], run_id, *f[1:]) for f in rec.fills))
    # an order carried in from the run before (the previous month, the live run's previous step) that this one
    # resized at its fill: its row takes the quantity it has now
    carried = [(o.quantity, o.stop, o.target, coid) for coid, o in rec.touched.items() if coid not in set(ids)]
    if carried:
        conn.cursor().executemany("UPDATE orders SET quantity = %s, stop = %s, target = %s WHERE order_id = %s",
                                  carried)
    touched = sorted(set(ids) | {e[0] for e in rec.order_events} | set(prior))
    conn.execute(
        "UPDATE orders o SET status = e.to_status, reason = coalesce(e.reason, o.reason) FROM (SELECT DISTINCT ON "
        "(order_id) order_id, to_status, reason FROM order_events WHERE order_id = ANY(%s) ORDER BY order_id, ts DESC, "
        "id DESC) e WHERE o.order_id = e.order_id AND o.status <> e.to_status", (touched,))
    conn.execute("UPDATE orders o SET filled = coalesce((SELECT sum(f.quantity) FROM fills f WHERE f.order_id = "
                 "o.order_id), 0) WHERE o.order_id = ANY(%s)", (touched,))
    trade_cols = ("symbol", "timeframe", "entry_order", "entry_ts", "entry_price", "exit_ts", "exit_price", "quantity",
                  "pnl", "pnl_pct", "fees", "exit_reason", "bars_held")
    _copy(conn, "trades", ("run_id", *trade_cols), ((run_id, *(t[c] for c in trade_cols)) for t in rec.trades))
    _copy(conn, "paper_equity", ("run_id", "ts", "equity", "cash", "exposure"), ((run_id, *row) for row in rec.equity))
    _copy(conn, "risk_events", ("run_id", "ts", "symbol", "timeframe", "rule", "detail"),
          ((run_id, *ev) for ev in rec.risk_events))
    cur = conn.cursor()
    last = rec.equity[-1][0] if rec.equity else None
    cur.executemany(
        "INSERT INTO positions (run_id, symbol, timeframe, quantity, entry_price, entry_ts, stop, target, held, "
        "marked_at, mark_price) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [(run_id, s[0], s[1], p.quantity, p.entry_price, p.entry_ts, p.stop, p.target, p.held, last,
          engine.last_close.get(s)) for s, p in engine.positions.items()])
    return {"orders": len(rec.orders), "fills": len(rec.fills), "trades": len(rec.trades),
            "equity_rows": len(rec.equity), "risk_events": len(rec.risk_events), "open_positions": len(engine.positions)}


def _copy(conn, table: str, cols: tuple, rows) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def end_state(conn, version: str, start, end) -> tuple[str, dict, bytes] | None:
    """The month [start, end) of strategy ``version`` as ``paper_backtest`` stored it (a partition's run, not an
    ad-hoc range that happens to end there): its run id, pins and end state, which the next month continues."""
    row = conn.execute(
        "SELECT run_id, pins, state FROM paper_runs WHERE mode = 'backtest' AND strategy_version = %s AND "
        "range_start = %s AND range_end = %s AND partition_key IS NOT NULL AND status = 'done' AND state IS NOT NULL "
        "ORDER BY updated_at DESC LIMIT 1", (version, start, end)).fetchone()
    return None if row is None else (row[0], row[1], bytes(row[2]))


def run(conn, run_id: str) -> dict | None:
    row = conn.execute(
        "SELECT run_id, mode, strategy_name, strategy_version, pins, range_start, range_end, cash, status, stats, "
        "skipped, created_at, updated_at FROM paper_runs WHERE run_id = %s", (run_id,)).fetchone()
    cols = ("run_id", "mode", "strategy_name", "strategy_version", "pins", "range_start", "range_end", "cash",
            "status", "stats", "skipped", "created_at", "updated_at")
    return None if row is None else dict(zip(cols, row))


def orders(conn, run_id: str) -> list[dict]:
    cur = conn.execute(
        "SELECT o.order_id, o.symbol, o.timeframe, o.signal_ts, o.side, o.intent, o.quantity, o.filled, o.status, "
        "o.stop, o.target, o.risk_score, o.reason, (SELECT min(f.candle_ts) FROM fills f WHERE f.order_id = "
        "o.order_id) AS first_fill_ts, (SELECT sum(f.price * f.quantity) / nullif(sum(f.quantity), 0) FROM fills f "
        "WHERE f.order_id = o.order_id) AS avg_price FROM orders o WHERE o.run_id = %s ORDER BY o.signal_ts, "
        "o.order_id", (run_id,))
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def trades(conn, run_id: str) -> list[dict]:
    cur = conn.execute("SELECT symbol, timeframe, entry_order, entry_ts, entry_price, exit_ts, exit_price, quantity, "
                       "pnl, pnl_pct, fees, exit_reason, bars_held FROM trades WHERE run_id = %s ORDER BY exit_ts, id",
                       (run_id,))
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]

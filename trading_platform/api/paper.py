"""Paper trading (``trading_platform/paper/``, issue 25 in progress): strategies, backtests and their records."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..errors import InvalidInput
from ._context import store_or_open
from .market import parse_time


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d.isoformat() if isinstance(d, datetime) else d


def check_universe(store, spec) -> None:
    """What only the store knows: every symbol is managed, lists the timeframe, and all share one quote currency."""
    quotes = {}
    for i, (symbol, tf) in enumerate(spec.universe):
        info = store.get_symbol(symbol)
        if info is None:
            raise InvalidInput(f"universe[{i}].symbol {symbol!r} is not a managed symbol (tp symbols list)",
                               field=f"universe[{i}].symbol")
        if tf not in info.timeframes:
            raise InvalidInput(f"universe[{i}].timeframe {tf} is not a timeframe of {symbol} "
                               f"({', '.join(info.timeframes)})", field=f"universe[{i}].timeframe")
        quotes[symbol] = info.quote
    if len(set(quotes.values())) > 1:
        raise InvalidInput("the universe mixes quote currencies (" + ", ".join(f"{s}: {q}" for s, q in quotes.items())
                           + "): one portfolio's cash is one currency", field="universe")


def add_strategy(source: str, *, store=None) -> dict:
    """Store a strategy from a YAML or JSON file (or the text itself): validated, versioned by content."""
    from ..paper.spec import parse
    from ..store import paper as paper_store

    text = source
    if isinstance(source, str) and "\n" not in source and len(source) < 4096:
        p = Path(source)
        if p.suffix.lower() in (".yaml", ".yml", ".json") or p.exists():
            if not p.is_file():
                raise InvalidInput(f"no strategy file at {source}", field="file")
            text = p.read_text()
    spec = parse(text)
    with store_or_open(store) as s:
        check_universe(s, spec)
        with s.conn.transaction():
            paper_store.save_strategy(s.conn, spec)
    return {"name": spec.name, "version": spec.version, "kind": spec.kind,
            "universe": [f"{a} {b}" for a, b in spec.universe], "models": spec.models()}


def list_strategies(*, store=None) -> list[dict]:
    from ..store import paper as paper_store

    with store_or_open(store) as s:
        return _jsonable(paper_store.list_strategies(s.conn))


def backtest(strategy: str, start, end, *, replicates: int = 200, store=None) -> dict:
    """Backtest the newest version of ``strategy`` over [start, end) in this process, then its controls through
    the same engine: buy-and-hold (fully invested and at the strategy's mean exposure) and ``replicates`` random
    entries; each compared by the paired block bootstrap (it beats a control only when the interval lies above 0)."""
    import numpy as np

    from ..core.timeframes import seconds
    from ..paper import backtest as driver
    from ..paper import controls, stats
    from ..paper.spec import parse
    from ..store import paper as paper_store

    t0, t1 = parse_time(start, "from"), parse_time(end, "to")
    if t0 is None or t1 is None:
        raise InvalidInput("--from and --to are required (--to exclusive)", field="from" if t0 is None else "to")
    if not t0 < t1:
        raise InvalidInput(f"--from {start} must be before --to {end}", field="from")
    try:
        replicates = int(replicates)
    except (TypeError, ValueError):
        replicates = -1
    if not 1 <= replicates <= 10_000:
        raise InvalidInput("--replicates must be a whole number from 1 to 10000", field="replicates")
    with store_or_open(store) as s:
        row = paper_store.strategy(s.conn, strategy)
        if row is None:
            known = [r["name"] for r in paper_store.list_strategies(s.conn)]
            raise InvalidInput(f"no strategy named {strategy!r} (known: {', '.join(known) or 'none'}; "
                               "tp paper strategies add FILE)", field="strategy")
        spec = parse(row["spec"])
        check_universe(s, spec)
        out = driver.run(s, spec, t0, t1, save=False)
        e = out["engine"]
        cal = []
        for symbol, tf in spec.universe:
            info = s.get_symbol(symbol)
            cal.append((info.category, info.exchange, seconds(tf)))
        ppy = stats.periods_per_year(cal)
        candles = {series: [(close, bar) for close, _, bar in rows]
                   for series, rows in driver.load_candles(s, spec, t0, t1).items()}
        curve = controls.equity_curve(e)
        fees = sum(f[4] for f in e.rec.fills)
        traded = sum(f[2] * f[3] for f in e.rec.fills)
        summary = stats.summary(list(curve), e.rec.trades, ppy=ppy,
                                exposure=[ex / eq for _, eq, _, ex in e.rec.equity if eq > 0],
                                traded_notional=traded, fees=fees)
        summary["orders"] = len(e.rec.orders)
        summary["skipped"] = dict(e.rec.skipped)
        with s.conn.transaction():
            paper_store.save_run(s.conn, out["run_id"], spec, e, start=t0, end=t1, pins=out["pins"], stats=summary,
                                  state=out["state"])
        exposure = controls.mean_exposure(e)
        full = controls.run_schedule(controls.buy_and_hold(spec), candles,
                                     {k: {0: len(v)} for k, v in candles.items()}, out["run_id"] + ":bh")
        matched = controls.buy_and_hold_at(spec, candles, exposure, out["run_id"] + ":bhx") if exposure > 0 else full
        reps = []
        trades = controls.trades_of(e)
        for k in range(replicates):
            sched = controls.random_schedule(controls.lengths_of(candles), trades, seed=[k])
            reps.append(controls.equity_curve(controls.run_schedule(controls.random_entry(spec), candles, sched,
                                                                     f"{out['run_id']}:r{k}")))
        vs_bh = controls.compare(curve, controls.equity_curve(matched))
        vs_bh["fully_invested_return"] = float(controls.equity_curve(full)[-1] / spec.cash - 1) if len(curve) else None
        vs_bh["control_max_drawdown"] = stats.summary(list(controls.equity_curve(matched)), [], ppy=ppy)["max_drawdown"]
        vs_random = controls.compare(curve, np.array(reps)) if len(curve) > 1 else None
        return _jsonable({"run": {"run_id": out["run_id"], "strategy": spec.name, "version": spec.version,
                                  "from": t0, "to": t1, "pins": out["pins"], **(out["counts"] or {})},
                          "stats": summary, "vs_buy_and_hold": vs_bh, "vs_random_entry": vs_random})


def report(run_id: str, *, store=None) -> dict:
    from ..store import paper as paper_store

    with store_or_open(store) as s:
        r = paper_store.run(s.conn, run_id)
        if r is None:
            raise InvalidInput(f"no paper run {run_id!r}", field="run")
        return _jsonable(r)


def orders(run_id: str, *, store=None) -> list[dict]:
    from ..store import paper as paper_store

    with store_or_open(store) as s:
        if paper_store.run(s.conn, run_id) is None:
            raise InvalidInput(f"no paper run {run_id!r}", field="run")
        return _jsonable(paper_store.orders(s.conn, run_id))


def trades(run_id: str, *, store=None) -> list[dict]:
    from ..store import paper as paper_store

    with store_or_open(store) as s:
        if paper_store.run(s.conn, run_id) is None:
            raise InvalidInput(f"no paper run {run_id!r}", field="run")
        return _jsonable(paper_store.trades(s.conn, run_id))

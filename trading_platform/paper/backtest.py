"""The backtest driver: stored candles and pinned model outputs through the engine, records into the store.

Each series of the universe steps at its candles' closes (``ts + timeframe``), all series in close order, so a
portfolio never decides on a candle that closed after another it has not seen. The decision at a close reads the
outputs for that candle (an output at ``ts`` is usable from ``ts + timeframe`` on) of the pinned versions
(``tp_predictions_for_candles`` with ``p_versions``; by default today's champions, recorded as the run's pins):
a challenger's (shadow) outputs never trade. A rule names a model family or a registered model; for a series it
is the symbol's own lineage (``signal_lgbm.BTC_USDT``) when it has outputs there, else the pooled one.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from ..errors import InvalidInput
from .engine import Bar, Engine, Signal
from .rules import Output, decide
from .spec import Spec
from .stepper import Stepper

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
RULE_NAMES = ("signal", "regime", "pump_veto", "confirm")


def _rules_used(spec: Spec) -> dict[str, str]:
    return {r: getattr(spec.rules, r)["model"] for r in RULE_NAMES if getattr(spec.rules, r)}


def _table(spec: Spec, rule: str) -> str:
    """The output table a rule reads: a confirmation names forecasts or patterns, the rest read predictions."""
    return spec.rules.confirm["table"] if rule == "confirm" else "predictions"


def resolve_models(conn, spec: Spec, *, live: bool = False) -> dict[tuple, str]:
    """(series, rule) -> the registered model whose outputs the rule reads on that series: one with outputs there
    (``live``: or a champion, whose outputs the live path will write from now on)."""
    from ..models.registry import registered_name

    out = {}
    for rule, model in _rules_used(spec).items():
        for symbol, tf in spec.universe:
            names = [registered_name(model, symbol), model]
            rows = {r[0] for r in conn.execute(
                "SELECT DISTINCT model_name FROM output_series WHERE output_table = %s AND symbol = %s "
                "AND timeframe = %s AND model_name = ANY(%s)", (_table(spec, rule), symbol, tf, names)).fetchall()}
            if live and not rows:
                rows = {r[0] for r in conn.execute(
                    "SELECT DISTINCT model_name FROM model_champions WHERE alias = 'champion' AND valid_to IS NULL "
                    "AND model_name = ANY(%s)", (names,)).fetchall()}
            found = next((n for n in names if n in rows), None)
            if found is None:
                raise InvalidInput(f"rules.{rule}.model {model!r} has no outputs for {symbol} {tf} (looked for "
                                   f"{' and '.join(names)}): score it first, or name another model",
                                   field=f"rules.{rule}.model")
            out[((symbol, tf), rule)] = found
    return out


def champion_pins(conn, names) -> dict[str, str]:
    """Today's champion version of each registered model (the run's pins)."""
    names = sorted(set(names))
    rows = dict(conn.execute("SELECT model_name, version FROM model_champions WHERE alias = 'champion' AND "
                             "valid_to IS NULL AND model_name = ANY(%s)", (names,)).fetchall())
    missing = [n for n in names if n not in rows]
    if missing:
        raise InvalidInput(f"no champion for {', '.join(missing)}: pin versions, or promote one", field="pins")
    return {n: str(rows[n]) for n in names}


def series_lots(store, spec: Spec) -> dict:
    """series -> the quantity step its market imposes: stocks trade whole shares."""
    out = {}
    for symbol, tf in spec.universe:
        info = store.get_symbol(symbol)
        if info is not None and info.category == "stock":
            out[(symbol, tf)] = 1.0
    return out


def calendar_expects(store, spec: Spec):
    """``Stepper``'s ``expects`` from the markets' calendars (``core/calendars.py``): False when the series' market is
    closed through the candle that would close at ``t``, so a mixed portfolio's crypto series step through a weekend
    instead of waiting for Monday's stock candle. None when every series trades around the clock."""
    from ..core.calendars import slot_open
    from ..core.timeframes import seconds

    markets = {}
    for symbol, tf in spec.universe:
        info = store.get_symbol(symbol)
        if info is not None and info.category != "crypto":
            markets[(symbol, tf)] = (info.category, info.exchange, seconds(tf))
    if not markets:
        return None
    seen: dict = {}

    def expects(series, t) -> bool:
        m = markets.get(tuple(series))
        if m is None:
            return True
        key = (m, t)
        if key not in seen:
            if len(seen) > 100_000:
                seen.clear()
            opens_us = int(t.timestamp() * 1_000_000) - m[2] * 1_000_000
            seen[key] = bool(slot_open(m[0], m[1], [opens_us], m[2])[0])
        return seen[key]

    return expects


def load_candles(store, spec: Spec, start: datetime, end: datetime, offsets: dict | None = None) -> dict:
    """series -> [(close time, ts, Bar)] of the stored candles with start <= ts < end (candle indexes from
    ``offsets[series]``, 0 by default: a continued run counts on from where the previous one stopped)."""
    from ..core.timeframes import seconds

    out = {}
    for symbol, tf in spec.universe:
        c = store.read_candles(symbol, tf, start, end)
        step = timedelta(seconds=seconds(tf))
        rows = []
        base = (offsets or {}).get((symbol, tf), 0)
        for i in range(len(c)):
            ts = EPOCH + timedelta(microseconds=int(c.ts_us[i]))
            rows.append((ts + step, ts, Bar(float(c.open[i]), float(c.high[i]), float(c.low[i]), float(c.close[i]),
                                            float(c.volume[i]), base + i, ts)))
        out[(symbol, tf)] = rows
    return out


def load_outputs(conn, spec: Spec, models: dict, pins: dict, start: datetime, end: datetime,
                 closes: dict | None = None) -> dict:
    """(series, rule) -> {candle ts: Output} of the pinned versions.

    A ``confirm`` rule on ``forecasts`` reads the forecast return to the horizon (the last step's median over the
    candle's close: ``closes``, series -> {ts: close}); on ``patterns``, the highest probability of a pattern
    ending at the candle (0 where the scan wrote none, once the version has outputs on the series)."""
    from ..store.outputs import for_candles

    out: dict = {key: {} for key in models}
    if not models:
        return out
    symbols = sorted({s for s, _ in spec.universe})
    tfs = sorted({tf for _, tf in spec.universe})
    for table in sorted({_table(spec, rule) for _, rule in models}):
        by_name: dict = {}
        for (series, rule), name in models.items():
            if _table(spec, rule) == table:
                by_name.setdefault((name, series), []).append(rule)
        names = sorted({n for n, _ in by_name})
        rows = for_candles(conn, table, symbols=symbols, timeframes=tfs, models=names, start=start, end=end,
                           versions={n: pins[n] for n in names if n in pins})
        if table == "predictions":
            for name, _version, symbol, tf, ts, value, label, _details, in_sample, *_ in rows:
                for rule in by_name.get((name, (symbol, tf)), ()):
                    v = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
                    out[((symbol, tf), rule)][ts] = Output(v, label, bool(in_sample))
        elif table == "forecasts":
            last: dict = {}
            for name, _version, symbol, tf, ts, step, median, _q, in_sample, *_ in rows:
                key = (name, (symbol, tf), ts)
                if key not in last or step > last[key][0]:
                    last[key] = (step, median, in_sample)
            for (name, series, ts), (_step, median, in_sample) in last.items():
                close = (closes or {}).get(series, {}).get(ts)
                v = None if median is None or not close or math.isnan(median) else float(median) / close - 1.0
                for rule in by_name.get((name, series), ()):
                    out[(series, rule)][ts] = Output(v, None, bool(in_sample))
        else:  # patterns: only those above the scan's threshold are written; no row at a scanned candle is 0
            for (name, series), rules in by_name.items():
                for rule in rules:
                    for ts in (closes or {}).get(series, {}):
                        out[(series, rule)][ts] = Output(0.0, None, False)
            for name, _version, symbol, tf, ts, pattern, prob, _bars, in_sample, *_ in rows:
                for rule in by_name.get((name, (symbol, tf)), ()):
                    cur = out[((symbol, tf), rule)].get(ts)
                    if prob is not None and (cur is None or cur.value is None or prob > cur.value):
                        out[((symbol, tf), rule)][ts] = Output(float(prob), pattern, bool(in_sample))
    return out


def decision_for(spec: Spec, outputs: dict, series, ts) -> Signal | None:
    """The decision on ``series``' candle ``ts`` (the backtest's and the live driver's alike): the rules on its
    outputs; buy-and-hold buys at the first close it can (again at the next if the venue rejected it; holding, the
    engine places nothing more); random entry decides nothing here (its schedule does)."""
    if spec.kind == "rules":
        return decide(spec, {rule: outputs[(series, rule)].get(ts) for rule in _rules_used(spec)})
    if spec.kind == "buy_and_hold":
        return Signal(True)
    return None


def run(store, spec: Spec, start: datetime, end: datetime, *, pins: dict | None = None, run_id: str | None = None,
        save: bool = True, state: bytes | None = None, parent: str | None = None,
        partition: str | None = None) -> dict:
    """Backtest ``spec`` over [start, end): its run id (the same for the same version, range and pins), the engine
    (records, final state), its end state (``Engine.snapshot``) and the counts written. With ``state`` (the end
    state of ``parent``, the run over the range just before) it goes on from there: cash, positions, open orders,
    the risk book, the candle counts; a chain of months places the same orders at the same prices as one run."""
    from ..store import paper as paper_store

    if not start < end:
        raise InvalidInput(f"--from {start:%Y-%m-%d} must be before --to {end:%Y-%m-%d}", field="from")
    conn = store.conn
    models = resolve_models(conn, spec) if spec.kind == "rules" else {}
    pins = dict(pins) if pins else champion_pins(conn, models.values())
    run_id = run_id or paper_store.run_key(spec.version, start, end, pins, parent=parent)
    lots = series_lots(store, spec)
    if state is not None:
        e, offsets = Engine.resume(spec, run_id, state, lots=lots)
    else:
        e, offsets = Engine(spec, run_id, lots=lots), {}
    start_equity = e.book.equity
    candles = load_candles(store, spec, start, end, offsets)
    if not any(candles.values()):
        raise InvalidInput(f"no candles of the universe ({', '.join(f'{a} {b}' for a, b in spec.universe)}) from "
                           f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}: load them first (tp backfill), or check "
                           "the dates", field="from")
    closes = {series: {ts: bar.close for _, ts, bar in rows} for series, rows in candles.items()}
    outputs = load_outputs(conn, spec, models, pins, start, end, closes)
    steps = sorted({(close, s) for s, rows in candles.items() for close, _, _ in rows})
    index = {s: {close: (ts, bar) for close, ts, bar in rows} for s, rows in candles.items()}

    # the steps as the live driver makes them (paper/stepper.py): every series' candle of a close time together
    stepper = Stepper(spec.universe, calendar_expects(store, spec))
    for close, series in steps:
        ts, bar = index[series][close]
        for t, bars, decisions in stepper.add(series, close, bar, decision_for(spec, outputs, series, ts)):
            e.step(t, bars, decisions)
    for t, bars, decisions in stepper.flush():
        e.step(t, bars, decisions)
    next_index = {s: offsets.get(s, 0) + len(candles.get(s, ())) for s in map(tuple, spec.universe)}
    end_state = e.snapshot(next_index)
    counts = None
    if save:
        with conn.transaction():
            counts = paper_store.save_run(conn, run_id, spec, e, start=start, end=end, pins=pins, parent=parent,
                                          state=end_state, partition=partition)
    return {"run_id": run_id, "engine": e, "pins": pins, "counts": counts, "state": end_state, "parent": parent,
            "start_equity": start_equity, "candles": candles}


def run_and_report(store, spec: Spec, start: datetime, end: datetime, *, replicates: int = 200, mlflow=None,
                   pins: dict | None = None, state: bytes | None = None, parent: str | None = None,
                   partition: str | None = None) -> dict:
    """A backtest over [start, end) (``state``: continuing ``parent``), its statistics and its comparisons with
    the controls, all saved under its run id, and its MLflow run when ``mlflow`` (an ``MLflowResource``) is
    given: ``{"run", "stats", "vs_buy_and_hold", "vs_random_entry", "mlflow"}``."""
    from ..store import paper as paper_store
    from . import report

    out = run(store, spec, start, end, pins=pins, state=state, parent=parent, save=False)
    e = out["engine"]
    ppy = report.periods_per_year(store, spec)
    # the curve from the equity the range starts with (the cash, or the previous month's end), its first candle's
    # return included, in the figures and in the comparisons alike
    st = report.run_stats(e, ppy, out["start_equity"])
    fresh = load_candles(store, spec, start, end) if state is not None else out["candles"]
    candles = {series: [(close, bar) for close, _, bar in rows] for series, rows in fresh.items()}
    ev = report.evaluate(spec, e, candles, out["run_id"], ppy=ppy, replicates=replicates, lots=e.book.lots,
                         start_equity=out["start_equity"])
    brief = {k: None if v is None else {x: v[x] for x in ("return", "control_return", "difference", "interval",
                                                          "beats", "percentile")} for k, v in ev.items()}
    with store.conn.transaction():
        counts = paper_store.save_run(store.conn, out["run_id"], spec, e, start=start, end=end, pins=out["pins"],
                                      stats={**st, **brief}, parent=parent, state=out["state"],
                                      partition=partition)
    run_row = {"run_id": out["run_id"], "strategy": spec.name, "version": spec.version, "kind": spec.kind,
               "from": start, "to": end, "pins": out["pins"], "parent": parent, **counts}
    logged = None
    if mlflow is not None:
        logged = report.log_run(mlflow, spec, run_row, {"stats": st, **ev}, e.rec.equity)
    return {"run": run_row, "stats": st, **ev, "mlflow": logged, "equity": e.rec.equity}

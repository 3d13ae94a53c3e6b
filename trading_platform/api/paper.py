"""Paper trading (``trading_platform/paper/``, issue 25 in progress): strategies, backtests and their records."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..errors import InvalidInput
from ._context import instance as _inst
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
            raise InvalidInput(f"universe[{i}].symbol {symbol[:64]!r} is not a managed symbol (tp symbols list)",
                               field=f"universe[{i}].symbol")
        if tf not in info.timeframes:
            raise InvalidInput(f"universe[{i}].timeframe {tf} is not a timeframe of {symbol} "
                               f"({', '.join(info.timeframes)})", field=f"universe[{i}].timeframe")
        quotes[symbol] = info.quote
    if len(set(quotes.values())) > 1:
        raise InvalidInput("the universe mixes quote currencies (" + ", ".join(f"{s}: {q}" for s, q in quotes.items())
                           + "): one portfolio's cash is one currency", field="universe")


def check_models(store, spec) -> None:
    """Every model a rule names is registered with the platform: a family (``signal_lgbm``, its per-symbol
    lineages ``signal_lgbm.BTC_USDT``) or a registered model that has held an alias or written outputs."""
    from ..paper.backtest import RULE_NAMES

    known = {r[0] for r in store.conn.execute(
        "SELECT model_name FROM model_champions UNION SELECT DISTINCT model_name FROM output_series").fetchall()}
    for rule in RULE_NAMES:
        d = getattr(spec.rules, rule)
        if not d:
            continue
        m = d["model"]
        if m not in known and not any(k.startswith(m + ".") for k in known):
            raise InvalidInput(f"rules.{rule}.model {m[:64]!r} is not a registered model (tp models list: "
                               f"{', '.join(sorted({k.split('.')[0] for k in known})) or 'none yet'})",
                               field=f"rules.{rule}.model")


def sync_strategy_partitions(instance, conn) -> list[str]:
    """The ``strategy`` partitions of ``paper_backtest`` made equal to the strategies table's names."""
    from ..paper import STRATEGY_PARTITIONS  # not assets.paper: its month partitions load with the code location

    names = {r[0] for r in conn.execute("SELECT DISTINCT name FROM strategies").fetchall()}
    existing = set(instance.get_dynamic_partitions(STRATEGY_PARTITIONS))
    if names - existing:
        instance.add_dynamic_partitions(STRATEGY_PARTITIONS, sorted(names - existing))
    for n in sorted(existing - names):
        instance.delete_dynamic_partition(STRATEGY_PARTITIONS, n)
    return sorted(names - existing)


def add_strategy(source: str, *, store=None, instance=None) -> dict:
    """Store a strategy from a YAML or JSON file (or the text itself): validated, versioned by content."""
    from ..paper.spec import parse
    from ..store import paper as paper_store

    text = source
    if isinstance(source, str) and "\n" not in source and len(source) < 4096 \
            and not source.lstrip().startswith("{") and (":" not in source or _is_path(source)):
        # a path (one line of spec text has a key: a colon, or opens with {); a missing file is named as one
        text = _read_spec_file(source)
    spec = parse(text)
    with store_or_open(store) as s:
        check_universe(s, spec)
        check_models(s, spec)
        with s.conn.transaction():
            paper_store.save_strategy(s.conn, spec)
        sync_strategy_partitions(_inst(instance), s.conn)  # its paper_backtest partitions, in the UI at once
    return {"name": spec.name, "version": spec.version, "kind": spec.kind,
            "universe": [f"{a} {b}" for a, b in spec.universe], "models": spec.models()}


def _is_path(source: str) -> bool:
    p = Path(source)
    try:
        return p.suffix.lower() in (".yaml", ".yml", ".json") or p.exists()
    except (OSError, ValueError):
        return True


_SPEC_MAX_BYTES = 1 << 20


def _read_spec_file(source: str) -> str:
    """The file's text: read as bytes and decoded as UTF-8 here, so a missing, Latin-1 or binary file is named."""
    p = Path(source)
    try:
        if not p.is_file():
            raise InvalidInput(f"no strategy file at {source} ({'a directory' if p.is_dir() else 'no such file'}; "
                               "give a YAML or JSON spec file)", field="file")
        if p.stat().st_size > _SPEC_MAX_BYTES:
            raise InvalidInput(f"the strategy file {source} is {p.stat().st_size} bytes: a spec is at most "
                               f"{_SPEC_MAX_BYTES} bytes", field="file")
        data = p.read_bytes()
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        if isinstance(e, InvalidInput):
            raise
        raise InvalidInput(f"cannot read the strategy file {source!r}: {getattr(e, 'strerror', None) or e}",
                           field="file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"the strategy file {source} is not UTF-8 text (byte {e.start}: "
                           f"{data[e.start:e.start + 1]!r}): save it as UTF-8", field="file") from None


def list_strategies(*, store=None) -> list[dict]:
    from ..store import paper as paper_store

    with store_or_open(store) as s:
        return _jsonable(paper_store.list_strategies(s.conn))


def backtest(strategy: str, start, end, *, replicates: int = 200, store=None, log_mlflow: bool = True) -> dict:
    """Backtest the newest version of ``strategy`` over [start, end) in this process, then its controls through
    the same engine: buy-and-hold (fully invested and at the strategy's mean exposure) and ``replicates`` random
    entries; each compared by the paired block bootstrap (it beats a control only when the interval lies above 0)."""
    from ..paper import backtest as driver
    from ..resources.mlflow import MLflowResource

    t0, t1 = parse_time(start, "from"), parse_time(end, "to")
    if t0 is None or t1 is None:
        raise InvalidInput("--from and --to are required (--to exclusive)", field="from" if t0 is None else "to")
    if not t0 < t1:
        raise InvalidInput(f"--from {start} must be before --to {end}", field="from")
    replicates = _replicates(replicates)
    with store_or_open(store) as s:
        spec = _newest(s, strategy)
        check_universe(s, spec)
        out = driver.run_and_report(s, spec, t0, t1, replicates=replicates,
                                    mlflow=MLflowResource() if log_mlflow else None)
    ml = out["mlflow"] or {}
    run = {**out["run"], "mlflow_run_id": ml.get("mlflow_run_id"), "mlflow_url": ml.get("url")}
    return _jsonable({"run": run, "stats": out["stats"], "vs_buy_and_hold": out["vs_buy_and_hold"],
                      "vs_random_entry": out["vs_random_entry"]})


def _replicates(value) -> int:
    from ..core.numbers import integer

    return integer(value, "replicates", "--replicates", low=1, high=10_000)


def candle_span(store, spec, t0, t1):
    """(first, last): the times of the universe's first and last stored candles with t0 <= ts < t1 (over its
    series), or (None, None)."""
    spans = [store.conn.execute("SELECT min(ts), max(ts) FROM ohlcv WHERE symbol = %s AND timeframe = %s AND "
                                "ts >= %s AND ts < %s", (symbol, tf, t0, t1)).fetchone() for symbol, tf in spec.universe]
    spans = [sp for sp in spans if sp[0] is not None]
    if not spans:
        return None, None
    return min(a for a, _ in spans), max(b for _, b in spans)


def backfill(strategy: str, start, end, *, replicates=None, store=None, instance=None) -> dict:
    """An asset backfill of ``paper_backtest`` over the strategy's months that [start, end) touches: the daemon
    runs them in one run, month after month (each continues the previous one's end state). A range with no
    candle of the universe is refused before anything moves (the history's first month among it); a range that
    reaches past the universe's candles is cut to the months of its first and last candle in it
    (``from_first_candle``, ``to_last_candle`` in the answer): a month without a candle holds nothing to trade,
    and the backfill's single run would fail on it (the backtest refuses a range without candles)."""
    import time

    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from ..assets.paper import PAPER_KEY, paper_key, paper_partitions_from
    from ..assets.partitions import month_key, month_partitions_from, store_first_month
    from ..backfill import months_between

    t0, t1 = parse_time(start, "from"), parse_time(end, "to")
    if t0 is None or t1 is None:
        raise InvalidInput("--from and --to are required (--to exclusive)", field="from" if t0 is None else "to")
    if not t0 < t1:
        raise InvalidInput(f"--from {start} must be before --to {end}", field="from")
    replicates = None if replicates is None else _replicates(replicates)
    inst = _inst(instance)
    with store_or_open(store) as s:
        spec = _newest(s, strategy)
        check_universe(s, spec)
        first_ts, last_ts = candle_span(s, spec, t0, t1)
        if first_ts is None:  # the backtest's own refusal, before the history start moves
            raise InvalidInput(f"no candles of the universe ({', '.join(f'{a} {b}' for a, b in spec.universe)}) "
                               f"from {t0:%Y-%m-%d %H:%M} to {t1:%Y-%m-%d %H:%M}: load them first (tp backfill), "
                               "or check the dates", field="from")
        sync_strategy_partitions(inst, s.conn)
        last = t1 - __import__("datetime").timedelta(microseconds=1)
        first_ts, last_ts = first_ts.astimezone(t0.tzinfo), last_ts.astimezone(t0.tzinfo)
        months = months_between(first_ts.date(), last_ts.date())  # the candles lie in [t0, t1): within its months
        cut_start, cut_end = months[0] != month_key(t0), months[-1] != month_key(last)
        s.extend_history(months[0])  # months before the market's first are partitions from the next load on
        first = store_first_month(s)
    parts = paper_partitions_from(month_partitions_from(first))
    keys = [str(paper_key(strategy, m)) for m in months]
    target = AssetGraphSubset(partitions_subsets_by_asset_key={PAPER_KEY: parts.empty_subset().with_partition_keys(keys)})
    backfill_id = make_new_backfill_id()
    inst.add_backfill(PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id, asset_graph_subset=target, backfill_timestamp=time.time(),
        tags={"tp/run_kind": "backfill"}, dynamic_partitions_store=inst,
        title=f"paper_backtest: {strategy} {months[0][:7]}..{months[-1][:7]}",
        description="created by tp paper backtest --backfill",
        run_config=None if replicates is None else {"ops": {"paper_backtest": {"config": {"replicates": replicates}}}}))
    return {"backfill_id": backfill_id, "strategy": strategy, "months": [m[:7] for m in months],
            "partitions": len(keys), **({"from_first_candle": first_ts.isoformat()} if cut_start else {}),
            **({"to_last_candle": last_ts.isoformat()} if cut_end else {})}


def _newest(s, strategy: str):
    from ..paper.spec import parse
    from ..store import paper as paper_store

    row = paper_store.strategy(s.conn, strategy)
    if row is None:
        known = [r["name"] for r in paper_store.list_strategies(s.conn)]
        raise InvalidInput(f"no strategy named {strategy[:64]!r} (known: {', '.join(known) or 'none'}; "
                           "tp paper strategies add FILE)", field="strategy")
    return parse(row["spec"], stored=True)


def start_live(strategy: str, *, cash=None, fresh: bool = False, store=None) -> dict:
    """A live paper run of the newest version of ``strategy``, today's champions pinned: it steps on every live
    candle of its universe once the candle's outputs are committed (after the live prediction run). A strategy
    stopped before resumes its last live run's positions and cash (same version), unless ``fresh`` or ``cash``."""
    from ..paper import live

    if cash is not None:
        from ..paper.spec import cash_value

        cash = cash_value(cash, "--cash")  # the spec's rule: finite, above 0, at most 1e15
    with store_or_open(store) as s:
        spec = _newest(s, strategy)
        check_universe(s, spec)
        for i, (symbol, _tf) in enumerate(spec.universe):
            info = s.get_symbol(symbol)
            if not (info.enabled and info.live):
                raise InvalidInput(f"universe[{i}].symbol {symbol} is not live: no live candle would reach the run "
                                   f"(tp symbols update {symbol} --live)", field=f"universe[{i}].symbol")
        return _jsonable(live.start(s, spec, cash=cash, fresh=fresh))


def stop_live(strategy: str, *, store=None) -> dict:
    from ..paper import live

    with store_or_open(store) as s:
        return _jsonable(live.stop(s, strategy))


def live_status(*, store=None) -> dict:
    """The live runs (running, and stopped ones' last state): positions, open orders, equity, the UTC day's P&L,
    the risk locks, whether today's champions differ from the pins (a restart picks a promotion up), and the paper
    consumer's backlog."""
    from ..paper import live

    with store_or_open(store) as s:
        return _jsonable(live.status(s))


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

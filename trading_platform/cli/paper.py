"""`tp paper`: strategies as data and their backtests (issue 25, in progress)."""

from __future__ import annotations

from ..api import paper as api
from ._base import Parser, emit


def _pct(v) -> str:
    return "-" if v is None else f"{v:+.2%}"


def cmd_strategies(args) -> int:
    if args.strategies_command == "add":
        out = api.add_strategy(args.file)
        emit(args, out, f"strategy {out['name']} version {out['version']} ({out['kind']}): "
                        f"{', '.join(out['universe'])}")
    else:
        rows = api.list_strategies()
        emit(args, rows, "\n".join(f"{r['name']:<24} {r['version']}  {r['kind']}" for r in rows) or "(no strategies)")
    return 0


def cmd_backtest(args) -> int:
    if args.backfill:
        out = api.backfill(args.strategy, args.from_, args.to, replicates=args.replicates)
        emit(args, out, f"backfill {out['backfill_id']}: paper_backtest {out['strategy']} {out['months'][0]}.."
                        f"{out['months'][-1]} ({out['partitions']} months"
                        + (f"; from the universe's first candle, {out['from_first_candle'][:16]}"
                           if out.get("from_first_candle") else "")
                        + (f"; to its last, {out['to_last_candle'][:16]}" if out.get("to_last_candle") else "")
                        + "); the daemon runs it (tp up)")
        return 0
    replicates = 200 if args.replicates is None else args.replicates
    out = api.backtest(args.strategy, args.from_, args.to, replicates=replicates)
    st, bh, rnd = out["stats"], out["vs_buy_and_hold"], out["vs_random_entry"]

    def vs(name, c):
        if not c:
            return f"vs {name}: -"
        lo, hi = c["interval"]
        return (f"vs {name}: control {_pct(c['control_return'])}, difference interval [{lo:+.2%}, {hi:+.2%}] "
                f"{'BEATS' if c['beats'] else 'does not beat'}"
                + (f", percentile {c['percentile']:.0f}" if c.get("percentile") is not None else ""))

    emit(args, out, "\n".join([
        f"run {out['run']['run_id']}: {out['run']['strategy']} v{out['run']['version']}, {st['orders']} orders, "
        f"{st['trades']} trades",
        f"return {_pct(st['total_return'])}, max drawdown {st['max_drawdown']:.2%}, sharpe "
        f"{'-' if st['sharpe'] is None else format(st['sharpe'], '.2f')}, exposure {st['exposure']:.0%}, costs "
        f"{st['costs_paid']:.2f}",
        vs("buy and hold (exposure-matched)", bh), vs("random entry", rnd)]))
    return 0


def cmd_report(args) -> int:
    out = api.report(args.run)
    emit(args, out, "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


def cmd_orders(args) -> int:
    rows = api.orders(args.run)
    emit(args, rows, "\n".join(f"{r['signal_ts'][:16]} {r['symbol']} {r['side']:<4} {r['intent']:<16} "
                               f"{r['quantity']:.6g} {r['status']}" for r in rows) or "(no orders)")
    return 0


def cmd_trades(args) -> int:
    rows = api.trades(args.run)
    emit(args, rows, "\n".join(f"{r['entry_ts'][:16]} -> {r['exit_ts'][:16]} {r['symbol']} {r['pnl']:+.2f} "
                               f"({r['pnl_pct']:+.2%}) {r['exit_reason']}" for r in rows) or "(no trades)")
    return 0


def cmd_start(args) -> int:
    out = api.start_live(args.strategy, cash=args.cash, fresh=args.fresh)
    emit(args, out, f"live run {out['run_id']}: {out['strategy']} v{out['version']}, cash {out['cash']:g}, pins "
                    f"{', '.join(f'{k} {v}' for k, v in out['pins'].items()) or 'none'}; it steps on the candles "
                    f"closing after {out['stepped_to'] or 'now'}, once their outputs are committed"
                    + (f"; resumed from run {out['resumed_from']} with its {out['positions']} position(s)"
                       if out.get("resumed_from") else ""))
    return 0


def cmd_stop(args) -> int:
    out = api.stop_live(args.strategy)
    emit(args, out, f"live run {out['run_id']} stopped (its positions stay, marked at the last close)"
                    + ("; no live run left: the paper consumer is removed" if out["consumer_removed"] else ""))
    return 0


def cmd_status(args) -> int:
    out = api.live_status()
    lines = []
    for r in out["runs"]:
        lines.append(f"{r['strategy']} v{r['version']} [{r['status']}] run {r['run_id']}: equity {r['equity']:.2f}, "
                     f"today {r['day_pnl']:+.2f}, exposure {r['exposure']:.2f}, stepped to {r['stepped_to'] or '-'}")
        lines += [f"  position {p['symbol']} {p['timeframe']} {p['quantity']:.6g} @ {p['entry_price']:.6g} "
                  f"(mark {p['mark'] or '-'}, held {p['held']})" for p in r["positions"]]
        lines += [f"  order {o['side']} {o['symbol']} {o['quantity']:.6g} {o['intent']} {o['status']}"
                  for o in r["open_orders"]]
        if r["risk_locks"]:
            lines.append(f"  risk locks: {', '.join(r['risk_locks'])}")
        if r["promoted_since_start"]:
            lines.append("  promoted since the start (picked up by a restart: tp paper stop, then start): "
                         + ", ".join(f"{m} {v['pinned']} -> {v['champion']}" for m, v in r["promoted_since_start"].items()))
    c = out["consumer"]
    lines.append(f"paper consumer: backlog {c['backlog']}, lag {c['lag_s']} s" if c else "paper consumer: not registered "
                 "(no live run)")
    emit(args, out, "\n".join(lines) if out["runs"] else lines[-1])
    return 0


def register(sub, cmd) -> None:
    pa = sub.add_parser("paper", help="paper trading: strategies as data, backtests against honest controls")
    ps = pa.add_subparsers(dest="paper_command", required=True, parser_class=Parser)
    st = ps.add_parser("strategies", help="store a strategy (YAML or JSON) or list them")
    sts = st.add_subparsers(dest="strategies_command", required=True, parser_class=Parser)
    a = sts.add_parser("add")
    a.add_argument("file", help="a YAML or JSON strategy spec (docs/paper.md)")
    a.add_argument("--json", action="store_true")
    a = sts.add_parser("list")
    a.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_strategies)
    b = ps.add_parser("backtest", help="backtest a strategy in this process, with its controls")
    b.add_argument("--strategy", required=True)
    b.add_argument("--from", dest="from_", required=True, help="first candle's time (inclusive)")
    b.add_argument("--to", required=True, help="end (exclusive)")
    b.add_argument("--replicates", default=None, help="random-entry replicates, 1 to 10000 (default 200; with "
                                                       "--backfill: each month's)")
    b.add_argument("--backfill", action="store_true",
                   help="hand the daemon an asset backfill of paper_backtest over the range's months instead")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_backtest)
    live = (("start", cmd_start, "run a strategy live on the live candles (paper: no real orders)", True),
            ("stop", cmd_stop, "stop a strategy's live run (its positions stay)", True),
            ("status", cmd_status, "live runs: positions, open orders, equity, the day's P&L, risk locks, backlog",
             False))
    for name, fn, what, named in live:
        p = ps.add_parser(name, help=what)
        if named:
            p.add_argument("strategy")
        if name == "start":
            p.add_argument("--cash", default=None, help="starting cash (default: the spec's; starts fresh)")
            p.add_argument("--fresh", action="store_true",
                           help="start from the cash, not from where the strategy's last live run stopped")
        p.add_argument("--json", action="store_true")
        p.set_defaults(fn=fn)
    for name, fn, what in (("report", cmd_report, "a run's row and statistics"),
                           ("orders", cmd_orders, "a run's orders"), ("trades", cmd_trades, "a run's round trips")):
        p = ps.add_parser(name, help=what)
        if name == "report":
            p.add_argument("run")
        else:
            p.add_argument("--run", required=True)
        p.add_argument("--json", action="store_true")
        p.set_defaults(fn=fn)

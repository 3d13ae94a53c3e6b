"""`tp backfill` and `tp demo`."""

from __future__ import annotations

import sys

from ..api import runs as api
from ._base import emit, stderr_log


def cmd_backfill(args) -> int:
    out = api.backfill(args.symbol, args.from_, args.to, assets=args.assets)
    emit(args, out, f"backfill {out['backfill_id']}: {', '.join(out['assets'])} for {out['symbol']} over "
                    f"{out['months'][0]}..{out['months'][-1]} ({out['partitions']} symbol-months, at most "
                    f"{out['runs_at_most']} runs); pinned versions {out['pinned']}. The daemon runs it "
                    "(`tp up`, or dagster-daemon); follow it in the UI under Runs > Backfills.")
    return 0


def _paper_line(p: dict) -> list[str]:
    if not p or p.get("skipped") or p.get("error"):
        return [f"  paper: {p.get('skipped') or p.get('error')}"] if p else []
    return [f"  paper: {p['strategy']} on {p['series']}: {p['orders']} orders, {p['trades']} trades, return "
            f"{p['total_return']:+.2%}, max drawdown {p['max_drawdown']:.2%}; beats buy-and-hold "
            f"{'yes' if p['beats_buy_and_hold'] else 'no'}, random entry {'yes' if p['beats_random_entry'] else 'no'} "
            f"(tp paper report {p['run_id']})"]


def cmd_demo(args) -> int:
    import os

    from ..demo import gate_figures
    from ..instance import quiet_dagster_warnings, verbose
    from .supervisor import console_env

    # the console `tp up` keeps (no progress bars, no libraries' INFO, no notes on Dagster's own APIs) unless
    # TP_VERBOSE=1: the gate's decisions and the summary are what a newcomer reads here
    os.environ.update(console_env(verbose()))
    quiet_dagster_warnings()
    summary = api.demo(quick=args.quick, seed=args.seed, control=args.control, log=stderr_log, as_of=args.as_of)
    won = {f: [c["model"] for c in cs] for f, cs in summary["champions"].items()}
    text = "\n".join([f"demo ({summary['source']}, as of {summary['as_of']}): {', '.join(summary['symbols'])} "
                      f"over {', '.join(m[:7] for m in summary['months'])}",
                      *(f"  {k:<22} {v:6.2f} s" for k, v in summary["asset_seconds"].items()),
                      f"  stored candles: {summary['stored_candles']}",
                      "  champions: " + "; ".join(f"{f} {', '.join(m) if m else 'none'}" for f, m in won.items()),
                      *(f"  {r['model']:<32} {r['decision']:<10} {r['why'][:110]}"
                        for r in gate_figures(summary["models"])),
                      *_paper_line(summary.get("paper") or {}),
                      f"  total {summary['total_seconds']} s"])
    emit(args, summary, text)
    if summary["failed"]:
        print(f"error: the demo finished with {len(summary['failed'])} failed step(s): "
              + "; ".join(summary["failed"]), file=sys.stderr)
        return 1
    return 0


def register(sub, cmd) -> None:
    demo = cmd("demo", cmd_demo, "load the sample market, materialize everything, print a summary")
    demo.add_argument("--quick", action="store_true", help="smaller sample (2 symbols, the month of the last candle)")
    demo.add_argument("--control", action="store_true",
                      help="the control market: random walks of the same shape, where no model should earn a "
                           "champion")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--as-of", dest="as_of", type=_day, default=None, metavar="YYYY-MM-DD",
                      help="run the demo as of that day (UTC): its months and candles end at the day's midnight, so "
                           "the same day and seed train on the same candles whenever it runs (default: today)")


def _day(text: str):
    """A day as YYYY-MM-DD, for argparse (its error names the option)."""
    import argparse
    import re
    from datetime import date

    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):  # fromisoformat also reads week dates (2026-W49-1)
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a day as YYYY-MM-DD") from None


def register_backfill(sub, cmd) -> None:
    bf = cmd("backfill", cmd_backfill,
             "an asset backfill over a symbol's history: the model outputs (model versions pinned), or the "
             "market data and features (--assets market,features); the daemon runs it in chunks")
    bf.add_argument("--symbol", required=True)
    bf.add_argument("--from", dest="from_", required=True, metavar="DATE")
    bf.add_argument("--to", required=True, metavar="DATE")
    bf.add_argument("--assets", default="predictions,forecasts,patterns",
                    help="comma-separated: predictions, forecasts, patterns, market, features")

"""`tp symbols`: the managed symbols."""

from __future__ import annotations

from ..api import symbols as api
from ._base import Parser, emit


def cmd_symbols(args) -> int:
    if args.action == "list":
        rows = api.list_symbols()
        text = "\n".join(
            f"{r['symbol']:<16} {r['category']:<7} {r['exchange'] or '':<10} {','.join(r['timeframes']):<20} "
            f"{'enabled' if r['enabled'] else 'disabled'}{' live' if r['live'] else ''}" for r in rows
        ) or "(no symbols)"
        emit(args, rows, text)
    elif args.action == "add":
        row = api.add_symbol(args.symbol, category=args.category, exchange=args.exchange, timeframes=args.timeframes,
                             enabled=not args.disabled, live=args.live, metadata=args.metadata)
        emit(args, row, f"added {row['symbol']}")
    elif args.action == "update":
        row = api.update_symbol(args.symbol, category=args.category, exchange=args.exchange,
                                timeframes=args.timeframes, enabled=args.enabled, live=args.live_flag,
                                metadata=args.metadata)
        emit(args, row, f"updated {row['symbol']}")
    elif args.action == "remove":
        out = api.remove_symbol(args.symbol, purge=args.purge)
        emit(args, out, f"removed {args.symbol} ({out['candles_deleted']} candles deleted)")
    return 0


def register(sub, cmd) -> None:
    sy = sub.add_parser("symbols", help="managed symbols")
    sys_ = sy.add_subparsers(dest="action", required=True, parser_class=Parser)
    ls = sys_.add_parser("list")
    ls.add_argument("--json", action="store_true")
    for name in ("add", "update"):
        a = sys_.add_parser(name)
        a.add_argument("symbol")
        a.add_argument("--category", choices=None)
        a.add_argument("--exchange")
        a.add_argument("--timeframes", help="comma-separated, e.g. 5m,1h,1d")
        a.add_argument("--metadata", help="a JSON object")
        a.add_argument("--json", action="store_true")
        if name == "add":
            a.add_argument("--live", action="store_true")
            a.add_argument("--disabled", action="store_true")
        else:
            g = a.add_mutually_exclusive_group()
            g.add_argument("--enable", dest="enabled", action="store_const", const=True)
            g.add_argument("--disable", dest="enabled", action="store_const", const=False)
            g2 = a.add_mutually_exclusive_group()
            g2.add_argument("--live", dest="live_flag", action="store_const", const=True)
            g2.add_argument("--not-live", dest="live_flag", action="store_const", const=False)
    rm = sys_.add_parser("remove")
    rm.add_argument("symbol")
    rm.add_argument("--purge", action="store_true", help="also delete the symbol's candles, model outputs and alerts (paper runs and quarantined rows stay)")
    rm.add_argument("--json", action="store_true")
    sy.set_defaults(fn=cmd_symbols)

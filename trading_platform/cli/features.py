"""`tp features`: the technical features."""

from __future__ import annotations

from pathlib import Path

from ..api import features as api
from ._base import Parser, emit


def cmd_export(args) -> int:
    summary = api.export_features(args.symbol, args.timeframe, args.out)
    emit(args, summary, f"wrote {summary['rows']} rows x {summary['columns']} columns to {Path(args.out)}"
                        + (f" (recomputed {len(summary['recomputed_months'])} months)"
                           if summary["recomputed_months"] else ""))
    return 0


def register(sub, cmd) -> None:
    fe = sub.add_parser("features", help="technical features")
    fes = fe.add_subparsers(dest="features_command", required=True, parser_class=Parser)
    ex = fes.add_parser("export", help="write one symbol's features to Parquet (computing missing or stale ones)")
    ex.add_argument("--symbol", required=True)
    ex.add_argument("--timeframe", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(fn=cmd_export)

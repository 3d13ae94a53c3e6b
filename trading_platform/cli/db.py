"""`tp db`: the market store's URL and its migrations; `tp backup` and `tp restore` (the deployment's state)."""

from __future__ import annotations

from ..api import market
from ._base import Parser, emit


def cmd_url(args) -> int:
    out = market.database_url(show_password=args.show_password)
    emit(args, out, out["url"])
    return 0


def cmd_migrate(args) -> int:
    out = market.migrate(wait_s=args.wait)
    v, applied = out["schema_version"], out["applied"]
    emit(args, out, f"schema at version {v}" + (f" (applied {', '.join(map(str, applied))})" if applied
                                                 else " (up to date)") + "; " + "; ".join(out["roles"].values()))
    return 0


def cmd_backup(args) -> int:
    import sys

    from ..backup import backup

    out = backup(args.dir, log=lambda m: print(m, file=sys.stderr))
    parts = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in out["parts"].items() if v["bytes"])
    emit(args, out, f"backup in {args.dir}: {out['bytes'] / 1e6:.1f} MB ({parts}) in {out['seconds']:.1f} s; the "
                    "model signing key is not in it: keep it apart")
    return 0


def cmd_restore(args) -> int:
    import sys

    from ..backup import restore

    out = restore(args.dir, log=lambda m: print(m, file=sys.stderr))
    emit(args, out, f"restored {out['tables']} tables ({out['rows']} rows, every count as in the backup) from "
                    f"{args.dir} in {out['seconds']:.1f} s")
    return 0


def register(sub, cmd) -> None:
    b = cmd("backup", cmd_backup, "a consistent backup of the market store, Dagster's storage, MLflow's store and "
                                  "artifacts, and the knowledge base's index into DIR (a new directory)")
    b.add_argument("dir", metavar="DIR")
    r = cmd("restore", cmd_restore, "restore a backup made by `tp backup` into this empty deployment, checked "
                                    "against its manifest")
    r.add_argument("dir", metavar="DIR")
    db = sub.add_parser("db", help="the market store")
    dbs = db.add_subparsers(dest="db_command", required=True, parser_class=Parser)
    u = dbs.add_parser("url", help="a URI psql accepts (password as *** unless --show-password)")
    u.add_argument("--show-password", action="store_true")
    u.add_argument("--json", action="store_true")
    u.set_defaults(fn=cmd_url)
    m = dbs.add_parser("migrate", help="apply pending schema migrations (the deploy step; embedded, also done on "
                                       "first use)")
    m.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="retry an unreachable database for up to this long (a container still starting)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_migrate)

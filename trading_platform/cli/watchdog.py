"""`tp watchdog`: the checks' states, and the watchdog service."""

from __future__ import annotations

from ..api import watchdog as api
from ._base import Parser, emit


def _line(s: dict) -> str:
    since = f" since {s['since'][:19].replace('T', ' ')}" if s["state"] == "failing" and s["since"] else ""
    last = s.get("last_delivery")
    msg = (f"; last message {last['type']} {last['created_at'][:19].replace('T', ' ')} ({last['status']})"
           if last else f"; last message {s['last_message']}" if s.get("last_message") else "")
    what = s["detail"] or s["last_error"] or s["description"]
    state = "disabled" if s.get("disabled") else s["state"]
    return f"{s['name']:<22} {state:<8} {s['severity']:<5}{since} — {what}{msg}"


def cmd_status(args) -> int:
    rows = api.status(check=args.check)
    emit(args, rows[0] if args.check else rows, "\n".join(map(_line, rows)))
    return 0


def cmd_run(args) -> int:
    out = api.run(once=args.once, interval_s=args.interval)
    emit(args, out, "watchdog stopped: " + ", ".join(f"{k} {v}" for k, v in out["states"].items())
                    + f"; {out['messages']} message(s); {out['spooled']} in the spool")
    return 0


def register(sub, cmd) -> None:
    wd = sub.add_parser("watchdog", help="the watchdog: say when the platform stops working, and when it recovers")
    wsub = wd.add_subparsers(dest="watchdog_command", required=True, parser_class=Parser)
    p = wsub.add_parser("status", help="every check (or --check NAME): state, since when, the last message")
    p.set_defaults(fn=cmd_status)
    p.add_argument("--check", help="one check by name")
    p.add_argument("--json", action="store_true")
    p = wsub.add_parser("run", help="the watchdog service: the daemon's heartbeat, the database, the delivery "
                                    "worker, and the spool while the database is down (tp up starts it)")
    p.set_defaults(fn=cmd_run)
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", help="seconds between passes (default TP_WATCHDOG_INTERVAL_S, 30)")
    p.add_argument("--json", action="store_true")

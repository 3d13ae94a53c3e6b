"""`tp alerts`: rules, destinations, the alerts made, their statistics and the delivery outbox."""

from __future__ import annotations

from ..api import alerts as api
from ._base import Parser, emit


def _shown(v) -> str:
    """Text from the store as a terminal line may show it: control characters (an ANSI escape, a newline in a
    name stored before names were checked) escaped, never sent raw."""
    text = str(v)
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _rule_line(r: dict) -> str:
    state = "removed" if r["removed_at"] else "enabled" if r["enabled"] else "disabled"
    return _shown(f"{r['name']:<20} {r['model']:<24} {r['side']} {r['threshold']:<6g} "
                  f"{','.join(r['symbols'] or ['all']):<20} {','.join(r['timeframes'] or ['all']):<10} "
                  f"cooldown {r['cooldown_s']:g} s  {state}")


def _destination_line(d: dict) -> str:
    where = (f"url ${d['url_env']}" + (f", signed with ${d['secret_env']}" if d["secret_env"] else "")
             if d["kind"] == "webhook" else f"token ${d['token_env']}, chat {d['chat_id']}")
    extras = [d["send_mode"], *(["resolutions"] if d["resolutions"] else []),
              *(["retractions"] if d["retractions"] else []), *(["watchdog"] if d.get("watchdog") else []),
              *(["paper"] if d.get("paper") else []),
              f"models {','.join(d['models'])}" if d["models"] else "every model",
              f"{d['rate_per_min']:g}/min" if d["rate_per_min"] else "default rate"]
    n = d.get("deliveries") or {}
    waiting = f"; {n.get('pending', 0) + n.get('sending', 0)} waiting, {n.get('dead', 0)} dead" if n else ""
    why = f"\n    {_shown(d['reason'])}" if d.get("reason") else ""
    error = f"\n    last error: {_shown(d['last_error'])}" if d.get("last_error") else ""
    head = f"{d['name']:<16} {d['kind']:<8} {d.get('state', '-'):<13} {where}; {', '.join(extras)}{waiting}"
    return f"{_shown(head)}{why}{error}"


def _table(rows: list[dict], cols: tuple[str, ...], empty: str) -> str:
    """A compact table of ``rows``: one line each, the values of ``cols``."""
    if not rows:
        return empty

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return _shown(",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)

    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in [cols, *cells])


def cmd_rule(args) -> int:
    if args.rule_command == "remove":
        r = api.remove_rule(args.name)
        emit(args, r, f"removed rule {r['name']} ({r['alerts_kept']} alerts kept)")
        return 0
    opts = dict(model=args.model, symbols=args.symbols, timeframes=args.timeframes, threshold=args.threshold,
                side=args.side, cooldown=args.cooldown)
    if args.rule_command == "add":
        r = api.add_rule(args.name, enabled=not args.disabled, **opts)
    else:
        r = api.update_rule(args.name, enabled=args.enabled, **opts)
    emit(args, r, f"{'added' if args.rule_command == 'add' else 'updated'} rule\n{_rule_line(r)}")
    return 0


def cmd_rules(args) -> int:
    rows = api.list_rules(removed=args.all)
    emit(args, rows, "\n".join(map(_rule_line, rows)) or "(no alert rules)")
    return 0


def cmd_destination(args) -> int:
    if args.destination_command == "remove":
        out = api.remove_destination(args.name)
        emit(args, out, f"removed destination {out['removed']} ({out['deliveries_deleted']} deliveries deleted, "
                        f"{out['undelivered_dropped']} of them not yet delivered)")
        return 0
    opts = dict(kind=args.kind, url_env=args.url_env, secret_env=args.secret_env, token_env=args.token_env,
                chat_id=args.chat_id, send_mode=args.send_mode, resolutions=args.resolutions,
                retractions=args.retractions, models=args.models, rate_per_min=args.rate_per_min,
                watchdog=args.watchdog, paper=args.paper)
    if args.destination_command == "add":
        d = api.add_destination(args.name, enabled=not args.disabled, **opts)
    else:
        d = api.update_destination(args.name, enabled=args.enabled, **opts)
    emit(args, d, f"{'added' if args.destination_command == 'add' else 'updated'} destination\n"
                  f"{_destination_line(d)}")
    return 0


def cmd_destinations(args) -> int:
    rows = api.list_destinations()
    emit(args, rows, "\n".join(map(_destination_line, rows)) or "(no alert destinations)")
    return 0


def cmd_list(args) -> int:
    rows = api.list_alerts(model=args.model, symbol=args.symbol, status=args.status, retracted=args.retracted,
                           limit=args.limit)
    emit(args, rows, _table(rows, ("id", "rule", "model", "version", "symbol", "timeframe", "ts", "value", "side",
                                   "threshold", "status", "send", "retracted_at"), "(no alerts)"))
    return 0


def cmd_stats(args) -> int:
    rows = api.stats(model=args.model, version=args.version, symbol=args.symbol, timeframe=args.timeframe,
                     since=args.since, until=args.until)
    emit(args, rows, _table(rows, ("model", "version", "symbol", "timeframe", "role", "sample", "side", "n",
                                   "success", "failed", "expired", "pending", "retracted", "hit_rate", "hit_rate_ci95",
                                   "base_rate", "lift", "mean_time_to_success_s"), "(no alert statistics)"))
    return 0


def cmd_deliveries(args) -> int:
    out = api.deliveries(status=args.status, destination=args.destination, limit=args.limit)
    sm, lat = out["summary"], out["summary"].get("latency_last_hour_s")
    head = (f"backlog {sm['backlog']} ({sm['pending']} pending, {sm['sending']} sending), {sm['dead']} dead, "
            f"{sm['delivered_last_hour']} delivered in the last hour"
            + (f" (enqueue to delivered p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s)" if lat else ""))
    emit(args, out, head + "\n" + _table(out["deliveries"], ("id", "destination", "key", "type", "status", "attempts",
                                                             "next_attempt_at", "last_status", "last_error"),
                                        "(no deliveries)"))
    return 0


def cmd_retry(args) -> int:
    out = api.retry(ids=args.id, destination=args.destination)
    emit(args, out, f"{out['retried']} dead deliveries due again")
    return 0


def cmd_test(args) -> int:
    out = api.send_test(args.name)
    said = f"answered {out['status']}" if out["status"] is not None else "did not answer"
    emit(args, out, f"{out['destination']}: the receiver {said} in {out['elapsed_s']} s: "
                    + ("taken" if out["ok"] else f"not taken ({out['error']})"))
    return 0 if out.get("ok") else 1


def cmd_deliver(args) -> int:
    out = api.deliver(poll_s=args.poll_s)  # until Ctrl-C or SIGTERM, which stop it cleanly (exit 0)
    emit(args, out, "delivery worker stopped: " + " ".join(f"{k}={v}" for k, v in out.items()))
    return 0


def _rule_options(p, add: bool) -> None:
    p.add_argument("name")
    p.add_argument("--model", help="the model whose champion's outputs the rule watches" + (" (required)" * add))
    p.add_argument("--symbols", help="comma-separated (default: every symbol the model scores; all: every one)")
    p.add_argument("--timeframes", help="comma-separated, e.g. 5m,1h (default and all: every timeframe)")
    p.add_argument("--threshold", help="a number from 0 to 1" + (" (required)" * add))
    p.add_argument("--side", help="above (default): an output at or above the threshold alerts; below: at or below")
    p.add_argument("--cooldown", help="seconds after an alert in which the same rule and symbol alert no more")
    p.add_argument("--json", action="store_true")
    _enabled_options(p, add)


def _destination_options(p, add: bool) -> None:
    p.add_argument("name")
    p.add_argument("--kind", help="webhook or telegram" + (" (required)" * add))
    p.add_argument("--url-env", help="webhook: the NAME of the environment variable holding its URL")
    p.add_argument("--secret-env", help="webhook: the NAME of the variable holding the signing secret")
    p.add_argument("--token-env", help="telegram: the NAME of the variable holding the bot token")
    p.add_argument("--chat-id", help="telegram: the chat (a number, or @channel)")
    p.add_argument("--send-mode", help="alerts_only (default), all, positive_only or negative_only")
    p.add_argument("--resolutions", help="on/off: also send alert_resolved messages (default off)")
    p.add_argument("--retractions", help="on/off: also send alert_retracted messages (default off)")
    p.add_argument("--models", help="comma-separated: only these models' alerts (default and all: every model)")
    p.add_argument("--rate-per-min", help="messages per minute at most (default: the kind's)")
    p.add_argument("--watchdog", help="on/off: also send the watchdog's messages (tp watchdog; default off)")
    p.add_argument("--paper", help="on/off: also send live paper runs' order events (tp paper start; default off)")
    p.add_argument("--json", action="store_true")
    _enabled_options(p, add)


def _enabled_options(p, add: bool) -> None:
    if add:
        p.add_argument("--disabled", action="store_true")
    else:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--enable", dest="enabled", action="store_const", const=True)
        g.add_argument("--disable", "--disabled", dest="enabled", action="store_const", const=False)


def register(sub, cmd) -> None:
    al = sub.add_parser("alerts", help="alert rules, destinations, alerts, their statistics and deliveries")
    als = al.add_subparsers(dest="alerts_command", required=True, parser_class=Parser)

    ru = als.add_parser("rule", help="add, update or remove an alert rule")
    rus = ru.add_subparsers(dest="rule_command", required=True, parser_class=Parser)
    for name in ("add", "update"):
        _rule_options(rus.add_parser(name), add=name == "add")
    rm = rus.add_parser("remove", help="retire the rule (its alerts are kept)")
    rm.add_argument("name")
    rm.add_argument("--json", action="store_true")
    ru.set_defaults(fn=cmd_rule)
    rl = als.add_parser("rules", help="the alert rules")
    rl.add_argument("--all", action="store_true", help="also the removed rules")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(fn=cmd_rules)

    de = als.add_parser("destination", help="add, update or remove where alerts are sent")
    des = de.add_subparsers(dest="destination_command", required=True, parser_class=Parser)
    for name in ("add", "update"):
        _destination_options(des.add_parser(name), add=name == "add")
    dr = des.add_parser("remove", help="delete the destination and its deliveries")
    dr.add_argument("name")
    dr.add_argument("--json", action="store_true")
    de.set_defaults(fn=cmd_destination)
    dl = als.add_parser("destinations", help="the destinations and their delivery state")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(fn=cmd_destinations)

    ls = als.add_parser("list", help="the newest alerts")
    ls.add_argument("--model")
    ls.add_argument("--symbol")
    ls.add_argument("--status", help="pending, success, failed, expired or suppressed")
    ls.add_argument("--retracted", action="store_true", help="only alerts a correction retracted")
    ls.add_argument("--limit", default="50", help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_list)
    st = als.add_parser("stats", help="alert statistics per model, version and symbol")
    st.add_argument("--model")
    st.add_argument("--version")
    st.add_argument("--symbol")
    st.add_argument("--timeframe")
    st.add_argument("--since", help="the first day counted (a date)")
    st.add_argument("--until", help="the last day counted (a date)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_stats)
    dv = als.add_parser("deliveries", help="the delivery outbox: its newest rows and a summary")
    dv.add_argument("--status", help="pending, sending, delivered, dead or stale")
    dv.add_argument("--destination")
    dv.add_argument("--limit", default="50", help="at most this many (default 50)")
    dv.add_argument("--json", action="store_true")
    dv.set_defaults(fn=cmd_deliveries)
    rt = als.add_parser("retry", help="make failed deliveries due again")
    rt.add_argument("--id", action="append", help="a delivery id (repeat for several)")
    rt.add_argument("--destination", help="only this destination's deliveries")
    rt.add_argument("--json", action="store_true")
    rt.set_defaults(fn=cmd_retry)
    te = als.add_parser("test", help="send a test message to a destination now (exit 1 if it is not accepted)")
    te.add_argument("name")
    te.add_argument("--json", action="store_true")
    te.set_defaults(fn=cmd_test)
    dd = als.add_parser("deliver", help="run the delivery worker (until Ctrl-C)")
    dd.add_argument("--poll-s", default="1", help="seconds between polls when no NOTIFY wakes it (default 1)")
    dd.add_argument("--json", action="store_true")
    dd.set_defaults(fn=cmd_deliver)

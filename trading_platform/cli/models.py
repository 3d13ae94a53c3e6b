"""`tp models`: the MLflow model registry."""

from __future__ import annotations

from ..api import models as api
from ._base import Parser, emit


def cmd_list(args) -> int:
    models = api.list_models()
    lines = []
    for m in models:
        lines.append(f"{m['name']}  ({m['target'] or 'target not recorded'})")
        for v in m["versions"]:
            gate = v["gate"]
            score = f"{gate.get('metric', '')}={gate.get('new_score', '')}" if gate else ""
            aliases = ",".join(v["aliases"]) or "-"
            lines.append(f"  v{v['version']:<4} {aliases:<20} {score:<28} {gate.get('reason', '')}")
            if v["serve"] != "verified" and (v["aliases"] or v["serve"].startswith("refused")):
                lines.append(f"        serve         {v['serve']}")
            for key in sorted(k[:-len(".interval")] for k in gate if k.endswith(".interval")):
                lines.append(f"        {key:<13} {gate.get(key + '.metric', ''):<15} improvement "
                             f"{gate.get(key + '.improvement', '')} interval {gate[key + '.interval']} margin "
                             f"{gate.get(key + '.margin', '')} ({gate.get(key + '.against', '')})")
    emit(args, models, "\n".join(lines) or "(no registered models)")
    return 0


def cmd_compare(args) -> int:
    out = api.compare(args.name, margin=args.margin)
    text = f"{out['model']}: champion v{out['champion']} vs shadow v{out['shadow']}: {out['verdict']}"
    if "interval" in out:
        text += (f"\n  {out['rows']} realized rows since {out['since']}; {out['metric']} champion "
                 f"{out['champion_score']:.4f}, shadow {out['shadow_score']:.4f}; improvement "
                 f"{out['improvement']:+.4f}, interval [{out['interval'][0]:+.4f}, {out['interval'][1]:+.4f}], "
                 f"margin {out['margin']}")
    emit(args, out, text)
    return 0


def cmd_history(args) -> int:
    rows = api.history(args.name)
    text = "\n".join(f"{r['model']} {r['alias']}: version {r['version']} from {r['valid_from']} "
                     f"to {r['valid_to'] or 'now'} ({r['moved_by']})" for r in rows) or "no champion history yet"
    emit(args, rows, text)
    return 0


def cmd_promote(args) -> int:
    out = api.promote(args.name, args.version)
    text = f"{out['model']}: champion is now version {out['champion']} (was {out['previous']})"
    if out.get("skipped_gate"):
        text += f"\n  what the gate had said of it (skipped by this promotion): {out['skipped_gate']}"
    emit(args, out, text)
    return 0


def cmd_sign(args) -> int:
    out = api.sign(args.name, args.version)
    text = (f"{out['model']} version {out['version']} signed with this platform's key (id {out['key_id']})"
            + ("; its earlier signature replaced" if out["was_signed"] else "")
            + ": the serving resource will load it")
    emit(args, out, text)
    return 0


def register(sub, cmd) -> None:
    mo = sub.add_parser("models", help="the MLflow model registry")
    mos = mo.add_subparsers(dest="models_command", required=True, parser_class=Parser)
    ml = mos.add_parser("list", help="registered models, versions, aliases and their metrics")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(fn=cmd_list)
    mp = mos.add_parser("promote", help="move the champion alias to NAME VERSION by hand")
    mp.add_argument("name")
    mp.add_argument("version")
    mp.add_argument("--json", action="store_true")
    mp.set_defaults(fn=cmd_promote)
    ms = mos.add_parser("sign", help="vouch for NAME VERSION: sign its artifacts with this platform's key (a "
                                     "version registered before signatures, or by hand, is refused unsigned)")
    ms.add_argument("name")
    ms.add_argument("version")
    ms.add_argument("--json", action="store_true")
    ms.set_defaults(fn=cmd_sign)
    mh = mos.add_parser("history", help="who held champion and challenger when (the champion history)")
    mh.add_argument("name", nargs="?", help="one registered model (default: every one)")
    mh.add_argument("--json", action="store_true")
    mh.set_defaults(fn=cmd_history)
    mc = mos.add_parser("compare", help="champion against its shadow (the challenger) on the outcomes realized since")
    mc.add_argument("name")
    mc.add_argument("--margin", type=float, default=0.005, help="minimum improvement the shadow must show")
    mc.add_argument("--json", action="store_true")
    mc.set_defaults(fn=cmd_compare)

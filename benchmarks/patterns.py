"""The TCN chart-pattern detector: training time and scores on the frozen set.

Trains the default configuration (``TCNConfig()``: generated windows plus the first 70 % of
the ``backtesting`` package's EURUSD hourly and GOOG daily history, labelled by the rule
labeler), then scores the TCN and the rule labeler on the frozen held-out set (2,200
windows; settings fixed by the issue: see ``evaluate.py``) overall and per noise level, and
counts what each detects on the last 30 % of the real history, which the TCN never saw.
Also times the scan of one series through the loaded model, and writes the confusion plot.

Target: overall macro F1 >= 0.85, trained in a few minutes on this CPU.

    python benchmarks/patterns.py [--out DIR] [--epochs N] [--synthetic N]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="where the model and the confusion plot go (default: a temp dir)")
    ap.add_argument("--epochs", type=int, default=None, help="override the default configuration's epochs")
    ap.add_argument("--synthetic", type=int, default=None, help="override its number of generated windows")
    args = ap.parse_args()

    import torch

    from trading_platform.models.patterns import PATTERNS, history, tcn
    from trading_platform.models.patterns import evaluate as E
    from trading_platform.models.patterns.gate import gate
    from trading_platform.models.patterns.scan import scan

    out = Path(args.out or tempfile.mkdtemp(prefix="tp-patterns-"))
    overrides = {k: v for k, v in (("epochs", args.epochs), ("n_synthetic", args.synthetic)) if v is not None}
    config = tcn.TCNConfig(**overrides)
    load = os.getloadavg()
    print(f"training {config.to_dict()} on {tcn.resolve_device()} ({torch.get_num_threads()} torch threads "
          f"available, training uses {config.threads or 'default'}; load average {load[0]:.1f} on "
          f"{os.cpu_count()} cores)", flush=True)
    t0 = time.perf_counter()
    model, info = tcn.train(config, history=history.split("train"),
                            progress=lambda e, loss: print(f"  epoch {e}: loss {loss:.4f} "
                                                           f"({time.perf_counter() - t0:.0f} s)", flush=True))
    train_s = time.perf_counter() - t0
    print(f"trained in {train_s:.0f} s (data {info['data_s']:.0f} s): {info['windows']} windows, "
          f"{info['history_windows']} from history {info['history_labels']}")
    tcn.save(model, out / "model")
    model = tcn.load(out / "model")

    t1 = time.perf_counter()
    ev = E.evaluate(model)
    eval_s = time.perf_counter() - t1
    plot = E.plot_confusion(ev, out / "confusion.png")
    decision = gate(E.frozen_set().labels, ev.predictions["tcn"])

    series = history.split("report")
    counts = E.history_counts(model, series)
    candles = history.backtesting_series()["EURUSD_1h"]
    t2 = time.perf_counter()
    rows = scan(candles, model)
    scan_s = time.perf_counter() - t2

    levels = ["overall", "noise_0.05", "noise_0.15", "noise_0.30"]
    print(f"\nmacro F1 on the frozen set ({len(ev.labels)} windows; evaluation {eval_s:.0f} s):")
    print(f"  {'':10s}" + "".join(f"{lv:>12s}" for lv in levels))
    for m in ("tcn", "labeler"):
        print(f"  {m:10s}" + "".join(f"{ev.macro_f1(m, lv):12.3f}" for lv in levels))
    print("\nper-class F1 (overall):   tcn  labeler")
    for c in (*PATTERNS, "none"):
        print(f"  {c:28s} {ev.scores['tcn']['overall']['per_class'][c]['f1']:5.2f}"
              f"  {ev.scores['labeler']['overall']['per_class'][c]['f1']:5.2f}")
    print("\ndetections on the last 30 % of the real history (128-bar windows every 8 bars):")
    for name, c in counts.items():
        print(f"  {name} ({c['windows']} windows): tcn {sum(c['tcn'].values())}, labeler {sum(c['labeler'].values())}")
        for p in PATTERNS:
            if c["tcn"][p] or c["labeler"][p]:
                print(f"    {p:28s} tcn {c['tcn'][p]:4d}  labeler {c['labeler'][p]:4d}")
    print(f"\nscan of EURUSD 1h ({len(candles)} candles, windows 64/128/256, every bar): {scan_s:.1f} s, "
          f"{len(rows)} rows at probability >= 0.5")
    print(f"gate (first version): {decision.alias}: {decision.reason}")
    print(f"confusion plot: {plot}")

    figures = {
        "tcn_train_s": round(train_s, 1),
        "tcn_data_s": round(info["data_s"], 1),
        "tcn_macro_f1": round(ev.macro_f1("tcn"), 4),
        **{f"tcn_macro_f1_{lv}": round(ev.macro_f1("tcn", lv), 4) for lv in levels[1:]},
        "labeler_macro_f1": round(ev.macro_f1("labeler"), 4),
        **{f"labeler_macro_f1_{lv}": round(ev.macro_f1("labeler", lv), 4) for lv in levels[1:]},
        "tcn_f1": {c: round(s["f1"], 3) for c, s in ev.scores["tcn"]["overall"]["per_class"].items()},
        "labeler_f1": {c: round(s["f1"], 3) for c, s in ev.scores["labeler"]["overall"]["per_class"].items()},
        "history_counts": counts,
        "history_training_labels": info["history_labels"],
        "gate_first_version": decision.alias,
        "gate_vs_floor_lower_bound": round(decision.get("vs_floor").lower, 4),
        "scan_eurusd_s": round(scan_s, 2),
        "eval_s": round(eval_s, 1),
        "device": info["device"],
        "load_average_at_start": round(load[0], 2),
        "config": config.to_dict(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

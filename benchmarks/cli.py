"""How fast `tp` answers: the commands a user types most, on the embedded store with the demo's data.

Each command runs as a user runs it (a new `tp` process), ``--runs`` times; the figure is the median wall
time, beside the median of ``python -c pass`` in the same run (the interpreter's own start, which no
command can beat, and which says how loaded the machine is):

- ``tp --help``
- ``tp symbols list`` (opens the embedded store)
- ``tp models list`` (opens the MLflow store: the registry of the demo's models)
- ``tp backfill --symbol NOPE/USDT --from 2026-01-01 --to 2026-02-01``: an unknown symbol, exit 2 (the
  check comes before Dagster or MLflow loads)

Targets on the 2-core development machine: help_s <= 0.6, symbols_list_s <= 1.0,
backfill_unknown_symbol_s <= 1.5.

    python benchmarks/cli.py [--runs 5] [--home DIR]

Without ``--home`` it loads the demo's quick sample (`tp demo --quick`, about a minute) into a temporary
TP_HOME first and stops its embedded database at the end. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"help_s": 0.6, "symbols_list_s": 1.0, "backfill_unknown_symbol_s": 1.5}
COMMANDS = {
    "help_s": (["--help"], 0),
    "symbols_list_s": (["symbols", "list"], 0),
    "models_list_s": (["models", "list"], 0),
    "backfill_unknown_symbol_s": (["backfill", "--symbol", "NOPE/USDT", "--from", "2026-01-01", "--to",
                                   "2026-02-01"], 2),
}


def timed(argv: list[str], env: dict, expect: int) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expect}:\n{done.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--home", help="an existing TP_HOME with data (default: a fresh one with the quick demo)")
    args = ap.parse_args()
    tp = [sys.executable, "-m", "trading_platform.cli"]
    tmp = None
    if args.home:
        home = Path(args.home)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="tp-bench-cli-")
        home = Path(tmp.name) / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("TP_DATABASE_URL", "MLFLOW_TRACKING_URI", "DAGSTER_HOME")}
    env.update({"TP_HOME": str(home), "HF_HUB_OFFLINE": "1", "TP_LOG_LEVEL": "WARNING"})
    try:
        if tmp is not None:
            t0 = time.perf_counter()
            subprocess.run([*tp, "demo", "--quick", "--json"], env=env, check=True, capture_output=True)
            print(f"loaded the quick demo into {home} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        timed([*tp, "symbols", "list"], env, 0)  # the embedded server started, caches warm
        figures: dict[str, float] = {}
        baseline = [timed([sys.executable, "-c", "pass"], env, 0) for _ in range(args.runs)]
        for key, (cmd, code) in COMMANDS.items():
            runs = [timed([*tp, *cmd], env, code) for _ in range(args.runs)]
            figures[key] = round(statistics.median(runs), 3)
            print(f"{'tp ' + ' '.join(cmd):<72} median {figures[key]:.3f} s  (min {min(runs):.3f}, max "
                  f"{max(runs):.3f})")
        figures["python_pass_s"] = round(statistics.median(baseline), 3)
        print(f"{'python -c pass':<72} median {figures['python_pass_s']:.3f} s")
        for key, limit in TARGETS.items():
            print(f"{key}: {figures[key]:.3f} s, target <= {limit} s: {'met' if figures[key] <= limit else 'MISSED'}")
        figures.update({f"{k}_target": v for k, v in TARGETS.items()})
        figures["targets_met"] = all(figures[k] <= v for k, v in TARGETS.items())
        figures["runs"] = args.runs
    finally:
        if tmp is not None:
            subprocess.run([*tp, "down"], env=env, capture_output=True)
            tmp.cleanup()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

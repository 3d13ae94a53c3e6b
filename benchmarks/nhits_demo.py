"""Can NHITS earn its champion on the demo's sample? The NHITS gate on the demo's four months, day by day,
on the demo's market and on its control, for NHITS configurations and for a forecaster that knows the
planted daily season exactly (the oracle: the last close moved by the season's change; it cannot exist,
and says how much evidence the season gives the gate at this size).

The sample is what ``tp demo`` loads on each day: its 1h symbols (``demo.SAMPLE``) over the four months up
to the start of the day, from ``SyntheticSource`` (the market) and its control. Every figure is the gate's:
one common cutoff (the last 20 % of the shortest series), the windows after it, the relative MAE of the
median forecast against the better naive forecast of each series, and the one-sided 95 % lower bound of the
improvement (paired block bootstrap); ``champion`` when it is above the margin (0).

``--real`` also scores each configuration on the real series of ``benchmarks/nhits_variants.py`` (EURUSD
hourly and GOOG daily, its periods A and B, 300 steps): a configuration tuned to the demo's market must not
lose there, where the defaults were chosen.

    python benchmarks/nhits_demo.py [--days 2026-12-07,2026-11-20,...] [--max-steps N] [--real] [--variants ...]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAYS = ("2026-12-07", "2026-11-20", "2026-10-15", "2026-09-10", "2026-08-05", "2026-07-01")
VARIANTS = {  # name -> overrides of the asset's defaults (the demo changes only max_steps)
    "default": {},
    "log_standard_in24_lr1e-3": {"target": "log", "scaler_type": "standard", "input_size": 24,
                                 "learning_rate": 1e-3},
}


def sample(day: str, structure: bool):
    """(polars frame of symbol, ts, close; {symbol: SymbolInfo}) of the demo's 1h sample on ``day``."""
    import polars as pl

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.demo import SAMPLE, demo_plan
    from trading_platform.sources.synthetic import SyntheticSource

    end = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    _, months = demo_plan(False, end)
    start = datetime.fromisoformat(months[0]).replace(tzinfo=timezone.utc)
    src = SyntheticSource(7, structure=structure)
    parts, infos = [], {}
    for symbol, spec in SAMPLE:
        if "1h" not in spec["timeframes"]:
            continue
        info = SymbolInfo(symbol, spec["category"], spec.get("exchange"))
        infos[symbol] = info
        f = src.fetch(info, "1h", start, end)
        parts.append(pl.from_pandas(f[["ts", "close"]]).with_columns(pl.lit(symbol).alias("symbol")))
    return pl.concat(parts), infos


def figures(decision, rel: float, n: int, seconds: float) -> dict:
    c = decision.get("vs_best_naive")
    return {"alias": decision.alias, "rel_mae_vs_best_naive": round(rel, 4), "improvement": round(c.improvement, 4),
            "lower_bound": round(c.lower, 4), "windows": n, "s": round(seconds, 1)}


def nhits_gate(data, infos, cfg) -> dict:
    from trading_platform.models.forecast import baselines as bl
    from trading_platform.models.forecast import nhits

    t0 = time.perf_counter()
    ev = nhits.evaluate(data, cfg, timeframe="1h", markets=infos)
    decision = bl.gate(ev.windows, ev.block_len, bl.gate_policy())
    return figures(decision, ev.metrics["rel_mae_vs_best_naive"], len(ev.windows), time.perf_counter() - t0)


class SeasonOracle:
    """Forecasts the last close moved by the planted season's change, in ``nhits._windows``' interface (every
    quantile the same: the gate scores the median)."""

    def __init__(self, cfg, infos):
        self.cfg, self.infos = cfg, infos

    def predict_at(self, at):
        import numpy as np

        from trading_platform.sources.synthetic import season_level

        h, out = self.cfg.horizon, []
        for s, r in at:  # the close of the candle stamped t carries season_level(t)
            level = season_level(s.symbol, self.infos[s.symbol].category, s.ts_us[r:r + 1 + h] // 1_000_000)
            out.append(s.close[r] * np.exp(level[1:] - level[0]))
        return np.repeat(np.array(out)[:, :, None], len(self.cfg.quantiles), axis=2)


def oracle_gate(data, infos, cfg) -> dict:
    """The gate on the season oracle's forecasts, on the windows and against the baselines the NHITS gate uses
    (``nhits.plan_windows`` and ``nhits._windows``, as ``nhits.evaluate`` calls them)."""
    from trading_platform.models.forecast import baselines as bl
    from trading_platform.models.forecast import frames as fr
    from trading_platform.models.forecast import nhits

    t0 = time.perf_counter()
    plan = nhits.plan_windows(fr.prepare(data, "level"), cfg)
    seasons = {s.symbol: fr.season_rows("1h", *fr.market_of(infos[s.symbol])) for s in plan.series}
    w = nhits._windows(SeasonOracle(cfg, infos), plan, seasons)
    decision = bl.gate(w, bl.block_len(cfg.input_size, cfg.horizon, cfg.step), bl.gate_policy())
    return figures(decision, bl.scores(w)[0][bl.GATE_METRIC], len(w), time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", default=",".join(DAYS), help="comma-separated YYYY-MM-DD (the demo's day)")
    ap.add_argument("--max-steps", type=int, default=None, help="training steps (default: the demo's)")
    ap.add_argument("--real", action="store_true",
                    help="also score the configurations on EURUSD 1h and GOOG 1d (at 300 steps, whatever --max-steps)")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of {', '.join([*VARIANTS, 'season_oracle'])} (default: all)")
    args = ap.parse_args()
    days = [d.strip() for d in args.days.split(",") if d.strip()]
    names = [*VARIANTS, "season_oracle"]
    chosen = names if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in names]
    if unknown or not chosen:
        ap.error(f"--variants: {', '.join(unknown) or '(none)'} not among {', '.join(names)}")
    for d in days:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", d):
            ap.error(f"--days: {d!r} is not YYYY-MM-DD")
    warnings.filterwarnings("ignore")
    from trading_platform.demo import DEMO_NHITS
    from trading_platform.models.forecast.nhits import NHITSConfig

    steps = args.max_steps or DEMO_NHITS.get("max_steps", NHITSConfig().max_steps)
    base = replace(NHITSConfig(), max_steps=steps, device="cpu")
    rows = []
    for day in days:
        for market, structure in (("market", True), ("control", False)):
            data, infos = sample(day, structure)
            runs = {name: (nhits_gate, replace(base, **over)) for name, over in VARIANTS.items() if name in chosen}
            if structure and "season_oracle" in chosen:
                runs["season_oracle"] = (oracle_gate, base)
            for name, (fn, cfg) in runs.items():
                r = {"day": day, "market": market, "variant": name, **fn(data, infos, cfg)}
                rows.append(r)
                print(f"{day} {market:7s} {name:26s} {r['alias']:10s} rel {r['rel_mae_vs_best_naive']:.4f} "
                      f"improvement {r['improvement']:+.4f} lower bound {r['lower_bound']:+.4f} "
                      f"({r['windows']} windows, {r['s']} s)", flush=True)
    out = {"days": len(days), "max_steps": steps}
    for name in [*VARIANTS, "season_oracle"]:
        for market in ("market", "control"):
            sel = [r for r in rows if r["variant"] == name and r["market"] == market]
            if not sel:
                continue
            key = f"{name}_{market}"
            out[f"{key}_champions"] = sum(r["alias"] == "champion" for r in sel)
            out[f"{key}_rel_mae_range"] = [min(r["rel_mae_vs_best_naive"] for r in sel),
                                           max(r["rel_mae_vs_best_naive"] for r in sel)]
            out[f"{key}_lower_bound_max"] = max(r["lower_bound"] for r in sel)
    if args.real:
        out.update(real_series(base, [v for v in chosen if v in VARIANTS]))
    print(json.dumps(out))


def real_series(base, names: list[str]) -> dict:
    """Each configuration's relative MAE against the better naive forecast on EURUSD 1h and GOOG 1d, periods A
    and B of ``nhits_variants.py``, at the asset's default steps."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import nhits_variants as nv

    from trading_platform.models.forecast.nhits import NHITSConfig

    data = {k: v for k, v in nv.datasets().items() if k != "synthetic 1h"}
    out = {}
    for name in names:
        cfg = replace(base, max_steps=NHITSConfig().max_steps, **VARIANTS[name])
        rels = []
        for ds, d in data.items():
            for period in ("A", "B"):
                r = nv.run(cfg, d, period)
                rels.append(r[nv.METRIC])
                print(f"real {ds:10s} period {period} {name:26s} {r['gate']:10s} rel {r[nv.METRIC]:.4f}", flush=True)
        out[f"{name}_real_rel_mae_range"] = [round(min(rels), 4), round(max(rels), 4)]
    return out


if __name__ == "__main__":
    main()

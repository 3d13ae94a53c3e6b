"""The TCN gate's false-promotion rate on the demo's control market.

``tp demo --control`` loads ``control:SEED``: Gaussian random walks with the demo's symbols, calendars and
volatility, where no chart pattern completes any particular way. The TCN recognizes drawn patterns (its
``vs_floor`` comparison passes on generated windows whatever the market), so on the control only its
``vs_no_edge`` comparison stands between it and a champion's place: the one-sided 95 % lower bound of the
mean edge of its detections in the held-out last 20 % of the stored series. This measures how often that
gate promotes on the control, as the asset runs it (``assets/patterns.py``: the demo's four months of the
demo's four symbols up to ``--as-of``, the demo's training configuration ``demo.DEMO_TCN``):

- ``--detectors`` TCNs, each trained on the training part of its own control draw (seed ``--seed + d``),
  each gated on its own held-out part: exactly a ``tp demo --control`` at that seed;
- each detector then scanned over the held-out parts of ``--markets`` fresh control draws (other seeds, so
  draws it never trained on), its edges gated the same way (``gate.edge_comparison``) with its own
  ``vs_floor`` from the frozen set. A detector fixed before the draw is the cleanest null there is.

It also reports the standard deviation of the edges over every draw: in these units a random walk's is 1,
which is what the gate's null bound assumes.

    python benchmarks/tcn_control.py [--detectors 3] [--markets 100] [--as-of 2026-12-07] [--seed 100]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def control_history(seed: int, as_of: datetime) -> dict:
    """symbol/timeframe -> (bars, 4) OHLC, as ``assets.patterns.store_history`` reads it after ``tp demo
    --control --seed SEED`` on the day ``as_of`` (the demo's symbols and months, candles up to its midnight)."""
    import numpy as np

    from trading_platform.assets.patterns import HISTORY_BARS
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.demo import SAMPLE, demo_plan
    from trading_platform.sources.synthetic import SyntheticSource

    symbols, months = demo_plan(False, now=as_of)
    start = datetime.fromisoformat(months[0]).replace(tzinfo=timezone.utc)
    until = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    src = SyntheticSource(seed, structure=False)
    out = {}
    for sym, fields in SAMPLE:
        if sym not in symbols:
            continue
        info = SymbolInfo(symbol=sym, category=fields["category"], exchange=fields.get("exchange"),
                          timeframes=fields["timeframes"])
        # the demo ingests the base timeframe and resamples the rest from it (market/ohlcv_1h, ...): the same
        # buckets as aggregating the base candles at once (open first, high max, low min, close last)
        base = src.fetch(info, fields["timeframes"][0], start, until).set_index("ts")
        for tf in ("1h", "1d"):  # TCNTrainConfig.history_timeframes
            c = base if tf == fields["timeframes"][0] else base.resample(
                {"1h": "1h", "1d": "1D"}[tf], label="left", closed="left").agg(
                {"open": "first", "high": "max", "low": "min", "close": "last"}).dropna()
            if len(c) >= 256:
                c = c.iloc[-HISTORY_BARS:]
                out[f"{sym} {tf}"] = np.column_stack([c.open, c.high, c.low, c.close])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", type=int, default=3, help="TCNs trained, each on its own control draw")
    ap.add_argument("--markets", type=int, default=100, help="fresh control draws each detector is scanned over")
    ap.add_argument("--as-of", default="2026-12-07", help="the day the demo is run (its four months end there)")
    ap.add_argument("--seed", type=int, default=100, help="the first control seed (the demo's is 7)")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()

    import numpy as np

    from trading_platform.assets.patterns import TCNTrainConfig
    from trading_platform.demo import DEMO_TCN
    from trading_platform.models.evaluation import wilson_interval
    from trading_platform.models.patterns import edge as pedge
    from trading_platform.models.patterns import evaluate as pe
    from trading_platform.models.patterns import gate as pg
    from trading_platform.models.patterns import tcn

    as_of = datetime.fromisoformat(args.as_of).replace(tzinfo=timezone.utc)
    asset = TCNTrainConfig(**DEMO_TCN)
    cfg = tcn.TCNConfig(epochs=asset.epochs, n_synthetic=asset.n_synthetic, channels=asset.channels,
                        length=asset.length, lr=asset.lr, seed=asset.seed, threads=asset.threads)
    policy = pg.default_policy(n_boot=args.n_boot)
    frozen = pe.frozen_set()
    t_all = time.perf_counter()
    own, fresh, all_edges, n_det = [], [], [], []
    train_s = []
    next_seed = args.seed + args.detectors
    for d in range(args.detectors):
        seed = args.seed + d
        history = control_history(seed, as_of)
        train_history, cuts = pedge.split(history, asset.history_holdout_frac)
        t0 = time.perf_counter()
        model, _ = tcn.train(cfg, history=train_history)
        train_s.append(time.perf_counter() - t0)
        evaluation = pe.evaluate(model, frozen, labeler=False)
        labels, pred = evaluation.labels, evaluation.predictions["tcn"]

        def decide(series, cut_at):
            e = pedge.measure(model, series, cut_at, horizon=asset.edge_horizon,
                              threshold=asset.detection_threshold)
            dec = pg.gate(labels, pred, policy, floor=asset.floor, edge=e.values,
                          min_detections=asset.min_detections)
            return e, dec

        e, dec = decide(history, cuts)
        own.append({"seed": seed, "decision": dec.alias, "detections": e.n,
                    "mean_edge": round(float(e.values.mean()), 3) if e.n else None,
                    "vs_floor_lower": round(dec.get("vs_floor").lower, 4),
                    "vs_no_edge_lower": round(dec.get("vs_no_edge").lower, 4)})
        print(f"detector {d} (control:{seed}, trained {train_s[-1]:.0f} s): on its own draw {dec.alias}, "
              f"{e.n} detections, vs_floor lower {own[-1]['vs_floor_lower']}, vs_no_edge lower "
              f"{own[-1]['vs_no_edge_lower']}", flush=True)
        for _ in range(args.markets):
            series = control_history(next_seed, as_of)
            _, cut_at = pedge.split(series, asset.history_holdout_frac)
            e, dec = decide(series, cut_at)
            fresh.append(dec.alias == "champion")
            all_edges.extend(e.values.tolist())
            n_det.append(e.n)
            next_seed += 1
        k = sum(fresh[-args.markets:])
        print(f"  over {args.markets} fresh control draws: promoted {k}, detections per draw "
              f"{np.mean(n_det[-args.markets:]):.1f}", flush=True)

    k, n = sum(fresh), len(fresh)
    lo, hi = wilson_interval(k, n)
    ok, on = sum(r["decision"] == "champion" for r in own), len(own)
    edges = np.asarray(all_edges)
    figures = {
        "as_of": args.as_of, "detectors": args.detectors, "markets_per_detector": args.markets,
        "false_promotion_rate": round(k / max(n, 1), 4), "false_promotion_ci95": [round(lo, 4), round(hi, 4)],
        "promoted": k, "draws": n,
        "own_draw_promoted": ok, "own_draws": on,
        "detections_per_draw_mean": round(float(np.mean(n_det)), 2) if n_det else None,
        "draws_under_min_detections": int(sum(x < asset.min_detections for x in n_det)),
        "edge_sd": round(float(edges.std(ddof=1)), 4) if len(edges) > 1 else None,
        "edge_mean": round(float(edges.mean()), 4) if len(edges) else None,
        "edges": int(len(edges)),
        "train_seconds_mean": round(float(np.mean(train_s)), 1) if train_s else None,
        "seconds_total": round(time.perf_counter() - t_all, 1),
    }
    print(f"TCN gate on the demo's control (as of {args.as_of}): promoted {k} of {n} fresh draws "
          f"({k / max(n, 1):.3f}, 95 % {lo:.3f}-{hi:.3f}) and {ok} of {on} detectors on their own draw; "
          f"edges: sd {figures['edge_sd']} (a random walk's: 1), mean {figures['edge_mean']} over {len(edges)}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

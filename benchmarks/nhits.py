"""NHITS with its default configuration on the synthetic market: training time, the relative
MAE against the naive and seasonal-naive forecasts on the held-out windows, the coverage of
the 80 % interval, and the forecast latency per symbol of the saved-and-loaded model.

The market: 5 crypto symbols x 5,000 hourly candles of ``SyntheticSource`` (seed 7), the
same the variants benchmark uses. Training and the rolling-origin evaluation are
``forecast.nhits.evaluate`` (what the asset calls), on this machine's CPU unless
TP_DEVICE says otherwise.

    python benchmarks/nhits.py [--max-steps N] [--latency-calls 20] [--threads N]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT")
END = datetime(2024, 8, 1, tzinfo=timezone.utc)


def synthetic_market(n: int = 5000, symbols=SYMBOLS, seed: int = 7, features: bool = False) -> dict:
    """{symbol: polars candles (and features)} of the last ``n`` hourly candles before END."""
    import polars as pl

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.sources.synthetic import SyntheticSource

    src = SyntheticSource(seed)
    out = {}
    for s in symbols:
        c = pl.from_pandas(src.fetch(SymbolInfo.create(s, category="crypto"), "1h", END - timedelta(hours=n + 48),
                                     END)).tail(n)
        out[s] = with_features(c, s, "1h") if features else c
    return out


def with_features(candles, symbol: str, timeframe: str):
    import polars as pl

    from trading_platform.features.compute import compute_features

    c = candles.with_columns(symbol=pl.lit(symbol), timeframe=pl.lit(timeframe)).sort("ts")
    return compute_features(c.select("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"),
                            keep_state=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-steps", type=int, default=None, help="override the default configuration's")
    ap.add_argument("--latency-calls", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from trading_platform.models.forecast import baselines as bl
    from trading_platform.models.forecast import nhits as nh

    cfg = nh.NHITSConfig() if args.max_steps is None else nh.NHITSConfig(max_steps=args.max_steps)
    frames = synthetic_market(features=bool(cfg.hist_exog))
    print(f"default configuration: {json.dumps(cfg.to_dict())}")
    print(f"market: {len(frames)} symbols x {min(len(f) for f in frames.values())} hourly candles (synthetic)")
    t0 = time.perf_counter()
    e = nh.evaluate(frames, cfg, timeframe="1h", markets={s: "crypto" for s in frames},
                    progress=lambda p: print("  " + nh.progress_text(p), flush=True))
    evaluate_s = time.perf_counter() - t0
    d = bl.gate(e.windows, e.block_len)
    m = e.metrics
    print(f"trained in {m['train_s']:.1f} s ({evaluate_s:.1f} s with frames and scoring); {m['origins']} held-out "
          f"windows ({e.n_windows} per symbol, {cfg.horizon} bars each)")
    print(f"relative MAE vs naive {m['rel_mae_vs_naive']:.4f}, vs seasonal naive {m['rel_mae_vs_seasonal_naive']:.4f}"
          f", coverage of the 80 % interval {m['coverage_80']:.3f}")
    c = d.get("vs_best_naive")
    print(f"gate: {d.alias} ({d.reason}); one-sided 95 % upper bound of the relative MAE {1 - c.lower:.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        e.forecaster.save(tmp)
        t = time.perf_counter()
        loaded = nh.Forecaster.load(tmp)
        load_s = time.perf_counter() - t
        one = {"BTC/USDT": frames["BTC/USDT"]}
        loaded.forecast(one)  # first call builds the trainer
        lat = []
        for _ in range(args.latency_calls):
            t = time.perf_counter()
            loaded.forecast(one)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        loaded.forecast(frames)
        all_s = time.perf_counter() - t
    print(f"forecast latency, one symbol per call (loaded model): median {np.median(lat) * 1e3:.1f} ms; all "
          f"{len(frames)} symbols in one call {all_s * 1e3:.1f} ms; load {load_s * 1e3:.0f} ms")
    figures = {
        "nhits_train_s": round(m["train_s"], 2),
        "nhits_rel_mae_vs_naive": round(m["rel_mae_vs_naive"], 4),
        "nhits_rel_mae_vs_seasonal_naive": round(m["rel_mae_vs_seasonal_naive"], 4),
        "nhits_rel_mae_vs_best_naive": round(m["rel_mae_vs_best_naive"], 4),
        "nhits_coverage_80": round(m["coverage_80"], 4),
        "nhits_gate": d.alias,
        "nhits_rel_mae_upper_95": round(1 - c.lower, 4),
        "nhits_origins": m["origins"],
        "nhits_forecast_ms_per_symbol": round(float(np.median(lat)) * 1e3, 2),
        "nhits_forecast_ms_all_symbols": round(all_s * 1e3, 2),
        "nhits_load_ms": round(load_s * 1e3, 1),
        "max_steps": cfg.max_steps,
        "device": nh.resolve_device(cfg.device),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""Models II: the NHITS forecaster and the TCN pattern detector at their default configurations.

- NHITS: 5 symbols x 5,000 hourly candles of the synthetic market (seed 7); training time, and
  on the held-out rolling-origin windows the MAE relative to the naive and seasonal-naive
  forecasts (geometric mean over series) and the coverage of the 80 % interval; the gate's
  verdict.
- TCN: the default configuration trained on generated windows plus the rule labeler's
  detections in the first 70 % of the ``backtesting`` package's EURUSD hourly and GOOG daily
  history; macro F1 on the frozen held-out set (overall and per noise level) beside the rule
  labeler's on the same windows.
- Both are logged and registered in a throwaway MLflow store exactly as the assets do, then
  loaded through ``ModelServer`` (the serving resource), and timed per symbol: one forecast
  call, one pattern scan of the newest 100 window ends (median of 10).

    python benchmarks/models.py [--nhits-max-steps N] [--tcn-epochs N]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT")
END = datetime(2024, 8, 1, tzinfo=timezone.utc)


def synthetic_market(n: int = 5000) -> dict:
    import polars as pl

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.sources.synthetic import SyntheticSource

    src = SyntheticSource(7)
    return {s: pl.from_pandas(src.fetch(SymbolInfo.create(s, category="crypto"), "1h",
                                        END - timedelta(hours=n + 48), END)).tail(n).with_columns(symbol=pl.lit(s))
            for s in SYMBOLS}


def median_ms(fn, n: int = 10) -> float:
    fn()  # the first call builds what later calls reuse
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nhits-max-steps", type=int, default=None)
    ap.add_argument("--tcn-epochs", type=int, default=None)
    args = ap.parse_args()

    import pandas as pd
    import polars as pl

    from trading_platform.models.forecast import nhits as nh
    from trading_platform.models.forecast.plot import forecast_plot
    from trading_platform.models.patterns import evaluate as pe
    from trading_platform.models.patterns import gate as pg
    from trading_platform.models.patterns import history, tcn
    from trading_platform.models.patterns.scan import scan
    from trading_platform.models.tracking import log_and_register
    from trading_platform.resources import MLflowResource, ModelServer

    # ---- NHITS ----
    cfg = nh.NHITSConfig() if args.nhits_max_steps is None else nh.NHITSConfig(max_steps=args.nhits_max_steps)
    frames = synthetic_market()
    t = nh.train_and_gate(frames, cfg, timeframe="1h", markets={s: "crypto" for s in frames})
    m = t.metrics
    print(f"NHITS: trained in {m['train_s']:.1f} s; {m['origins']} held-out windows; relative MAE vs naive "
          f"{m['rel_mae_vs_naive']:.4f}, vs seasonal naive {m['rel_mae_vs_seasonal_naive']:.4f}; coverage of the "
          f"80 % interval {m['coverage_80']:.3f}; gate: {t.decision.alias}", flush=True)

    # ---- TCN ----
    tcfg = tcn.TCNConfig() if args.tcn_epochs is None else tcn.TCNConfig(epochs=args.tcn_epochs)
    model, info = tcn.train(tcfg, history=history.split("train"))
    frozen = pe.frozen_set()
    ev = pe.evaluate(model, frozen)
    decision = pg.gate(ev.labels, ev.predictions["tcn"])
    print(f"TCN: trained in {info['train_s']:.1f} s; macro F1 {ev.macro_f1():.3f} (rule labeler "
          f"{ev.macro_f1('labeler'):.3f}); per noise level "
          f"{ {k: round(v['macro_f1'], 3) for k, v in ev.scores['tcn'].items()} }; gate: {decision.alias}", flush=True)

    # ---- registered, then served ----
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        ml = MLflowResource(tracking_uri=uri, artifact_root=f"{tmp}/artifacts")
        example = frames["BTC/USDT"].select("symbol", pl.col("ts").dt.replace_time_zone(None), "close").tail(
            t.forecaster.rows_needed).to_pandas()
        log_and_register(mlflow_resource=ml, experiment="nhits", run_name="bench", tags={"tp.family": "nhits",
                                                                                         "tp.timeframe": "1h"},
                         version_tags={}, flavor="nhits", model=t.forecaster, registered_name="nhits.1h",
                         target="bench", params={}, metrics=m, example=example,
                         predict_example=nh.rows_frame(t.forecaster.forecast(example).rows, cfg.quantiles),
                         plot=lambda p: forecast_plot(t.evaluation.windows, t.evaluation.series, p, "bench"),
                         decision=t.decision)
        window = pd.DataFrame(frozen.windows[0], columns=["open", "high", "low", "close"])
        log_and_register(mlflow_resource=ml, experiment="pattern_tcn", run_name="bench",
                         tags={"tp.family": "pattern_tcn", "tp.timeframe": "any"}, version_tags={}, flavor="tcn",
                         model=model, registered_name="pattern_tcn", target="bench", params={},
                         metrics={"macro_f1": ev.macro_f1()}, example=window,
                         predict_example=pd.DataFrame(model.predict_proba([frozen.windows[0]]),
                                                      columns=list(model.classes)),
                         plot=lambda p: str(pe.plot_confusion(ev, p)), decision=decision)
        server = ModelServer(tracking_uri=uri, cache_dir=f"{tmp}/cache", device="cpu")
        forecaster = server.load("nhits.1h", version="1").model
        detector = server.load("pattern_tcn", version="1").model
        one = frames["BTC/USDT"].tail(forecaster.rows_needed).to_pandas()
        candles = frames["BTC/USDT"].tail(100 + 256).to_pandas()
        forecast_ms = median_ms(lambda: forecaster.forecast(one))
        scan_ms = median_ms(lambda: scan(candles, detector, since=candles["ts"].iloc[-101]))
    figures = {
        "nhits_train_s": round(m["train_s"], 2),
        "nhits_rel_mae_vs_naive": round(m["rel_mae_vs_naive"], 4),
        "nhits_rel_mae_vs_seasonal_naive": round(m["rel_mae_vs_seasonal_naive"], 4),
        "nhits_coverage_80": round(m["coverage_80"], 4),
        "nhits_origins": m["origins"], "nhits_gate": t.decision.alias,
        "tcn_train_s": round(info["train_s"], 1),
        "tcn_macro_f1": round(ev.macro_f1(), 4),
        "tcn_macro_f1_by_noise": {k: round(v["macro_f1"], 4) for k, v in ev.scores["tcn"].items()},
        "labeler_macro_f1_by_noise": {k: round(v["macro_f1"], 4) for k, v in ev.scores["labeler"].items()},
        "labeler_macro_f1": round(ev.macro_f1("labeler"), 4),
        "tcn_gate": decision.alias,
        "forecast_ms_per_symbol": round(forecast_ms, 2),
        "pattern_scan_ms_per_symbol": round(scan_ms, 2),
        "predict_ms_per_symbol": round(forecast_ms + scan_ms, 2),
    }
    print(f"served through ModelServer: a forecast {forecast_ms:.1f} ms and a 100-window pattern scan {scan_ms:.1f} ms "
          "per symbol")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

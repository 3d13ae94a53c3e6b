"""What a backtest reports: its statistics, its comparisons with the controls, and its MLflow run.

``evaluate`` runs the controls over the same candles through the same engine, costs and risk rules (buy-and-hold
fully invested and at the strategy's mean exposure; ``replicates`` random entries with the strategy's trades and
holding times, all at once in ``vectorized.py`` with one of them run through the engine as a check) and compares each with the strategy by the paired block bootstrap (``controls.compare``).
``log_run`` records the run in MLflow (experiment ``paper``): the spec, the pins, the figures and a plot of the
equity and its drawdown.
"""

from __future__ import annotations

import io
import json

import numpy as np

from . import controls, stats, vectorized
from .spec import Spec

EXPERIMENT = "paper"


def periods_per_year(store, spec: Spec) -> float:
    from ..core.timeframes import seconds

    cal = []
    for symbol, tf in spec.universe:
        info = store.get_symbol(symbol)
        cal.append((info.category, info.exchange, seconds(tf)))
    return stats.periods_per_year(cal)


def run_stats(e, ppy: float, start_equity: float | None = None) -> dict:
    """The run's figures from its engine's records and the equity it started with (the cash, or where a continued
    month's previous one ended): the first candle's return counts."""
    curve = np.concatenate([[e.spec.cash if start_equity is None else start_equity], controls.equity_curve(e)])
    fees = sum(f[4] for f in e.rec.fills)
    traded = sum(f[2] * f[3] for f in e.rec.fills)
    out = stats.summary(list(curve), e.rec.trades, ppy=ppy,
                        exposure=[ex / eq for _, eq, _, ex in e.rec.equity if eq > 0],
                        traded_notional=traded, fees=fees)
    out["orders"] = len(e.rec.orders)
    out["skipped"] = dict(e.rec.skipped)
    return out


def evaluate(spec: Spec, e, candles: dict, run_id: str, *, ppy: float, replicates: int = 200,
             lots: dict | None = None, start_equity: float | None = None) -> dict:
    """``vs_buy_and_hold`` and ``vs_random_entry`` for the engine ``e`` that ran ``spec`` over ``candles`` (series ->
    [(close time, Bar)]): both present for every kind of strategy (None only when the range has under 2 closes)."""
    # every curve from where it starts (the strategy's: ``start_equity``, a continued month's; the controls': the
    # cash), so the first candle's return counts on both sides
    curve = np.concatenate([[spec.cash if start_equity is None else start_equity], controls.equity_curve(e)])
    if len(curve) < 3:
        return {"vs_buy_and_hold": None, "vs_random_entry": None}

    def from_cash(c):
        c = np.asarray(c, dtype=float)
        return np.concatenate([np.full(c.shape[:-1] + (1,), float(spec.cash)), c], axis=-1)

    exposure = controls.mean_exposure(e)
    full = controls.run_schedule(controls.buy_and_hold(spec), candles,
                                 {k: {0: len(v)} for k, v in candles.items()}, run_id + ":bh", lots)
    matched = controls.buy_and_hold_at(spec, candles, exposure, run_id + ":bhx", lots=lots) if exposure > 0 else full
    trades = controls.trades_of(e)
    lengths = controls.lengths_of(candles)
    rnd = controls.random_entry(spec)
    scheds = [controls.random_schedule(lengths, trades, seed=[k]) for k in range(replicates)]
    why = vectorized.supported(rnd)
    check = None
    if why is None:
        reps = vectorized.replicate_equity(rnd, candles, scheds, lots)
        # one replicate through the engine itself: the vectorized path is the engine to rounding
        one = controls.equity_curve(controls.run_schedule(rnd, candles, scheds[0], f"{run_id}:r0", lots))
        check = float(np.max(np.abs(reps[0] - one) / np.abs(one))) if len(one) else 0.0
    else:
        reps = np.array([controls.equity_curve(controls.run_schedule(rnd, candles, sc, f"{run_id}:r{k}", lots))
                         for k, sc in enumerate(scheds)])
    m = from_cash(controls.equity_curve(matched))
    vs_bh = controls.compare(curve, m)
    vs_bh["exposure"] = controls.mean_exposure(matched)
    vs_bh["fully_invested_return"] = float(controls.equity_curve(full)[-1] / spec.cash - 1)
    vs_bh["control_max_drawdown"] = stats.summary(list(m), [], ppy=ppy)["max_drawdown"]
    vs_random = controls.compare(curve, from_cash(reps))
    vs_random["vectorized"] = why is None
    vs_random["engine_check_rel_diff"] = check
    if why:
        vs_random["through_the_engine_because"] = why
    return {"vs_buy_and_hold": vs_bh, "vs_random_entry": vs_random}


def plot(ts: list, equity: list[float]) -> bytes:
    """A PNG of the equity curve and its drawdown below it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eq = np.asarray(equity, dtype=float)
    dd = eq / np.maximum.accumulate(eq) - 1.0 if len(eq) else eq
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    a.plot(ts, eq, lw=1)
    a.set_ylabel("equity")
    b.fill_between(ts, dd * 100, 0, color="tab:red", alpha=0.4, lw=0)
    b.set_ylabel("drawdown %")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def log_run(mlflow_resource, spec: Spec, run: dict, figures: dict, equity: list[tuple]) -> dict:
    """One MLflow run for a backtest (experiment ``paper``, tagged with the paper run id): the spec as an
    artifact, the pins and range as parameters, every numeric figure as a metric, the equity and drawdown plot.
    Returns its run id and, for an HTTP tracking server, its address."""
    import mlflow

    tags = {"tp.paper_run_id": run["run_id"], "tp.strategy": spec.name, "tp.strategy_version": spec.version}
    metrics = {}
    for group, values in figures.items():
        for k, v in (values or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                metrics[k if group == "stats" else f"{group}.{k}"] = float(v)
            elif isinstance(v, bool):
                metrics[f"{group}.{k}"] = float(v)
    name = f"{spec.name} {str(run['from'])[:10]}..{str(run['to'])[:10]}"
    with mlflow_resource.run(EXPERIMENT, name, tags) as active:
        mlflow.log_params({"strategy": spec.name, "version": spec.version, "kind": spec.kind,
                           "from": str(run["from"]), "to": str(run["to"]), "parent_run": run.get("parent") or "",
                           **{f"pin.{k}": v for k, v in (run.get("pins") or {}).items()}})
        mlflow.log_metrics(metrics)
        mlflow.log_text(json.dumps(spec.raw, indent=2, sort_keys=True), "strategy.json")
        png = plot([r[0] for r in equity], [r[1] for r in equity]) if equity else None
        if png:
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "equity.png").write_bytes(png)
                mlflow.log_artifact(str(Path(tmp, "equity.png")))
        run_id, exp = active.info.run_id, active.info.experiment_id
    uri = mlflow_resource.uri()
    url = f"{uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}" if uri.startswith(("http://", "https://")) else None
    return {"mlflow_run_id": run_id, "experiment_id": exp, "url": url, "plot": png}

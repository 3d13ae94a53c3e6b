"""The controls a strategy must beat, through the same engine, costs and risk rules, and the comparison.

- ``buy_and_hold``: every series of the universe bought on the range's first candle (equal weights), held to the
  end: fully invested, and scaled to the strategy's mean exposure for a like-for-like test.
- ``random_entry``: the strategy's own number of trades and holding times, each at a random candle of its series
  (no two overlapping), the same position size: ``replicates`` seeded runs.

``compare`` pairs the strategy's per-candle equity returns with a control's (the mean of the replicates' for
random entry) and resamples the candles in moving blocks (``models/evaluation.block_resample_sums``): the interval of
the summed return difference; the strategy beats the control only when the whole interval lies above 0. The
strategy's percentile among the replicates' total returns is reported beside it.
"""

from __future__ import annotations

import numpy as np

from .engine import Bar, Engine, Signal
from .spec import Spec, parse


# what buy-and-hold keeps of the strategy's venue: not the reject rate (one rejected first order would leave the
# control in cash for the whole range: a comparison with cash, not with holding)
_VENUE = ("costs", "latency_bars", "allow_in_sample", "cash", "universe")


def buy_and_hold(spec: Spec, exposure: float | None = None) -> Spec:
    """The spec of the buy-and-hold control: the strategy's universe, cash, costs and venue, its caps and lots; an
    equal share of equity per series (``exposure``: that fraction of equity in all, else fully invested). No
    exits: no stop, target or time exit, no loss limits."""
    share = (1.0 if exposure is None else max(0.0, min(1.0, exposure))) / len(spec.universe)
    raw = {k: spec.raw[k] for k in _VENUE if k in spec.raw}
    keep = {k: v for k, v in (spec.raw.get("risk") or {}).items()
            if k in ("max_symbol_fraction", "max_total_fraction", "lot")}
    raw.update(name=f"{spec.name}:buy_and_hold", kind="buy_and_hold",
               risk={**keep, "position_fraction": max(share, 1e-9)})
    return parse(raw, stored=True)


def buy_and_hold_at(spec: Spec, candles: dict, exposure: float, run_id: str, rounds: int = 3,
                    lots: dict | None = None) -> Engine:
    """Buy and hold scaled so that its *mean* exposure is the strategy's (a position bought once drifts with the
    price: the starting fraction is corrected from the exposure each run gets, a few times)."""
    n = {s: {0: len(rows)} for s, rows in candles.items()}
    f = max(1e-6, min(1.0, exposure))
    e = run_schedule(buy_and_hold(spec, f), candles, n, run_id, lots)
    for _ in range(rounds):
        got = mean_exposure(e)
        if got <= 0 or abs(got - exposure) <= 0.005:
            break
        f = max(1e-6, min(1.0, f * exposure / got))
        e = run_schedule(buy_and_hold(spec, f), candles, n, run_id, lots)
    return e


def random_entry(spec: Spec) -> Spec:
    """The spec of the random-entry control: the strategy's universe, cash, costs, venue and risk rules, its stop
    and target; no entry rule and no time exit (its entries and holding times come from ``random_schedule``)."""
    raw = {k: v for k, v in spec.raw.items() if k not in ("rules", "name", "kind")}
    exits = {k: v for k, v in (spec.raw.get("rules") or {}).items() if k in ("stop_loss", "take_profit")}
    raw.update(name=f"{spec.name}:random_entry", kind="random_entry", rules=exits)
    return parse(raw, stored=True)


def random_schedule(lengths: dict, trades: list[tuple[tuple, int]], seed) -> dict:
    """For each (series, candles held) of the strategy's trades, a random entry candle on that series, no two
    holdings overlapping: series -> {decision candle index: candles held}. The holdings of a series are shuffled
    and the candles left free are spread over the gaps between them at random (a uniform random composition), so
    every holding finds room whenever they fit at all and the control's exposure is the strategy's; when they do
    not fit (a strategy invested nearly all the time), the longest are left out."""
    rng = np.random.default_rng(seed)
    out: dict = {s: {} for s in lengths}
    by_series: dict = {}
    for series, hold in trades:
        if lengths.get(series, 0) > 0:
            by_series.setdefault(series, []).append(max(1, int(hold)))
    for series in sorted(by_series):
        n = lengths[series]
        holds = sorted(by_series[series])
        # decided at i, filled at i + 1, held `hold` candles, the exit filled after: a holding spans hold + 2
        while holds and sum(h + 2 for h in holds) > n:
            holds.pop()
        if not holds:
            continue
        holds = [holds[i] for i in rng.permutation(len(holds))]
        k = len(holds)
        free = n - sum(h + 2 for h in holds)
        cuts = np.sort(rng.choice(free + k, size=k, replace=False))
        gaps = np.diff(np.concatenate([[-1], cuts])) - 1
        pos = 0
        for h, g in zip(holds, gaps):
            pos += int(g)
            out[series][pos] = h
            pos += h + 2
    return out


def run_schedule(spec: Spec, candles: dict, schedule: dict, run_id: str, lots: dict | None = None) -> Engine:
    """Run ``spec`` over ``candles`` (series -> list of (t, Bar)) entering per ``schedule`` (series -> {decision
    index: candles held}); each entry leaves after its own holding time. Series are stepped together by time."""
    e = Engine(spec, run_id, lots=lots)
    hold_of: dict = {}
    for t, bars in _by_time(candles):
        decisions = {}
        for series, bar in bars.items():
            if bar.index in schedule.get(series, {}):
                hold_of[series] = schedule[series][bar.index]
                decisions[series] = Signal(True)
        e.step(t, bars, decisions)
        for series, bar in bars.items():  # its own holding time, decided at this close as the engine's time exit
            pos = e.positions.get(series)
            want = hold_of.get(series)
            if pos is not None and want is not None and pos.held >= want:
                e.exit(series, t, bar, "time_exit")
    return e


def _by_time(candles: dict):
    times = sorted({t for rows in candles.values() for t, _ in rows})
    index = {s: {t: b for t, b in rows} for s, rows in candles.items()}
    for t in times:
        yield t, {s: rows[t] for s, rows in index.items() if t in rows}


def equity_curve(e: Engine) -> np.ndarray:
    return np.array([row[1] for row in e.rec.equity], dtype=float)


def mean_exposure(e: Engine) -> float:
    rows = [(eq, ex) for _, eq, _, ex in e.rec.equity if eq > 0]
    return float(np.mean([ex / eq for eq, ex in rows])) if rows else 0.0


def compare(strategy: np.ndarray, control: np.ndarray, *, block_len: int | None = None, n_boot: int = 2000,
            seed: int = 0) -> dict:
    """The paired block-bootstrap interval (2.5 %, 97.5 %) of the summed per-candle return difference between
    ``strategy`` and ``control`` (equity curves on the same candles; a 2-D control: replicates, averaged per
    candle), the strategy's percentile among the replicates' total returns, and whether it beats the control."""
    from ..models.evaluation import block_resample_sums

    s = np.asarray(strategy, dtype=float)
    c = np.atleast_2d(np.asarray(control, dtype=float))
    rs = s[1:] / s[:-1] - 1.0
    rc = (c[:, 1:] / c[:, :-1] - 1.0).mean(axis=0)
    d = rs - rc
    n = len(d)
    L = block_len or max(5, int(round(n ** (1 / 3))))
    boot = block_resample_sums(d, L, n_boot, seed=seed)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    totals = c[:, -1] / c[:, 0] - 1.0
    total = s[-1] / s[0] - 1.0
    return {"return": float(total), "control_return": float(totals.mean()), "difference": float(d.sum()),
            "interval": [float(lo), float(hi)], "beats": bool(lo > 0), "block_len": int(L),
            "percentile": float((totals < total).mean() * 100) if len(totals) > 1 else None,
            "replicates": int(len(totals))}


def trades_of(e: Engine) -> list[tuple[tuple, int]]:
    """(series, candles held) of the strategy's round trips, and of the positions still open at the end (held so
    far): what random entry places at random."""
    out = [((t["symbol"], t["timeframe"]), max(1, int(t["bars_held"]))) for t in e.rec.trades]
    out += [(series, max(1, int(p.held))) for series, p in e.positions.items()]
    return out


def lengths_of(candles: dict) -> dict:
    return {s: len(rows) for s, rows in candles.items()}


def bars_from_arrays(series, ts, o, h, lo, c, v) -> list:
    return [(ts[i], Bar(float(o[i]), float(h[i]), float(lo[i]), float(c[i]), float(v[i]), i)) for i in range(len(ts))]

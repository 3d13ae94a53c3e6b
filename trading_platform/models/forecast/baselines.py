"""The naive forecasts, the scores of a forecaster against them on the same windows, and the gate.

A scored window is one (series, origin): the forecaster read the series up to the
origin's row and forecast the next ``horizon`` rows. On exactly the same windows:

- the naive forecast: the origin's close repeated over the horizon;
- the seasonal-naive forecast: step k repeats the close one season earlier,
  ``close[origin + k - m * ceil(k / m)]``, with the season ``m`` in rows of the
  market's calendar (``frames.season_rows``).

The MAE of each is taken per series (over its windows and steps), the ratio of the
forecaster's to a baseline's is the series' relative MAE, and series are combined by
the geometric mean of their ratios, so that BTC's price level does not drown the
rest. The gate asks the forecaster to beat, with the paired moving-block bootstrap
over time blocks of origins, the *better* of the two naive forecasts of each series
(chosen on the holdout itself, which favours the baseline): a forecaster that does not
beat naive is never promoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .. import evaluation as ev
from ..gate import GateDecision, GatePolicy, against_champion, compare, decide

GATE_METRIC = "rel_mae_vs_best_naive"


@dataclass
class Windows:
    """Forecasts and outcomes of the scored windows, one row per (series, origin), in prices."""

    symbol: np.ndarray        # (n,) str
    origin_ts_us: np.ndarray  # (n,) int64: open time of the last candle the forecast read
    origin_row: np.ndarray    # (n,) int64: that candle's row in its series
    quantiles: tuple[float, ...]
    forecast: np.ndarray      # (n, horizon, len(quantiles)), sorted along the last axis
    actual: np.ndarray        # (n, horizon)
    naive: np.ndarray         # (n, horizon)
    seasonal: np.ndarray      # (n, horizon)
    season: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.symbol)

    def q(self, level: float) -> np.ndarray:
        i = int(np.argmin(np.abs(np.asarray(self.quantiles) - level)))
        if abs(self.quantiles[i] - level) > 1e-9:
            raise KeyError(f"no {level} quantile (have {self.quantiles})")
        return self.forecast[:, :, i]

    @property
    def median(self) -> np.ndarray:
        return self.q(0.5)

    def codes(self) -> tuple[np.ndarray, list[str]]:
        names, codes = np.unique(self.symbol, return_inverse=True)
        return codes.astype(np.int64), [str(s) for s in names]

    def subset(self, mask: np.ndarray) -> "Windows":
        return Windows(self.symbol[mask], self.origin_ts_us[mask], self.origin_row[mask], self.quantiles,
                       self.forecast[mask], self.actual[mask], self.naive[mask], self.seasonal[mask], self.season)


# ---- the naive forecasts ---------------------------------------------------------------------
def naive(close: np.ndarray, origin_rows: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(np.asarray(close, float)[origin_rows][:, None], horizon, axis=1)


def seasonal_naive(close: np.ndarray, origin_rows: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Step k (1..horizon) repeats the close of the same phase in the last season the origin saw."""
    k = np.arange(1, horizon + 1)
    idx = np.asarray(origin_rows)[:, None] + k[None, :] - season * np.ceil(k / season).astype(np.int64)[None, :]
    if idx.min() < 0:
        raise ValueError(f"a seasonal-naive forecast needs {season} rows before the first origin")
    return np.asarray(close, float)[idx]


def actuals(close: np.ndarray, origin_rows: np.ndarray, horizon: int) -> np.ndarray:
    return np.asarray(close, float)[np.asarray(origin_rows)[:, None] + np.arange(1, horizon + 1)[None, :]]


# ---- scores ----------------------------------------------------------------------------------
def window_mae(pred: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Mean absolute error of each window over its horizon, (n,)."""
    return np.abs(np.asarray(pred, float) - np.asarray(actual, float)).mean(axis=1)


def rel_mae(ae: np.ndarray, ae_ref: np.ndarray, codes: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Geometric mean over series of (weighted MAE / weighted reference MAE), one per replicate.

    ``ae`` and ``ae_ref`` are per-window MAEs (every window has the same number of steps, so a
    weighted mean of window MAEs is the weighted MAE); ``codes`` the series of each window;
    ``W`` (replicates x windows) the bootstrap weights (ones: the point estimate). A series that a
    replicate does not draw, or whose reference error is zero, is left out of that replicate."""
    codes = np.asarray(codes, dtype=np.int64)
    n, S = len(codes), int(codes.max()) + 1 if len(codes) else 0
    onehot = np.zeros((n, S))
    onehot[np.arange(n), codes] = 1.0
    Wd = np.asarray(W, dtype=np.float64)
    num = Wd @ (onehot * np.asarray(ae, float)[:, None])
    den = Wd @ (onehot * np.asarray(ae_ref, float)[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.where((den > 0) & (num > 0), np.log(num / np.where(den > 0, den, 1.0)), np.nan)
        ok = np.isfinite(logr)
        return np.where(ok.any(axis=1), np.exp(np.nansum(np.where(ok, logr, 0.0), axis=1)
                                               / np.maximum(ok.sum(axis=1), 1)), np.nan)


def rel_mae_fn(ae_ref: np.ndarray, codes: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The gate's metric: ``fn(ae, W) -> (replicates,)`` relative to the fixed reference errors."""
    return lambda ae, W: rel_mae(ae, ae_ref, codes, W)


def best_naive(w: Windows) -> tuple[np.ndarray, dict[str, str]]:
    """Per-window MAE of the better naive forecast of each series (lower MAE over the series'
    windows), and which one it was."""
    ae_n, ae_s = window_mae(w.naive, w.actual), window_mae(w.seasonal, w.actual)
    out, which = ae_n.copy(), {}
    for s in np.unique(w.symbol):
        m = w.symbol == s
        seasonal_better = ae_s[m].sum() < ae_n[m].sum()
        which[str(s)] = "seasonal_naive" if seasonal_better else "naive"
        if seasonal_better:
            out[m] = ae_s[m]
    return out, which


def coverage(w: Windows, lo: float = 0.1, hi: float = 0.9) -> float:
    """Share of actual closes inside the [lo, hi] forecast interval (all windows and steps)."""
    a = w.actual
    return float(np.mean((a >= w.q(lo)) & (a <= w.q(hi))))


def scores(w: Windows) -> tuple[dict, dict]:
    """(metrics, per-series metrics) of the median forecast and the baselines on the windows."""
    codes, names = w.codes()
    one = ev.ones(len(w))
    ae = window_mae(w.median, w.actual)
    ae_n, ae_s = window_mae(w.naive, w.actual), window_mae(w.seasonal, w.actual)
    ae_b, which = best_naive(w)
    metrics = {
        "mae": float(ae.mean()), "mae_naive": float(ae_n.mean()), "mae_seasonal_naive": float(ae_s.mean()),
        "rel_mae_vs_naive": float(rel_mae(ae, ae_n, codes, one)[0]),
        "rel_mae_vs_seasonal_naive": float(rel_mae(ae, ae_s, codes, one)[0]),
        GATE_METRIC: float(rel_mae(ae, ae_b, codes, one)[0]),
        "coverage_80": coverage(w), "origins": int(len(w)), "series": len(names),
    }
    per = {}
    for i, s in enumerate(names):
        m = codes == i
        cov = (w.actual[m] >= w.q(0.1)[m]) & (w.actual[m] <= w.q(0.9)[m])
        per[s] = {"mae": float(ae[m].mean()), "mae_naive": float(ae_n[m].mean()),
                  "mae_seasonal_naive": float(ae_s[m].mean()),
                  "rel_mae_vs_naive": float(ae[m].sum() / ae_n[m].sum()) if ae_n[m].sum() > 0 else float("nan"),
                  "rel_mae_vs_seasonal_naive": (float(ae[m].sum() / ae_s[m].sum()) if ae_s[m].sum() > 0
                                                else float("nan")),
                  "best_naive": which[s], "season_rows": int(w.season.get(s, 0)),
                  "coverage_80": float(cov.mean()), "origins": int(m.sum())}
    return metrics, per


# ---- the gate ----------------------------------------------------------------------------------
def gate_policy(**overrides) -> GatePolicy:
    """Relative MAE against the better naive forecast, lower is better; the new version must beat it
    (improvement = 1 - relative MAE, lower bound above 0) and the champion by 0.005."""
    kw = dict(metric=GATE_METRIC, direction="lower", margins={"vs_best_naive": 0.0, "vs_champion": 0.005})
    kw.update(overrides)
    return GatePolicy(**kw)


def block_len(input_size: int, horizon: int, step_size: int) -> int:
    """Bootstrap block in origins: the windows whose rows (inputs and horizon) overlap one another's."""
    return max(1, -(-(int(input_size) + int(horizon)) // int(step_size)))


@dataclass
class ForecastChampion:
    """The current champion as the gate sees it.

    ``errors()`` gives its per-window MAE (the median forecast) on the new version's windows, with its
    own fitted weights (NaN where it cannot forecast); ``refit()`` refits its recorded configuration on
    the new version's training rows and gives the same (None: cannot)."""

    version: str
    data_end_us: Optional[int]
    errors: Callable[[], np.ndarray]
    refit: Optional[Callable[[], np.ndarray]] = None
    same_config: bool = False  # its configuration is the new version's: a refit would be the new version


def gate(w: Windows, block: int, policy: GatePolicy | None = None,
         champion: ForecastChampion | None = None) -> GateDecision:
    """Champion only if the median forecast beats the better naive forecast of each series (relative
    MAE, geometric mean over series) and the champion on the same windows, each with the support of
    the paired moving-block bootstrap over time blocks of origins (origins that share a timestamp
    across symbols share a block)."""
    policy = policy or gate_policy()
    codes, _ = w.codes()
    ae = window_mae(w.median, w.actual)
    ae_b, which = best_naive(w)
    boot = ev.Bootstrap(w.origin_ts_us, block, policy.n_boot, policy.seed)
    fn = rel_mae_fn(ae_b, codes)
    n_seasonal = sum(v == "seasonal_naive" for v in which.values())
    against = (f"the better naive forecast of each series ({len(which) - n_seasonal} naive, "
               f"{n_seasonal} seasonal naive)")
    base = compare("vs_best_naive", against, policy.metric, "lower", fn, ae, ae_b, boot,
                   policy.margin("vs_best_naive"), policy.confidence)
    champ, mode, note = None, "none", ""
    if champion is not None:
        cache: dict[str, np.ndarray] = {}

        def champion_ae() -> np.ndarray:
            if "ae" not in cache:
                cache["ae"] = np.asarray(champion.errors(), float)
            return cache["ae"]

        def refit():
            return fn, ae, np.asarray(champion.refit(), float)

        champ, mode, note = against_champion(
            policy, version=champion.version, ts_holdout=w.origin_ts_us, block_len=block,
            data_end_us=champion.data_end_us, usable=lambda m: bool(np.isfinite(champion_ae()[m]).all()),
            scored=lambda m: (rel_mae_fn(ae_b[m], codes[m]), ae[m], champion_ae()[m]),
            refit=refit if champion.refit is not None else None, same_config=champion.same_config)
    return decide(policy.metric, policy.direction, float(fn(ae, ev.ones(len(w)))[0]), [base], champ,
                  champion_mode=mode, champion_note=note, block_len=block, n_boot=policy.n_boot,
                  confidence=policy.confidence, holdout_rows=len(w))

"""Labels, splits on the series' real rows, calibration, untrained rules, and the
feature columns models use. Pure numpy: no MLflow, no Dagster."""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from ..errors import InvalidInput

# stationary features with a bounded look-back only: price levels (sma, ema, bands, vwap, ath, obv, macd)
# differ by symbol, and the all-time-high tracker (ath_dist, bars_since_ath) depends on where the
# stored history starts, so loading older candles would change a version's inputs for the same rows
MODEL_FEATURE = re.compile(
    r"^(ret_\d+|logret_\d+|vol_\d+|change_\d+|dist_\w+|rsi_\d+|bb_width_\w+|bb_pctb_\w+|stoch_[kd]_\w+|"
    r"volume_z_\d+|volume_spike_\d+|max_rise_\d+|hl_range|body|upper_wick|lower_wick|"
    r"htf_rsi_\d+|htf_bb_pctb_\w+|htf_ret_\d+|htf_dist_\w+)$"
)
US = 1_000_000


# ---- checking configuration values (each family's config ``__post_init__``) ------------------------
def is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(what: str, name: str, value, minimum: int = 1) -> None:
    """``value`` must be an integer >= ``minimum``; else InvalidInput naming ``name`` (the config field)."""
    if not is_int(value) or value < minimum:
        raise InvalidInput(f"{what} {name}: {value!r} must be an integer >= {minimum}", field=name)


def check_number(what: str, name: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """``value`` must be a finite number within ``[low, high]`` (an end left out when None, excluded when
    ``*_open``); else InvalidInput naming ``name`` (the config field)."""
    from ..core.numbers import interval, read, within

    x = read(value) if isinstance(value, Real) else None  # a config value is a number, never text
    if x is not None and within(x, None if low_open else low, None if high_open else high,
                                low if low_open else None, high if high_open else None):
        return
    raise InvalidInput(f"{what} {name}: {value!r} must be a finite number{interval(low, high, low_open, high_open)}",
                       field=name)


class EvaluationError(ValueError):
    """The holdout cannot score a model (too few rows, one class, too few episodes): nothing is registered."""


def model_columns(columns) -> list[str]:
    return [c for c in columns if MODEL_FEATURE.match(c)]


def longest_feature_window(columns) -> int:
    """The longest look-back (bars) behind the given feature columns: N of ``*_N`` names, and the
    features spec's longest window for names without one (candle shape: 1; all-time-high tracker:
    the spec's longest)."""
    from ..features.spec import FeatureSpec

    spec_max = FeatureSpec().max_window
    out = 1
    for c in columns:
        nums = [int(x) for x in re.findall(r"_(\d+)", c)]
        if c in ("hl_range", "body", "upper_wick", "lower_wick"):
            w = 1
        elif c.startswith("max_rise_"):
            w = 2 * nums[0]
        elif nums:
            w = max(nums) + 1
        else:
            w = spec_max
        out = max(out, w)
    return out


# ---- labels --------------------------------------------------------------------
def pump_label(close: np.ndarray, horizon: int, rise: float) -> np.ndarray:
    """1 if the close rises at least ``rise`` (0.05 = 5 %) within the next ``horizon`` bars;
    NaN for the last ``horizon`` rows, whose future is not known yet."""
    n = len(close)
    out = np.full(n, np.nan)
    if n <= horizon:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    future_max = sliding_window_view(close[1:], horizon).max(axis=1)  # max of close[t+1 .. t+horizon]
    out[: n - horizon] = (future_max[: n - horizon] / close[: n - horizon] - 1 >= rise).astype(float)
    return out


def forward_return_sign(close: np.ndarray, horizon: int) -> np.ndarray:
    """1 if close[t + horizon] > close[t], 0 otherwise; NaN where the future is unknown."""
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        out[:-horizon] = (close[horizon:] > close[:-horizon]).astype(float)
    return out


def label_times(ts_us: np.ndarray, horizon: int) -> np.ndarray:
    """Timestamp of the row a label reads (the ``horizon``-th later row of the same series);
    -1 where there is none. Rows, not clock time: over a weekend or a night the label of a
    Friday-evening row reads Monday's candle, and this says so."""
    ts_us = np.asarray(ts_us, dtype=np.int64)
    out = np.full(len(ts_us), -1, dtype=np.int64)
    if len(ts_us) > horizon:
        out[:-horizon] = ts_us[horizon:]
    return out


# ---- splits ----------------------------------------------------------------------
def holdout_start(ts_us: np.ndarray, holdout_frac: float) -> int:
    """The time boundary that holds out the most recent ``holdout_frac`` of the time range.

    Computed from a symbol's whole feature series, so the regime and the signal model of
    a symbol (which drop different rows) share one boundary."""
    if not 0 < holdout_frac < 1:
        raise EvaluationError(f"holdout_frac must be between 0 and 1, got {holdout_frac}")
    t0, t1 = int(np.min(ts_us)), int(np.max(ts_us))
    return int(t0 + (t1 - t0) * (1 - holdout_frac))


@dataclass
class Split:
    train: np.ndarray  # row indices, in time order
    holdout: np.ndarray


def time_split(ts_us: np.ndarray, label_ts_us: np.ndarray, start_us: int) -> Split:
    """Holdout: rows at or after ``start_us``. Train: rows before it *whose label reads a row
    before it* (the embargo, on the series' actual rows). Never shuffled."""
    ts_us = np.asarray(ts_us, dtype=np.int64)
    order = np.argsort(ts_us, kind="stable")
    t, lt = ts_us[order], np.asarray(label_ts_us, dtype=np.int64)[order]
    train = order[(t < start_us) & (lt >= 0) & (lt < start_us)]
    return Split(train=train, holdout=order[t >= start_us])


def walk_forward_split(ts_us: np.ndarray, label_ts_us: np.ndarray, holdout_frac: float = 0.2) -> Split:
    return time_split(ts_us, label_ts_us, holdout_start(ts_us, holdout_frac))


def episodes(y: np.ndarray, series: np.ndarray, ts_us: np.ndarray, value: int = 1) -> int:
    """Runs of consecutive rows equal to ``value`` within each series (one pump spans many rows)."""
    order = np.lexsort((ts_us, series))
    yy, ss = np.asarray(y)[order] == value, np.asarray(series)[order]
    starts = yy & ~np.r_[False, yy[:-1] & (ss[1:] == ss[:-1])]
    return int(starts.sum())


# ---- calibration -------------------------------------------------------------------
def fit_platt(margin: np.ndarray, y: np.ndarray, iters: int = 100, l2: float = 1e-4) -> tuple[float, float]:
    """Platt scaling: P(y=1) = sigmoid(a * margin + b), fitted by Newton's method (log loss,
    a tiny ridge for separable data). A score without skill gets a ~ 0: the base rate."""
    m = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    X = np.column_stack([m, np.ones_like(m)])
    rate = np.clip(y.mean(), 1e-4, 1 - 1e-4)
    w = np.array([0.0, np.log(rate / (1 - rate))])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ w)))
        g = X.T @ (p - y) + l2 * np.r_[w[0], 0]
        H = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.diag([1.0, 1e-9])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def platt(margin: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(a * np.asarray(margin, dtype=np.float64) + b)))


# ---- untrained rules a trader would try first ------------------------------------------
def rule_scores(frame, lookbacks=(1, 5, 15, 60)) -> dict[str, np.ndarray]:
    """Momentum (``ret_N``: up keeps going up) and reversal (``-ret_N``) over the feature lookbacks.
    Warm-up rows score 0 (no opinion)."""
    out = {}
    for n in lookbacks:
        col = f"ret_{n}"
        if col not in frame.columns:
            continue
        r = np.nan_to_num(frame[col].to_numpy().astype(np.float64), nan=0.0)
        out[f"momentum_{n}"] = r
        out[f"reversal_{n}"] = -r
    return out


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    from .evaluation import log_loss_rows

    both = len(np.unique(y)) == 2
    pred = (p >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss_rows(y, p).mean()),
        "brier": float(np.mean((np.asarray(p, float) - y) ** 2)),
        "accuracy": float(np.mean(pred == y)),
        "precision_at_threshold": float(precision_score(y, pred, zero_division=0)),
        "recall_at_threshold": float(recall_score(y, pred, zero_division=0)),
        "positive_rate": float(np.mean(y)),
        "holdout_rows": int(len(y)),
    }

"""Labels, walk-forward splits, metrics and the feature columns models use."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# stationary features only: price levels (sma, ema, bands, vwap, ath, obv, macd) differ by symbol
MODEL_FEATURE = re.compile(
    r"^(ret_\d+|logret_\d+|vol_\d+|change_\d+|dist_\w+|rsi_\d+|bb_width_\w+|bb_pctb_\w+|stoch_[kd]_\w+|"
    r"volume_z_\d+|volume_spike_\d+|max_rise_\d+|ath_dist|bars_since_ath|hl_range|body|upper_wick|lower_wick|"
    r"htf_rsi_\d+|htf_bb_pctb_\w+|htf_ret_\d+|htf_dist_\w+)$"
)


def model_columns(columns) -> list[str]:
    return [c for c in columns if MODEL_FEATURE.match(c)]


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


@dataclass
class Split:
    train: np.ndarray  # row indices
    holdout: np.ndarray


def walk_forward_split(ts_us: np.ndarray, label_end_us: np.ndarray, holdout_frac: float = 0.2) -> Split:
    """Train on the past, hold out the most recent ``holdout_frac`` of time, never shuffled.

    A training row is kept only if its label is fully known before the holdout
    starts (``label_end_us`` < holdout start): the embargo that keeps a label's
    future out of training.
    """
    order = np.argsort(ts_us, kind="stable")
    t0, t1 = ts_us[order[0]], ts_us[order[-1]]
    cut = t0 + (t1 - t0) * (1 - holdout_frac)
    holdout = order[ts_us[order] >= cut]
    train = order[(ts_us[order] < cut) & (label_end_us[order] < cut)]
    return Split(train=train, holdout=holdout)


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    both = len(np.unique(y)) == 2
    pred = (p >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "precision_at_threshold": float(precision_score(y, pred, zero_division=0)),
        "recall_at_threshold": float(recall_score(y, pred, zero_division=0)),
        "positive_rate": float(np.mean(y)),
        "holdout_rows": int(len(y)),
    }

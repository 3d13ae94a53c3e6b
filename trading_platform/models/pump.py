"""The XGBoost pump classifier: will the close rise X % within the next N bars?"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .common import binary_metrics, model_columns, pump_label, walk_forward_split

METRIC, DIRECTION = "roc_auc", "higher"


@dataclass
class PumpConfig:
    horizon: int = 12          # bars
    rise: float = 0.05         # 5 %
    alert_threshold: float = 0.5
    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    holdout_frac: float = 0.2
    seed: int = 7


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    ts_us: np.ndarray
    symbols: np.ndarray
    columns: list[str]
    train: np.ndarray = field(default_factory=lambda: np.empty(0, int))
    holdout: np.ndarray = field(default_factory=lambda: np.empty(0, int))


def build_dataset(frame: pl.DataFrame, cfg: PumpConfig, tf_seconds: int) -> Dataset:
    """Rows with a known label, features as they were at each row's time; walk-forward split."""
    frame = frame.sort("symbol", "ts")
    cols = model_columns(frame.columns)
    labels = np.concatenate([pump_label(g["close"].to_numpy(), cfg.horizon, cfg.rise)
                             for g in frame.partition_by("symbol", maintain_order=True)])
    keep = ~np.isnan(labels)
    X = frame.select(cols).to_numpy().astype(np.float32)[keep]
    ts = frame["ts"].dt.epoch("us").to_numpy()[keep]
    ds = Dataset(X=X, y=labels[keep].astype(int), ts_us=ts, symbols=frame["symbol"].to_numpy()[keep], columns=cols)
    label_end = ts + cfg.horizon * tf_seconds * 1_000_000
    split = walk_forward_split(ts, label_end, cfg.holdout_frac)
    ds.train, ds.holdout = split.train, split.holdout
    return ds


def train(ds: Dataset, cfg: PumpConfig, device: str = "cpu"):
    import xgboost as xgb

    pos = max(ds.y[ds.train].sum(), 1)
    neg = max(len(ds.train) - pos, 1)
    dtrain = xgb.DMatrix(ds.X[ds.train], label=ds.y[ds.train], feature_names=ds.columns)
    params = {"objective": "binary:logistic", "eval_metric": "auc", "max_depth": cfg.max_depth,
              "eta": cfg.learning_rate, "scale_pos_weight": neg / pos, "seed": cfg.seed,
              "tree_method": "hist", "device": device, "nthread": 2}
    return xgb.train(params, dtrain, num_boost_round=cfg.n_estimators)


def predict(booster, X: np.ndarray) -> np.ndarray:
    return booster.inplace_predict(X)


def evaluate(booster, ds: Dataset, cfg: PumpConfig) -> tuple[dict, float]:
    """Holdout metrics and the naive baseline's score for the gate metric."""
    y = ds.y[ds.holdout]
    p = predict(booster, ds.X[ds.holdout])
    m = binary_metrics(y, p, cfg.alert_threshold)
    # the naive baseline predicts the positive rate for everyone: ROC AUC 0.5, PR AUC = positive rate
    m["baseline_roc_auc"] = 0.5
    m["baseline_pr_auc"] = m["positive_rate"]
    return m, 0.5


def calibration_plot(y: np.ndarray, p: np.ndarray, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(p, bins) - 1, 0, 9)
    mean_p = [p[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    frac = [y[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    counts = [(idx == b).sum() for b in range(10)]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot(mean_p, frac, "o-", label="pump classifier")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed pump rate")
    ax.set_title("Calibration on the holdout")
    ax.legend()
    ax2.bar(range(10), counts)
    ax2.set_xlabel("probability bin")
    ax2.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

"""The XGBoost pump classifier: will the close rise X % within the next N bars?"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import polars as pl

from . import classifier as clf
from .common import (check_int, check_number, holdout_start, label_times, longest_feature_window, model_columns,
                     pump_label, rule_scores)
from .gate import GatePolicy

METRIC, DIRECTION = "roc_auc", "higher"


@dataclass
class PumpConfig:
    horizon: int = 12          # bars
    rise: float = 0.05         # 5 %
    alert_threshold: float = 0.5
    n_estimators: int = 300          # at most: early stopping on the calibration rows picks the number
    max_depth: int = 4
    learning_rate: float = 0.05
    min_child_weight: float = 5.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 5.0
    early_stopping_rounds: int = 30
    holdout_frac: float = 0.2
    calibration_frac: float = 0.25   # the last part of the training window, for Platt scaling
    min_episodes: int = 10           # pump episodes (and quiet ones) the holdout must hold
    seed: int = 7

    def __post_init__(self):
        """Every value checked before anything is read or trained; InvalidInput names the config field."""
        for name in ("horizon", "n_estimators", "max_depth", "early_stopping_rounds", "min_episodes"):
            check_int("pump", name, getattr(self, name))
        check_int("pump", "seed", self.seed, 0)
        check_number("pump", "rise", self.rise, 0, low_open=True)
        # 0 would alert on every row, 1 on none (a calibrated probability never reaches it)
        check_number("pump", "alert_threshold", self.alert_threshold, 0, 1, low_open=True, high_open=True)
        check_number("pump", "learning_rate", self.learning_rate, 0, 1, low_open=True)
        for name in ("subsample", "colsample_bytree"):  # a share of rows / columns: 0 trains a constant model
            check_number("pump", name, getattr(self, name), 0, 1, low_open=True)
        for name in ("min_child_weight", "reg_lambda"):
            check_number("pump", name, getattr(self, name), 0)
        for name in ("holdout_frac", "calibration_frac"):
            check_number("pump", name, getattr(self, name), 0, 1, low_open=True, high_open=True)

    def target(self, timeframe: str) -> str:
        """The label definition: versions with another target belong to another lineage."""
        return f"pump: close rises >= {self.rise:g} within {self.horizon} bars of {timeframe}"

    def to_dict(self) -> dict:
        return asdict(self)


def build_task(frame: pl.DataFrame, cfg: PumpConfig, holdout_start_us: Optional[int] = None) -> clf.BinaryTask:
    """Rows with a known label, features as they were at each row's time, split in time across
    all symbols together (one boundary)."""
    frame = frame.sort("symbol", "ts")
    ts_all = frame["ts"].dt.epoch("us").to_numpy()
    hs = holdout_start(ts_all, cfg.holdout_frac) if holdout_start_us is None else holdout_start_us
    cols = model_columns(frame.columns)
    parts = frame.partition_by("symbol", maintain_order=True)
    labels = np.concatenate([pump_label(g["close"].to_numpy(), cfg.horizon, cfg.rise) for g in parts])
    lts = np.concatenate([label_times(g["ts"].dt.epoch("us").to_numpy(), cfg.horizon) for g in parts])
    keep = ~np.isnan(labels)
    X = frame.select(cols).to_numpy().astype(np.float32)[keep]
    rules = {k: v[keep] for k, v in rule_scores(frame).items()}
    return clf.make_task(X, labels[keep].astype(int), ts_all[keep], lts[keep], frame["symbol"].to_numpy()[keep],
                         cols, rules, hs, max(cfg.horizon, longest_feature_window(cols)), cfg.calibration_frac)


def train_fn(cfg: PumpConfig, device: str = "cpu") -> Callable:
    """XGBoost on the fit rows, stopped early on the calibration rows (the most recent training rows)."""
    def train(X, y, X_val, y_val):
        import xgboost as xgb

        pos = max(int(y.sum()), 1)
        neg = max(len(y) - pos, 1)
        params = {"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": cfg.max_depth,
                  "eta": cfg.learning_rate, "scale_pos_weight": neg / pos, "seed": cfg.seed,
                  "min_child_weight": cfg.min_child_weight, "subsample": cfg.subsample,
                  "colsample_bytree": cfg.colsample_bytree, "lambda": cfg.reg_lambda,
                  "tree_method": "hist", "device": device, "nthread": 2}
        booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=cfg.n_estimators,
                            evals=[(xgb.DMatrix(X_val, label=y_val), "calibration")],
                            early_stopping_rounds=cfg.early_stopping_rounds, verbose_eval=False)
        # keep only the trees up to the best iteration: what is evaluated is what is saved and served
        return booster[: booster.best_iteration + 1]

    return train


def fit(task: clf.BinaryTask, cfg: PumpConfig, device: str = "cpu") -> clf.CalibratedClassifier:
    model = clf.fit_classifier(task, train_fn(cfg, device), "xgboost")
    model.booster.feature_names = task.columns
    return model


def train_and_gate(frame: pl.DataFrame, cfg: PumpConfig, *, device: str = "cpu", policy: GatePolicy | None = None,
                   champion: Callable[[clf.BinaryTask], Optional[clf.Champion]] | None = None,
                   what: str = "pump_xgb") -> clf.Trained:
    return clf.train_and_gate(build_task(frame, cfg), lambda task: fit(task, cfg, device),
                              threshold=cfg.alert_threshold, policy=policy, champion=champion,
                              min_episodes=cfg.min_episodes, what=what)


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
    ax.plot(mean_p, frac, "o-", label="pump classifier (Platt-calibrated)")
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

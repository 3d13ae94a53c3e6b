"""The LightGBM signal score: will the close be higher ``horizon`` bars from now?

Inputs are the stationary features plus, when the symbol has a regime champion
trained before the holdout, that regime version's filtered probabilities. A signal
version records the regime version it was trained with, and the gate and serving
both feed it exactly that version's probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import polars as pl

from . import classifier as clf
from .common import (check_int, check_number, forward_return_sign, holdout_start, label_times, longest_feature_window,
                     model_columns, rule_scores)
from .gate import GatePolicy
from .regime import REGIMES

REGIME_COLUMNS = [f"p_{r}" for r in REGIMES]


@dataclass
class SignalConfig:
    horizon: int = 12
    n_estimators: int = 300          # at most: early stopping on the calibration rows picks the number
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_data_in_leaf: int = 100      # market labels are noisy: small leaves memorize the noise
    feature_fraction: float = 0.8
    lambda_l2: float = 10.0
    early_stopping_rounds: int = 30
    holdout_frac: float = 0.2
    calibration_frac: float = 0.25
    min_episodes: int = 10
    seed: int = 7

    def __post_init__(self):
        """Every value checked before anything is read or trained; InvalidInput names the config field."""
        for name in ("horizon", "n_estimators", "min_data_in_leaf", "early_stopping_rounds", "min_episodes"):
            check_int("signal", name, getattr(self, name))
        check_int("signal", "num_leaves", self.num_leaves, 2)  # LightGBM needs two leaves to split
        check_int("signal", "seed", self.seed, 0)
        check_number("signal", "learning_rate", self.learning_rate, 0, 1, low_open=True)
        check_number("signal", "feature_fraction", self.feature_fraction, 0, 1, low_open=True)
        check_number("signal", "lambda_l2", self.lambda_l2, 0)
        for name in ("holdout_frac", "calibration_frac"):
            check_number("signal", name, getattr(self, name), 0, 1, low_open=True, high_open=True)

    def target(self, timeframe: str) -> str:
        return f"signal: sign of close[t+{self.horizon}] - close[t] on {timeframe}"

    def to_dict(self) -> dict:
        return asdict(self)


def build_task(frame: pl.DataFrame, cfg: SignalConfig, regime_probs: Optional[np.ndarray] = None,
               holdout_start_us: Optional[int] = None) -> clf.BinaryTask:
    """One symbol's rows with a known label. ``regime_probs`` (rows of ``frame`` x 4, NaN where
    the regime inputs are missing) become the ``p_<regime>`` columns when given."""
    frame = frame.sort("ts")
    ts = frame["ts"].dt.epoch("us").to_numpy()
    hs = holdout_start(ts, cfg.holdout_frac) if holdout_start_us is None else holdout_start_us
    cols = model_columns(frame.columns)
    X = frame.select(cols).to_numpy().astype(np.float32)
    if regime_probs is not None:
        X = np.column_stack([X, regime_probs]).astype(np.float32)
        cols = cols + REGIME_COLUMNS
    y = forward_return_sign(frame["close"].to_numpy(), cfg.horizon)
    keep = ~np.isnan(y)
    rules = {k: v[keep] for k, v in rule_scores(frame).items()}
    return clf.make_task(X[keep], y[keep].astype(int), ts[keep], label_times(ts, cfg.horizon)[keep],
                         frame["symbol"].to_numpy()[keep], cols, rules, hs,
                         max(cfg.horizon, longest_feature_window(model_columns(frame.columns))), cfg.calibration_frac)


def train_fn(cfg: SignalConfig, feature_names: Optional[list[str]] = None) -> Callable:
    """LightGBM on the fit rows, stopped early on the calibration rows (the most recent training rows)."""
    def train(X, y, X_val, y_val):
        import lightgbm as lgb

        params = {"objective": "binary", "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
                  "min_data_in_leaf": cfg.min_data_in_leaf, "feature_fraction": cfg.feature_fraction,
                  "feature_fraction_seed": cfg.seed, "lambda_l2": cfg.lambda_l2, "verbose": -1, "seed": cfg.seed,
                  "num_threads": 2, "deterministic": True}
        names = feature_names or "auto"
        booster = lgb.train(params, lgb.Dataset(X, label=y, feature_name=names), num_boost_round=cfg.n_estimators,
                            valid_sets=[lgb.Dataset(X_val, label=y_val, feature_name=names)],
                            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
        # keep only the trees up to the best iteration: what is evaluated is what is saved and served
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration or -1))

    return train


def fit(task: clf.BinaryTask, cfg: SignalConfig) -> clf.CalibratedClassifier:
    return clf.fit_classifier(task, train_fn(cfg, task.columns), "lightgbm")


def train_and_gate(frame: pl.DataFrame, cfg: SignalConfig, *, regime_probs: Optional[np.ndarray] = None,
                   holdout_start_us: Optional[int] = None, policy: GatePolicy | None = None,
                   champion: Callable[[clf.BinaryTask], Optional[clf.Champion]] | None = None,
                   what: str = "signal_lgbm") -> clf.Trained:
    return clf.train_and_gate(build_task(frame, cfg, regime_probs, holdout_start_us), lambda task: fit(task, cfg),
                              threshold=0.5, policy=policy, champion=champion, min_episodes=cfg.min_episodes,
                              what=what)


def importance_plot(booster, names: list[str], path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imp = booster.feature_importance("gain")
    order = np.argsort(imp)[-20:]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([names[i] for i in order], imp[order])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

"""Market regimes (a 4-state Gaussian HMM) and a LightGBM signal score on top.

States are named by their statistics, not by the arbitrary order a fit finds
them in: the most volatile state is ``high_volatility``; the other three, by
mean return, ``bear``, ``sideways``, ``bull``. Regime probabilities are
*filtered* (forward algorithm: each row uses only rows up to it), never the
smoothed posterior, which would use the future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

REGIMES = ("bear", "sideways", "bull", "high_volatility")
INPUTS = ("logret_1", "vol_20")


@dataclass
class RegimeConfig:
    n_states: int = 4
    n_iter: int = 50
    holdout_frac: float = 0.2
    seed: int = 7


class RegimeModel:
    """A fitted HMM with its input scaling and the state -> regime mapping."""

    def __init__(self, hmm, mean: np.ndarray, std: np.ndarray, names: list[str]):
        self.hmm, self.mean, self.std, self.names = hmm, mean, std, names

    def _z(self, X: np.ndarray) -> np.ndarray:
        return (_transform(X) - self.mean) / self.std

    def filtered_proba(self, X: np.ndarray) -> np.ndarray:
        """P(state_t | x_1..x_t) per row, columns in REGIMES order."""
        from scipy.stats import multivariate_normal

        Z = self._z(X)
        k = self.hmm.n_components
        loglik = np.column_stack([multivariate_normal(self.hmm.means_[i], self.hmm.covars_[i],
                                                      allow_singular=True).logpdf(Z) for i in range(k)])
        lik = np.exp(loglik - loglik.max(axis=1, keepdims=True))  # scaled per row: ratios are what matter
        A = self.hmm.transmat_
        proba = np.empty((len(Z), k))
        p = self.hmm.startprob_ * lik[0]
        proba[0] = p / p.sum()
        for t in range(1, len(Z)):
            p = (proba[t - 1] @ A) * lik[t]
            s = p.sum()
            proba[t] = p / s if s > 0 else np.full(k, 1.0 / k)
        order = [self.names.index(r) for r in REGIMES]
        return proba[:, order]

    def regimes(self, X: np.ndarray) -> np.ndarray:
        return np.array(REGIMES)[self.filtered_proba(X).argmax(axis=1)]

    def score_per_row(self, X: np.ndarray) -> float:
        return float(self.hmm.score(self._z(X)) / len(X))

    def state_stats(self) -> dict:
        means = _untransform(self.hmm.means_ * self.std + self.mean)
        return {self.names[i]: {"mean_logret": float(means[i][0]), "mean_vol": float(means[i][1])}
                for i in range(self.hmm.n_components)}

    def transitions(self) -> dict:
        return {self.names[i]: {self.names[j]: float(self.hmm.transmat_[i, j])
                                for j in range(self.hmm.n_components)} for i in range(self.hmm.n_components)}


def name_states(means: np.ndarray) -> list[str]:
    """Regime names from each state's (mean log return, mean volatility)."""
    k = len(means)
    hv = int(np.argmax(means[:, 1]))
    rest = sorted((i for i in range(k) if i != hv), key=lambda i: means[i, 0])
    names = [""] * k
    names[hv] = "high_volatility"
    for name, i in zip(("bear", "sideways", "bull"), rest):
        names[i] = name
    return names


def _transform(X: np.ndarray) -> np.ndarray:
    """Volatility on a log scale: its spread is multiplicative, and a linear scale lets the
    calm states collapse into one while the volatile tail takes several."""
    out = np.array(X, dtype=float, copy=True)
    out[:, 1] = np.log(np.maximum(out[:, 1], 1e-12))
    return out


def _untransform(M: np.ndarray) -> np.ndarray:
    out = np.array(M, dtype=float, copy=True)
    out[:, 1] = np.exp(out[:, 1])
    return out


def fit(X: np.ndarray, cfg: RegimeConfig) -> RegimeModel:
    from hmmlearn.hmm import GaussianHMM

    T = _transform(X)
    mean, std = T.mean(axis=0), T.std(axis=0) + 1e-12
    Z = (T - mean) / std
    hmm = GaussianHMM(n_components=cfg.n_states, covariance_type="full", n_iter=cfg.n_iter,
                      random_state=cfg.seed, min_covar=0.05, init_params="c", params="stmc")
    k = cfg.n_states
    hmm.startprob_ = np.full(k, 1.0 / k)
    hmm.transmat_ = np.full((k, k), 0.05 / (k - 1)) + np.eye(k) * (0.95 - 0.05 / (k - 1))  # regimes persist
    hmm.means_ = initial_means(Z, k)
    hmm.fit(Z)
    means = _untransform(hmm.means_ * std + mean)
    return RegimeModel(hmm, mean, std, name_states(means))


def initial_means(Z: np.ndarray, k: int) -> np.ndarray:
    """Deterministic starting points, one per regime, from the data's own quantiles.

    EM finds a local optimum near where it starts; starting every fit from the
    regimes we name (calm, falling, rising, turbulent) is what keeps refits on
    shifted data finding the same states (random starts split the turbulent
    tail into several states on one fit and not on the next).
    """
    ret, vol = Z[:, 0], Z[:, 1]
    calm = vol <= np.quantile(vol, 0.85)
    r = ret[calm]
    means = [
        [np.mean(r[r <= np.quantile(r, 0.3)]), np.median(vol[calm])],   # falling
        [0.0, np.quantile(vol, 0.25)],                                   # calm
        [np.mean(r[r >= np.quantile(r, 0.7)]), np.median(vol[calm])],   # rising
        [0.0, np.quantile(vol, 0.95)],                                   # turbulent
    ]
    if k != 4:
        qs = np.linspace(0.1, 0.9, k)
        means = [[0.0, np.quantile(vol, q)] for q in qs]
    return np.array(means)


def baseline_score(train: np.ndarray, holdout: np.ndarray) -> float:
    """Log-likelihood per row of one Gaussian (no regimes) fitted on the training rows."""
    from scipy.stats import multivariate_normal

    train, holdout = _transform(train), _transform(holdout)
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-12
    z_tr, z_ho = (train - mean) / std, (holdout - mean) / std
    return float(multivariate_normal(z_tr.mean(axis=0), np.cov(z_tr.T), allow_singular=True).logpdf(z_ho).mean())


def inputs(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(X, ts_us) of the rows where every HMM input is known."""
    f = frame.drop_nulls(list(INPUTS)).sort("ts")
    return f.select(INPUTS).to_numpy(), f["ts"].dt.epoch("us").to_numpy()


def regime_plot(ts_us: np.ndarray, close: np.ndarray, regimes: np.ndarray, path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"bull": "tab:green", "bear": "tab:red", "sideways": "tab:grey", "high_volatility": "tab:orange"}
    t = ts_us.astype("datetime64[us]")
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, close, color="black", lw=0.6)
    for name, color in colors.items():
        m = regimes == name
        ax.scatter(t[m], close[m], s=3, color=color, label=name)
    ax.set_title(title)
    ax.legend(markerscale=4, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@dataclass
class SignalConfig:
    horizon: int = 12
    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    holdout_frac: float = 0.2
    seed: int = 7

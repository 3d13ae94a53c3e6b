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

    def __post_init__(self):
        """Every value checked before anything is read or trained; InvalidInput names the config field."""
        from ..errors import InvalidInput
        from .common import check_int, check_number

        if self.n_states != len(REGIMES) or not isinstance(self.n_states, int):
            raise InvalidInput(f"regime n_states: {self.n_states!r} must be {len(REGIMES)}: the states are named "
                               f"{', '.join(REGIMES)}", field="n_states")
        check_int("regime", "n_iter", self.n_iter)  # EM iterations: 0 registers the untrained starting point
        check_int("regime", "seed", self.seed, 0)
        check_number("regime", "holdout_frac", self.holdout_frac, 0, 1, low_open=True, high_open=True)

    def target(self, timeframe: str) -> str:
        return f"regimes: {self.n_states}-state HMM of {', '.join(INPUTS)} on {timeframe}"

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class RegimeModel:
    """A fitted HMM with its input scaling and the state -> regime mapping."""

    def __init__(self, hmm, mean: np.ndarray, std: np.ndarray, names: list[str]):
        self.hmm, self.mean, self.std, self.names = hmm, mean, std, names

    feature_names = list(INPUTS)
    regime_names = list(REGIMES)  # the columns of filtered_proba

    def _z(self, X: np.ndarray) -> np.ndarray:
        return (_transform(X) - self.mean) / self.std

    def _forward(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Filtered state probabilities (model's state order), the predictive state probabilities
        P(state_t | x_1..x_{t-1}), and each row's one-step predictive log-likelihood
        log p(x_t | x_1..x_{t-1}) in the transformed input space (log volatility)."""
        from scipy.stats import multivariate_normal

        Z = self._z(X)
        k = self.hmm.n_components
        loglik = np.column_stack([multivariate_normal(self.hmm.means_[i], self.hmm.covars_[i],
                                                      allow_singular=True).logpdf(Z) for i in range(k)])
        top = loglik.max(axis=1, keepdims=True)
        lik = np.exp(loglik - top)  # scaled per row; the scale comes back in the log-likelihood
        A = self.hmm.transmat_
        proba, priors = np.empty((len(Z), k)), np.empty((len(Z), k))
        ll = np.empty(len(Z))
        prior = self.hmm.startprob_
        for t in range(len(Z)):
            priors[t] = prior
            p = prior * lik[t]
            s = p.sum()
            proba[t] = p / s if s > 0 else np.full(k, 1.0 / k)
            ll[t] = np.log(s) + top[t, 0] if s > 0 else -np.inf
            prior = proba[t] @ A
        return proba, priors, ll - np.log(self.std).sum()  # z-scaling's Jacobian: back to the transformed space

    def filtered_proba(self, X: np.ndarray) -> np.ndarray:
        """P(state_t | x_1..x_t) per row, columns in REGIMES order."""
        order = [self.names.index(r) for r in REGIMES]
        return self._forward(X)[0][:, order]

    def loglik_rows(self, X: np.ndarray) -> np.ndarray:
        """One-step predictive log-likelihood of each row (both inputs) given the rows before it."""
        return self._forward(X)[2]

    def return_loglik_rows(self, X: np.ndarray) -> np.ndarray:
        """One-step predictive log-density of each row's 1-bar log return given the rows before it:
        the mixture over states, weighted by their predicted probabilities, of each state's return
        distribution. What a regime model is for: the distribution of the next return."""
        from scipy.stats import norm

        _, priors, _ = self._forward(X)
        z = (np.asarray(X, dtype=float)[:, 0] - self.mean[0]) / self.std[0]
        sd = np.sqrt(self.hmm.covars_[:, 0, 0])
        dens = norm.pdf(z[:, None], self.hmm.means_[None, :, 0], sd[None, :])
        return np.log(np.maximum((priors * dens).sum(axis=1), 1e-300)) - np.log(self.std[0])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.filtered_proba(X)

    def regimes(self, X: np.ndarray) -> np.ndarray:
        return np.array(REGIMES)[self.filtered_proba(X).argmax(axis=1)]

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


class VAR1:
    """The persistence-aware baseline: a Gaussian VAR(1) on the same transformed inputs,
    x_t = c + A x_{t-1} + e, e ~ N(0, S), fitted by least squares on the training rows.
    Volatility persists, so one i.i.d. Gaussian is a straw man that any mixture beats,
    even on a random walk; this is not. The gate compares the two on the density of the
    next return: the VAR(1) knows where the return is expected to be from last bar's inputs
    but gives it one constant variance; a regime model must know its spread better."""

    def __init__(self, X_train: np.ndarray):
        T = _transform(X_train)
        lag = np.column_stack([np.ones(len(T) - 1), T[:-1]])
        self.coef, *_ = np.linalg.lstsq(lag, T[1:], rcond=None)
        resid = T[1:] - lag @ self.coef
        self.cov = np.cov(resid.T) + 1e-12 * np.eye(T.shape[1])

    def loglik_rows(self, X: np.ndarray) -> np.ndarray:
        """log p(x_t | x_{t-1}) per row (NaN for the first row, which has no previous one)."""
        from scipy.stats import multivariate_normal

        T = _transform(X)
        out = np.full(len(T), np.nan)
        if len(T) > 1:
            mean = np.column_stack([np.ones(len(T) - 1), T[:-1]]) @ self.coef
            out[1:] = multivariate_normal(np.zeros(T.shape[1]), self.cov, allow_singular=True).logpdf(T[1:] - mean)
        return out

    def return_loglik_rows(self, X: np.ndarray) -> np.ndarray:
        """log p(r_t | x_{t-1}) of the 1-bar log return (its Gaussian marginal under the VAR(1))."""
        from scipy.stats import norm

        T = _transform(X)
        out = np.full(len(T), np.nan)
        if len(T) > 1:
            mean = np.column_stack([np.ones(len(T) - 1), T[:-1]]) @ self.coef[:, 0]
            out[1:] = norm.logpdf(T[1:, 0], mean, np.sqrt(self.cov[0, 0]))
        return out


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


def frame_probs(model, frame: pl.DataFrame) -> np.ndarray:
    """Filtered regime probabilities for every row of ``frame`` (sorted by ts): NaN where an
    input is missing (warm-up); the filter runs over the rows that have them, in order."""
    f = frame.sort("ts")
    ok = ~np.any(np.column_stack([f[c].is_null().to_numpy() | f[c].is_nan().fill_null(True).to_numpy()
                                  for c in INPUTS]), axis=1)
    out = np.full((len(f), len(REGIMES)), np.nan)
    if ok.any():
        out[ok] = model.predict(f.select(INPUTS).to_numpy()[ok])
    return out


# ---- training and the gate ------------------------------------------------------------
BLOCK_LEN = 21  # the longest window behind the inputs (vol_20: 21 bars); the horizon is one row
MIN_TRAIN_ROWS = 200


def gate_policy(**overrides):
    from .gate import GatePolicy

    kw = dict(metric="return_loglik_per_row", direction="higher", margins={"vs_var1": 0.0, "vs_champion": 0.005})
    kw.update(overrides)
    return GatePolicy(**kw)


@dataclass
class RegimeChampion:
    """The current champion for the gate: its fitted model (scored with its own parameters over the
    task's rows) and its recorded configuration (for a refit on the new training rows)."""

    version: str
    data_end_us: int | None
    model: "RegimeModel"
    config: RegimeConfig | None = None


@dataclass
class Trained:
    model: RegimeModel
    X: np.ndarray
    ts_us: np.ndarray
    train: np.ndarray
    holdout: np.ndarray
    holdout_start_us: int
    metrics: dict
    decision: "object"

    def window(self) -> dict[str, str]:
        from .gate import iso

        t = self.ts_us[self.train]
        return {"tp.train_start": iso(int(t.min())), "tp.train_end": iso(int(t.max())),
                "tp.train_data_end": iso(int(t.max())), "tp.holdout_start": iso(self.holdout_start_us),
                "tp.holdout_end": iso(int(self.ts_us[self.holdout].max()))}


def check_rows(frame: pl.DataFrame, cfg: RegimeConfig, what: str, holdout_start_us: int | None = None):
    """(X, ts, holdout start, train rows, holdout rows), or EvaluationError when there are too few."""
    from .common import EvaluationError, holdout_start
    from .gate import min_rows

    X, ts = inputs(frame)
    hs = holdout_start(frame["ts"].dt.epoch("us").to_numpy(), cfg.holdout_frac) if holdout_start_us is None \
        else holdout_start_us
    train, holdout = np.flatnonzero(ts < hs), np.flatnonzero(ts >= hs)
    if len(train) < MIN_TRAIN_ROWS or len(holdout) < min_rows(BLOCK_LEN):
        raise EvaluationError(f"{what}: {len(train)} training and {len(holdout)} holdout rows with returns and "
                              f"volatility; need at least {MIN_TRAIN_ROWS} and {min_rows(BLOCK_LEN)}: "
                              "load more history")
    return X, ts, hs, train, holdout


def train_and_gate(frame: pl.DataFrame, cfg: RegimeConfig, *, holdout_start_us: int | None = None, policy=None,
                   champion: RegimeChampion | None = None, what: str = "regime_hmm") -> Trained:
    """Split at the symbol's shared holdout boundary, fit on the rows before it, and gate the
    held-out one-step predictive log-density of the return per row against the VAR(1) and the
    champion."""
    from . import evaluation as ev
    from .gate import against_champion, compare, decide

    policy = policy or gate_policy()
    X, ts, hs, train, holdout = check_rows(frame, cfg, what, holdout_start_us)
    model = fit(X[train], cfg)
    ll_new = model.return_loglik_rows(X)
    ll_var = VAR1(X[train]).return_loglik_rows(X)
    mean = ev.weighted_mean
    boot = ev.Bootstrap(ts[holdout], BLOCK_LEN, policy.n_boot, policy.seed)
    base = compare("vs_var1", "a Gaussian VAR(1) on the same inputs", "return_loglik_per_row", "higher", mean,
                   ll_new[holdout], ll_var[holdout], boot, policy.margin("vs_var1"), policy.confidence)
    champ, mode, note = None, "none", ""
    if champion is not None:
        ll_champ = champion.model.return_loglik_rows(X)

        def refit():
            return mean, ll_new[holdout], fit(X[train], champion.config).return_loglik_rows(X)[holdout]

        champ, mode, note = against_champion(
            policy, version=champion.version, ts_holdout=ts[holdout], block_len=BLOCK_LEN,
            data_end_us=champion.data_end_us, usable=lambda m: True,
            scored=lambda m: (mean, ll_new[holdout][m], ll_champ[holdout][m]),
            refit=refit if champion.config is not None else None, same_config=champion.config == cfg)
    new_score = float(ll_new[holdout].mean())
    decision = decide(policy.metric, policy.direction, new_score, [base], champ, champion_mode=mode,
                      champion_note=note, block_len=BLOCK_LEN, n_boot=policy.n_boot, confidence=policy.confidence,
                      holdout_rows=len(holdout))
    labels = model.regimes(X)
    metrics = {"holdout_return_loglik_per_row": new_score,
               "baseline_return_loglik_per_row": float(ll_var[holdout].mean()),
               "holdout_loglik_per_row": float(model.loglik_rows(X)[holdout].mean()),
               "train_rows": len(train), "holdout_rows": len(holdout),
               **{f"share_{r}": float(np.mean(labels == r)) for r in REGIMES}}
    metrics.update(decision.metrics())
    return Trained(model, X, ts, train, holdout, hs, metrics, decision)

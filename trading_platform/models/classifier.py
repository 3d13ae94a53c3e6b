"""What the two binary classifiers (the pump model and the signal score) share: the
labelled task split in time, boosted trees with Platt calibration fitted on the last
part of the training window, and their gate.

The gate for a classifier asks two things of a new version on the holdout:
- it is more useful than "always the training positive rate" under a proper
  scoring rule (log loss): calibration is what makes this possible, and a model
  that ranks well but says nothing about probabilities does not pass;
- it ranks better (ROC AUC) than the best of the untrained rules a trader would
  try first (momentum and reversal over the feature lookbacks), scored on the
  same rows. With overlapping labels a reversal-like score has an AUC above 0.5
  even on a random walk (a later row's features contain an earlier row's label
  outcome), so 0.5 is the wrong bar; the rules carry the same bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from . import evaluation as ev
from .common import EvaluationError, binary_metrics, episodes, fit_platt, platt, time_split
from .gate import GateDecision, GatePolicy, against_champion, compare, decide, iso, min_rows

@dataclass
class BinaryTask:
    """Labelled rows of one or more series, split in time: fit | calibration | holdout."""

    X: np.ndarray               # float32 features
    y: np.ndarray               # 0/1
    ts_us: np.ndarray           # row time
    label_ts_us: np.ndarray     # time of the row the label reads
    series: np.ndarray          # symbol of each row
    columns: list[str]
    rules: dict[str, np.ndarray]
    holdout_start_us: int
    block_len: int
    fit: np.ndarray = field(default_factory=lambda: np.empty(0, int))
    cal: np.ndarray = field(default_factory=lambda: np.empty(0, int))
    holdout: np.ndarray = field(default_factory=lambda: np.empty(0, int))

    @property
    def train(self) -> np.ndarray:
        return np.sort(np.r_[self.fit, self.cal])

    def window(self) -> dict[str, str]:
        """The training window, recorded on the version: first and last training row, and the
        last row whose data training used (the latest label it read)."""
        tr = self.train
        return {"tp.train_start": iso(int(self.ts_us[tr].min())), "tp.train_end": iso(int(self.ts_us[tr].max())),
                "tp.train_data_end": iso(int(self.label_ts_us[tr].max())),
                "tp.holdout_start": iso(self.holdout_start_us),
                "tp.holdout_end": iso(int(self.ts_us[self.holdout].max()))}

    def base_rate(self) -> float:
        return float(self.y[self.train].mean())


def make_task(X, y, ts_us, label_ts_us, series, columns, rules, holdout_start_us: int, block_len: int,
              calibration_frac: float = 0.25) -> BinaryTask:
    """Split on time: holdout from ``holdout_start_us`` on; the training rows before it (embargoed on
    the rows their labels read) are split again in time into fit and calibration parts, embargoed
    the same way."""
    t = BinaryTask(np.asarray(X, np.float32), np.asarray(y, int), np.asarray(ts_us, np.int64),
                   np.asarray(label_ts_us, np.int64), np.asarray(series), list(columns), rules,
                   int(holdout_start_us), int(block_len))
    outer = time_split(t.ts_us, t.label_ts_us, t.holdout_start_us)
    t.holdout = outer.holdout
    if len(outer.train) == 0:
        t.fit = t.cal = np.empty(0, int)
        return t
    tr_ts = t.ts_us[outer.train]
    cal_start = int(tr_ts.min() + (tr_ts.max() - tr_ts.min()) * (1 - calibration_frac))
    inner = time_split(tr_ts, t.label_ts_us[outer.train], cal_start)
    t.fit, t.cal = outer.train[inner.train], outer.train[inner.holdout]
    return t


def validate(task: BinaryTask, what: str, min_episodes: int = 10) -> None:
    """Refuse a task whose holdout cannot score a model, *before* anything is trained or registered."""
    need = min_rows(task.block_len)
    ho = task.holdout
    if len(ho) < need:
        raise EvaluationError(
            f"{what}: the holdout has {len(ho)} labelled rows; the gate needs at least {need} (two bootstrap "
            f"blocks of {task.block_len} bars): load more history or raise holdout_frac")
    for part, idx in (("fit", task.fit), ("calibration", task.cal), ("holdout", ho)):
        classes = set(np.unique(task.y[idx]).tolist())
        if classes != {0, 1}:
            only = "positives" if classes == {1} else "negatives" if classes == {0} else "no rows"
            raise EvaluationError(f"{what}: the {part} part ({len(idx)} rows) has only {only}; "
                                  "the model cannot be trained or scored: widen the data or change the target")
    for value, name in ((1, "positive"), (0, "negative")):
        k = episodes(task.y[ho], task.series[ho], task.ts_us[ho], value)
        if k < min_episodes:
            raise EvaluationError(
                f"{what}: the holdout has {k} {name} episode(s) (runs of consecutive {name} rows); the gate needs "
                f"at least {min_episodes} to tell skill from luck: load more history or change the target")


# ---- the model: boosted trees + Platt calibration ----------------------------------------
class CalibratedClassifier:
    """A booster (XGBoost or LightGBM) and the Platt scaling fitted on the calibration rows.

    ``predict`` returns calibrated probabilities; serving applies the same (a, b), which are
    stored in the MLmodel file's metadata beside the native booster."""

    def __init__(self, booster, flavor: str, a: float = 1.0, b: float = 0.0):
        self.booster, self.flavor, self.a, self.b = booster, flavor, float(a), float(b)

    def margin(self, X: np.ndarray) -> np.ndarray:
        if self.flavor == "xgboost":
            return self.booster.inplace_predict(X, predict_type="margin")
        return self.booster.predict(X, raw_score=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return platt(self.margin(X), self.a, self.b)

    def calibration(self) -> dict:
        return {"method": "platt", "a": self.a, "b": self.b}


def fit_classifier(task: BinaryTask, train_fn: Callable[[np.ndarray, np.ndarray], Any], flavor: str,
                   X: Optional[np.ndarray] = None) -> CalibratedClassifier:
    """Train on the fit rows (``train_fn(X, y, X_val, y_val)`` may stop early on the calibration rows),
    calibrate on the calibration rows; never the holdout."""
    X = task.X if X is None else X
    booster = train_fn(X[task.fit], task.y[task.fit], X[task.cal], task.y[task.cal])
    model = CalibratedClassifier(booster, flavor)
    a, b = fit_platt(model.margin(X[task.cal]), task.y[task.cal])
    model.a, model.b = a, b
    return model


class RuleClassifier:
    """An untrained rule (e.g. reversal over 60 bars) with Platt calibration, for controls."""

    def __init__(self, name: str, a: float = 1.0, b: float = 0.0):
        self.name, self.a, self.b = name, a, b

    @classmethod
    def fit(cls, task: BinaryTask, name: str) -> "RuleClassifier":
        s = task.rules[name]
        a, b = fit_platt(s[task.cal] / (np.std(s[task.fit]) + 1e-12), task.y[task.cal])
        r = cls(name, a / (np.std(s[task.fit]) + 1e-12), b)
        return r

    def predict_rows(self, task: BinaryTask, rows: np.ndarray) -> np.ndarray:
        return platt(task.rules[self.name][rows], self.a, self.b)


# ---- the gate ------------------------------------------------------------------------
@dataclass
class Champion:
    """The current champion as the gate sees it (built by the asset from the registry).

    ``predict(rows)`` gives its probabilities for task rows with *its own* inputs (a signal
    version gets its own regime version's probabilities); ``refit()`` refits its configuration
    on the new version's training rows and returns a predict function (None: cannot);
    ``same_config``: its configuration is the new version's (a refit would be the new version)."""

    version: str
    data_end_us: Optional[int]
    predict: Callable[[np.ndarray], np.ndarray]
    refit: Optional[Callable[[], Callable[[np.ndarray], np.ndarray]]] = None
    same_config: bool = False


def default_policy(**overrides) -> GatePolicy:
    kw = dict(metric="roc_auc", direction="higher",
              margins={"vs_base_rate": 0.0, "vs_best_rule": 0.01, "vs_champion": 0.005})
    kw.update(overrides)
    return GatePolicy(**kw)


def _auc_fn(y):
    return lambda s, W: ev.roc_auc(y, s, W)


def gate(task: BinaryTask, p_holdout: np.ndarray, policy: GatePolicy,
         champion: Optional[Champion] = None, min_episodes: int = 10,
         rules: Optional[list[str]] = None) -> GateDecision:
    """Score the new version's holdout probabilities against the base rate, the best of the rules
    (``rules``: all of the task's by default) and the champion (on the holdout rows after its
    training end, or refit), with the paired block bootstrap."""
    ho = task.holdout
    y = task.y[ho].astype(np.float64)
    boot = ev.Bootstrap(task.ts_us[ho], task.block_len, policy.n_boot, policy.seed)
    rate = task.base_rate()
    comps = [compare("vs_base_rate", f"the training base rate {rate:.4g}", "log_loss", "lower",
                     lambda p, W: ev.log_loss(y, p, W), p_holdout, np.full(len(ho), rate), boot,
                     policy.margin("vs_base_rate"), policy.confidence)]
    names = sorted(task.rules) if rules is None else rules
    if names:
        best = best_rule(task, names)
        comps.append(compare("vs_best_rule", f"the best untrained rule on the calibration rows ({best})", "roc_auc",
                             "higher", _auc_fn(y), p_holdout, task.rules[best][ho], boot,
                             policy.margin("vs_best_rule"), policy.confidence))
    new_auc = float(ev.roc_auc(y, p_holdout, ev.ones(len(ho)))[0])
    champ, mode, note = None, "none", ""
    if champion is not None:
        champ, mode, note = _champion_comparison(task, p_holdout, policy, champion, min_episodes)
    return decide(policy.metric, policy.direction, new_auc, comps, champ, champion_mode=mode, champion_note=note,
                  block_len=task.block_len, n_boot=policy.n_boot, confidence=policy.confidence,
                  holdout_rows=len(ho))


def best_rule(task: BinaryTask, names: list[str]) -> str:
    """The rule a trader would have picked before the holdout: the best ROC AUC on the calibration
    rows (the most recent training rows; never the holdout, which would flatter the rule)."""
    y = task.y[task.cal].astype(np.float64)
    one = ev.ones(len(task.cal))
    auc = {n: float(ev.roc_auc(y, task.rules[n][task.cal], one)[0]) for n in names}
    return max(names, key=lambda n: (np.nan_to_num(auc[n], nan=-1.0), n))


def _champion_comparison(task: BinaryTask, p_holdout, policy: GatePolicy, champion: Champion, min_episodes: int):
    ho = task.holdout

    def usable(mask):
        sub = ho[mask]
        return (len(np.unique(task.y[sub])) == 2
                and episodes(task.y[sub], task.series[sub], task.ts_us[sub], 1) >= min_episodes)

    def scored(mask):
        return _auc_fn(task.y[ho[mask]].astype(np.float64)), p_holdout[mask], champion.predict(ho[mask])

    def refit():
        return _auc_fn(task.y[ho].astype(np.float64)), p_holdout, champion.refit()(ho)

    return against_champion(policy, version=champion.version, ts_holdout=task.ts_us[ho], block_len=task.block_len,
                            data_end_us=champion.data_end_us, usable=usable, scored=scored,
                            refit=refit if champion.refit else None, same_config=champion.same_config)


# ---- the whole path, shared by the pump and signal models ------------------------------------
def holdout_metrics(model, task: BinaryTask, threshold: float) -> dict:
    """Holdout metrics beside the naive ones: the base rate's log loss, PR AUC (= the positive
    rate) and the majority class's accuracy."""
    y = task.y[task.holdout]
    m = binary_metrics(y, model.predict(task.X[task.holdout]), threshold)
    rate = task.base_rate()
    m["baseline_log_loss"] = float(ev.log_loss_rows(y, np.full(len(y), rate)).mean())
    m["baseline_pr_auc"] = m["positive_rate"]
    m["baseline_accuracy"] = float(max(np.mean(y), 1 - np.mean(y)))
    m["train_positive_rate"] = rate
    return m


@dataclass
class Trained:
    model: CalibratedClassifier
    task: BinaryTask
    metrics: dict
    decision: GateDecision


def train_and_gate(task: BinaryTask, fit: Callable[[BinaryTask], CalibratedClassifier], *, threshold: float,
                   policy: GatePolicy | None, champion: Callable[[BinaryTask], Optional[Champion]] | None,
                   min_episodes: int, what: str) -> Trained:
    """Everything between the stored features and the registry: validation (EvaluationError before
    anything is trained when the holdout cannot score a model), fit, metrics, gate."""
    policy = policy or default_policy()  # built (and so checked) before anything is trained
    validate(task, what, min_episodes)
    model = fit(task)
    metrics = holdout_metrics(model, task, threshold)
    decision = gate(task, model.predict(task.X[task.holdout]), policy,
                    champion(task) if champion else None, min_episodes)
    metrics.update(decision.metrics())
    return Trained(model, task, metrics, decision)

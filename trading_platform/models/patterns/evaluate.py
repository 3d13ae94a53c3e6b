"""The frozen evaluation set of the chart-pattern family and its scores.

The frozen set's settings are fixed by the issue that introduced the family, not tuned:

- 100 windows of each of the 16 patterns and 600 "none" windows (2,200 in all);
- window lengths uniform over 64-256 bars, the pattern filling a uniform 50-100 % of the
  window (at its end);
- Gaussian residual noise at three levels, 5 %, 15 % and 30 % of the pattern's amplitude:
  the j-th window of a class gets level j mod 3 (34/33/33 windows of a pattern, 200 "none"
  per level);
- amplitude uniform over 0.02-0.3 in log price and price level log-uniform over 1-1000
  (invisible after the per-window normalization, drawn for realism);
- window i (classes in ``CLASSES`` order, then j) is drawn from
  ``SeedSequence([FROZEN_STREAM, i])`` = ``[1, i]``; training draws come from
  ``[TRAIN_STREAM, seed, i]`` = ``[2, seed, i]``, a different stream for every seed, so no
  training window is a frozen one.

Scores: per-class precision, recall and F1 and the macro F1 (unweighted mean over the
classes, sklearn's ``average="macro"``), overall and per noise level, for the TCN (the
argmax class) and the rule labeler on the same windows; a confusion-matrix plot; and per
class detection counts of both on real history, which no label checks but a user reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import CLASS_INDEX, CLASSES, NONE, PATTERNS
from . import generator as gen
from .labeler import label as rule_label

NOISE_LEVELS = (0.05, 0.15, 0.30)
PER_PATTERN = 100
NONE_WINDOWS = 600
WINDOW_BARS = (64, 256)
SHARE = (0.5, 1.0)


@dataclass(frozen=True)
class EvalSet:
    windows: list            # (bars, 4) OHLC arrays
    labels: np.ndarray       # class names
    noise: np.ndarray        # the window's noise level
    stream: tuple            # the seed stream: window i is SeedSequence([*stream, i])

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def y(self) -> np.ndarray:
        return np.array([CLASS_INDEX[c] for c in self.labels])


def build_set(stream: Sequence[int], per_pattern: int = PER_PATTERN, none: int = NONE_WINDOWS,
              levels: Sequence[float] = NOISE_LEVELS) -> EvalSet:
    """A set drawn with the frozen settings from another seed stream (a development set for
    choosing a configuration, or a tiny one for tests)."""
    windows, labels, noise = [], [], []
    i = 0
    for c in CLASSES:
        for j in range(none if c == NONE else per_pattern):
            level = levels[j % len(levels)]
            w = gen.sample(gen.rng_for(*stream, i), c, length=WINDOW_BARS, share=SHARE, noise=[level])
            windows.append(w.ohlc), labels.append(c), noise.append(level)
            i += 1
    return EvalSet(windows, np.array(labels), np.array(noise), tuple(stream))


@lru_cache(maxsize=1)
def frozen_set() -> EvalSet:
    """The frozen held-out set (2,200 windows; about 3 s to draw)."""
    return build_set((gen.FROZEN_STREAM,))


# ---- metrics ------------------------------------------------------------------------------
def macro_f1(y_true, y_pred, W: np.ndarray) -> np.ndarray:
    """Macro F1 under bootstrap weights: W (replicates x windows) counts how often each window
    is drawn; one value per replicate. A class counts in a replicate when it is drawn as a
    label or predicted there (sklearn's ``f1_score(average="macro")`` on the resampled set);
    W of ones is the point estimate."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes, inv = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    k, n = len(classes), len(y_true)
    t, p = np.zeros((n, k)), np.zeros((n, k))
    t[np.arange(n), inv[:n]] = 1
    p[np.arange(n), inv[n:]] = 1
    W = np.asarray(W, dtype=np.float64)
    tp, true, pred = W @ (t * p), W @ t, W @ p
    present = (true + pred) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / np.where(present, true + pred, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def class_scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict:
    """Per-class precision, recall, F1 and support (classes in ``CLASSES`` order), the macro
    F1 over the classes present, and the confusion matrix (rows: truth, columns: prediction)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    ti = np.array([CLASS_INDEX[c] for c in y_true], dtype=int)
    pi = np.array([CLASS_INDEX[c] for c in y_pred], dtype=int)
    cm = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(cm, (ti, pi), 1)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    per_class = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i, c in enumerate(CLASSES)}
    return {"macro_f1": float(macro_f1(y_true, y_pred, np.ones((1, len(y_true))))[0]) if len(y_true) else 0.0,
            "per_class": per_class, "confusion": cm.tolist()}


@dataclass
class Evaluation:
    labels: np.ndarray                  # truth
    noise: np.ndarray
    predictions: dict                   # "tcn" / "labeler" -> predicted class names
    probabilities: np.ndarray | None = None  # the TCN's (windows x 17)
    scores: dict = field(default_factory=dict)  # model -> {"overall": ..., "noise_0.05": ..., ...}

    def macro_f1(self, model: str = "tcn", level: str = "overall") -> float:
        return self.scores[model][level]["macro_f1"]

    def metrics(self) -> dict[str, float]:
        """Flat figures for a tracking run: macro F1 overall and per level, per-class F1."""
        out = {}
        for m, by_level in self.scores.items():
            for level, s in by_level.items():
                out[f"{m}_macro_f1" + ("" if level == "overall" else f"_{level}")] = s["macro_f1"]
            for c, s in by_level["overall"]["per_class"].items():
                out[f"{m}_f1_{c}"] = s["f1"]
        return out


def _level_key(level: float) -> str:
    return f"noise_{level:.2f}"


def score(labels, noise, predictions: Mapping[str, Sequence[str]], probabilities=None) -> Evaluation:
    labels, noise = np.asarray(labels), np.asarray(noise)
    ev = Evaluation(labels, noise, {m: np.asarray(p) for m, p in predictions.items()}, probabilities)
    for m, pred in ev.predictions.items():
        ev.scores[m] = {"overall": class_scores(labels, pred)}
        for level in sorted(set(noise.tolist())):
            sel = noise == level
            ev.scores[m][_level_key(level)] = class_scores(labels[sel], pred[sel])
    return ev


def labeler_predictions(windows: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([rule_label(w).pattern for w in windows])


def evaluate(model, eval_set: EvalSet | None = None, *, labeler: bool = True) -> Evaluation:
    """The TCN (``model.predict_proba``) and, unless ``labeler`` is False, the rule labeler on
    the frozen set (or ``eval_set``)."""
    s = eval_set if eval_set is not None else frozen_set()
    proba = model.predict_proba(s.windows)
    preds = {"tcn": np.array(CLASSES)[proba.argmax(axis=1)]}
    if labeler:
        preds["labeler"] = labeler_predictions(s.windows)
    return score(s.labels, s.noise, preds, proba)


# ---- the plot -------------------------------------------------------------------------------
_SHORT = {"head_and_shoulders": "H&S", "inverse_head_and_shoulders": "inv H&S", "double_top": "2 top",
          "double_bottom": "2 bottom", "triple_top": "3 top", "triple_bottom": "3 bottom",
          "ascending_triangle": "asc tri", "descending_triangle": "desc tri", "symmetrical_triangle": "sym tri",
          "rising_wedge": "rise wedge", "falling_wedge": "fall wedge", "bull_flag": "bull flag",
          "bear_flag": "bear flag", "pennant": "pennant", "cup_and_handle": "cup", "rectangle": "rect",
          "none": "none"}


def plot_confusion(evaluation: Evaluation, path) -> Path:
    """One PNG: a row per model (TCN, labeler), a column per level (overall, then each noise
    level); cells coloured by the share of the true class, annotated with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(evaluation.scores)
    levels = list(next(iter(evaluation.scores.values())))
    fig, axes = plt.subplots(len(models), len(levels), figsize=(6.2 * len(levels), 6.0 * len(models)),
                             squeeze=False)
    names = [_SHORT[c] for c in CLASSES]
    for r, m in enumerate(models):
        for c, level in enumerate(levels):
            s = evaluation.scores[m][level]
            cm = np.asarray(s["confusion"], dtype=float)
            share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            ax = axes[r, c]
            ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            for i, j in zip(*np.nonzero(cm)):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 0.6 else "black")
            ax.set_xticks(range(len(CLASSES)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(CLASSES)), names, fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)
            ax.set_title(f"{m} · {level.replace('_', ' ')} · macro F1 {s['macro_f1']:.3f}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---- real history -----------------------------------------------------------------------------
def history_counts(model, series: Mapping[str, np.ndarray], *, window: int = 128, stride: int = 8,
                   threshold: float = 0.5) -> dict:
    """Per series, per class: how many windows (``window`` bars, one ending every ``stride``
    bars) the TCN calls a pattern with probability >= ``threshold`` and the labeler calls a
    pattern; the same windows for both. No label checks these: they show what each finds in
    real markets."""
    out = {}
    for name in sorted(series):
        ohlc = np.asarray(series[name], dtype=np.float64)
        ends = range(window, len(ohlc) + 1, stride)
        wins = [ohlc[e - window:e] for e in ends]
        tcn = {c: 0 for c in PATTERNS}
        lab = {c: 0 for c in PATTERNS}
        if wins:
            proba = model.predict_proba(wins)
            best = proba.argmax(axis=1)
            for k, p in zip(best, proba[np.arange(len(best)), best]):
                if CLASSES[k] != NONE and p >= threshold:
                    tcn[CLASSES[k]] += 1
            for c in labeler_predictions(wins):
                if c != NONE:
                    lab[c] += 1
        out[name] = {"windows": len(wins), "tcn": tcn, "labeler": lab}
    return out

"""How one loaded classifier or regime version scores a frame of stored features.

The signal model is fed the probabilities of the regime version it was trained with
(``tp.regime_model_version``), never the current regime champion's. The partitioned
outputs and the live path call this through ``models/scoring.py``.
"""

from __future__ import annotations

import numpy as np

from .common import model_columns
from .regime import INPUTS, REGIMES, frame_probs

def align(model, frame) -> np.ndarray:
    """The frame's columns in the order the model was trained on (missing ones as NaN)."""
    names = model.feature_names or model_columns(frame.columns)
    cols = [frame[c].to_numpy() if c in frame.columns else np.full(len(frame), np.nan) for c in names]
    return np.column_stack(cols).astype(np.float32)


def regime_input(server, tags: dict) -> tuple[str, str] | None:
    """(registered name, version) of the regime model a signal version was trained with, if any
    (versions registered before ``tp.regime_model`` was recorded used the symbol's default lineage)."""
    from .registry import registered_name

    version = tags.get("tp.regime_model_version")
    if not version:
        return None
    name = tags.get("tp.regime_model") or registered_name("regime_hmm", tags.get("tp.symbol"))
    return name, version


def with_regime_columns(server, tags: dict, frame):
    """The frame plus the ``p_<regime>`` columns of the signal version's own regime version."""
    src = regime_input(server, tags)
    if src is None:
        return frame
    probs = frame_probs(server.load(src[0], version=src[1]), frame)
    return frame.with_columns(**{f"p_{r}": probs[:, i] for i, r in enumerate(REGIMES)})


def score_frame(server, family: str, model, tags: dict, f) -> list[tuple]:
    """(value, label, details) per row of ``f`` for one loaded version."""
    if family == "pump_xgb":
        thr = float(tags.get("tp.threshold", 0.5))
        return [(float(v), "pump" if v >= thr else "none", {"threshold": thr}) for v in model.predict(align(model, f))]
    if family == "regime_hmm":
        probs = model.predict(f.select(INPUTS).to_numpy())
        return [(float(pr.max()), REGIMES[int(pr.argmax())], dict(zip(REGIMES, map(float, pr)))) for pr in probs]
    if family == "signal_lgbm":
        p = model.predict(align(model, with_regime_columns(server, tags, f)))
        return [(float(v), "up" if v >= 0.5 else "down", {}) for v in p]
    raise ValueError(f"unknown model family {family!r}")

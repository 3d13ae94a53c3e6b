"""Score every champion, and every challenger as a shadow, over the latest stored
features and write the predictions.

A champion's rows have ``role = 'champion'``: what downstream consumers read.
A challenger's rows have ``role = 'shadow'``: never used downstream, they build the
challenger's out-of-sample record (``tp models compare``). Every row records the
model versions behind it, including the regime version a signal version was
trained with (the signal is always fed that version's probabilities).
"""

from __future__ import annotations

import numpy as np

from ..features.storage import read_features
from ..store.predictions import write_predictions
from .common import model_columns
from .regime import INPUTS, REGIMES, frame_probs

ROLES = {"champion": "champion", "challenger": "shadow"}


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


def score_models(store, client, server, last_n: int, context_rows: int, log) -> dict[str, int]:
    """Champions (role champion) and challengers (role shadow) of every registered model."""
    from .registry import iter_registered_models

    written: dict[str, int] = {}
    symbols = store.list_symbols(enabled_only=True)
    for rm in iter_registered_models(client):
        aliases = rm.aliases or {}
        for alias, role in ROLES.items():
            if alias not in aliases or (role == "shadow" and aliases.get("champion") == aliases[alias]):
                continue
            version = server.resolve(rm.name, alias)
            tags = client.get_model_version(rm.name, version).tags or {}
            family, tf, only = tags.get("tp.family"), tags.get("tp.timeframe"), tags.get("tp.symbol")
            if not family or not tf:
                log.warning("%s version %s has no tp.family/tp.timeframe tags: skipped", rm.name, version)
                continue
            model = server.load(rm.name, version=version)
            inputs = {rm.name: version}
            src = regime_input(server, tags) if family == "signal_lgbm" else None
            if src:
                inputs[src[0]] = src[1]
            targets = [only] if only else [s.symbol for s in symbols if tf in s.timeframes]
            rows = []
            for symbol in targets:
                f = read_features(store.conn, symbol, tf, last=last_n + context_rows)
                if family == "regime_hmm":
                    f = f.drop_nulls(list(INPUTS))
                if len(f) == 0:
                    continue
                try:
                    out = score_frame(server, family, model, tags, f)
                except ValueError as e:
                    log.warning("%s version %s: %s: skipped", rm.name, version, e)
                    break
                ts = f["ts"].to_list()
                rows += [(rm.name, version, symbol, tf, t, v, lab, {**d, "role": role, "inputs": inputs}, role)
                         for t, (v, lab, d) in zip(ts[-last_n:], out[-last_n:])]
            key = rm.name if role == "champion" else f"{rm.name} (shadow)"
            written[key] = write_predictions(store.conn, rows)
            log.info("%s version %s (%s): %d predictions", rm.name, version, role, written[key])
    return written

"""Score every champion over the latest stored features and write the predictions."""

from __future__ import annotations

import numpy as np

from ..features.storage import read_features
from ..store.predictions import write_predictions
from .common import model_columns
from .regime import INPUTS, REGIMES


def align(model, frame) -> np.ndarray:
    """The frame's columns in the order the model was trained on (missing ones as NaN)."""
    names = model.feature_names or model_columns(frame.columns)
    cols = [frame[c].to_numpy() if c in frame.columns else np.full(len(frame), np.nan) for c in names]
    return np.column_stack(cols).astype(np.float32)


def _regime_probs(server, name: str, version: str | None, frame):
    hmm = server.load(name, version=version) if version else server.load(name)
    return hmm.predict(frame.select(INPUTS).to_numpy())


def score_champions(store, client, server, last_n: int, context_rows: int, log) -> dict[str, int]:
    from .registry import CHAMPION, registered_name

    written: dict[str, int] = {}
    symbols = store.list_symbols(enabled_only=True)
    for rm in client.search_registered_models():
        if CHAMPION not in (rm.aliases or {}):
            continue
        model = server.load(rm.name)  # resolves name@champion now: a moved alias is noticed here
        tags = client.get_model_version(rm.name, model.version).tags or {}
        family, tf, only = tags.get("tp.family"), tags.get("tp.timeframe"), tags.get("tp.symbol")
        if not family or not tf:
            log.warning("%s version %s has no tp.family/tp.timeframe tags: skipped", rm.name, model.version)
            continue
        targets = [only] if only else [s.symbol for s in symbols if tf in s.timeframes]
        rows = []
        for symbol in targets:
            f = read_features(store.conn, symbol, tf, last=last_n + context_rows)
            if family in ("regime_hmm", "signal_lgbm"):
                f = f.drop_nulls(list(INPUTS))
            if len(f) == 0:
                continue
            ts = f["ts"].to_list()
            if family == "pump_xgb":
                thr = float(tags.get("tp.threshold", 0.5))
                p = model.predict(align(model, f))
                out = [(float(v), "pump" if v >= thr else "none", {"threshold": thr}) for v in p]
            elif family == "regime_hmm":
                probs = model.predict(f.select(INPUTS).to_numpy())
                out = [(float(pr.max()), REGIMES[int(pr.argmax())], dict(zip(REGIMES, map(float, pr))))
                       for pr in probs]
            elif family == "signal_lgbm":
                probs = _regime_probs(server, registered_name("regime_hmm", symbol),
                                      tags.get("tp.regime_model_version"), f)
                X = align(model, f.with_columns(**{f"p_{r}": probs[:, i] for i, r in enumerate(REGIMES)}))
                out = [(float(v), "up" if v >= 0.5 else "down", {}) for v in model.predict(X)]
            else:
                log.warning("%s: unknown family %r: skipped", rm.name, family)
                break
            rows += [(rm.name, model.version, symbol, tf, t, *o) for t, o in zip(ts[-last_n:], out[-last_n:])]
        written[rm.name] = write_predictions(store.conn, rows)
        log.info("%s version %s: %d predictions", rm.name, model.version, written[rm.name])
    return written

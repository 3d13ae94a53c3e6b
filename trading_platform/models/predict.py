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


CLASSIFIERS = ("pump_xgb", "regime_hmm", "signal_lgbm")


def scored_versions(client, server, families: tuple[str, ...], log):
    """(name, version, role, tags, loaded model) of each registered champion (role champion) and
    challenger (role shadow) of the given families, paging through the registry."""
    from .registry import iter_registered_models

    for rm in iter_registered_models(client):
        aliases = rm.aliases or {}
        for alias, role in ROLES.items():
            if alias not in aliases or (role == "shadow" and aliases.get("champion") == aliases[alias]):
                continue
            version = server.resolve(rm.name, alias)
            tags = client.get_model_version(rm.name, version).tags or {}
            family = tags.get("tp.family")
            if not family or not tags.get("tp.timeframe"):
                log.warning("%s version %s has no tp.family/tp.timeframe tags: skipped", rm.name, version)
                continue
            if family in families:
                yield rm.name, version, role, tags, server.load(rm.name, version=version)


def _written(written: dict, name: str, role: str, n: int) -> None:
    written[name if role == "champion" else f"{name} (shadow)"] = n


def score_models(store, client, server, last_n: int, context_rows: int, log) -> dict[str, int]:
    """Champions (role champion) and challengers (role shadow) of the classifiers and regime models."""
    written: dict[str, int] = {}
    symbols = store.list_symbols(enabled_only=True)
    for name, version, role, tags, model in scored_versions(client, server, CLASSIFIERS, log):
        family, tf, only = tags["tp.family"], tags["tp.timeframe"], tags.get("tp.symbol")
        inputs = {name: version}
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
            ts = f["ts"].to_list()
            rows += [(name, version, symbol, tf, t, v, lab, {**d, "role": role, "inputs": inputs}, role)
                     for t, (v, lab, d) in zip(ts[-last_n:], score_frame(server, family, model, tags, f)[-last_n:])]
        n = write_predictions(store.conn, rows)
        _written(written, name, role, n)
        log.info("%s version %s (%s): %d predictions", name, version, role, n)
    return written


def score_forecasts(store, client, server, log) -> dict[str, int]:
    """Every NHITS champion (and shadow challenger) at the latest origin of each of its symbols: one
    batched call per version, into ``forecasts``."""
    import polars as pl

    from ..store.predictions import write_forecasts

    written: dict[str, int] = {}
    symbols = store.list_symbols(enabled_only=True)
    for name, version, role, tags, model in scored_versions(client, server, ("nhits",), log):
        forecaster, tf, only = model.model, tags["tp.timeframe"], tags.get("tp.symbol")
        targets = [only] if only else [s.symbol for s in symbols if tf in s.timeframes]
        cols = ["symbol", "ts", "close", *forecaster.cfg.hist_exog]
        frames = [read_features(store.conn, s, tf, last=forecaster.rows_needed) for s in targets]
        frames = [f.select(cols) for f in frames if len(f)]
        if not frames:
            continue
        out = forecaster.forecast(pl.concat(frames).to_pandas())
        for symbol, why in out.skipped.items():
            log.warning("%s version %s: no forecast for %s: %s", name, version, symbol, why)
        _written(written, name, role, write_forecasts(store.conn, name, version, role, out.rows))
    return written


def scan_patterns(store, client, server, last_n: int, stride: int, threshold: float, log) -> dict[str, int]:
    """Every TCN champion (and shadow challenger) over the newest ``last_n`` window ends of each
    symbol's listed timeframes, into ``patterns``. A window ending at candle t uses only candles
    closed by t's close (the store holds closed candles only)."""
    from ..features.pipeline import FAR_FUTURE, to_polars
    from ..store.predictions import write_patterns
    from .patterns.scan import DEFAULT_WINDOWS, scan

    written: dict[str, int] = {}
    symbols = store.list_symbols(enabled_only=True)
    for name, version, role, tags, model in scored_versions(client, server, ("pattern_tcn",), log):
        rows = []
        for info in symbols:
            for tf in info.timeframes:
                c = store.read_candles_tail(info.symbol, tf, FAR_FUTURE, last_n + max(DEFAULT_WINDOWS))
                if len(c) < min(DEFAULT_WINDOWS):
                    continue
                since = c.ts_us[-last_n - 1] if len(c) > last_n else None
                found = scan(to_polars(c, info.symbol, tf).to_pandas(), model.model, stride=stride,
                             threshold=threshold, since=None if since is None else _utc(since))
                rows += [(info.symbol, tf, r.ts.to_pydatetime(), r.pattern, float(r.probability), int(r.bars))
                         for r in found.itertuples()]
        _written(written, name, role, write_patterns(store.conn, name, version, role, rows))
    return written


def _utc(ts_us: int):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(int(ts_us) / 1_000_000, tz=timezone.utc)

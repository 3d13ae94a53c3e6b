"""``tp models compare NAME``: the champion against its shadow (the challenger scored
beside it by ``predictions``) on the outcomes realized since the shadow's first
prediction, with the gate's paired block bootstrap.

This is the evidence a retraining schedule needs when a holdout is short: the
shadow's record grows with every ``predictions`` run, on data neither version
trained on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np

from ..errors import InvalidInput
from . import evaluation as ev
from .common import US, forward_return_sign, pump_label
from .gate import GatePolicy, compare, iso
from .registry import CHALLENGER, CHAMPION, version_by_alias


def _outcomes(store, family: str, config: dict, symbol: str, tf: str, since: datetime) -> dict[int, int]:
    """ts (µs) -> realized label, for the rows whose label's future is stored."""
    from ..features.storage import read_features

    f = read_features(store.conn, symbol, tf, since)
    close = f["close"].to_numpy()
    y = (pump_label(close, config["horizon"], config["rise"]) if family == "pump_xgb"
         else forward_return_sign(close, config["horizon"]))
    ts = f["ts"].dt.epoch("us").to_numpy()
    return {int(t): int(v) for t, v in zip(ts, y) if not np.isnan(v)}


def compare_shadow(store, client, server, name: str, margin: float = 0.005, n_boot: int = 1000) -> dict:
    champ, shadow = version_by_alias(client, name, CHAMPION), version_by_alias(client, name, CHALLENGER)
    if champ is None or shadow is None or champ.version == shadow.version:
        raise InvalidInput(f"{name!r} needs a champion and a different challenger to compare", field="name")
    tags = champ.tags or {}
    family, tf = tags.get("tp.family"), tags.get("tp.timeframe")
    block = int((shadow.tags or {}).get("tp.block_len") or tags.get("tp.block_len") or 1)
    rows = store.conn.execute(
        """SELECT c.symbol, (extract(epoch FROM c.ts) * 1000000)::bigint, c.value, s.value
           FROM predictions c JOIN predictions s USING (symbol, timeframe, ts)
           WHERE c.model_name = %(n)s AND s.model_name = %(n)s AND c.model_version = %(c)s
             AND s.model_version = %(s)s AND c.superseded_at IS NULL AND s.superseded_at IS NULL
           ORDER BY 2, 1""", {"n": name, "c": str(champ.version), "s": str(shadow.version)}).fetchall()
    base = {"model": name, "champion": str(champ.version), "shadow": str(shadow.version), "family": family}
    # only rows neither version trained on: after both training data ends
    ends = [(v.tags or {}).get("tp.train_data_end") for v in (champ, shadow)]
    after = max((int(np.datetime64(e.rstrip("Z"), "us").astype("int64")) for e in ends if e), default=None)
    rows = [r for r in rows if after is None or r[1] > after]
    if not rows:
        return {**base, "rows": 0, "verdict": "no shadow predictions after both versions' training data yet: "
                                              "materialize `predictions` as new candles arrive"}
    symbols = np.array([r[0] for r in rows])
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    since = datetime.fromtimestamp(ts.min() / US, tz=timezone.utc)
    if family in ("pump_xgb", "signal_lgbm"):
        config = json.loads(tags.get("tp.config") or "{}")
        realized = {s: _outcomes(store, family, config, s, tf, since) for s in set(symbols)}
        y = np.array([realized[s].get(int(t), -1) for s, t in zip(symbols, ts)])
        keep = y >= 0
        if keep.sum() == 0 or len(np.unique(y[keep])) < 2:
            return {**base, "rows": int(keep.sum()), "since": iso(int(ts.min())),
                    "verdict": "too few realized outcomes (both classes needed) to compare yet"}
        yk = y[keep].astype(np.float64)
        c_pred = np.array([r[2] for r in rows])[keep]
        s_pred = np.array([r[3] for r in rows])[keep]
        policy = GatePolicy("roc_auc", "higher", {"vs_champion": margin}, n_boot=n_boot)
        fn = lambda p, W: ev.roc_auc(yk, p, W)  # noqa: E731
        ts_k = ts[keep]
    elif family == "regime_hmm":
        from ..features.storage import read_features
        from .regime import INPUTS

        cm, sm = server.load(name, version=str(champ.version)), server.load(name, version=str(shadow.version))
        symbol = tags.get("tp.symbol")
        f = read_features(store.conn, symbol, tf).drop_nulls(list(INPUTS))
        X, fts = f.select(INPUTS).to_numpy(), f["ts"].dt.epoch("us").to_numpy()
        mask = np.isin(fts, ts)
        c_pred, s_pred = cm.model.return_loglik_rows(X)[mask], sm.model.return_loglik_rows(X)[mask]
        ts_k = fts[mask]
        if len(ts_k) == 0:
            return {**base, "rows": 0, "verdict": "no feature rows for the shadow's predictions"}
        policy = GatePolicy("return_loglik_per_row", "higher", {"vs_champion": margin}, n_boot=n_boot)
        fn = ev.weighted_mean
    else:
        raise InvalidInput(f"{name!r}: family {family!r} cannot be compared", field="name")
    c = compare("vs_champion", f"champion version {champ.version}", policy.metric, policy.direction, fn, s_pred,
                c_pred, ev.Bootstrap(ts_k, block, policy.n_boot, policy.seed), margin, policy.confidence)
    verdict = ("the shadow beats the champion with support: promote it (tp models promote)" if c.passed else
               "no evidence that the shadow is better than the champion")
    return {**base, "rows": c.rows, "since": iso(int(ts_k.min())), "metric": c.metric,
            "champion_score": c.other_score, "shadow_score": c.new_score, "improvement": c.improvement,
            "interval": [c.lower, c.upper], "margin": margin, "block_len": block, "verdict": verdict}

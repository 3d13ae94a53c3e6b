"""Model logic without MLflow or Dagster: labels, splits, the gate, regimes."""

import numpy as np
import pytest

from trading_platform.models.common import forward_return_sign, pump_label, walk_forward_split
from trading_platform.models.gate import decide
from trading_platform.models.regime import REGIMES, RegimeConfig, fit, name_states


def test_pump_label_looks_only_at_the_next_n_bars():
    close = np.array([100, 101, 103, 106, 100, 100, 100, 100.0])
    y = pump_label(close, horizon=3, rise=0.05)
    # t=0: max(101,103,106)=106 -> +6 %; t=1: 106/101 = +4.95 %; t=2: 106/103 = +2.9 %
    assert y[:5].tolist() == [1, 0, 0, 0, 0] and np.isnan(y[5:]).all()
    changed = close.copy()
    changed[4:] = 1000  # the future beyond t=0's horizon does not change t=0's label
    assert pump_label(changed, 3, 0.05)[0] == 1 and pump_label(changed, 3, 0.05)[1] == 1  # t=1 sees t=4


def test_forward_sign_label():
    y = forward_return_sign(np.array([1, 2, 1, 3, 3.0]), 2)
    assert y[:3].tolist() == [0, 1, 1] and np.isnan(y[3:]).all()


def test_walk_forward_split_never_trains_on_a_label_that_reaches_the_holdout():
    rng = np.random.default_rng(0)
    ts = np.sort(rng.choice(np.arange(10_000) * 300_000_000, 5000, replace=False))
    label_end = ts + 12 * 300_000_000
    s = walk_forward_split(ts, label_end, 0.2)
    start = ts[s.holdout].min()
    assert label_end[s.train].max() < start  # embargo: every training label is known before the holdout
    assert ts[s.train].max() < start and np.all(np.diff(ts[s.holdout]) >= 0)  # by time, never shuffled
    assert len(s.holdout) == pytest.approx(1000, rel=0.1)
    assert len(set(s.train) & set(s.holdout)) == 0


@pytest.mark.parametrize("new,champ,base,direction,alias", [
    (0.7, 0.6, 0.5, "higher", "champion"),
    (0.6, 0.7, 0.5, "higher", "challenger"),
    (0.6, None, 0.5, "higher", "champion"),
    (0.4, None, 0.5, "higher", "challenger"),      # a first model that loses to the baseline: no champion
    (float("nan"), None, 0.5, "higher", "challenger"),
    (0.2, 0.3, 0.5, "lower", "champion"),
])
def test_gate(new, champ, base, direction, alias):
    d = decide("m", direction, new, base, champ)
    assert d.alias == alias
    tags = d.tags()
    assert tags["gate.decision"] == alias and tags["gate.direction"] == f"{direction} is better"


def _regime_data(seed, n=3000):
    rng = np.random.default_rng(seed)
    parts = []
    for mu, sd in [(0.004, 0.002), (-0.004, 0.002), (0.0, 0.0007), (0.0, 0.02)] * 3:
        r = rng.normal(mu, sd, n // 12)
        parts.append(np.column_stack([r, np.full(len(r), sd) + rng.normal(0, sd / 20, len(r))]))
    return np.vstack(parts)


def test_state_names_come_from_statistics():
    means = np.array([[0.0, 0.01], [-0.01, 0.02], [0.01, 0.02], [0.0, 0.09]])
    assert name_states(means) == ["sideways", "bear", "bull", "high_volatility"]
    assert name_states(means[[3, 2, 1, 0]]) == ["high_volatility", "bull", "bear", "sideways"]


def test_regime_names_are_stable_across_refits_on_shifted_data():
    X = _regime_data(1)
    a = fit(X, RegimeConfig(seed=1))
    b = fit(X[300:], RegimeConfig(seed=99))  # shifted window, another initialization
    ra, rb = a.regimes(X[300:]), b.regimes(X[300:])
    assert np.mean(ra == rb) > 0.8
    sa, sb = a.state_stats(), b.state_stats()
    for s in (sa, sb):
        assert s["bull"]["mean_logret"] > s["sideways"]["mean_logret"] > s["bear"]["mean_logret"]
        assert s["high_volatility"]["mean_vol"] == max(v["mean_vol"] for v in s.values())


def test_filtered_regime_probabilities_do_not_look_ahead():
    X = _regime_data(2)
    m = fit(X, RegimeConfig())
    p = m.filtered_proba(X)
    assert p.shape == (len(X), 4) and np.allclose(p.sum(axis=1), 1)
    t = 1500
    altered = X.copy()
    altered[t + 1:] *= 5
    assert np.allclose(m.filtered_proba(altered)[: t + 1], p[: t + 1])
    assert np.allclose(m.filtered_proba(X[: t + 1]), p[: t + 1])
    assert set(m.regimes(X)) <= set(REGIMES)


def test_no_leak_a_model_cannot_predict_a_random_walk():
    """The whole path (features, labels, walk-forward split) on data with no signal:
    any look-ahead would show up as a holdout score well above chance."""
    from datetime import datetime, timedelta, timezone

    import lightgbm as lgb
    import polars as pl

    from trading_platform.features.compute import compute_features
    from trading_platform.models.common import binary_metrics, model_columns

    rng = np.random.default_rng(3)
    n = 20_000
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    ts = [datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(hours=i) for i in range(n)]
    df = pl.DataFrame({"symbol": "X", "timeframe": "1h", "ts": ts, "open": o, "high": np.maximum(o, c) * 1.002,
                       "low": np.minimum(o, c) * 0.998, "close": c, "volume": rng.lognormal(3, 1, n)})
    f = compute_features(df).drop_nulls(["vol_60", "sma_200"])
    X = f.select(model_columns(f.columns)).to_numpy().astype(np.float32)
    y = forward_return_sign(f["close"].to_numpy(), 12)
    t = f["ts"].dt.epoch("us").to_numpy()
    keep = ~np.isnan(y)
    X, y, t = X[keep], y[keep].astype(int), t[keep]
    s = walk_forward_split(t, t + 12 * 3600 * 10**6, 0.2)
    model = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15, "seed": 1},
                      lgb.Dataset(X[s.train], y[s.train]), 100)
    auc = binary_metrics(y[s.holdout], model.predict(X[s.holdout]), 0.5)["roc_auc"]
    assert 0.44 < auc < 0.56

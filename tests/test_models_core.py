"""Model logic without MLflow or Dagster: labels, splits on gapped calendars, the
bootstrap, the gate, calibration, regimes, and the random-walk controls."""

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from trading_platform.models import classifier as clf
from trading_platform.models import evaluation as ev
from trading_platform.models import regime, signal
from trading_platform.models.common import (episodes, fit_platt, forward_return_sign, label_times, platt, pump_label,
                                            time_split)
from trading_platform.models.controls import garch_candles, random_walk_candles, wick_signal_candles
from trading_platform.models.gate import decide
from trading_platform.models.regime import REGIMES, RegimeConfig, fit, name_states

UTC = timezone.utc


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


# ---- splits on real calendars ------------------------------------------------------------
@pytest.mark.parametrize("category,exchange", [("forex", None), ("stock", "NASDAQ"), ("crypto", None)])
def test_no_training_label_reaches_into_the_holdout_on_gapped_markets(category, exchange):
    """Forex closes at the weekend, stocks at night: a Friday row's 12-bar label reads Monday's
    candle. The embargo must follow the rows, not ``ts + 12 h``."""
    c = random_walk_candles("X", category, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC),
                            seed=1, exchange=exchange)
    ts = c["ts"].dt.epoch("us").to_numpy()
    h, hour = 12, 3600 * 1_000_000
    lts = label_times(ts, h)
    ts, lts = ts[lts >= 0], lts[lts >= 0]
    starts = [int(ts.min() + (ts.max() - ts.min()) * (1 - f)) for f in (0.2, 0.23, 0.31, 0.37)]
    gaps = np.flatnonzero(np.diff(ts) > hour)
    starts += [int(ts[i + 1]) for i in gaps[-5:]]  # boundaries right after a weekend or a night
    for start in starts:
        s = time_split(ts, lts, start)
        assert lts[s.train].max() < start <= ts[s.holdout].min()  # every training label reads a row before it
    if category == "crypto":
        assert len(gaps) == 0
        return
    # the clock rule (label end = ts + 12 h) keeps rows whose labels read holdout candles
    start = int(ts[gaps[-1] + 1])
    clock_kept = (ts < start) & (ts + h * hour < start)
    assert (lts[clock_kept] >= start).any()


def test_training_labels_do_not_change_when_the_holdout_changes():
    """Alter every close from the holdout boundary on: not one training row or label may change."""
    c = random_walk_candles("X", "forex", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 9, 1, tzinfo=UTC), seed=8)
    f = _features(c)
    ts = f["ts"].dt.epoch("us").to_numpy()
    weekend = np.flatnonzero(np.diff(ts) > 3600 * 1_000_000)
    start = int(ts[weekend[-3] + 1])  # the holdout opens on a Monday: Friday's labels read its candles
    t = signal.build_task(f, signal.SignalConfig(), holdout_start_us=start)
    noise = pl.Series(np.random.default_rng(0).uniform(0.5, 1.5, len(f)))
    altered = f.with_columns(close=pl.when(pl.col("ts").dt.epoch("us") >= start)
                             .then(pl.col("close") * noise).otherwise(pl.col("close")))
    t2 = signal.build_task(altered, signal.SignalConfig(), holdout_start_us=start)
    assert np.array_equal(t.train, t2.train) and np.array_equal(t.y[t.train], t2.y[t.train])
    assert not np.array_equal(t.y[t.holdout], t2.y[t2.holdout])  # the alteration does reach the labels


def test_the_signal_task_embargoes_on_rows_and_calibrates_before_the_holdout():
    c = random_walk_candles("X", "forex", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 9, 1, tzinfo=UTC), seed=4)
    f = _features(c)
    t = signal.build_task(f, signal.SignalConfig())
    ts, lts = t.ts_us, t.label_ts_us
    assert lts[t.fit].max() < ts[t.cal].min() and lts[t.cal].max() < t.holdout_start_us <= ts[t.holdout].min()
    assert len(np.intersect1d(t.train, t.holdout)) == 0
    w = t.window()
    assert w["tp.train_data_end"] < w["tp.holdout_start"]


def test_episodes_count_runs_not_rows():
    y = np.array([0, 1, 1, 1, 0, 0, 1, 0, 1, 1])
    s = np.array(["a"] * 5 + ["b"] * 5)
    ts = np.r_[np.arange(5), np.arange(5)]
    # ones: a[1:4], b[1], b[3:5]; zeros: a[0], a[4], b[0], b[2] (a[4] and b[0] are two runs: two symbols)
    assert episodes(y, s, ts, 1) == 3 and episodes(y, s, ts, 0) == 4


# ---- the bootstrap -------------------------------------------------------------------------
def test_weighted_auc_matches_sklearn_with_ties_and_weights():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.3).astype(float)
    s = np.round(rng.normal(size=3000) + 0.4 * y, 1)  # many ties
    w = rng.integers(0, 4, 3000).astype(np.float32)
    assert ev.roc_auc(y, s, ev.ones(3000))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ev.roc_auc(y, s, w[None])[0] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-9)


def test_block_weights_resample_whole_blocks_of_time_across_symbols():
    ts = np.repeat(np.arange(1000), 3)  # 3 symbols share each timestamp
    ids, n = ev.time_ids(ts)
    W = ev.block_weights(ids, n, 50, 200, seed=1)
    assert W.shape == (200, 3000)
    assert np.array_equal(W[:, 0::3], W[:, 1::3])  # every symbol is cut at the same times
    per_time = W[:, 0::3]
    changes = (np.diff(per_time, axis=1) != 0).sum(axis=1)
    assert changes.max() <= 2 * 20 + 2  # weights change only at block edges (20 blocks of 50, one may wrap)
    assert (W.sum(axis=1) == 3000).all()  # each replicate is as long as the data
    # circular blocks: the newest and oldest rows are drawn as often as the middle ones
    many = ev.block_weights(ids, n, 200, 4000, seed=2)
    ends, middle = many[:, [0, -1]].mean(), many[:, 1400:1600].mean()
    assert ends == pytest.approx(1.0, abs=0.1) and middle == pytest.approx(1.0, abs=0.1)
    # chunked replicates are the same replicates, whatever the chunk size
    a = ev.Bootstrap(ts, 50, 30, seed=3, max_cells=3000 * 7)
    b = ev.Bootstrap(ts, 50, 30, seed=3)
    assert a.chunk == 7 and b.chunk == 30
    assert np.array_equal(a.apply(ev.weighted_mean, np.arange(3000.0)),
                          np.concatenate([ev.weighted_mean(np.arange(3000.0), W) for W in a.chunks()]))


def _bootstrap_coverage(block_len, n_markets=60):
    """Share of AR(1)-persistent null series whose 90 % interval excludes 0 (should be ~10 %)."""
    miss = 0
    for seed in range(n_markets):
        rng = np.random.default_rng(seed)
        e = rng.normal(size=2000)
        d = np.empty(2000)
        d[0] = e[0]
        for i in range(1, 2000):  # a persistent score difference with mean 0
            d[i] = 0.9 * d[i - 1] + e[i]
        ids, n = ev.time_ids(np.arange(2000))
        W = ev.block_weights(ids, n, block_len, 500, seed)
        b = ev.weighted_mean(d, W)
        lo, hi = np.quantile(b, [0.05, 0.95])
        miss += not (lo <= 0 <= hi)
    return miss / n_markets


def test_blocks_keep_the_interval_honest_on_persistent_errors():
    """Row-by-row resampling of a persistent series claims far too much certainty; blocks as
    long as the dependence do not."""
    assert _bootstrap_coverage(1) > 0.4
    assert _bootstrap_coverage(100) < 0.25


# ---- the gate -------------------------------------------------------------------------------
def _task(n=4000, seed=0, rules=None):
    rng = np.random.default_rng(seed)
    ts = (np.arange(n) * 3600 + 1_700_000_000) * 1_000_000
    y = (rng.random(n) < 0.5).astype(int)
    return clf.make_task(np.zeros((n, 1)), y, ts, label_times(ts, 1), np.array(["X"] * n), ["f"],
                         rules or {"noise": rng.normal(size=n)}, int(ts[int(n * 0.6)]), block_len=24), rng


def _probs(y, rng, skill):
    """Calibrated-ish probabilities with a given amount of skill."""
    z = skill * (2 * y - 1) + rng.normal(size=len(y))
    return 1 / (1 + np.exp(-z * skill))


def test_a_version_that_beats_the_champion_but_not_the_baseline_is_not_promoted():
    task, rng = _task()
    strong_rule = task.y + rng.normal(0, 0.6, len(task.y))  # an untrained rule that ranks well
    task.rules = {"strong_rule": strong_rule}
    ho = task.holdout
    champ = _probs(task.y, rng, 0.3)
    new = _probs(task.y, rng, 0.8)
    champion = clf.Champion("1", int(task.ts_us[ho].min()) - 1, predict=lambda rows: champ[rows])
    d = clf.gate(task, new[ho], clf.default_policy(n_boot=300), champion)
    assert d.get("vs_champion").passed  # it does beat the champion...
    assert not d.get("vs_best_rule").passed  # ...but not the rule
    assert d.alias == "challenger" and "best untrained rule" in d.reason
    tags = d.tags()
    assert tags["gate.decision"] == "challenger" and tags["gate.vs_best_rule.passed"] == "false"
    assert tags["gate.vs_champion.interval"].startswith("[") and float(tags["gate.vs_champion.lower_bound"]) > 0


def test_a_version_better_by_less_than_the_margin_is_not_promoted():
    task, rng = _task(n=6000, seed=2)
    ho = task.holdout
    z = (2 * task.y - 1) * 0.6 + rng.normal(size=len(task.y))
    champ = 1 / (1 + np.exp(-z))
    new = 1 / (1 + np.exp(-(z + 0.01 * (2 * task.y - 1))))  # the same model, slightly better (+0.004 AUC)
    champion = clf.Champion("1", int(task.ts_us[ho].min()) - 1, predict=lambda rows: champ[rows])
    strict = clf.gate(task, new[ho], clf.default_policy(n_boot=300), champion)
    c = strict.get("vs_champion")
    assert 0 < c.lower < 0.005  # supported, but smaller than the margin
    assert strict.alias == "challenger" and "not champion version 1" in strict.reason
    no_margin = clf.gate(task, new[ho], clf.default_policy(n_boot=300, margins={
        "vs_base_rate": 0.0, "vs_best_rule": 0.01, "vs_champion": 0.0}), champion)
    assert no_margin.alias == "champion"  # the margin, not chance, made the difference


def test_a_champion_is_scored_only_on_rows_after_its_training_end_or_refit():
    task, rng = _task()
    ho = task.holdout
    p = _probs(task.y, rng, 0.8)
    weak = _probs(task.y, rng, 0.1)  # what the champion's configuration gives when refit here
    seen = []
    champion = clf.Champion("3", int(task.ts_us[ho][-50]), predict=lambda rows: seen.append(rows) or p[rows],
                            refit=lambda: (lambda rows: weak[rows]))
    d = clf.gate(task, p[ho], clf.default_policy(n_boot=200), champion)
    assert d.champion_mode == "refit" and not seen  # 49 rows after its training end: too few, so refit
    c = d.get("vs_champion")
    assert "refit" in c.against and c.rows == len(ho) and c.improvement > 0.1 and d.alias == "champion"
    # the fitted champion on the rows after its training data end, and only those
    champion = clf.Champion("3", int(task.ts_us[ho][300]), predict=lambda rows: seen.append(rows) or p[rows])
    d = clf.gate(task, p[ho], clf.default_policy(n_boot=200), champion)
    assert d.champion_mode == "scored" and len(seen[0]) == len(ho) - 301
    assert task.ts_us[seen[0]].min() > task.ts_us[ho][300]
    assert d.get("vs_champion").improvement == 0 and d.alias == "challenger"  # the same model is not better
    # a champion whose configuration is this version's: the refit would be this version, the baselines decide
    same = clf.Champion("3", int(task.ts_us[ho][-50]), predict=lambda rows: p[rows], same_config=True)
    d = clf.gate(task, p[ho], clf.default_policy(n_boot=200), same)
    assert d.get("vs_champion") is None and "baselines" in d.champion_note and d.alias == "champion"
    # one that records neither window nor configuration (registered before they were recorded): baselines decide
    legacy = clf.Champion("1", None, predict=lambda rows: p[rows])
    d = clf.gate(task, p[ho], clf.default_policy(n_boot=200), legacy)
    assert d.champion_mode == "unavailable" and "no training window" in d.champion_note and d.alias == "champion"


def test_gate_decisions_need_every_baseline():
    from trading_platform.models.gate import Comparison

    ok = Comparison("vs_a", "a", "m", "higher", 0.6, 0.5, 0.1, 0.05, 0.15, 0.0, 500)
    bad = Comparison("vs_b", "b", "m", "higher", 0.6, 0.58, 0.02, -0.01, 0.05, 0.0, 500)
    assert decide("m", "higher", 0.6, [ok], None).alias == "champion"
    d = decide("m", "higher", 0.6, [ok, bad], None)
    assert d.alias == "challenger" and "does not beat b" in d.reason
    nan = Comparison("vs_a", "a", "m", "higher", float("nan"), 0.5, float("nan"), float("nan"), float("nan"), 0.0, 9)
    assert decide("m", "higher", float("nan"), [nan], None).alias == "challenger"
    with pytest.raises(ValueError):
        decide("m", "sideways", 0.6, [ok], None)


def test_platt_calibration_recovers_probabilities_and_ignores_noise():
    rng = np.random.default_rng(0)
    m = rng.normal(size=20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(2 * m - 1)))).astype(int)
    a, b = fit_platt(m, y)
    assert a == pytest.approx(2, rel=0.1) and b == pytest.approx(-1, abs=0.1)
    a0, b0 = fit_platt(rng.normal(size=20000), y)  # a score without skill -> the base rate
    assert abs(a0) < 0.05 and platt(np.array([3.0]), a0, b0)[0] == pytest.approx(y.mean(), abs=0.03)


# ---- regimes -----------------------------------------------------------------------------
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


def test_filtered_regime_probabilities_and_likelihoods_do_not_look_ahead():
    X = _regime_data(2)
    m = fit(X, RegimeConfig())
    p, ll = m.filtered_proba(X), m.loglik_rows(X)
    assert p.shape == (len(X), 4) and np.allclose(p.sum(axis=1), 1)
    t = 1500
    altered = X.copy()
    altered[t + 1:] *= 5
    assert np.allclose(m.filtered_proba(altered)[: t + 1], p[: t + 1])
    assert np.allclose(m.loglik_rows(altered)[: t + 1], ll[: t + 1])
    assert set(m.regimes(X)) <= set(REGIMES)
    # the per-row predictive log-likelihoods add up to the sequence's (hmmlearn's forward algorithm)
    assert ll.sum() == pytest.approx(m.hmm.score(m._z(X)) - len(X) * np.log(m.std).sum(), rel=1e-9)


def _regime_frame(X):
    ts = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(len(X))]
    return pl.DataFrame({"ts": ts, "logret_1": X[:, 0], "vol_20": X[:, 1], "close": np.exp(np.cumsum(X[:, 0]))})


def test_the_regime_gate_promotes_volatility_regimes_and_refuses_a_random_walk():
    """Through the features (vol_20 is a rolling window, as in production): the HMM must predict the
    next return's distribution better than the VAR(1), which gives it one constant variance."""
    policy = regime.gate_policy(n_boot=300)
    g = regime.train_and_gate(_features(garch_candles(datetime(2024, 1, 1, tzinfo=UTC), 8784, 1)), RegimeConfig(),
                              policy=policy)
    assert g.decision.alias == "champion" and g.decision.get("vs_var1").lower > 0
    c = random_walk_candles("X", "crypto", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), 5)
    rw = regime.train_and_gate(_features(c), RegimeConfig(), policy=policy)
    assert rw.decision.alias == "challenger" and "VAR(1)" in rw.decision.reason


# ---- random-walk controls ----------------------------------------------------------------
def _features(candles):
    from trading_platform.features.compute import compute_features

    return compute_features(candles.with_columns(symbol=pl.lit("X"), timeframe=pl.lit("1h")))


@pytest.mark.parametrize("seed,category", [(11, "crypto"), (12, "forex"), (13, "crypto")])
def test_random_walk_signal_models_and_the_reversal_rule_are_not_promoted(seed, category):
    """Whole pure path (features, labels, split, calibration, gate): nothing to find, nothing promoted.
    The reversal rule's AUC is above 0.5 on a random walk (overlapping labels), which is why the gate
    compares with the rules rather than with 0.5."""
    c = random_walk_candles("X", category, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 10, 1, tzinfo=UTC), seed)
    t = signal.train_and_gate(_features(c), signal.SignalConfig(n_estimators=60),
                              policy=clf.default_policy(n_boot=300))
    assert t.decision.alias == "challenger", t.decision.reason
    rule = clf.RuleClassifier.fit(t.task, "reversal_60")
    others = [n for n in t.task.rules if n != "reversal_60"]  # its own baselines: the base rate, the other rules
    d = clf.gate(t.task, rule.predict_rows(t.task, t.task.holdout), clf.default_policy(n_boot=300), rules=others)
    assert d.alias == "challenger", d.reason


def test_a_planted_signal_is_found_and_promoted():
    """Power, not only refusal: a long lower wick means the next bar drifts up. The signal model reads
    candle shapes, no momentum or reversal rule can: it must pass every baseline."""
    c = wick_signal_candles(datetime(2024, 1, 1, tzinfo=UTC), 17544, seed=1, strength=2.0)  # two years
    t = signal.train_and_gate(_features(c), signal.SignalConfig(), policy=clf.default_policy(n_boot=300))
    assert t.decision.alias == "champion", t.decision.reason
    assert t.decision.get("vs_best_rule").lower > 0.01


def test_block_resample_sums_are_the_block_weights_times_the_values():
    """The paper controls' bootstrap (no weight matrix) draws the same circular blocks as the gate's."""
    from trading_platform.models.evaluation import block_resample_sums, block_weights

    d = np.random.default_rng(0).normal(size=1003)
    for L in (1, 7, 50, 1003):
        W = block_weights(np.arange(len(d)), len(d), L, 300, seed=[4, 1])
        np.testing.assert_allclose(block_resample_sums(d, L, 300, seed=[4, 1]), W.astype(np.float64) @ d,
                                   rtol=1e-9, atol=1e-9)

"""Chart patterns: the generator, the rule labeler, the TCN (tiny configurations), the frozen
set, the weighted macro F1, the gate and the point-in-time scan. No database, no MLflow."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from trading_platform.models.patterns import CLASSES, NONE, PATTERNS
from trading_platform.models.patterns import evaluate as E
from trading_platform.models.patterns import generator as gen
from trading_platform.models.patterns.labeler import label

TINY = {"length": 32, "channels": 8, "dilations": (1, 2, 4, 8), "n_synthetic": 170, "epochs": 2, "batch_size": 32}


@pytest.fixture(scope="module")
def tiny_model():
    from trading_platform.models.patterns import tcn

    seen = []
    model, info = tcn.train(tcn.TCNConfig(**TINY), progress=lambda e, loss: seen.append((e, loss)), device="cpu")
    return model, info, seen


# ---- generator ---------------------------------------------------------------------------------
def test_generator_is_deterministic_given_a_seed():
    for c in CLASSES:
        a = gen.sample(gen.rng_for(5, 1), c)
        b = gen.sample(gen.rng_for(5, 1), c)
        assert a.label == b.label == c and np.array_equal(a.ohlc, b.ohlc)
        other = gen.sample(gen.rng_for(5, 2), c)
        assert len(other.ohlc) != len(a.ohlc) or not np.array_equal(other.ohlc, a.ohlc)
    assert [w.label for w in gen.training_set(30, 3)] == [w.label for w in gen.training_set(30, 3)]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_fills_the_stated_share_with_the_stated_amplitude_and_noise(pattern):
    w = gen.draw(pattern, gen.rng_for(9, 9), length=200, share=0.6, noise=0.1, scale=0.08, price=50.0)
    assert w.length == 200 and w.start == 200 - 120
    # the pattern's skeleton spans exactly the amplitude over its bars
    assert np.ptp(w.skeleton[w.start:]) == pytest.approx(0.08, rel=1e-9)
    residual = np.log(w.ohlc[:, 3]) - w.skeleton
    assert residual.std() == pytest.approx(0.1 * 0.08, rel=0.25)
    o, h, lo, c = w.ohlc.T
    assert np.all(h >= np.maximum(o, c)) and np.all(lo <= np.minimum(o, c)) and np.all(lo > 0)


def test_generator_refuses_bad_settings():
    with pytest.raises(ValueError, match="unknown pattern"):
        gen.draw("teacup", 1)
    with pytest.raises(ValueError, match="share"):
        gen.draw("double_top", 1, share=1.5)


# ---- labeler -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", CLASSES)
def test_labeler_finds_each_pattern_it_draws_at_low_noise(pattern):
    """Noise 5 % of the amplitude, lengths 64-256 bars, the pattern filling 50-100 %: at least
    7 of 10 draws labelled right (overall about 90 % across classes)."""
    i = CLASSES.index(pattern)
    found = [label(gen.sample(gen.rng_for(101, i, j), pattern, noise=0.05).ohlc) for j in range(10)]
    hits = sum(f.pattern == pattern for f in found)
    assert hits >= 7, [f.pattern for f in found]
    for f in found:
        assert (f.score == 0) == (f.pattern == NONE)


# ---- TCN -----------------------------------------------------------------------------------------
def test_tcn_trains_saves_loads_and_predicts_the_same(tiny_model, tmp_path):
    from trading_platform.models.patterns import tcn

    model, info, seen = tiny_model
    assert [e for e, _ in seen] == [1, 2] and all(np.isfinite(loss) for _, loss in seen)
    assert info["windows"] == TINY["n_synthetic"] and info["device"] == "cpu"
    windows = [gen.sample(gen.rng_for(77, k), c).ohlc for k, c in enumerate(CLASSES)]
    p = model.predict_proba(windows)
    assert p.shape == (len(CLASSES), len(CLASSES))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(p >= 0)
    path = tcn.save(model, tmp_path / "tcn")
    assert sorted(f.name for f in path.iterdir()) == ["config.json", "state_dict.pt"]
    loaded = tcn.load(path, device="cpu")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict_proba(windows), p)


def test_tcn_training_is_deterministic_given_its_seed(tiny_model):
    from trading_platform.models.patterns import tcn

    model, _, _ = tiny_model
    again, _ = tcn.train(tcn.TCNConfig(**TINY), device="cpu")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), k


def test_tcn_device_and_config_errors_name_the_field(monkeypatch):
    from trading_platform.models.patterns import tcn

    monkeypatch.setenv("TP_DEVICE", "tpu")
    with pytest.raises(ValueError, match="TP_DEVICE"):
        tcn.resolve_device()
    with pytest.raises(ValueError, match="receptive field"):
        tcn.TCNConfig(length=128, dilations=(1, 2))
    with pytest.raises(ValueError, match="unknown TCN config field"):
        tcn.TCNConfig.from_dict({"widht": 3})


def test_importing_the_family_without_the_tcn_does_not_import_torch():
    code = ("import sys; import trading_platform.models.patterns.scan, trading_platform.models.patterns.evaluate, "
            "trading_platform.models.patterns.gate, trading_platform.models.patterns.generator; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- frozen set and metrics -------------------------------------------------------------------
def test_frozen_set_is_the_one_the_issue_fixes():
    s = E.frozen_set()
    labels, counts = np.unique(s.labels, return_counts=True)
    assert dict(zip(labels, counts)) == {**{p: 100 for p in PATTERNS}, NONE: 600}
    lengths = np.array([len(w) for w in s.windows])
    assert lengths.min() >= 64 and lengths.max() <= 256
    assert sorted(set(s.noise.tolist())) == [0.05, 0.15, 0.30]
    assert s.stream == (gen.FROZEN_STREAM,) and gen.FROZEN_STREAM != gen.TRAIN_STREAM
    # a change to the generator changes the frozen set: every recorded score would be void
    digest = hashlib.sha256((",".join(s.labels) + "|" + ",".join(map(str, lengths)) + "|"
                             + ",".join(f"{x:.2f}" for x in s.noise)).encode()).hexdigest()
    assert digest == "c69d35e7ea719c8ec8d642e511651854f233a37cc4fcab7b01a51013e085b705"
    np.testing.assert_allclose([np.log(s.windows[i][:, 3]).mean() for i in (0, 1000, 2199)],
                               [6.6651989495648225, 2.0516615936965827, 3.4832944088729576], rtol=1e-9)


def test_macro_f1_with_unit_weights_is_sklearns_and_weights_resample():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.choice(CLASSES, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.choice(CLASSES, 300))
    assert E.macro_f1(y, pred, np.ones((1, 300)))[0] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    W = rng.integers(0, 3, size=(4, 300)).astype(float)
    got = E.macro_f1(y, pred, W)
    for r in range(4):
        keep = np.repeat(np.arange(300), W[r].astype(int))
        assert got[r] == pytest.approx(f1_score(y[keep], pred[keep], average="macro"), abs=1e-12)
    assert E.class_scores(y, pred)["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)


def test_evaluation_scores_both_models_per_level_and_plots(tiny_model, tmp_path):
    model, _, _ = tiny_model
    small = E.build_set((gen.DEV_STREAM, 7), per_pattern=3, none=3)
    ev = E.evaluate(model, small)
    assert set(ev.scores) == {"tcn", "labeler"}
    assert set(ev.scores["tcn"]) == {"overall", "noise_0.05", "noise_0.15", "noise_0.30"}
    assert sum(s["support"] for s in ev.scores["labeler"]["overall"]["per_class"].values()) == len(small)
    assert 0 <= ev.macro_f1("labeler") <= 1 and "tcn_macro_f1_noise_0.30" in ev.metrics()
    png = E.plot_confusion(ev, tmp_path / "confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counts = E.history_counts(model, {"walk": gen.sample(gen.rng_for(3), NONE, length=(300, 300)).ohlc},
                              window=64, stride=16, threshold=0.0)
    assert counts["walk"]["windows"] == len(range(64, 301, 16))
    assert set(counts["walk"]["tcn"]) == set(PATTERNS)


# ---- gate ---------------------------------------------------------------------------------------
def test_gate_floor_and_champion():
    from trading_platform.models.patterns.gate import default_policy, gate

    rng = np.random.default_rng(1)
    y = np.array(E.frozen_set().labels)
    policy = default_policy(n_boot=200)
    perfect = gate(y, y, policy)
    assert perfect.alias == "champion" and perfect.get("vs_floor").passed
    noisy = np.where(rng.random(len(y)) < 0.7, y, rng.choice(CLASSES, len(y)))
    low = gate(y, noisy, policy)
    assert low.alias == "challenger" and "floor" in low.reason
    same = gate(y, y, policy, champion_pred=y, champion_version="3")
    assert same.alias == "challenger" and same.champion_mode == "scored" and "champion version 3" in same.reason
    better = gate(y, y, policy, champion_pred=np.where(rng.random(len(y)) < 0.9, y, NONE), champion_version="3")
    assert better.alias == "champion" and better.get("vs_champion").lower > 0.005


# ---- scan ----------------------------------------------------------------------------------------
def _candles(n: int = 260) -> pd.DataFrame:
    parts = [gen.sample(gen.rng_for(55, k), c, length=(65, 65), price=(100.0, 100.0)).ohlc
             for k, c in enumerate(("double_top", NONE, "bull_flag", "rectangle"))]
    ohlc = np.concatenate(parts)[:n]
    ts = pd.date_range("2024-01-01", periods=len(ohlc), freq="1h", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": ohlc[:, 0], "high": ohlc[:, 1], "low": ohlc[:, 2], "close": ohlc[:, 3]})


def test_scan_has_no_look_ahead(tiny_model):
    from trading_platform.models.patterns.scan import scan

    model, _, _ = tiny_model
    candles = _candles()
    rows = scan(candles, model, windows=(32, 64), stride=1, threshold=0.0)
    assert len(rows) and set(rows["pattern"]) <= set(PATTERNS)
    assert rows["ts"].min() == candles["ts"][31]
    t = candles["ts"][180]
    future = candles.copy()
    after = future["ts"] > t
    rng = np.random.default_rng(0)
    for col in ("open", "high", "low", "close"):
        future.loc[after, col] = future.loc[after, col] * rng.uniform(0.5, 1.5, after.sum())
    future.loc[after, "high"] = future.loc[after, ["open", "high", "low", "close"]].max(axis=1)
    future.loc[after, "low"] = future.loc[after, ["open", "high", "low", "close"]].min(axis=1)
    rows2 = scan(future, model, windows=(32, 64), stride=1, threshold=0.0)
    before = rows[rows["ts"] <= t].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, rows2[rows2["ts"] <= t].reset_index(drop=True))
    assert not rows[rows["ts"] > t].reset_index(drop=True).equals(rows2[rows2["ts"] > t].reset_index(drop=True))


def test_scan_threshold_stride_and_since(tiny_model):
    from trading_platform.models.patterns.scan import scan

    model, _, _ = tiny_model
    candles = _candles()
    everything = scan(candles, model, windows=(32,), stride=5, threshold=0.0)
    cut = float(everything["probability"].median())  # the tiny model's probabilities are all near 1/17
    rows = scan(candles, model, windows=(32,), stride=5, threshold=cut)
    assert 0 < len(rows) < len(everything) and (rows["probability"] >= cut).all() and (rows["bars"] == 32).all()
    first = rows.iloc[0]  # the same probability as the model gives that window on its own
    end = int(np.flatnonzero(candles["ts"] == first["ts"])[0])
    window = candles[["open", "high", "low", "close"]].to_numpy()[end - 31:end + 1]
    assert model.predict_proba([window])[0, CLASSES.index(first["pattern"])] == pytest.approx(first["probability"])
    ends = set(rows["ts"])
    assert ends <= set(candles["ts"][::-1][::5])  # every 5th candle counted back from the last
    since = candles["ts"][200]
    later = scan(candles, model, windows=(32,), stride=5, threshold=cut, since=since)
    assert (later["ts"] > since).all()
    pd.testing.assert_frame_equal(later.reset_index(drop=True),
                                  rows[rows["ts"] > since].reset_index(drop=True))
    with pytest.raises(ValueError, match="increasing ts"):
        scan(candles.iloc[::-1], model)


class _PlantedDetector:
    """Stands in for a TCN that recognizes the synthetic market's planted patterns: it names the planted
    pattern whose formation ends on a window's last bar (found by that bar's close), and "none" elsewhere."""

    def __init__(self, at_close: dict[float, str]):
        self.at_close = at_close

    def predict_proba(self, windows):
        out = np.zeros((len(windows), len(CLASSES)))
        for i, w in enumerate(windows):
            out[i, CLASSES.index(self.at_close.get(float(w[-1, 3]), NONE))] = 0.9
        return out


def _market(structure: bool):
    """Four crypto symbols' hourly candles over 2025 (the synthetic market or its control), and for each the
    closes of the bars where a planted pattern finishes forming (its announced move still to come)."""
    from datetime import datetime, timezone

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.sources import synthetic as syn

    series, ends = {}, {}
    for sym in ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"):
        df = syn.SyntheticSource(7, structure=structure).fetch(
            SymbolInfo.create(sym), "1h", datetime(2025, 1, 1, tzinfo=timezone.utc),
            datetime(2026, 1, 1, tzinfo=timezone.utc))
        ts = df["ts"].astype("datetime64[s, UTC]").astype("int64").to_numpy() - int(syn.ORIGIN.timestamp())  # its clock
        ohlc = df[["open", "high", "low", "close"]].to_numpy(np.float64)
        marks = {}
        for slot in np.unique(ts // syn.PATTERN_SLOT_S):
            p = syn._slot_pattern(7, syn._key(sym), int(slot))
            if p is None or p[3] == 0:
                continue
            end = p[0] + p[1]
            i = np.searchsorted(ts, end) - 1
            if 0 <= i < len(ts):
                marks[float(ohlc[i, 3])] = p[4]
        series[sym], ends[sym] = ohlc, marks
    return series, ends


def test_a_planted_patterns_breakout_stays_when_the_next_slot_begins():
    """The synthetic market's planted pattern ends in a breakout that stays (the move it announces is what
    follows it): the level it leaves does not jump back when the next slot begins. An undone breakout plants
    a reversal of every pattern at a fixed time, structure no detector should be rewarded or punished for."""
    from trading_platform.sources import synthetic as syn

    t = np.arange(0, 200 * syn.DAY, syn.HOUR)
    checked = 0
    for sym in ("BTC/USDT", "ETH/USDT"):
        k = syn._key(sym)
        level, _ = syn._pattern_level(7, k, t, 1.0)
        for i in np.flatnonzero((t % syn.PATTERN_SLOT_S == 0) & (t > 0)):
            before = syn._slot_pattern(7, k, int(t[i - 1] // syn.PATTERN_SLOT_S))
            if before is None or before[3] == 0:
                continue
            checked += 1
            assert level[i - 1] != 0, f"{sym}: no breakout level at the end of slot {t[i - 1] // syn.PATTERN_SLOT_S}"
            # at most the breakout's last hour is still to come (a pattern may end a day before its slot does)
            hour_of_breakout = before[2] * 0.5 * syn.HOUR / syn.BREAKOUT_S
            assert abs(level[i] - level[i - 1]) <= hour_of_breakout + 1e-12, \
                f"{sym}: the level jumps by {level[i] - level[i - 1]:+.4f} when slot {t[i] // syn.PATTERN_SLOT_S} begins"
    assert checked >= 10, f"only {checked} slots after a directional pattern: the test proves little"


def test_the_planted_patterns_plant_no_drift():
    """Their breakouts stay (above), so the patterns must announce falls as often as rises: otherwise the
    synthetic market drifts with them (about +0.16 log a year on crypto when every directional pattern was as
    likely, seven of them bullish against six bearish), a trend its random-walk control does not have."""
    from trading_platform.sources import synthetic as syn

    carry = np.array([p[2] * (p[6][-1] + 0.5 * p[3]) for k in range(20) for slot in range(1000)
                      if (p := syn._slot_pattern(7, k, slot)) is not None])
    assert len(carry) > 5000
    se = carry.std() / np.sqrt(len(carry))
    assert abs(carry.mean()) < 3 * se, f"the patterns' breakouts drift by {carry.mean():+.5f} a pattern (se {se:.5f})"


def test_edge_of_detections_is_what_the_market_does_after_them():
    """A detector that finds the planted patterns has an edge on the synthetic market (their announced moves
    follow) and none on the control (a random walk: the same bars announce nothing), and the TCN gate's
    vs_no_edge comparison says so; too few detections is no evidence."""
    from trading_platform.models.patterns import edge as pedge
    from trading_platform.models.patterns import gate as G

    for structure in (True, False):
        series, planted = _market(structure)
        _, cuts = pedge.split(series, 0.5)
        # the control marks the same bar positions as the market, so both score the same number of detections
        ref = _market(True)[1] if not structure else planted
        at_close = {}
        for sym, ohlc in series.items():
            idx = {float(c): i for i, c in enumerate(_market(True)[0][sym][:, 3])} if not structure else None
            for c, name in ref[sym].items():
                at_close[float(ohlc[idx[c], 3]) if idx else c] = name
        result = pedge.measure(_PlantedDetector(at_close), series, cuts, stride=1)
        y = np.array([0, 1] * 50)
        decision = G.gate(y, y, floor=0.5, edge=result.values)
        edge = next(c for c in decision.comparisons if c.key == "vs_no_edge")
        assert result.n >= G.MIN_DETECTIONS, result.summary()
        if structure:
            assert edge.lower > 0.5 and decision.alias == "champion", (edge, result.summary())
        else:
            assert edge.lower < 0 and decision.alias == "challenger", (edge, result.summary())
    few = G.gate(y, y, floor=0.5, edge=np.full(G.MIN_DETECTIONS - 1, 2.0))
    assert few.alias == "challenger" and "the gate needs" in few.reason
    # 16 detections that happen to agree (mean +0.37, spread 0.67 where a random walk's is 1): their own
    # bootstrap would put the bound above 0 (the demo's control once promoted a TCN so); the null's does not
    lucky = np.random.default_rng(3).normal(size=16)
    lucky = (lucky - lucky.mean()) / lucky.std() * 0.67 + 0.37
    boot_only = G.compare("b", "", "e", "higher", G.ev.weighted_mean, lucky, np.zeros(16),
                          G.ev.Bootstrap(np.arange(16), 1, 1000, 2), 0.0, 0.95)
    assert boot_only.lower > 0
    assert G.gate(y, y, floor=0.5, edge=lucky).alias == "challenger"

"""The NHITS forecaster's pure core, with tiny configurations (a few training steps, short
windows): frames on row numbers for gapped markets, forecasts and their quantiles, the
rolling-origin evaluation never training on what it scores, the naive baselines on the same
windows, the gate, warm start, save/load, progress, the device and a clean working directory."""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from trading_platform.errors import InvalidInput
from trading_platform.models import evaluation as ev
from trading_platform.models.common import EvaluationError
from trading_platform.models.controls import random_walk_candles
from trading_platform.models.forecast import baselines as bl
from trading_platform.models.forecast import frames as fr
from trading_platform.models.forecast import nhits as nh

UTC = timezone.utc
TINY = dict(horizon=6, input_size=24, max_steps=12, mlp_width=32, windows_batch_size=64, min_origins=20,
            holdout_frac=0.1, progress_every=5, device="cpu")
MARKETS = {"BTC/USDT": "crypto", "EURUSD=X": "forex"}


def _market(days=40, seed=3):
    """A crypto-like series (24/7) and a forex-like one (closed at the weekend): random walks."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    return {"BTC/USDT": random_walk_candles("BTC/USDT", "crypto", start, end, seed),
            "EURUSD=X": random_walk_candles("EURUSD=X", "forex", start, end, seed + 1, price=1.1)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny evaluation, trained in an empty working directory (checked for Lightning's files) with
    the network cut off (nothing may be downloaded)."""
    import socket

    cwd, work = os.getcwd(), tmp_path_factory.mktemp("cwd")
    events = []
    connect = socket.socket.connect

    def refuse(self, address):
        raise AssertionError(f"a connection to {address} was attempted")

    os.chdir(work)
    socket.socket.connect = refuse
    try:
        data = _market()
        e = nh.evaluate(data, nh.NHITSConfig(**TINY), timeframe="1h", markets=MARKETS, progress=events.append)
        fc = e.forecaster.forecast(data)
        left = sorted(os.listdir(work))
    finally:
        os.chdir(cwd)
        socket.socket.connect = connect
    return data, e, fc, events, left


# ---- frames and the calendar -----------------------------------------------------------------------------
@pytest.mark.parametrize("tf,category,exchange,rows", [
    ("1h", "crypto", None, 24), ("1h", "forex", None, 24), ("1h", "stock", "NYSE", 7), ("1h", "stock", "NASDAQ", 7),
    ("1d", "crypto", None, 7), ("1d", "stock", "NASDAQ", 5), ("1d", "forex", None, 5), ("5m", "crypto", None, 288),
    ("4h", "forex", None, 6), ("5m", "stock", "NYSE", 78)])
def test_the_season_is_rows_of_the_market_calendar(tf, category, exchange, rows):
    assert fr.season_rows(tf, category, exchange) == rows


def test_gapped_markets_get_row_numbers_never_invented_times(trained):
    data, e, fc, _, _ = trained
    fx = fr.prepare(data, "log")[1]
    assert fx.symbol == "EURUSD=X" and (np.diff(fx.ts_us) > 3600 * 10**6).any()  # weekends: gaps in time
    long = fr.long_frame([fx])
    assert long["ds"].tolist() == list(range(len(fx)))  # ... but not in rows
    w = e.windows
    real = {s: set(fr.ts_us(f["ts"]).tolist()) for s, f in data.items()}
    assert all(int(t) in real[s] for s, t in zip(w.symbol, w.origin_ts_us))  # origins are real candles
    last = {s: int(fr.ts_us(f["ts"])[-1]) for s, f in data.items()}
    for r in fc.rows:  # forecasts: the last real candle and step numbers, no future timestamps
        assert int(r["origin_ts"].timestamp() * 10**6) == last[r["symbol"]]


# ---- forecasts -------------------------------------------------------------------------------------------
def test_forecast_rows_have_the_right_shape_keys_and_ordered_quantiles(trained):
    _, e, fc, _, _ = trained
    assert len(fc.rows) == 2 * 6 and fc.skipped == {}
    assert {tuple(sorted(r)) for r in fc.rows} == {("median", "origin_ts", "quantiles", "step", "symbol", "timeframe")}
    assert sorted(r["step"] for r in fc.rows if r["symbol"] == "BTC/USDT") == list(range(1, 7))
    for r in fc.rows:
        q = r["quantiles"]
        assert list(q) == ["0.1", "0.5", "0.9"] and q["0.1"] <= q["0.5"] <= q["0.9"] and r["median"] == q["0.5"]
        assert r["timeframe"] == "1h" and np.isfinite(list(q.values())).all()
    f = e.windows.forecast
    assert f.shape == (len(e.windows), 6, 3) and (np.diff(f, axis=2) >= 0).all()


def test_too_little_history_is_skipped_with_the_reason(trained):
    data, e, _, _, _ = trained
    need = e.forecaster.rows_needed
    fc = e.forecaster.forecast({"BTC/USDT": data["BTC/USDT"].tail(need - 1), "EURUSD=X": data["EURUSD=X"].tail(need)})
    assert set(fc.skipped) == {"BTC/USDT"} and "reads 24" in fc.skipped["BTC/USDT"]
    assert {r["symbol"] for r in fc.rows} == {"EURUSD=X"}


def test_save_and_load_give_the_same_forecasts(trained, tmp_path):
    data, e, fc, _, _ = trained
    e.forecaster.save(tmp_path / "m")
    loaded = nh.Forecaster.load(tmp_path / "m")
    again = loaded.forecast(data)
    assert [r["median"] for r in again.rows] == pytest.approx([r["median"] for r in fc.rows], rel=1e-6)
    assert loaded.cfg == e.forecaster.cfg and loaded.window == e.forecaster.window and loaded.timeframe == "1h"
    assert not list((tmp_path / "m").rglob("*.pkl")) and not list((tmp_path / "m").rglob("dataset*"))


# ---- the evaluation ----------------------------------------------------------------------------------------
def test_cross_validation_never_trains_on_a_window_it_scores():
    """Alter the last windows' candles: the trained weights and every forecast at an earlier origin stay
    the same (the training rows end before the first scored window; each forecast reads only rows before
    its origin)."""
    def with_returns(frames):  # a historic exogenous feature computed from past closes, as the features are
        return {s: f.with_columns(logret_1=np.r_[np.nan, np.diff(np.log(f["close"].to_numpy()))])
                for s, f in frames.items()}

    data = with_returns(_market())
    cfg = nh.NHITSConfig(**TINY, hist_exog=("logret_1",))
    a = nh.evaluate(data, cfg, timeframe="1h", markets=MARKETS)
    cut = {s: len(f) - 3 * cfg.horizon for s, f in data.items()}  # the last three windows' rows
    changed = {}
    for s, f in data.items():
        close = f["close"].to_numpy().copy()
        close[cut[s]:] *= np.linspace(1.2, 1.6, len(close) - cut[s])
        changed[s] = f.with_columns(close=close)
    changed = with_returns(changed)
    b = nh.evaluate(changed, cfg, timeframe="1h", markets=MARKETS)
    wa, wb = a.forecaster.model.state_dict(), b.forecaster.model.state_dict()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    earlier = np.array([row < cut[s] - 1 for s, row in zip(a.windows.symbol, a.windows.origin_row)])
    assert earlier.sum() > 0 and (~earlier).sum() > 0
    assert np.allclose(a.windows.forecast[earlier], b.windows.forecast[earlier], rtol=1e-6)
    assert not np.allclose(a.windows.forecast[~earlier], b.windows.forecast[~earlier], rtol=1e-3)


def test_the_naive_forecasts_and_scores_are_on_the_same_windows(trained):
    data, e, _, _, _ = trained
    w = e.windows
    # one cutoff: the latest candle in the last 10 % of the time range where each series holds its share (10) of
    # the 20 windows asked; the forex series, closed at the weekend, has fewer candles after it
    assert e.cutoff_us == int(datetime(2024, 4, 5, 11, tzinfo=UTC).timestamp() * 10**6)
    assert e.windows_per_series == {"BTC/USDT": 18, "EURUSD=X": 10} and len(w) == e.metrics["origins"] == 28
    for s, f in data.items():
        close, ts = f["close"].to_numpy(), fr.ts_us(f["ts"])
        m = w.symbol == s
        rows = np.searchsorted(ts, w.origin_ts_us[m])
        assert np.allclose(w.naive[m], close[rows][:, None])
        assert np.allclose(w.actual[m], close[rows[:, None] + np.arange(1, 7)])
        assert np.allclose(w.seasonal[m], close[rows[:, None] + np.arange(1, 7) - 24])  # season 24 > horizon 6
        assert (np.diff(np.sort(rows)) == 6).all()  # non-overlapping windows: step = horizon
    ratio = {s: np.abs(w.median - w.actual)[w.symbol == s].mean() / np.abs(w.naive - w.actual)[w.symbol == s].mean()
             for s in data}
    assert e.metrics["rel_mae_vs_naive"] == pytest.approx(np.sqrt(ratio["BTC/USDT"] * ratio["EURUSD=X"]))
    assert e.per_series["EURUSD=X"]["rel_mae_vs_naive"] == pytest.approx(ratio["EURUSD=X"])
    assert 0 <= e.metrics["coverage_80"] <= 1 and e.block_len == 5  # (24 + 6) / 6 origins


def test_log_return_forecasts_map_back_to_prices():
    r = np.array([[[0.0, 0.01, 0.02]] * 3])  # per-step quantiles 0.1, 0.5, 0.9 of the one-bar log return
    p = fr.to_prices(r, (0.1, 0.5, 0.9), np.array([100.0]), "log_return")
    k = np.arange(1, 4)
    assert np.allclose(p[0, :, 1], 100 * np.exp(0.01 * k))  # the median path: cumulated median returns
    assert np.allclose(p[0, :, 2], 100 * np.exp(0.01 * k + 0.01 * np.sqrt(k)))  # half-widths add in quadrature
    assert np.allclose(fr.to_prices(np.log(p), (0.1, 0.5, 0.9), np.array([100.0]), "log"), p)


def test_relative_mae_takes_bootstrap_weights_per_replicate():
    codes = np.array([0, 0, 1, 1])
    ae, ref = np.array([1.0, 3.0, 2.0, 2.0]), np.array([2.0, 2.0, 4.0, 4.0])
    one = bl.rel_mae(ae, ref, codes, ev.ones(4))
    assert one[0] == pytest.approx(np.sqrt(1.0 * 0.5))
    W = np.array([[2, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=np.float32)
    out = bl.rel_mae(ae, ref, codes, W)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(np.sqrt(0.5 * 0.5)) and out[1] == pytest.approx(0.5)  # series 0 not drawn
    assert out[2] == pytest.approx(one[0])


def test_too_few_origins_fail_before_training():
    data = {"BTC/USDT": _market()["BTC/USDT"].head(120)}
    with pytest.raises(EvaluationError, match="left out"):
        nh.evaluate(data, nh.NHITSConfig(**TINY), timeframe="1h", markets=MARKETS)


def _ending_apart():
    """BTC to the end of the 40 days, ETH a day less, the forex series ten days less (its data stopped)."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    return {"BTC/USDT": random_walk_candles("BTC/USDT", "crypto", start, start + timedelta(days=40), 3),
            "ETH/USDT": random_walk_candles("ETH/USDT", "crypto", start, start + timedelta(days=39), 5, price=50.0),
            "EURUSD=X": random_walk_candles("EURUSD=X", "forex", start, start + timedelta(days=30), 4, price=1.1)}


APART = {**MARKETS, "ETH/USDT": "crypto"}


def test_series_ending_at_different_times_are_held_out_from_one_cutoff():
    """Per-series holdouts leaked: BTC trained up to its own last windows while the series that ended earlier
    were scored on older ones. One cutoff: no row at or after it trains the model, in any series (altering
    every row from it on leaves the trained weights as they were), every window's origin is at or after it,
    and the series that ended before it is left out of the evaluation, named, its earlier rows still trained on."""
    data = _ending_apart()
    cfg = nh.NHITSConfig(**TINY)
    a = nh.evaluate(data, cfg, timeframe="1h", markets=APART)
    cut, w = a.forecaster.window["holdout_start"], a.windows
    assert a.forecaster.window["train_data_end"] < cut <= w.origin_ts_us.min()
    ts = {s: fr.ts_us(f["ts"]) for s, f in data.items()}
    changed = {}
    for s, f in data.items():
        close = f["close"].to_numpy().copy()
        later = ts[s] >= cut
        close[later] *= np.linspace(1.2, 1.6, int(later.sum()))
        changed[s] = f.with_columns(close=close)
    b = nh.evaluate(changed, cfg, timeframe="1h", markets=APART)
    wa, wb = a.forecaster.model.state_dict(), b.forecaster.model.state_dict()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    assert a.cutoff_us == b.cutoff_us == cut
    assert a.metrics["train_rows"] == sum(int((t < cut).sum()) for t in ts.values())  # every series, before it
    assert set(w.symbol) == {"BTC/USDT", "ETH/USDT"} and a.windows_per_series == {"BTC/USDT": 16, "ETH/USDT": 12}
    for s in ("BTC/USDT", "ETH/USDT"):  # each scored series: its candles from the cutoff on, one window apart
        rows = np.searchsorted(ts[s], w.origin_ts_us[w.symbol == s])
        assert rows[0] == np.searchsorted(ts[s], cut) and (np.diff(rows) == cfg.horizon).all()
    assert list(a.left_out) == ["EURUSD=X"] and "before the cutoff" in a.left_out["EURUSD=X"]
    assert any(n.startswith("EURUSD=X left out of the evaluation: its last candle") and "trained on" in n
               for n in a.notes)
    tags = a.cutoff_tags()
    assert tags["tp.cutoff"] == a.window_tags()["tp.holdout_start"] and tags["tp.series_left_out"].startswith(
        "EURUSD=X: its last candle")


def test_too_few_windows_after_the_common_cutoff_refuse_naming_the_series_left_out():
    """A series listed twelve days ago and one whose data stopped four weeks ago: no one cutoff leaves 50 windows
    (per-series holdouts found 25 in each, scoring the forex series on windows the crypto one trained on)."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    data = {"BTC/USDT": random_walk_candles("BTC/USDT", "crypto", start + timedelta(days=28),
                                            start + timedelta(days=40), 3),
            "EURUSD=X": random_walk_candles("EURUSD=X", "forex", start, start + timedelta(days=12), 4, price=1.1)}
    with pytest.raises(EvaluationError) as e:
        nh.evaluate(data, nh.NHITSConfig(**{**TINY, "min_origins": 50}), timeframe="1h", markets=MARKETS)
    msg = str(e.value)
    assert "no common cutoff leaves 50" in msg and "42 windows (BTC/USDT 42)" in msg
    assert "EURUSD=X left out: its last candle (2024-03-12T" in msg and "is before the cutoff" in msg


def test_warm_start_and_the_champion_comparison_use_the_common_cutoff():
    """The champion trained until 2 April: before this version's cutoff, though after the start of the forex
    series' own last windows (which per-series holdouts scored, refusing the warm start). Its weights and its
    recorded configuration (60 windows asked: a cutoff of its own would be earlier) are scored on this
    version's windows, after the same cutoff."""
    data = _ending_apart()
    old = {s: f.filter(f["ts"] < datetime(2024, 4, 2, tzinfo=UTC)) for s, f in data.items()}
    champ = nh.evaluate(old, nh.NHITSConfig(**TINY), timeframe="1h", markets=APART).forecaster
    recorded = nh.NHITSConfig(**{**TINY, "min_origins": 60}).to_dict()
    t = nh.train_and_gate(data, nh.NHITSConfig(**TINY, warm_start=True), timeframe="1h", markets=APART,
                          champion=nh.NHITSChampion("4", champ.train_data_end_us, champ, recorded))
    ev = t.evaluation
    assert champ.train_data_end_us < ev.cutoff_us and t.forecaster.window["warm_start_from"] == "4"
    assert t.decision.champion_mode == "refit" and t.decision.get("vs_champion") is not None
    c = nh.champion_for_gate("4", champ.train_data_end_us, data, ev, model=champ, config=recorded, markets=APART)
    assert np.isfinite(c.errors()).all() and np.isfinite(c.refit()).all()  # every window, at the same origins


# ---- the gate ---------------------------------------------------------------------------------------------
def _windows(model_scale, n=120, seed=0):
    """Two series of windows whose median errors are ``model_scale`` times the naive ones (plus noise)."""
    rng = np.random.default_rng(seed)
    h = 4
    actual = 100 + rng.normal(0, 1, (n, h)).cumsum(axis=1)
    naive = np.full((n, h), 100.0)
    med = naive + (1 - model_scale) * (actual - naive) + rng.normal(0, 0.05, (n, h))
    fc = np.stack([med - 1, med, med + 1], axis=2)
    sym = np.array(["A", "B"] * (n // 2))
    ts = np.repeat(np.arange(n // 2), 2) * 4 * 3600 * 10**6
    return bl.Windows(sym, ts, np.arange(n), (0.1, 0.5, 0.9), fc, actual, naive, naive + 5)


def test_the_gate_promotes_only_a_forecaster_that_beats_naive_and_the_champion():
    good = _windows(0.7)
    d = bl.gate(good, 3)
    assert d.alias == "champion" and d.new_score < 0.8 and d.get("vs_best_naive").passed
    same = _windows(1.0)
    d = bl.gate(same, 3)
    assert d.alias == "challenger" and "better naive forecast" in d.reason
    better_champion = bl.ForecastChampion("3", data_end_us=-1, errors=lambda: bl.window_mae(
        _windows(0.5).median, good.actual))
    d = bl.gate(good, 3, champion=better_champion)
    assert d.alias == "challenger" and d.champion_mode == "scored" and "champion version 3" in d.reason


def test_the_gate_refuses_nhits_on_a_random_walk():
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    data = {f"RW{i}": random_walk_candles(f"RW{i}", "crypto", start, end, 40 + i) for i in range(2)}
    cfg = nh.NHITSConfig(**{**TINY, "min_origins": 60, "max_steps": 20})
    t = nh.train_and_gate(data, cfg, timeframe="1h", markets={s: "crypto" for s in data})
    assert t.decision.alias == "challenger" and t.metrics["origins"] >= 60
    assert t.decision.metric == "rel_mae_vs_best_naive" and t.decision.direction == "lower"


# ---- warm start --------------------------------------------------------------------------------------------
def test_warm_start_is_refused_when_the_champion_saw_the_holdout(trained):
    data, e, _, _, _ = trained
    with pytest.raises(nh.WarmStartError, match="at or after this version's holdout start"):
        # 60 windows: this version's cutoff is earlier, before the champion's training end
        nh.evaluate(data, nh.NHITSConfig(**{**TINY, "min_origins": 60}), timeframe="1h", markets=MARKETS,
                    warm_from=e.forecaster)
    with pytest.raises(nh.WarmStartError, match="input_size"):
        nh.check_warm_start(e.forecaster, nh.NHITSConfig(**{**TINY, "input_size": 12}), 2**62)
    with pytest.raises(nh.WarmStartError, match="no loadable champion"):
        nh.train_and_gate(data, nh.NHITSConfig(**TINY, warm_start=True), timeframe="1h", markets=MARKETS)


def test_warm_start_continues_from_the_champion_weights():
    data = _market(days=60)
    old = {s: f.head(len(f) - 400) for s, f in data.items()}  # the champion ended 400 rows ago
    champ = nh.evaluate(old, nh.NHITSConfig(**TINY), timeframe="1h", markets=MARKETS).forecaster
    # no step moves the weights; 100 origins: what the shared gate needs to score a fitted champion
    cfg = nh.NHITSConfig(**{**TINY, "learning_rate": 1e-12, "warm_start": True, "min_origins": 100})
    t = nh.train_and_gate(data, cfg, timeframe="1h", markets=MARKETS,
                          champion=nh.NHITSChampion("4", champ.train_data_end_us, champ, champ.cfg.to_dict()))
    new = t.forecaster
    assert new.window["warm_start_from"] == "4" and champ.train_data_end_us < new.window["holdout_start"]
    a, b = champ.model.state_dict(), new.model.state_dict()
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)
    assert t.decision.champion_mode == "scored"  # the whole holdout is after the champion's training end
    assert t.decision.get("vs_champion").new_score == pytest.approx(t.decision.get("vs_champion").other_score,
                                                                      rel=1e-4)


# ---- runtime ------------------------------------------------------------------------------------------------
def test_training_reports_progress_and_leaves_no_files(trained):
    _, _, _, events, left = trained
    assert left == []  # no lightning_logs, checkpoints or tensorboard files in the working directory
    assert [p["step"] for p in events] == [5, 10, 12]
    assert all(np.isfinite(p["loss"]) and p["max_steps"] == 12 for p in events)
    assert nh.progress_text(events[-1]).startswith("nhits training step 12/12")


def test_the_device_comes_from_TP_DEVICE(monkeypatch):
    import torch

    monkeypatch.setenv("TP_DEVICE", "cpu")
    assert nh.resolve_device() == "cpu"
    monkeypatch.setenv("TP_DEVICE", "tpu")
    with pytest.raises(InvalidInput) as e:
        nh.resolve_device()
    assert e.value.field == "TP_DEVICE"
    monkeypatch.setenv("TP_DEVICE", "auto")
    assert nh.resolve_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("TP_DEVICE", "cuda")
        with pytest.raises(InvalidInput, match="no CUDA device"):
            nh.resolve_device()


@pytest.mark.parametrize("bad,field", [({"step_size": 12}, "nhits.step_size"), ({"quantiles": (0.5,)}, "nhits.quantiles"),
                                       ({"target": "price"}, "nhits.target"), ({"scaler_type": "zscore"},
                                                                               "nhits.scaler_type")])
def test_a_bad_configuration_names_the_field(bad, field):
    with pytest.raises(InvalidInput) as e:
        nh.NHITSConfig(**{"horizon": 24, **bad})
    assert e.value.field == field
    with pytest.raises(InvalidInput, match="unknown setting"):
        nh.NHITSConfig.from_dict({"futr_exog": ["x"]})
    assert nh.NHITSConfig.from_dict(nh.NHITSConfig().to_dict()) == nh.NHITSConfig()


def test_importing_the_forecaster_loads_no_torch():
    code = ("import sys, trading_platform.models.forecast.nhits, trading_platform.models.forecast.plot; "
            "print(sorted(m for m in ('torch', 'neuralforecast', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "[]"


def test_the_forecast_plot(trained, tmp_path):
    from trading_platform.models.forecast.plot import forecast_plot

    _, e, _, _, _ = trained
    p = forecast_plot(e.windows, e.series, str(tmp_path / "f.png"), "nhits.1h")
    assert Path(p).stat().st_size > 10_000

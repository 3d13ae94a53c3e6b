"""The NHITS price forecaster (neuralforecast): configuration, rolling-origin evaluation,
training progress, warm start, forecasts at the latest origin, save and load.

One model per timeframe across the symbols (``scope="global"``) or one per symbol
(``scope="per_symbol"``: the caller passes one symbol's frame). Evaluation holds every series
out from one common cutoff (``plan_windows``): the model is trained on the rows before it, in
every series (no row at or after it, whichever series ends last), and scored on windows whose
origins are each series' candles at or after it, ``step_size`` (>= horizon) rows apart, so
windows never overlap; each forecast reads only the rows up to its origin. A series that ends
before the cutoff, or holds too few windows after it, is left out of the evaluation and named
in the notes. No ``local_scaler_type`` (neuralforecast fits those on the whole frame, test
windows included); the model's ``scaler_type`` normalizes each input window by its own rows
only. The model that was scored is the model registered.

torch, pytorch-lightning and neuralforecast are imported inside the functions that need
them, never at import. Nothing is downloaded. Lightning writes nothing to the working
directory: no logger, no checkpoints, ``default_root_dir`` in a temporary directory that
is removed afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from ...errors import InvalidInput
from ..common import EvaluationError, holdout_start
from ..gate import iso
from . import baselines as bl
from . import frames as fr

SCALERS = ("identity", "standard", "robust", "minmax", "minmax1", "invariant", "revin")
SCOPES = ("global", "per_symbol")
DEVICES = ("auto", "cpu", "cuda")
FORMAT = 1
MODEL_DIR, META_FILE = "neuralforecast", "forecaster.json"
Progress = Callable[[dict], None]


class WarmStartError(InvalidInput):
    """Warm start refused: the champion's weights cannot be the starting point of this training."""


@dataclass(frozen=True)
class NHITSConfig:
    """Configuration as data (recorded on every version as ``tp.config`` for a like-for-like refit).

    The defaults are the variant ``benchmarks/nhits_variants.py`` chose on an earlier period of the
    synthetic market, EURUSD hourly and GOOG daily (raw closes, no scaling, learning rate 1e-4, 48 input
    bars); scaled inputs (robust, standard, log returns) chased the noise of each window and did worse.
    None of them beats the naive forecast with support on the final period."""

    horizon: int = 24                                  # bars ahead
    input_size: int = 48                               # bars the model reads before the origin
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)     # MQLoss; must include 0.1, 0.5 and 0.9
    target: str = "level"                              # level | log (scaled prices) | log_return
    scaler_type: str = "identity"                      # per input window (never local_scaler_type)
    hist_exog: tuple[str, ...] = ()                    # feature columns known at the origin (no futr)
    max_steps: int = 300                               # training steps (batches of windows)
    learning_rate: float = 1e-4
    mlp_width: int = 256                               # units of each block's two hidden layers (3 blocks)
    windows_batch_size: int = 256                      # windows per training step
    batch_size: int = 32                               # series per training step
    seed: int = 1
    scope: str = "global"                              # one model per timeframe, or one per symbol
    warm_start: bool = False                           # continue from the champion's weights
    holdout_frac: float = 0.2                          # share of the shortest series held out ...
    min_origins: int = 50                              # ... but at least this many windows in all
    step_size: Optional[int] = None                    # rows between origins (None: horizon); >= horizon
    progress_every: int = 50                           # report training progress every N steps
    device: Optional[str] = None                       # auto | cpu | cuda (None: TP_DEVICE)

    def __post_init__(self):
        object.__setattr__(self, "quantiles", tuple(sorted(float(q) for q in self.quantiles)))
        object.__setattr__(self, "hist_exog", tuple(self.hist_exog))

        def bad(name, why):
            raise InvalidInput(f"nhits.{name}: {getattr(self, name)!r} {why}", field=f"nhits.{name}")

        for name in ("horizon", "input_size", "max_steps", "mlp_width", "windows_batch_size", "batch_size",
                     "min_origins", "progress_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        if not all(0 < q < 1 for q in self.quantiles) or not {0.1, 0.5, 0.9} <= set(self.quantiles):
            bad("quantiles", "must be levels in (0, 1) including 0.1, 0.5 and 0.9")
        if self.target not in fr.TARGETS:
            bad("target", f"is not one of {', '.join(fr.TARGETS)}")
        if self.scaler_type not in SCALERS:
            bad("scaler_type", f"is not one of {', '.join(SCALERS)}")
        if self.scope not in SCOPES:
            bad("scope", f"is not one of {', '.join(SCOPES)}")
        if not 0 < self.holdout_frac < 1:
            bad("holdout_frac", "must be between 0 and 1")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            bad("learning_rate", "must be a positive finite number")
        if self.step_size is not None and self.step_size < self.horizon:
            bad("step_size", f"must be at least the horizon ({self.horizon}): origins closer than that score "
                             "overlapping windows")
        if self.device is not None and self.device not in DEVICES:
            bad("device", f"is not one of {', '.join(DEVICES)}")

    @property
    def step(self) -> int:
        return self.step_size or self.horizon

    def target_definition(self, timeframe: str) -> str:
        """The label definition of the lineage: what is forecast, not how."""
        return f"nhits: close over the next {self.horizon} bars ({timeframe}), quantile forecasts"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quantiles"], d["hist_exog"] = list(self.quantiles), list(self.hist_exog)
        return d

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "NHITSConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInput(f"nhits: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                               field=f"nhits.{unknown[0]}")
        return cls(**d)

    def architecture(self) -> dict:
        """What the weights' shapes and meaning depend on (warm start needs them equal)."""
        return {k: getattr(self, k) for k in ("horizon", "input_size", "quantiles", "target", "scaler_type",
                                              "hist_exog", "mlp_width")}


# ---- runtime: device, quiet Lightning, progress ---------------------------------------------------
def resolve_device(setting: str | None = None) -> str:
    """``cpu`` or ``cuda`` from the setting or ``TP_DEVICE`` (default ``auto``: CUDA when torch sees a GPU,
    an NVIDIA desktop card or a Jetson alike)."""
    import torch

    value = (setting or os.environ.get("TP_DEVICE") or "auto").strip().lower()
    if value not in DEVICES:
        raise InvalidInput(f"TP_DEVICE={value!r} is not one of {', '.join(DEVICES)}", field="TP_DEVICE")
    if value == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("TP_DEVICE=cuda but torch sees no CUDA device (torch.cuda.is_available() is False)",
                           field="TP_DEVICE")
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return value


def _runtime_kwargs(device: str, root: str) -> dict:
    return {"accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1, "logger": False,
            "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
            "default_root_dir": root}


_LOUD = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
_NOISE = (".*does not have many workers.*", ".*smaller than the logging interval.*",
          ".*val_check_steps is greater than max_steps.*", ".*removed from hparams because it cannot be pickled.*",
          ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*", ".*Ignoring runtime settings.*",
          ".*Dropping hyperparameters.*")


@contextmanager
def _quiet():
    """Lightning's start-up chatter (seed, accelerator) and known-harmless warnings off; others pass."""
    saved = {n: logging.getLogger(n).level for n in _LOUD}
    try:
        for n in _LOUD:
            logging.getLogger(n).setLevel(logging.WARNING)
        with warnings.catch_warnings():
            for pattern in _NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


@contextmanager
def _runtime(models: list, device: str):
    """Lightning on the device, quiet, writing nothing outside a temporary directory removed on exit."""
    root = tempfile.mkdtemp(prefix="tp-nhits-")
    try:
        for m in models:
            m.trainer_kwargs.update(_runtime_kwargs(device, root))
        with _quiet():
            yield
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _progress_callback(progress: Progress, every: int):
    import pytorch_lightning as pl

    class TrainingProgress(pl.Callback):
        """Calls ``progress({"step", "max_steps", "epoch", "loss"})`` every ``every`` steps and at the end."""

        def on_train_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = int(trainer.global_step)
            if step % every and step < trainer.max_steps:
                return
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            progress({"step": step, "max_steps": int(trainer.max_steps), "epoch": int(trainer.current_epoch),
                      "loss": float(loss), "elapsed_s": round(time.perf_counter() - self.t0, 3)})

    return TrainingProgress()


def progress_text(p: dict) -> str:
    """One log line for a progress event."""
    return (f"nhits training step {p['step']}/{p['max_steps']} (epoch {p['epoch']}): loss {p['loss']:.5g}, "
            f"{p['elapsed_s']:.1f} s")


def _model(cfg: NHITSConfig, progress: Progress | None = None):
    from neuralforecast.losses.pytorch import MQLoss
    from neuralforecast.models import NHITS

    callbacks = [_progress_callback(progress, cfg.progress_every)] if progress else []
    with _quiet():
        return NHITS(h=cfg.horizon, input_size=cfg.input_size, loss=MQLoss(quantiles=list(cfg.quantiles)),
                     hist_exog_list=list(cfg.hist_exog) or None, scaler_type=cfg.scaler_type,
                     max_steps=cfg.max_steps, val_check_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
                     mlp_units=3 * [[cfg.mlp_width, cfg.mlp_width]], windows_batch_size=cfg.windows_batch_size,
                     inference_windows_batch_size=1024, batch_size=cfg.batch_size, random_seed=cfg.seed,
                     callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False)


def _output_columns(model) -> list[str]:
    return [f"{model}{n}" for n in model.loss.output_names]


# ---- the trained forecaster -------------------------------------------------------------------------
@dataclass
class Forecasts:
    """Forecast rows for the ``forecasts`` table, and the symbols that got none (with the reason)."""

    rows: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)


def rows_frame(rows: list[dict], quantiles) -> "Any":
    """Forecast rows as a frame: one column per quantile level (``q0.1``...) instead of the dict."""
    import pandas as pd

    out = pd.DataFrame([{k: v for k, v in r.items() if k != "quantiles"} for r in rows])
    for level in quantiles:
        out[f"q{level:g}"] = [r["quantiles"][f"{level:g}"] for r in rows]
    return out


class Forecaster:
    """A trained NHITS model with its configuration, timeframe and training window.

    ``window`` holds the times (UTC µs) the gate and warm start need: ``train_start``,
    ``train_data_end`` (the last row any training window read), ``holdout_start`` (the first
    scored row), ``holdout_end``, and ``warm_start_from`` (a champion version, or None)."""

    def __init__(self, nf, cfg: NHITSConfig, timeframe: str, window: dict, device: str | None = None,
                 version: str | None = None):
        self.nf, self.cfg, self.timeframe, self.window = nf, cfg, timeframe, dict(window)
        self.device = device
        self.version = version  # the registered version, when the caller knows it

    @property
    def model(self):
        return self.nf.models[0]

    @property
    def train_data_end_us(self) -> Optional[int]:
        return self.window.get("train_data_end")

    @property
    def rows_needed(self) -> int:
        """The latest rows of a series a forecast reads (a log-return target also reads the close before)."""
        return self.cfg.input_size + (self.cfg.target == "log_return")

    def forecast(self, data: Any, origins: Mapping[str, Any] | None = None) -> Forecasts:
        """Forecasts at the latest origin of each series in ``data``, or at each of ``origins``
        (symbol -> origin times, the open times of candles in ``data``), in one batched call: rows
        ``(symbol, timeframe, origin_ts, step, median, quantiles)``. ``origin_ts`` is the open time of the
        last candle read (the forecast exists from its close on); step k is the k-th next candle the
        market prints, whatever the clock says then; ``quantiles`` maps each level ("0.1") to a price.
        A forecast at an origin reads only the rows up to it."""
        import pandas as pd

        cfg = self.cfg
        at, skipped = [], {}
        for s in fr.prepare(data, cfg.target, cfg.hist_exog):
            if origins is None:
                ends = [len(s)]
            else:
                wanted = fr.ts_us(pd.Series(list(origins.get(s.symbol, []))))
                pos = np.searchsorted(s.ts_us, wanted)
                ends = [int(p) + 1 for p, w in zip(pos, wanted) if p < len(s) and s.ts_us[p] == w]
            for end in ends:
                if end < cfg.input_size:
                    skipped[s.symbol] = f"{end} usable rows before the origin, the model reads {cfg.input_size}"
                    continue
                at.append((s, end - 1))
        prices = self.predict_at(at)
        rows = []
        for (s, row), p in zip(at, prices):
            origin = pd.Timestamp(int(s.ts_us[row]) * 1000, tz="UTC").to_pydatetime()
            for k in range(cfg.horizon):
                q = {f"{lvl:g}": float(p[k, j]) for j, lvl in enumerate(cfg.quantiles)}
                rows.append({"symbol": s.symbol, "timeframe": self.timeframe, "origin_ts": origin, "step": k + 1,
                             "median": q["0.5"], "quantiles": q})
        return Forecasts(rows, skipped)

    def predict_at(self, at: list[tuple[fr.Series, int]]) -> np.ndarray:
        """Forecasts in prices, ``(len(at), horizon, quantiles)`` sorted along the last axis, at each
        ``(series, origin row)``, in one batched call: the model reads the ``input_size`` rows up to the
        origin and nothing after it (the caller checks that the series has them)."""
        cfg = self.cfg
        if not at:
            return np.empty((0, cfg.horizon, len(cfg.quantiles)))
        inputs = []
        for i, (s, row) in enumerate(at):
            cut = slice(row + 1 - cfg.input_size, row + 1)
            inputs.append(fr.Series(str(i), s.ts_us[cut], s.close[cut], s.y[cut], s.exog[cut], 0))
        with _runtime(self.nf.models, resolve_device(self.device or cfg.device)):
            pred = self.nf.predict(df=fr.long_frame(inputs, cfg.hist_exog))
        pred = pred.sort_values(["unique_id", "ds"])
        cols = _output_columns(self.model)
        out = np.empty((len(at), cfg.horizon, len(cols)))
        ids = pred["unique_id"].to_numpy()[:: cfg.horizon].astype(int)
        out[ids] = pred[cols].to_numpy(dtype="float64").reshape(len(ids), cfg.horizon, len(cols))
        return fr.to_prices(out, cfg.quantiles, np.array([s.close[row] for s, row in at]), cfg.target)

    # ---- save / load -------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """The model directory: neuralforecast's safetensors weights and JSON configuration (no pickle,
        no training data) plus ``forecaster.json`` (configuration, timeframe, training window)."""
        import neuralforecast

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with _quiet():
            self.nf.save(str(path / MODEL_DIR), save_dataset=False, overwrite=True)
        meta = {"format": FORMAT, "family": "nhits", "timeframe": self.timeframe, "config": self.cfg.to_dict(),
                "window": self.window, "neuralforecast": neuralforecast.__version__}
        (path / META_FILE).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path, device: str | None = None) -> "Forecaster":
        """A saved forecaster on ``device`` (default: the configuration's, else ``TP_DEVICE``)."""
        from neuralforecast import NeuralForecast

        path = Path(path)
        if not (path / META_FILE).exists():
            raise FileNotFoundError(f"{path} is not a saved NHITS forecaster (no {META_FILE})")
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: forecaster format {meta.get('format')!r}, this code reads {FORMAT}")
        cfg = NHITSConfig.from_dict(meta["config"])
        dev = resolve_device(device or cfg.device)
        with _quiet():  # the runtime settings stored with the weights are set again on each call
            nf = NeuralForecast.load(str(path / MODEL_DIR), map_location="cuda" if dev == "cuda" else "cpu")
        return cls(nf, cfg, meta["timeframe"], meta["window"], device=device)


# ---- evaluation: one common cutoff ----------------------------------------------------------------------
@dataclass
class Plan:
    """Where the evaluation holds out: one cutoff for every series. The model trains on every series' rows
    before it (``train``: the series with at least one training window there) and is scored on the kept
    series' windows whose origins are their candles at or after it (``origins``: rows, ``step`` apart)."""

    cutoff_us: int
    series: list[fr.Series]              # the series scored (whole), in symbol order
    origins: dict[str, np.ndarray]       # symbol -> origin rows, at or after the cutoff
    train: list[fr.Series]               # every series cut at the cutoff (rows strictly before it)
    left_out: dict[str, str]             # symbol -> why it is not scored
    min_windows: int                     # the windows a scored series needs: its share of min_origins

    @property
    def origin_count(self) -> int:
        return int(sum(len(o) for o in self.origins.values()))

    def notes(self) -> list[str]:
        trained = sorted(s.symbol for s in self.train)
        out = [f"one cutoff for every series, {iso(self.cutoff_us)}: trained on the rows before it "
               f"({', '.join(trained)}), scored on windows from it on ({', '.join(self.origins)})"]
        for symbol, why in self.left_out.items():
            also = "; its rows before the cutoff were trained on" if symbol in trained else ""
            out.append(f"{symbol} left out of the evaluation: {why}{also}")
        return out


def _after(s: fr.Series, cutoff_us, cfg: NHITSConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows before the cutoff, windows from it on) of one series, for a cutoff or an array of them: the
    origins are its candles at or after the cutoff, ``step`` rows apart, each with ``horizon`` rows after it."""
    before = np.searchsorted(s.ts_us, cutoff_us, side="left")
    last = len(s) - 1 - cfg.horizon
    return before, np.where(before <= last, (last - before) // cfg.step + 1, 0)


def _latest_cutoff(series: list[fr.Series], cfg: NHITSConfig, need: int, min_windows: int) -> tuple[int, bool]:
    """The latest candle time that holds out at least ``holdout_frac`` of the time range (the pump task's
    boundary) and leaves ``min_origins`` windows, counting only the series with ``need`` rows before it and
    ``min_windows`` after it; (cutoff, True). None does: (the one that leaves the most windows, False)."""
    ts = np.unique(np.concatenate([s.ts_us for s in series]))
    candidates = ts[ts <= holdout_start(ts, cfg.holdout_frac)]
    total = np.zeros(len(candidates), dtype=np.int64)
    for s in series:
        before, n = _after(s, candidates, cfg)
        total += np.where((before >= need) & (n >= min_windows), n, 0)
    ok = np.flatnonzero(total >= cfg.min_origins)
    if len(ok):
        return int(candidates[ok[-1]]), True
    return int(candidates[np.flatnonzero(total == total.max())[-1]]), False


def plan_windows(series: list[fr.Series], cfg: NHITSConfig, *, n_windows: int | None = None,
                 cutoff_us: int | None = None) -> Plan:
    """One cutoff for every series, and what it scores. The cutoff is the latest candle time that holds out at
    least ``holdout_frac`` of the time range and leaves ``min_origins`` windows (``cutoff_us`` fixes it;
    ``n_windows`` puts it that many windows before the end of the series that ends last). A series is left
    out of the evaluation, with a note, when it ends before the cutoff, has fewer than ``input_size + horizon``
    rows before it (one training window), or fewer windows after it than its share of ``min_origins``.
    EvaluationError (before anything is trained), naming the series left out and why, when the series kept
    hold fewer than ``min_origins`` windows."""
    empty = {s.symbol: "no usable rows" for s in series if not len(s)}
    series = [s for s in series if len(s)]
    if not series:
        raise EvaluationError("no series to train on" + "".join(f"; {s} left out: {why}" for s, why in empty.items()))
    need = cfg.input_size + cfg.horizon
    share = -(-cfg.min_origins // (len(series) + len(empty)))
    found = True
    if cutoff_us is not None:
        cutoff = int(cutoff_us)
    elif n_windows is not None:
        last = max(series, key=lambda s: (int(s.ts_us[-1]), len(s)))
        cutoff = int(last.ts_us[max(0, len(last) - 1 - cfg.horizon - cfg.step * (n_windows - 1))])
    else:
        cutoff, found = _latest_cutoff(series, cfg, need, share)
    scored, origins, train, left = [], {}, [], dict(empty)
    for s in sorted(series, key=lambda s: s.symbol):
        before, n = (int(x) for x in _after(s, cutoff, cfg))
        if before >= need:
            train.append(s.head(before))
        if s.ts_us[-1] < cutoff:
            left[s.symbol] = f"its last candle ({iso(int(s.ts_us[-1]))}) is before the cutoff"
        elif before < need:
            left[s.symbol] = (f"{before} rows before the cutoff, {need} needed to train on (input_size "
                              f"{cfg.input_size} + horizon {cfg.horizon})")
        elif n < share:
            left[s.symbol] = (f"{n} windows after the cutoff (its last candle {iso(int(s.ts_us[-1]))}), {share} "
                              f"needed (its share of nhits.min_origins={cfg.min_origins})")
        else:
            scored.append(s)
            origins[s.symbol] = before + cfg.step * np.arange(n, dtype=np.int64)
    plan = Plan(cutoff, scored, origins, train, left, share)
    if plan.origin_count < cfg.min_origins:
        kept = ", ".join(f"{s} {len(o)}" for s, o in origins.items()) or "no series"
        where = (f"the cutoff {iso(cutoff)} leaves" if found else
                 f"no common cutoff leaves {cfg.min_origins}; the one that leaves the most, {iso(cutoff)}, leaves")
        raise EvaluationError(f"{where} {plan.origin_count} windows ({kept}); the gate needs nhits.min_origins="
                              f"{cfg.min_origins}: " + "; ".join(f"{s} left out: {why}" for s, why in left.items())
                              + ". Load more history or more symbols, or lower nhits.min_origins")
    return plan


@dataclass
class Evaluation:
    """A trained forecaster and its scores on the held-out windows."""

    forecaster: Forecaster
    windows: bl.Windows
    metrics: dict
    per_series: dict
    cutoff_us: int                 # the common cutoff: trained before it, scored from it on, in every series
    windows_per_series: dict       # symbol -> windows scored
    block_len: int                 # bootstrap block, in origins
    series: list                   # the frames.Series it was scored on
    left_out: dict = field(default_factory=dict)   # symbol -> why it was not scored
    notes: list[str] = field(default_factory=list)

    @property
    def n_windows(self) -> int:
        """The most windows of one series (a series with another calendar, or that ends earlier, has fewer)."""
        return max(self.windows_per_series.values())

    def window_tags(self) -> dict[str, str]:
        """``tp.train_start`` ... ``tp.holdout_end`` as the other families record them (``tp.holdout_start``:
        the common cutoff)."""
        w = self.forecaster.window
        return {f"tp.{k}": iso(w.get(k)) for k in ("train_start", "train_end", "train_data_end", "holdout_start",
                                                   "holdout_end")}

    def cutoff_tags(self, limit: int = 4000) -> dict[str, str]:
        """``tp.cutoff`` and ``tp.series_left_out`` (each series not scored, and why; "none"), for the run
        and the version."""
        left = "; ".join(f"{s}: {why}" for s, why in self.left_out.items()) or "none"
        return {"tp.cutoff": iso(self.cutoff_us),
                "tp.series_left_out": left if len(left) <= limit else left[: limit - 1] + "…"}


def evaluate(data: Any, cfg: NHITSConfig, *, timeframe: str, markets: Mapping[str, Any],
             progress: Progress | None = None, warm_from: Forecaster | None = None,
             n_windows: int | None = None, cutoff_us: int | None = None) -> Evaluation:
    """Hold every series out from one common cutoff (``plan_windows``): train on the rows before it, in every
    series, and score the kept series' windows from it on, each forecast reading only the rows up to its origin.

    ``markets`` maps each symbol to its category (or (category, exchange), or a SymbolInfo): the
    seasonal-naive season in rows comes from its calendar. ``warm_from`` starts from a champion's weights
    (refused unless its training data ended before the cutoff). ``cutoff_us`` fixes the cutoff (to score a
    champion's configuration on a version's training rows and windows); ``n_windows`` puts it that many
    windows before the end of the series that ends last."""
    from neuralforecast import NeuralForecast

    plan = plan_windows(fr.prepare(data, cfg.target, cfg.hist_exog), cfg, n_windows=n_windows, cutoff_us=cutoff_us)
    end = int(max(s.ts_us[-1] for s in plan.train))
    window = {"train_start": int(min(s.ts_us[0] for s in plan.train)), "train_end": end, "train_data_end": end,
              "holdout_start": plan.cutoff_us, "holdout_end": int(max(s.ts_us[-1] for s in plan.series)),
              "warm_start_from": None}
    model = _model(cfg, progress)
    if warm_from is not None:
        check_warm_start(warm_from, cfg, plan.cutoff_us)
        model.load_state_dict(warm_from.model.state_dict())
        window["warm_start_from"] = warm_from.version or "champion"
    nf = NeuralForecast(models=[model], freq=1)
    t0 = time.perf_counter()
    with _runtime(nf.models, resolve_device(cfg.device)):
        nf.fit(df=fr.long_frame(plan.train, cfg.hist_exog), val_size=0)
    train_s = time.perf_counter() - t0
    forecaster = Forecaster(nf, cfg, timeframe, window)
    seasons = {s.symbol: fr.season_rows(timeframe, *fr.market_of(_market(markets, s.symbol))) for s in plan.series}
    w = _windows(forecaster, plan, seasons)
    metrics, per = bl.scores(w)
    per_series = {s: len(o) for s, o in plan.origins.items()}
    metrics.update({"train_s": train_s, "windows_per_series": max(per_series.values()),
                    "train_rows": int(sum(len(s) for s in plan.train)), "series_left_out": len(plan.left_out)})
    return Evaluation(forecaster, w, metrics, per, plan.cutoff_us, per_series,
                      bl.block_len(cfg.input_size, cfg.horizon, cfg.step), plan.series, plan.left_out, plan.notes())


def _market(markets: Mapping[str, Any], symbol: str):
    if symbol not in markets:
        raise InvalidInput(f"no market (category, exchange) given for {symbol}: the seasonal-naive season needs it",
                           field="markets")
    return markets[symbol]


def _windows(forecaster: Forecaster, plan: Plan, seasons: dict) -> bl.Windows:
    """The plan's windows, one row per (series, origin), in prices, with the naive forecasts."""
    h = forecaster.cfg.horizon
    at = [(s, int(r)) for s in plan.series for r in plan.origins[s.symbol]]
    forecast = forecaster.predict_at(at)
    parts = {"actual": [], "naive": [], "seasonal": []}
    for s in plan.series:
        rows = plan.origins[s.symbol]
        parts["actual"].append(bl.actuals(s.close, rows, h))
        parts["naive"].append(bl.naive(s.close, rows, h))
        parts["seasonal"].append(bl.seasonal_naive(s.close, rows, h, seasons[s.symbol]))
    rows = np.array([r for _, r in at], dtype=np.int64)
    return bl.Windows(np.array([s.symbol for s, _ in at]), np.array([s.ts_us[r] for s, r in at], dtype=np.int64),
                      rows, forecaster.cfg.quantiles, forecast,
                      *(np.concatenate(parts[k]) for k in ("actual", "naive", "seasonal")), season=seasons)


# ---- warm start ----------------------------------------------------------------------------------------
def check_warm_start(champion: Forecaster, cfg: NHITSConfig, cutoff_us: int) -> None:
    """Refuse a warm start the gate could not trust (the champion trained on rows at or after the cutoff), or
    that the weights cannot take."""
    end = champion.train_data_end_us
    if end is None:
        raise WarmStartError("warm start refused: the champion records no training data end, so its weights may "
                             "have seen this holdout; train from scratch (nhits.warm_start=false)",
                             field="nhits.warm_start")
    if end >= cutoff_us:
        raise WarmStartError(f"warm start refused: the champion trained on rows up to {iso(end)}, at or after this "
                             f"version's holdout start (the common cutoff) {iso(cutoff_us)}; its weights have seen "
                             "rows the gate would score. Train from scratch (nhits.warm_start=false) or wait until "
                             "the cutoff is after the champion's training end", field="nhits.warm_start")
    theirs, ours = champion.cfg.architecture(), cfg.architecture()
    diff = [k for k in ours if theirs[k] != ours[k]]
    if diff:
        raise WarmStartError("warm start refused: the champion's " + ", ".join(
            f"{k}={theirs[k]!r}" for k in diff) + " differ from this configuration's " + ", ".join(
            f"{k}={ours[k]!r}" for k in diff) + "; train from scratch", field="nhits.warm_start")


# ---- the champion on the same windows ----------------------------------------------------------------------
def errors_on(champion: Forecaster, data: Any, ev: Evaluation) -> np.ndarray:
    """The fitted champion's per-window MAE on ``ev``'s windows (the same origins, after the same cutoff), with
    its own weights and inputs (NaN where it has no forecast: a series or an origin it cannot read)."""
    cfg = champion.cfg
    out = np.full(len(ev.windows), np.nan)
    if cfg.horizon != ev.forecaster.cfg.horizon:
        return out
    by = {s.symbol: s for s in fr.prepare(data, cfg.target, cfg.hist_exog)}
    at, idx = [], []
    for i, (symbol, t) in enumerate(zip(ev.windows.symbol, ev.windows.origin_ts_us)):
        s = by.get(str(symbol))
        row = -1 if s is None else int(np.searchsorted(s.ts_us, t))
        if s is not None and row < len(s) and s.ts_us[row] == t and row + 1 >= cfg.input_size:
            at.append((s, row))
            idx.append(i)
    if at:
        median = champion.predict_at(at)[:, :, cfg.quantiles.index(0.5)]
        out[idx] = bl.window_mae(median, ev.windows.actual[idx])
    return out


def _align(target: bl.Windows, other: bl.Windows) -> np.ndarray:
    """``other``'s per-window MAE on ``target``'s windows, matched by (symbol, origin time)."""
    ae = bl.window_mae(other.median, other.actual)
    idx = {(s, int(t)): a for s, t, a in zip(other.symbol, other.origin_ts_us, ae)}
    return np.array([idx.get((s, int(t)), np.nan) for s, t in zip(target.symbol, target.origin_ts_us)])


def champion_for_gate(version: str, data_end_us: int | None, data: Any, ev: Evaluation, *,
                      model: Forecaster | None, config: NHITSConfig | dict | None, markets: Mapping[str, Any],
                      progress: Progress | None = None, new_config: NHITSConfig | None = None) -> bl.ForecastChampion:
    """The current champion as ``baselines.gate`` takes it: its fitted weights scored on ``ev``'s windows
    (``model``), and its recorded configuration refit on ``ev``'s training rows (every series before ``ev``'s
    cutoff) and scored on the same windows (``config``), whichever the gate needs."""
    cfg = NHITSConfig.from_dict(config) if isinstance(config, Mapping) else config

    def refit() -> np.ndarray:
        # the same cutoff, and every series with a window after it scored: its own min_origins does not apply
        other = evaluate(data, replace(cfg, min_origins=1), timeframe=ev.forecaster.timeframe, markets=markets,
                         progress=progress, cutoff_us=ev.cutoff_us)
        return _align(ev.windows, other.windows)

    errors = (lambda: errors_on(model, data, ev)) if model is not None else (lambda: np.full(len(ev.windows), np.nan))
    same = cfg is not None and new_config is not None and cfg.to_dict() == new_config.to_dict()
    return bl.ForecastChampion(version, data_end_us, errors, refit if cfg is not None else None, same)


# ---- the whole path for the asset ---------------------------------------------------------------------------
@dataclass
class Trained:
    evaluation: Evaluation
    decision: Any                  # gate.GateDecision
    metrics: dict

    @property
    def forecaster(self) -> Forecaster:
        return self.evaluation.forecaster


@dataclass
class NHITSChampion:
    """The registered champion, as the asset finds it: version, ``tp.train_data_end``, the loaded model
    (None if it cannot be loaded) and its recorded configuration (None if not recorded)."""

    version: str
    data_end_us: Optional[int]
    model: Optional[Forecaster] = None
    config: Optional[dict] = None


def train_and_gate(data: Any, cfg: NHITSConfig, *, timeframe: str, markets: Mapping[str, Any],
                   champion: NHITSChampion | None = None, policy=None, progress: Progress | None = None) -> Trained:
    """Everything between the stored features and the registry: one cutoff and its windows (EvaluationError
    before anything is trained when there are too few), training (warm from the champion when configured and
    allowed), scores against the naive forecasts, and the gate against the better naive forecast and the
    champion, scored on the same windows after the same cutoff."""
    policy = policy or bl.gate_policy()  # built (and so checked) before anything is trained
    warm = None
    if cfg.warm_start:
        if champion is None or champion.model is None:
            raise WarmStartError("warm start refused: there is no loadable champion to start from; set "
                                 "nhits.warm_start=false for a first version", field="nhits.warm_start")
        warm = champion.model
        warm.version = warm.version or champion.version
    ev = evaluate(data, cfg, timeframe=timeframe, markets=markets, progress=progress, warm_from=warm)
    champ = None
    if champion is not None:
        champ = champion_for_gate(champion.version, champion.data_end_us, data, ev, model=champion.model,
                                  config=champion.config, markets=markets, progress=progress, new_config=cfg)
    decision = bl.gate(ev.windows, ev.block_len, policy, champ)
    metrics = dict(ev.metrics)
    metrics.update(decision.metrics())
    return Trained(ev, decision, metrics)

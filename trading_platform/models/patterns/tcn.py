"""The TCN chart-pattern classifier: dilated causal 1-D convolutions in residual blocks,
17 class probabilities per window (``CLASSES``: the 16 patterns and "none").

Input: a window of candles, normalized and resampled to ``length`` bars (``windows.py``).
Each residual block is two causal convolutions (left padding only, so a step sees only the
steps before it) with the same dilation, batch norm, ReLU and dropout, plus a 1x1 skip when
the width changes; dilations double per block, so with kernel 3 and dilations 1..16 the
last step's receptive field is 125 steps, more than the 64-step input. The head reads the
last step (which has seen everything) and the mean over steps.

The default configuration (64 steps, 32 channels, 5 blocks, 30k parameters, 20,000
generated windows, 10 epochs) was chosen on a development set drawn like the frozen one
from another seed stream (``generator.DEV_STREAM``), never on the frozen set. Training uses
one CPU thread by default: the network is small, and on a shared 2-core machine two threads
fighting other work for the cores trained five times slower than one.

Training: generated windows (``generator.training_set``: every pattern and "none", lengths,
shares, noise and scale drawn from ranges that cover the frozen set's) plus windows of real
history labelled by the rule labeler, when given. The device comes from ``TP_DEVICE``
(``auto``: CUDA when torch sees it). Seeds fix everything: the same configuration and data
give the same weights on the same machine.

This module imports torch: the platform imports it only where it trains or serves.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import InvalidInput
from ..common import check_int, check_number
from . import CLASS_INDEX, CLASSES, NONE
from . import generator as gen
from . import windows as win
from .labeler import label as rule_label

FORMAT = 1  # the saved layout's version (config.json "format")
Progress = Callable[[int, float], None]  # (epoch, mean training loss)


@dataclass
class TCNConfig:
    # the network (saved with the weights)
    length: int = 64                       # bars every window is resampled to
    channels: int = 32
    kernel: int = 3
    dilations: tuple = (1, 2, 4, 8, 16)
    dropout: float = 0.1
    # training
    n_synthetic: int = 20000               # generated windows
    none_share: float = 0.25               # of the generated windows
    window_bars: tuple = (64, 256)         # generated window lengths (uniform)
    share: tuple = (0.5, 1.0)              # the pattern's share of the window (uniform)
    noise: tuple = (0.0, 0.35)             # residual std / amplitude (uniform)
    real_stride: int = 8                   # labelled history: a window ends every real_stride bars
    real_min_score: float = 0.6            # a labeler detection below this score is not used
    real_weight: float = 1.0               # loss weight of a labelled-history window
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    seed: int = 0
    threads: int = 1                       # torch CPU threads while training (0: torch's default)

    def __post_init__(self):
        """Every value checked before anything is generated or trained; InvalidInput names the field (the
        ``pattern_tcn`` asset's config field where it has one)."""
        for name in ("dilations", "window_bars", "share", "noise"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise InvalidInput(f"tcn {name}: {value!r} must be a list of numbers", field=name)
            setattr(self, name, tuple(value))
        check_int("tcn", "length", self.length, 16)
        for name in ("channels", "kernel", "real_stride", "epochs"):  # 0 epochs registers an untrained network
            check_int("tcn", name, getattr(self, name))
        check_int("tcn", "batch_size", self.batch_size, 2)  # batch norm needs two windows
        check_int("tcn", "n_synthetic", self.n_synthetic, 2)  # 0 (or 1: no batch of two) trains nothing
        check_int("tcn", "seed", self.seed, 0)
        check_int("tcn", "threads", self.threads, 0)
        if not self.dilations:
            raise InvalidInput("tcn dilations: () must hold at least one dilation", field="dilations")
        for d in self.dilations:
            check_int("tcn", "dilations", d)
        for name, lo, hi in (("window_bars", 16, None), ("share", 0, 1), ("noise", 0, None)):
            value = getattr(self, name)
            if len(value) != 2 or not value[0] <= value[1]:
                raise InvalidInput(f"tcn {name}: {value!r} must be a (low, high) range", field=name)
            for v in value:
                if name == "window_bars":
                    check_int("tcn", name, v, lo)
                else:
                    check_number("tcn", name, v, lo, hi, low_open=name == "share")
        self.dilations = tuple(int(d) for d in self.dilations)
        self.window_bars = tuple(int(b) for b in self.window_bars)
        check_number("tcn", "lr", self.lr, 0, 1, low_open=True)
        check_number("tcn", "dropout", self.dropout, 0, 1, high_open=True)
        check_number("tcn", "none_share", self.none_share, 0, 1)
        check_number("tcn", "real_min_score", self.real_min_score, 0, 1)
        check_number("tcn", "real_weight", self.real_weight, 0)
        check_number("tcn", "weight_decay", self.weight_decay, 0)
        check_number("tcn", "label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        if self.receptive_field() < self.length:
            raise InvalidInput(f"the receptive field ({self.receptive_field()} steps) does not cover length "
                               f"{self.length}: add dilations or widen the kernel", field="length")

    def receptive_field(self) -> int:
        return 1 + 2 * (self.kernel - 1) * sum(self.dilations)

    def network(self) -> dict:
        return {k: getattr(self, k) for k in ("length", "channels", "kernel", "dilations", "dropout")}

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> TCNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TCN config field(s): {', '.join(unknown)}")
        return cls(**dict(d))


def resolve_device(setting: str | None = None) -> str:
    """``TP_DEVICE`` (or ``setting``): cpu, cuda, or auto (CUDA when torch sees a GPU)."""
    value = (setting or os.environ.get("TP_DEVICE") or "auto").strip().lower()
    if value not in ("auto", "cpu", "cuda"):
        raise ValueError(f"TP_DEVICE={value!r} is not one of auto, cpu, cuda")
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cuda" and not torch.cuda.is_available():
        raise ValueError("TP_DEVICE='cuda' but torch sees no CUDA device")
    return value


# ---- the network ------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, dilation=dilation)
        self.norm1, self.norm2 = nn.BatchNorm1d(c_out), nn.BatchNorm1d(c_out)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.drop(torch.relu(self.norm1(self.conv1(nn.functional.pad(x, (self.pad, 0))))))
        h = self.drop(torch.relu(self.norm2(self.conv2(nn.functional.pad(h, (self.pad, 0))))))
        return torch.relu(h + self.skip(x))


class PatternTCN(nn.Module):
    """Logits for CLASSES from (batch, 4, length) inputs; ``predict_proba`` takes candles."""

    def __init__(self, config: TCNConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.blocks = nn.Sequential(*[_Block(len(win.CHANNELS) if i == 0 else c, c, config.kernel, d, config.dropout)
                                      for i, d in enumerate(config.dilations)])
        self.head = nn.Linear(2 * c, len(CLASSES))

    @property
    def classes(self) -> tuple:
        return CLASSES

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x):
        h = self.blocks(x)
        return self.head(torch.cat([h[:, :, -1], h.mean(dim=2)], dim=1))

    @torch.no_grad()
    def predict_features(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(n, 4, length) inputs -> (n, 17) probabilities (float64, rows sum to 1)."""
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(X), batch_size):
            xb = torch.as_tensor(X[i:i + batch_size], device=self.device)
            out.append(torch.softmax(self(xb).double(), dim=1).cpu().numpy())
        self.train(was)
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))

    def predict_proba(self, windows: Sequence[np.ndarray], batch_size: int = 1024) -> np.ndarray:
        """OHLC windows (each (bars, 4), any length) -> (n, 17) probabilities."""
        return self.predict_features(win.batch(windows, self.config.length), batch_size)


# ---- data -----------------------------------------------------------------------------------
def history_windows(series: Mapping[str, np.ndarray], config: TCNConfig) -> tuple[list[np.ndarray], list[str]]:
    """Windows of real history labelled by the rule labeler: one ending every ``real_stride``
    bars, its length drawn from ``window_bars`` (seeded); detections scoring below
    ``real_min_score`` are dropped (neither a pattern nor a sure "none")."""
    rng = gen.rng_for(gen.TRAIN_STREAM, config.seed, 1 << 30)
    out, labels = [], []
    lo, hi = config.window_bars
    for name in sorted(series):
        ohlc = np.asarray(series[name], dtype=np.float64)
        for end in range(lo, len(ohlc) + 1, config.real_stride):
            n = min(int(rng.integers(lo, hi + 1)), end)
            w = ohlc[end - n:end]
            found = rule_label(w)
            if found.pattern != NONE and found.score < config.real_min_score:
                continue
            out.append(w), labels.append(found.pattern)
    return out, labels


def _dataset(config: TCNConfig, history: Mapping[str, np.ndarray] | None):
    synth = gen.training_set(config.n_synthetic, config.seed, none_share=config.none_share,
                             length=config.window_bars, share=config.share, noise=config.noise)
    wins = [w.ohlc for w in synth]
    labels = [w.label for w in synth]
    weights = [1.0] * len(wins)
    real_counts: dict[str, int] = {}
    if history:
        hw, hl = history_windows(history, config)
        wins += hw
        labels += hl
        weights += [config.real_weight] * len(hw)
        for lab in hl:
            real_counts[lab] = real_counts.get(lab, 0) + 1
    X = win.batch(wins, config.length)
    y = np.array([CLASS_INDEX[lab] for lab in labels], dtype=np.int64)
    return X, y, np.asarray(weights, dtype=np.float32), real_counts


# ---- training -------------------------------------------------------------------------------
def train(config: TCNConfig | None = None, *, history: Mapping[str, np.ndarray] | None = None,
          progress: Progress | None = None, device: str | None = None) -> tuple[PatternTCN, dict]:
    """Train on generated windows plus labelled ``history`` (name -> (bars, 4) OHLC array), if
    given. Returns the model (eval mode) and what a run should log: data counts, seconds,
    the loss per epoch."""
    config = config or TCNConfig()
    device = resolve_device(device)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, history, progress, device)
    finally:
        torch.set_num_threads(threads)


def _train(config: TCNConfig, history, progress, device) -> tuple[PatternTCN, dict]:
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    X, y, w, real_counts = _dataset(config, history)
    data_s = time.perf_counter() - t0
    model = PatternTCN(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * int(np.ceil(len(X) / config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss(reduction="none", label_smoothing=config.label_smoothing)
    Xt, yt, wt = torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(w)
    losses = []
    model.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.as_tensor(np_rng.permutation(len(X)))
        total, count = 0.0, 0
        for i in range(0, len(X), config.batch_size):
            b = order[i:i + config.batch_size]
            if len(b) < 2:  # batch norm needs two
                continue
            xb, yb, wb = Xt[b].to(device), yt[b].to(device), wt[b].to(device)
            loss = (loss_fn(model(xb), yb) * wb).sum() / wb.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
        losses.append(total / max(count, 1))
        if progress is not None:
            progress(epoch, losses[-1])
    model.eval()
    info = {"device": device, "train_s": time.perf_counter() - t0, "data_s": data_s, "windows": len(X),
            "synthetic_windows": int(config.n_synthetic), "history_windows": int(sum(real_counts.values())),
            "history_labels": dict(sorted(real_counts.items())), "losses": losses,
            "parameters": int(sum(p.numel() for p in model.parameters()))}
    return model, info


# ---- save / load ----------------------------------------------------------------------------
def save(model: PatternTCN, path) -> Path:
    """``path``/state_dict.pt (the weights) and ``path``/config.json (the configuration, the
    class order, the format)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path / "state_dict.pt")
    (path / "config.json").write_text(json.dumps({"format": FORMAT, "classes": list(CLASSES),
                                                  "config": model.config.to_dict()}, indent=2))
    return path


def load(path, device: str | None = None) -> PatternTCN:
    """The model ``save`` wrote, in eval mode on ``device`` (default: from ``TP_DEVICE``)."""
    path = Path(path)
    meta = json.loads((path / "config.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: TCN format {meta.get('format')!r}, this code reads {FORMAT}")
    if tuple(meta.get("classes", ())) != CLASSES:
        raise ValueError(f"{path}: the saved class order differs from this code's")
    model = PatternTCN(TCNConfig.from_dict(meta["config"]))
    state = torch.load(path / "state_dict.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()

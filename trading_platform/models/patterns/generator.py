"""Synthetic chart patterns as OHLC candle windows, deterministic given a seed.

A window of ``length`` bars ends with a pattern that fills its last ``share`` of bars
(``start = length - round(share * length)``); the bars before it (the lead-in) drift
as a random walk into the pattern's first price. A pattern is drawn as a *skeleton*: a
path through its key points (peaks, troughs, touches of its trend lines), each drawn at
random within the pattern's definition, then scaled so that its lowest point is 0 and its
highest 1 over the pattern's bars. Prices are
``log(price) + scale * (skeleton + residual)``:

- ``scale`` is the pattern's **amplitude**, its high-to-low range in log price
  (0.1 is about 10 %);
- the **residual** of the close is i.i.d. Gaussian with standard deviation
  ``noise * amplitude`` (``noise`` 0.05, 0.15, 0.30 are the frozen set's three levels);
- opens continue the previous close (a small gap), highs and lows add wicks.

"none" windows fill the whole window with a random walk, a plain trend or a range (a
mean-reverting path) scaled the same way: amplitude is the path's range.

Definitions (the skeleton's constraints, what the labeler checks):

- head and shoulders: rise to a left shoulder, a neckline trough, a head at least a
  quarter of the amplitude above both shoulders, a second trough near the first, a
  right shoulder near the left one, and a fall through the neckline. Inverse: mirrored.
- double / triple top: two / three peaks within a few % of the amplitude of each other,
  troughs between them at mid height, a rise into the first and a fall below the troughs
  after the last. Bottoms: mirrored.
- triangles, wedges, rectangle: five to eight alternating touches of two trend lines.
  Ascending: flat top, rising lows; descending: mirrored; symmetrical: falling highs and
  rising lows; rising wedge: both lines rising, the lower one faster (converging);
  falling wedge: mirrored; rectangle: both flat.
- bull flag: a steep pole up over a quarter to two fifths of the pattern, then a narrow
  channel drifting down against it. Bear flag: mirrored. Pennant: a pole (either
  direction) then a small symmetrical triangle.
- cup and handle: a rounded cup from a left rim back to it, a shallow handle dip, and
  a break above the rim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import CLASSES, NONE, PATTERNS

NONE_KINDS = ("random_walk", "trend", "range")
TRAIN_STREAM = 2  # seed streams: training draws use SeedSequence([TRAIN_STREAM, seed, i])
FROZEN_STREAM = 1  # the frozen evaluation set uses SeedSequence([FROZEN_STREAM, i]) (evaluate.py)
DEV_STREAM = 3  # a development set drawn like the frozen one, for choosing configurations


@dataclass(frozen=True)
class Window:
    ohlc: np.ndarray      # (length, 4): open, high, low, close
    label: str            # one of CLASSES
    start: int            # the pattern's first bar (0 when it fills the window)
    noise: float          # residual std as a fraction of the amplitude
    scale: float          # amplitude in log price
    skeleton: np.ndarray  # (length,) the close's noiseless log price
    kind: str             # the pattern, or for "none" one of NONE_KINDS

    @property
    def length(self) -> int:
        return len(self.ohlc)


def rng_for(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


# ---- skeletons: rng -> f(x) on [0, 1] (scaled to [0, 1] afterwards) ---------------------
Skeleton = Callable[[np.ndarray], np.ndarray]


def _knots(xs, ys) -> Skeleton:
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    return lambda x: np.interp(x, xs, ys)


def _mirror(f: Skeleton) -> Skeleton:
    return lambda x: 1.0 - f(x)


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _spread(rng, n: int, x0: float, x1: float, jitter: float = 0.25) -> np.ndarray:
    """n increasing positions from x0 to x1, evenly spaced with each inner one moved by up to
    ``jitter`` of the spacing."""
    xs = np.linspace(x0, x1, n)
    if n > 2:
        step = (x1 - x0) / (n - 1)
        xs[1:-1] += rng.uniform(-jitter, jitter, n - 2) * step
    return xs


def _head_and_shoulders(rng) -> Skeleton:
    neck = _u(rng, 0.3, 0.45)
    ls = neck + _u(rng, 0.22, 0.32)
    xs = _spread(rng, 7, 0, 1, jitter=0.15)
    return _knots(xs, [_u(rng, 0.0, 0.2), ls, neck, 1.0, neck + _u(rng, -0.05, 0.05), ls + _u(rng, -0.05, 0.05),
                       _u(rng, 0.0, 0.15)])


def _double_top(rng) -> Skeleton:
    xs = [0, _u(rng, 0.25, 0.35), _u(rng, 0.45, 0.55), _u(rng, 0.65, 0.75), 1]
    return _knots(xs, [_u(rng, 0.0, 0.15), 1.0, _u(rng, 0.35, 0.55), 1.0 + _u(rng, -0.04, 0.04),
                       _u(rng, 0.0, 0.2)])


def _triple_top(rng) -> Skeleton:
    trough = _u(rng, 0.35, 0.55)
    xs = _spread(rng, 7, 0, 1, jitter=0.15)
    return _knots(xs, [_u(rng, 0.0, 0.15), 1.0, trough, 1.0 + _u(rng, -0.04, 0.04), trough + _u(rng, -0.05, 0.05),
                       1.0 + _u(rng, -0.04, 0.04), _u(rng, 0.0, 0.2)])


@dataclass(frozen=True)
class _Line:
    """A trend line from (x0, y0) to (1, y1)."""

    y0: float
    y1: float
    x0: float = 0.0

    def __call__(self, x):
        return self.y0 + (self.y1 - self.y0) * (x - self.x0) / (1 - self.x0)


def _zigzag(rng, upper: _Line, lower: _Line, touches: int, x0: float = 0.0, tol: float = 0.02,
            first: int | None = None) -> Skeleton:
    """Alternating touches of two lines between x0 and 1, starting on the upper one when
    ``first`` is 1, the lower one when 0 (random when None). The time between touches is
    proportional to the distance between the lines, so swings stay visible where the lines
    converge (as in real triangles and wedges); the last leg runs past 1 and is cut, so the
    window ends anywhere on it."""
    width = lambda x: abs(upper(x) - lower(x))

    def walk(c, k):
        xs = [x0]
        for _ in range(k):
            xs.append(xs[-1] + c * width(xs[-1]))
        return xs

    part = _u(rng, 0.2, 1.0)  # the share of the last leg inside the window
    lo, hi = 1e-6, 10.0
    for _ in range(40):  # bisection: the constant that ends the window ``part`` along the last leg
        c = (lo + hi) / 2
        xs = walk(c, touches)
        lo, hi = (c, hi) if xs[-2] + part * (xs[-1] - xs[-2]) < 1 else (lo, c)
    xs = np.array(walk(c, touches))
    steps = np.diff(xs)
    xs[1:-2] += rng.uniform(-0.15, 0.15, touches - 2) * steps[1:-1]
    first = int(rng.integers(2)) if first is None else first
    ys = [(upper if (i + first) % 2 else lower)(float(x)) + _u(rng, -tol, tol) for i, x in enumerate(xs)]
    return _knots(xs, ys)


def _touches(rng) -> int:
    return int(rng.integers(5, 8))


def _ascending_triangle(rng) -> Skeleton:
    return _zigzag(rng, _Line(1.0, 1.0), _Line(0.0, _u(rng, 0.6, 0.8)), _touches(rng))


def _symmetrical_triangle(rng) -> Skeleton:
    return _zigzag(rng, _Line(1.0, _u(rng, 0.55, 0.7)), _Line(0.0, _u(rng, 0.3, 0.45)), _touches(rng))


def _rising_wedge(rng) -> Skeleton:
    # in units of the width at the start: the upper line rises by su, the lower one by more
    w1, su = _u(rng, 0.3, 0.5), _u(rng, 0.5, 1.0)
    return _zigzag(rng, _Line(1.0, 1.0 + su), _Line(0.0, su + 1.0 - w1), _touches(rng))


def _rectangle(rng) -> Skeleton:
    return _zigzag(rng, _Line(1.0, 1.0), _Line(0.0, 0.0), int(rng.integers(6, 9)), tol=0.03)


def _pole(rng) -> float:
    return _u(rng, 0.25, 0.4)


def _bull_flag(rng) -> Skeleton:
    p = _pole(rng)
    drop, width = _u(rng, 0.15, 0.3), _u(rng, 0.1, 0.2)
    flag = _zigzag(rng, _Line(1.0, 1.0 - drop, p), _Line(1.0 - width, 1.0 - width - drop, p), int(rng.integers(4, 7)),
                   x0=p, tol=0.01, first=1)
    return lambda x: np.where(np.asarray(x) < p, np.asarray(x) / p, flag(x))


def _pennant(rng) -> Skeleton:
    p = _pole(rng)
    h = _u(rng, 0.2, 0.35)
    tri = _zigzag(rng, _Line(1.0, 1.0 - h * _u(rng, 0.3, 0.45), p), _Line(1.0 - h, 1.0 - h * _u(rng, 0.55, 0.7), p),
                  int(rng.integers(4, 7)), x0=p, tol=0.01, first=1)
    f = lambda x: np.where(np.asarray(x) < p, np.asarray(x) / p, tri(x))
    return f if rng.random() < 0.5 else _mirror(f)


def _cup_and_handle(rng) -> Skeleton:
    c = _u(rng, 0.65, 0.8)                       # the cup ends (right rim) at c
    right_rim = 1.0 - _u(rng, 0.0, 0.05)
    low = c + (1 - c) * _u(rng, 0.3, 0.6)        # the handle's low
    dip = _u(rng, 0.15, 0.3)                     # its depth (of the cup's depth)
    breakout = 1.0 + _u(rng, 0.0, 0.08)
    power = _u(rng, 0.6, 1.0)                    # < 1: a flatter, rounder bottom

    def f(x):
        x = np.asarray(x, float)
        z = np.clip(x / c, 0, 1)
        cup = 1.0 - np.sin(np.pi * z) ** power + (right_rim - 1.0) * z
        handle = np.interp(x, [c, low, 1.0], [right_rim, right_rim - dip, breakout])
        return np.where(x <= c, cup, handle)

    return f


SKELETONS: dict[str, Callable[[np.random.Generator], Skeleton]] = {
    "head_and_shoulders": _head_and_shoulders,
    "inverse_head_and_shoulders": lambda rng: _mirror(_head_and_shoulders(rng)),
    "double_top": _double_top,
    "double_bottom": lambda rng: _mirror(_double_top(rng)),
    "triple_top": _triple_top,
    "triple_bottom": lambda rng: _mirror(_triple_top(rng)),
    "ascending_triangle": _ascending_triangle,
    "descending_triangle": lambda rng: _mirror(_ascending_triangle(rng)),
    "symmetrical_triangle": _symmetrical_triangle,
    "rising_wedge": _rising_wedge,
    "falling_wedge": lambda rng: _mirror(_rising_wedge(rng)),
    "bull_flag": _bull_flag,
    "bear_flag": lambda rng: _mirror(_bull_flag(rng)),
    "pennant": _pennant,
    "cup_and_handle": _cup_and_handle,
    "rectangle": _rectangle,
}
assert tuple(SKELETONS) == PATTERNS


def _none_path(rng, kind: str, n: int) -> np.ndarray:
    if kind == "random_walk":
        return np.cumsum(rng.normal(0, 1, n))
    if kind == "trend":
        x = np.linspace(0, 1, n)
        return (x + _u(rng, -0.5, 0.5) * x * (1 - x)) * (1 if rng.random() < 0.5 else -1)
    if kind == "range":  # mean-reverting: an AR(1) path that meanders around a level
        phi, e, y = _u(rng, 0.8, 0.95), rng.normal(0, 1, n), np.empty(n)
        y[0] = e[0] / np.sqrt(1 - phi * phi)
        for t in range(1, n):
            y[t] = phi * y[t - 1] + e[t]
        return y
    raise ValueError(f"unknown none kind {kind!r}; use one of {', '.join(NONE_KINDS)}")


def _unit(y: np.ndarray) -> np.ndarray:
    lo, hi = float(y.min()), float(y.max())
    return (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)


def draw(label: str, rng: np.random.Generator | int, *, length: int = 128, share: float = 1.0, noise: float = 0.05,
         scale: float = 0.1, price: float = 100.0, kind: str | None = None) -> Window:
    """One window of ``length`` bars whose last ``share`` is the pattern ``label`` (or a "none"
    path of ``kind``, random when not given, filling the window)."""
    if label not in CLASSES:
        raise ValueError(f"unknown pattern {label!r}; use one of {', '.join(CLASSES)}")
    if length < 16:
        raise ValueError(f"length must be at least 16 bars, got {length}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if noise < 0 or scale <= 0 or price <= 0:
        raise ValueError(f"noise must be >= 0 and scale, price > 0 (got {noise}, {scale}, {price})")
    rng = rng if isinstance(rng, np.random.Generator) else rng_for(rng)
    if label == NONE:
        kind = kind or NONE_KINDS[int(rng.integers(len(NONE_KINDS)))]
        y, start = _unit(_none_path(rng, kind, length)), 0
    else:
        kind = label
        m = max(8, round(share * length))
        start = length - m
        y_pat = _unit(SKELETONS[label](rng)(np.linspace(0, 1, m)))
        # lead-in: a random walk with drift, walked backwards from the pattern's first price
        slope = _u(rng, -0.6, 0.6) / m
        steps = slope + rng.normal(0, 0.25 / np.sqrt(m), start)
        y = np.concatenate([y_pat[0] - np.cumsum(steps)[::-1], y_pat])
    close = y + rng.normal(0, noise, length)
    wick = max(noise, 0.03)
    open_ = np.concatenate([[close[0]], close[:-1]]) + rng.normal(0, 0.1 * wick, length)
    high = np.maximum(open_, close) + np.abs(rng.normal(0, 0.5 * wick, length))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, 0.5 * wick, length))
    ohlc = np.exp(np.log(price) + scale * np.column_stack([open_, high, low, close]))
    return Window(ohlc, label, start, float(noise), float(scale), np.log(price) + scale * y, kind)


def _pick(rng, value):
    """A setting given as a number, a (lo, hi) range (uniform) or a list of choices."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return rng.uniform(*value)
    return value[int(rng.integers(len(value)))]


def sample(rng: np.random.Generator, label: str, *, length=(64, 256), share=(0.5, 1.0), noise=(0.0, 0.35),
           scale=(0.02, 0.3), price=(1.0, 1000.0)) -> Window:
    """One window with its settings drawn from ranges: ``length`` uniform integer in [lo, hi],
    ``share``, ``noise`` and ``scale`` uniform (a list: one of its values), ``price`` log-uniform."""
    n = int(rng.integers(length[0], length[1] + 1)) if isinstance(length, tuple) else int(_pick(rng, length))
    p = float(np.exp(rng.uniform(np.log(price[0]), np.log(price[1])))) if isinstance(price, tuple) else price
    return draw(label, rng, length=n, share=float(_pick(rng, share)), noise=float(_pick(rng, noise)),
                scale=float(_pick(rng, scale)), price=p)


def training_set(n: int, seed: int, *, none_share: float = 0.25, classes: Sequence[str] = CLASSES,
                 **settings) -> list[Window]:
    """``n`` windows for training: "none" with probability ``none_share``, else a pattern drawn
    uniformly; window ``i`` comes from SeedSequence([TRAIN_STREAM, seed, i]), a stream the frozen
    evaluation set never uses."""
    patterns = [c for c in classes if c != NONE]
    out = []
    for i in range(n):
        rng = rng_for(TRAIN_STREAM, seed, i)
        label = NONE if (NONE in classes and rng.random() < none_share) else patterns[int(rng.integers(len(patterns)))]
        out.append(sample(rng, label, **settings))
    return out

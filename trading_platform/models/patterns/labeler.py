"""A rule-based chart-pattern labeler: pivot points and trend lines.

For a window of candles (the pattern, if any, ends at the window's last bar):

1. the log close is smoothed by a Gaussian kernel whose width follows the window's noise
   (estimated from second differences, which a piecewise-linear path leaves near zero);
2. pivots are the zigzag of the smoothed path at a reversal threshold of a few % of its
   range (also at twice that, to see the large structure through small swings); the last
   pivot is the final leg's extreme, confirmed or not;
3. each pattern is a set of rules on the last pivots, in units of the pattern's range:
   peaks and troughs at equal heights, a head above its shoulders, a neckline broken at the
   end, trend lines fitted through the highs and the lows (their slopes and whether they
   converge), a pole before a flag or a pennant, a rounded cup before a shallow handle;
4. a rule set that holds scores 0.5 plus half the relative margin of its tightest rule;
   the best-scoring pattern wins, "none" when no rule set holds.

Top patterns (head and shoulders, double and triple top, ascending triangle, rising wedge,
bull flag, pennant) are checked on the path and on its mirror image, which turns them into
their bottom counterparts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import NONE

MIRROR = {"head_and_shoulders": "inverse_head_and_shoulders", "double_top": "double_bottom",
          "triple_top": "triple_bottom", "ascending_triangle": "descending_triangle",
          "rising_wedge": "falling_wedge", "bull_flag": "bear_flag", "pennant": "pennant"}
SYMMETRIC = ("symmetrical_triangle", "rectangle")  # mirror images of themselves: checked once
UPRIGHT = ("cup_and_handle",)                         # no mirrored class


@dataclass(frozen=True)
class Label:
    pattern: str   # one of CLASSES
    score: float   # 0 for "none"; else in [0.5, 1]: 0.5 + half the tightest rule's relative margin
    start: int     # the first bar of the matched pivots (the window's length for "none")


def label(ohlc: np.ndarray) -> Label:
    """The pattern that ends at the window's last bar, or "none"."""
    y = np.log(np.asarray(ohlc, dtype=np.float64)[:, 3])
    n = len(y)
    if n < 16 or not np.all(np.isfinite(y)):
        return Label(NONE, 0.0, n)
    s, left = smooth(y)
    rng = float(s.max() - s.min())
    if rng <= 0:
        return Label(NONE, 0.0, n)
    s = (s - s.min()) / rng
    best = Label(NONE, 0.0, n)
    thr = max(0.04, 3 * left / rng)  # zigzag reversal: 4 % of the range or 3 noise stds
    for t in (thr, 2 * thr):
        idx, val, typ = zigzag(s, t)
        for sign in (1, -1):
            path, v = (s, val) if sign > 0 else (1 - s, 1 - val)
            for name, fn in RULES.items():
                if sign < 0 and name in SYMMETRIC + UPRIGHT:
                    continue
                score, start = fn(idx, v, sign * typ, n, path)
                if score > best.score:
                    best = Label(MIRROR[name] if sign < 0 else name, score, start)
    return best


# ---- smoothing and pivots ---------------------------------------------------------------
def noise_std(y: np.ndarray) -> float:
    """The residual std of a piecewise-linear path plus i.i.d. noise: var(second difference)
    is 6 var(noise); the median absolute deviation ignores the few kinks."""
    d2 = np.diff(y, 2)
    return float(np.median(np.abs(d2 - np.median(d2))) / 0.6745 / np.sqrt(6))


def smooth(y: np.ndarray, target: float = 0.02) -> tuple[np.ndarray, float]:
    """Gaussian kernel smoothing, wide enough to bring the noise to ``target`` of the range
    (at most a 40th of the window): (smoothed path, the noise std left in it)."""
    n = len(y)
    sigma = noise_std(y)
    r = sigma / max(float(y.max() - y.min()), 1e-12)
    width = min((r / target) ** 2 / (2 * np.sqrt(np.pi)), n / 40)
    if width < 0.5:
        return y.copy(), sigma
    h = int(np.ceil(3 * width))
    k = np.exp(-0.5 * (np.arange(-h, h + 1) / width) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(y, h, mode="edge"), k, mode="valid"), sigma * float(np.sqrt((k * k).sum()))


def zigzag(s: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternating pivots (index, value, +1 high / -1 low): a pivot is confirmed once the path
    has moved ``thr`` back from it; the first bar is the first pivot and the last leg's extreme
    (confirmed or not) the last one."""
    n = len(s)
    idx, typ = [0], [0]
    hi = lo = 0
    direction = 0
    for i in range(1, n):
        v = s[i]
        if direction >= 0 and v > s[hi]:
            hi = i
        if direction <= 0 and v < s[lo]:
            lo = i
        if direction == 0 and s[hi] - s[lo] >= thr:  # the first pivot: the extreme before the first move
            direction = 1 if hi > lo else -1
            idx[0], typ[0] = (lo, -1) if direction == 1 else (hi, 1)
        if direction == 1 and s[hi] - v >= thr:
            idx.append(hi), typ.append(1)
            direction, lo = -1, i
        elif direction == -1 and v - s[lo] >= thr:
            idx.append(lo), typ.append(-1)
            direction, hi = 1, i
    if direction == 0:
        return np.array([0, n - 1]), s[[0, n - 1]], np.array([0, 0])
    last = hi if direction == 1 else lo
    if last != idx[-1]:
        idx.append(last), typ.append(direction)
    idx = np.array(idx)
    return idx, s[idx], np.array(typ)


# ---- rules ----------------------------------------------------------------------------------
class _Rules:
    """Margins of rules; the score is 0 if any fails, else 0.5 + half the tightest relative margin."""

    def __init__(self):
        self.margins: list[float] = []
        self.ok = True

    def ge(self, a: float, b: float, scale: float = 0.1) -> _Rules:
        m = (a - b) / scale
        self.ok &= bool(m >= 0)
        self.margins.append(m)
        return self

    def le(self, a: float, b: float, scale: float = 0.1) -> _Rules:
        return self.ge(b, a, scale)

    def near(self, a: float, b: float, tol: float) -> _Rules:
        return self.le(abs(a - b), tol, tol)

    @property
    def score(self) -> float:
        return 0.5 + 0.5 * min(1.0, min(self.margins)) if self.ok and self.margins else 0.0


def _unit(v: np.ndarray) -> np.ndarray:
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def _tail(idx, val, typ, k: int, first: int, n: int, min_span: float = 0.35):
    """The last k pivots if the first is of type ``first`` and they span enough of the window:
    (x in [0, 1] over their span, values in [0, 1] over their range), else None."""
    if len(idx) < k or typ[-k] != first:
        return None
    i = idx[-k:]
    if (n - 1 - i[0]) < min_span * (n - 1):
        return None
    return (i - i[0]) / max(n - 1 - i[0], 1), _unit(val[-k:])


def _head_and_shoulders(idx, val, typ, n, s):
    t = _tail(idx, val, typ, 7, -1, n)
    if t is None:
        return 0.0, n
    x, (st, ls, t1, hd, t2, rs, end) = t
    neck_lo, neck_hi = min(t1, t2), max(t1, t2)
    r = (_Rules().ge(hd, max(ls, rs) + 0.12).near(ls, rs, 0.15).near(t1, t2, 0.15)
         .ge(min(ls, rs), neck_hi + 0.1).le(st, neck_lo - 0.05).le(end, neck_lo - 0.05)
         .ge((x[3] - x[1]) / max(x[5] - x[3], 1e-9), 0.4, 0.2).le((x[3] - x[1]) / max(x[5] - x[3], 1e-9), 2.5, 0.5))
    return r.score, int(idx[-7])


def _peaks(k: int):
    """Double (k = 5) or triple (k = 7) top: peaks level, troughs between them at mid height,
    a rise into the first and a fall below the troughs after the last."""
    def rule(idx, val, typ, n, s):
        t = _tail(idx, val, typ, k, -1, n)
        if t is None:
            return 0.0, n
        v = t[1]
        peaks, troughs = v[1:-1:2], v[2:-1:2]
        r = (_Rules().le(peaks.max() - peaks.min(), 0.12).le(troughs.max() - troughs.min(), 0.15)
             .ge(peaks.min() - troughs.max(), 0.2).le(v[0], troughs.min() - 0.1).le(v[-1], troughs.min() - 0.1))
        return r.score, int(idx[-k])
    return rule


def _lines(x: np.ndarray, v: np.ndarray, typ: np.ndarray):
    """Least-squares lines through the highs and through the lows (the last pivot, the final
    leg's extreme, is left out unless its line has no other two): (upper (slope, intercept),
    lower (slope, intercept), worst touch residual)."""
    fit = []
    worst = 0.0
    for t in (1, -1):
        m = typ == t
        if (m[:-1]).sum() >= 2:
            m[-1] = False
        a, b = np.polyfit(x[m], v[m], 1)
        worst = max(worst, float(np.abs(v[m] - (a * x[m] + b)).max()))
        fit.append((float(a), float(b)))
    return fit[0], fit[1], worst


def _channel(kind: str):
    """Triangles, wedges and the rectangle: 5+ alternating touches of two lines (tried on every
    tail of the pivots that spans enough of the window); the final point inside the lines."""
    def rule(idx, val, typ, n, s):
        best = (0.0, n)
        for k in range(5, len(idx) + 1):
            t = _tail(idx, val, typ, k, typ[-k], n)
            if t is None:
                continue
            x, v = t
            (su, bu), (sl, bl), worst = _lines(x, v, typ[-k:])
            w0, w1 = bu - bl, (su + bu) - (sl + bl)
            r = (_Rules().le(worst, 0.1, 0.05).ge(v[-1], sl * x[-1] + bl - 0.08).le(v[-1], su * x[-1] + bu + 0.08)
                 .ge(float(np.ptp(val[-k:])), 0.5))  # the pattern's range is most of the window's
            if len(idx) > k:  # no pole into the first touch (that is a flag's or a pennant's)
                r.le(abs(val[-k - 1] - val[-k]), 1.5 * float(np.ptp(val[-k:])), 0.2)
            if kind == "rectangle":
                r.le(abs(su), 0.2).le(abs(sl), 0.2).ge(min(w0, w1), 0.7).ge(k, 6, 1)
            elif kind == "ascending_triangle":
                r.le(abs(su), 0.2).ge(sl, 0.35).le(w1, 0.6 * w0)
            elif kind == "symmetrical_triangle":
                r.le(su, -0.15).ge(sl, 0.15).le(w1, 0.65 * w0).near(-su / max(sl, 1e-9), 1.0, 0.8)
            elif kind == "rising_wedge":
                r.ge(su, 0.25).ge(sl, su + 0.1).le(w1, 0.7 * w0)
            if r.score > best[0]:
                best = (r.score, int(idx[-k]))
        return best
    return rule


def _pole(kind: str):
    """A pole up (a leg of most of the pattern's range over an eighth to three fifths of it)
    and a consolidation after its top that stays in the pole's upper part: a regression line
    through the consolidation sloping down with swings that keep their size (bull flag), or
    a flat one with swings that shrink (pennant)."""
    def rule(idx, val, typ, n, s):
        best = (0.0, n)
        for j in range(len(idx) - 2, -1, -1):  # j: the pole's foot (a low), j + 1 its top
            foot, top = int(idx[j]), int(idx[j + 1])
            if typ[j] != -1 or (n - 1 - foot) < 0.35 * (n - 1) or (n - 1 - top) < 8:
                continue
            seg = s[foot:]
            pole = s[top] - s[foot]
            body = (s[top:] - s[foot]) / max(pole, 1e-12)  # in units of the pole, its top at 1
            x = np.linspace(0, 1, len(body))
            slope, icpt = np.polyfit(x, body, 1)
            res = body - (slope * x + icpt)
            third = len(res) // 3
            shrink = res[-third:].std() / max(res[:third].std(), 1e-12)  # the swings' size, last third / first
            r = (_Rules().ge(pole, 0.8 * float(seg.max() - seg.min())).ge(body.min(), 0.55).le(body.max(), 1.05, 0.05)
                 .ge((top - foot) / (n - 1 - foot), 0.12, 0.05).le((top - foot) / (n - 1 - foot), 0.6, 0.1)
                 .ge(res.std(), 0.015, 0.01).ge(pole, 0.5))
            if kind == "bull_flag":
                r.le(slope, -0.08, 0.05).ge(shrink, 0.6, 0.1).le(res.std(), 0.1, 0.03)
            else:
                r.ge(slope, -0.12, 0.05).le(slope, 0.12, 0.05).le(shrink, 0.7, 0.1)
            if r.score > best[0]:
                best = (r.score, foot)
        return best
    return rule


def _cup_and_handle(idx, val, typ, n, s):
    """A right rim (a local high) with a shallow dip after it (the handle) and a close back
    near or above it; the cup runs from where the path last stood at the rim's height before
    it (the left rim) down to its lowest point and back. The cup is rounded (it spends at
    least 40 % of its time in its lower third, a V a third), deep (most of the range since
    the left rim) and longer than the handle."""
    best = (0.0, n)
    peaks = np.flatnonzero((s[1:-1] >= s[:-2]) & (s[1:-1] >= s[2:])) + 1
    for ir in peaks[(peaks >= 0.3 * n) & (peaks < n - 3)]:
        right = s[ir]
        above = np.flatnonzero(s[:ir] >= right)
        if len(above) == 0:
            continue
        i0 = int(above[-1])
        if (n - 1 - i0) < 0.35 * (n - 1) or ir - i0 < 4:
            continue
        cup = s[i0:ir + 1]
        bottom = float(cup.min())
        depth = right - bottom
        handle = float(s[ir:].min())
        low_share = float(np.mean(cup < bottom + depth / 3))
        r = (_Rules().ge(depth, 0.6 * float(np.ptp(s[i0:]))).ge(right - handle, 0.08 * depth, 0.03)
             .le(right - handle, 0.45 * depth).ge(s[n - 1], right - 0.15 * depth, 0.05).ge(low_share, 0.4, 0.05)
             .ge(ir - i0, 1.5 * (n - 1 - ir), 2.0))
        if r.score > best[0]:
            best = (r.score, i0)
    return best


RULES = {
    "head_and_shoulders": _head_and_shoulders,
    "double_top": _peaks(5),
    "triple_top": _peaks(7),
    "ascending_triangle": _channel("ascending_triangle"),
    "symmetrical_triangle": _channel("symmetrical_triangle"),
    "rising_wedge": _channel("rising_wedge"),
    "rectangle": _channel("rectangle"),
    "bull_flag": _pole("bull_flag"),
    "pennant": _pole("pennant"),
    "cup_and_handle": _cup_and_handle,
}

"""Period summaries: one short, deterministic text per closed period of a series (pure; no database).

A series' candles are cut into periods (each hour for 1m/5m data, each day for 15m-1h, each week for
4h/1d, each month for 1w). A period is summarized once it is over: its ``as_of`` time (the period's end,
or its last candle's close when that is later) is at or before the series' newest candle close. The
text says what a trader would look for: the move and how unusual it is for the series (against the
typical move of the bars before and in it), the trend before it, volume against the series' recent
periods, RSI extremes, Bollinger breakouts and range spikes, and the model outputs known at ``as_of``
(the regime, the patterns found, the forecast; each marked ``in-sample`` when the version producing
it was fitted on that time). Nothing after ``as_of`` is read: every input is cut there by the caller
and again here.

The same inputs give the same text (fixed formats, fixed order). A summary is kept under the embedding
model's token limit (all-MiniLM-L6-v2 truncates silently at 256 tokens): parts are dropped in a fixed
order of priority until the text fits ``count_tokens`` (the model's own tokenizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from ..core.timeframes import TIMEFRAMES

US = 1_000_000
WEEK_OFFSET_S = 4 * 86400  # 1970-01-01 was a Thursday: Monday-aligned weeks start 4 days later
PERIOD_OF = {"1m": "hour", "5m": "hour", "15m": "day", "30m": "day", "1h": "day", "4h": "week", "1d": "week",
             "1w": "month"}
PERIOD_S = {"hour": 3600, "day": 86400, "week": 7 * 86400}
CONTEXT_PERIODS = 20   # volume average and typical move: the previous 20 periods
TREND_PERIODS = 6      # "the trend before": the previous 6 periods


def period_of(timeframe: str) -> str:
    return PERIOD_OF[timeframe]


def period_start_us(period: str, ts_us: np.ndarray) -> np.ndarray:
    """The start (epoch µs, UTC) of the period holding each candle open time."""
    ts_us = np.asarray(ts_us, dtype=np.int64)
    if period == "month":
        months = ts_us.astype("datetime64[us]").astype("datetime64[M]")
        return months.astype("datetime64[us]").astype(np.int64)
    step = PERIOD_S[period] * US
    off = WEEK_OFFSET_S * US if period == "week" else 0
    return (ts_us - off) // step * step + off


def period_end_us(period: str, start_us: int) -> int:
    if period == "month":
        m = np.array([start_us], dtype=np.int64).astype("datetime64[us]").astype("datetime64[M]") + 1
        return int(m.astype("datetime64[us]").astype(np.int64)[0])
    return int(start_us) + PERIOD_S[period] * US


@dataclass
class Output:
    """One model output known at a time: ``at_us`` (its candle's close) and what the text needs."""
    at_us: int
    kind: str            # regime | signal | pump | pattern | forecast
    model: str
    version: str
    timeframe: str
    label: str = ""
    value: float = float("nan")
    in_sample: bool = False
    bars: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Series:
    """One series' candles (sorted by open time, epoch µs) and the feature columns the text uses."""
    symbol: str
    timeframe: str
    ts_us: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    rsi: np.ndarray | None = None       # rsi_14 per candle (NaN where unknown)
    pctb: np.ndarray | None = None      # bb_pctb_20_2
    atr: np.ndarray | None = None       # atr_14
    category: str = ""
    exchange: str = ""


@dataclass
class Summary:
    symbol: str
    timeframe: str
    period: str
    start_us: int
    end_us: int
    as_of_us: int
    text: str
    metadata: dict
    tokens: int
    dropped: list[str]

    @property
    def key(self) -> str:
        return f"summary|{self.symbol}|{self.timeframe}|{_iso(self.start_us)}"


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(us))


def _iso(us: int) -> str:
    return _dt(us).strftime("%Y-%m-%dT%H:%M:%SZ")


def _px(x: float) -> str:
    return f"{x:.6g}"


def _pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def _when(period: str, start_us: int, end_us: int) -> str:
    s = _dt(start_us)
    if period == "hour":
        return f"hour {s:%Y-%m-%d %H:%M} UTC {s:%a}"
    if period == "day":
        return f"day {s:%Y-%m-%d} {s:%a}"
    if period == "week":
        return f"week of {s:%Y-%m-%d}"
    return f"month {s:%Y-%m}"


def _move_words(z: float) -> tuple[str, str]:
    """(move, strength) for a standardized move."""
    if not math.isfinite(z):
        return ("move", "")
    a = abs(z)
    up = z > 0
    if a >= 2.5:
        return ("surge" if up else "crash", "extreme")
    if a >= 1.5:
        return ("strong rally" if up else "sharp drop", "strong")
    if a >= 0.5:
        return ("rise" if up else "decline", "moderate")
    return ("flat", "quiet")


def _trend_words(z: float, ups: int, n: int) -> str:
    if z >= 1.5:
        return f"long rally ({ups} of {n} up)"
    if z >= 0.5:
        return f"rise ({ups} of {n} up)"
    if z <= -1.5:
        return f"long slide ({n - ups} of {n} down)"
    if z <= -0.5:
        return f"decline ({n - ups} of {n} down)"
    return f"sideways ({ups} of {n} up)"


def _regime_words(label: str) -> str:
    return label.replace("_", " ")


def summarize(series: Series, outputs: list[Output] | None = None, *, count_tokens=None, max_tokens: int = 256,
              newest_close_us: int | None = None, since_us: int | None = None,
              only_starts: set[int] | None = None) -> list[Summary]:
    """The summaries of ``series``' closed periods (starting at or after ``since_us`` when given, or only those
    in ``only_starts``). ``outputs``: the model outputs of the symbol (any order). ``count_tokens``: text ->
    tokens incl. special tokens (None: not checked). ``newest_close_us``: the newest candle close of the
    series (default: from its candles)."""
    tf_us = _tf_us(series.timeframe)
    ts = np.asarray(series.ts_us, dtype=np.int64)
    if not len(ts):
        return []
    period = period_of(series.timeframe)
    newest = int(newest_close_us if newest_close_us is not None else ts[-1] + tf_us)
    starts = period_start_us(period, ts)
    uniq, first = np.unique(starts, return_index=True)
    last = np.append(first[1:], len(ts)) - 1
    o, h, low, c, v = (np.asarray(a, dtype=np.float64) for a in
                       (series.open, series.high, series.low, series.close, series.volume))
    logret = np.diff(np.log(c), prepend=np.nan)
    p_ret = c[last] / o[first] - 1.0
    p_vol = np.add.reduceat(v, first)
    outputs = sorted(outputs or [], key=lambda x: (x.at_us, x.kind, x.model, x.version, x.label))
    out_at = np.array([x.at_us for x in outputs], dtype=np.int64)
    out: list[Summary] = []
    for i, start in enumerate(uniq):
        start = int(start)
        end = period_end_us(period, start)
        a, b = int(first[i]), int(last[i])
        as_of = max(end, int(ts[b]) + tf_us)
        if as_of > newest or (since_us is not None and start < since_us) or \
                (only_starts is not None and start not in only_starts):
            continue
        # the typical period move: the std of the 1-bar log returns of the previous periods' bars and this
        # one's (all closed by as_of), scaled to the bars in a period
        lo_bar = int(first[max(0, i - CONTEXT_PERIODS)])
        bar_sd = float(np.nanstd(logret[lo_bar + 1:b + 1])) if b - lo_bar >= 3 else float("nan")
        bars = b - a + 1
        scale = bar_sd * math.sqrt(max(bars, 1)) if bar_sd > 0 else float("nan")
        z = math.log1p(p_ret[i]) / scale if scale == scale and scale > 0 else float("nan")
        move, strength = _move_words(z)
        rng = (h[a:b + 1].max() - low[a:b + 1].min()) / o[a] if o[a] > 0 else float("nan")
        typical = f" ({abs(z):.1f}x a typical {period})" if math.isfinite(z) else ""
        head = (f"{series.symbol} {series.timeframe}, {_when(period, start, end)}: {move} {_pct(p_ret[i])}{typical}, "
                f"close {_px(c[b])}, range {rng * 100:.2f}%.")
        parts: list[tuple[int, str, str]] = [(0, "move", head)]  # (priority: lower is kept longer, name, text)
        meta = {"kind": "summary", "symbol": series.symbol, "timeframe": series.timeframe, "period": period,
                "period_start": _iso(start), "period_end": _iso(end), "as_of": _iso(as_of),
                "change_pct": round(float(p_ret[i]) * 100, 4), "move": move, "strength": strength, "bars": bars,
                "open": float(o[a]), "high": float(h[a:b + 1].max()), "low": float(low[a:b + 1].min()),
                "close": float(c[b]), "category": series.category, "exchange": series.exchange}
        # the trend before
        k0 = max(0, i - TREND_PERIODS)
        if i - k0 >= 2 and scale == scale and scale > 0:
            prev = p_ret[k0:i]
            cum = float(c[last[i - 1]] / o[first[k0]] - 1.0)
            n_bars = int(last[i - 1] - first[k0] + 1)
            tz = math.log1p(cum) / (bar_sd * math.sqrt(n_bars))
            ups = int((prev > 0).sum())
            words = _trend_words(tz, ups, i - k0)
            parts.append((1, "trend", f"Before: {words}, {_pct(cum)} over {i - k0} {period}s."))
            meta["prior_change_pct"] = round(cum * 100, 4)
        # volume against the previous periods
        v0 = max(0, i - CONTEXT_PERIODS)
        if i - v0 >= 3 and float(np.mean(p_vol[v0:i])) > 0:
            ratio = float(p_vol[i] / np.mean(p_vol[v0:i]))
            word = "heavy" if ratio >= 2 else "light" if ratio <= 0.5 else "normal"
            parts.append((2, "volume", f"Volume {ratio:.1f}x average ({word})."))
            meta["volume_ratio"] = round(ratio, 3)
        # features of the period's bars
        if series.rsi is not None:
            r = np.asarray(series.rsi[a:b + 1], dtype=np.float64)
            if np.isfinite(r).any():
                hi_r, lo_r = float(np.nanmax(r)), float(np.nanmin(r))
                bits = []
                if hi_r >= 70:
                    bits.append(f"overbought ({hi_r:.0f})")
                if lo_r <= 30:
                    bits.append(f"oversold ({lo_r:.0f})")
                if bits:
                    parts.append((4, "rsi", f"RSI {' and '.join(bits)}."))
                    meta["rsi_extreme"] = "both" if len(bits) == 2 else ("overbought" if hi_r >= 70 else "oversold")
        if series.pctb is not None:
            p = np.asarray(series.pctb[a:b + 1], dtype=np.float64)
            above, below = int(np.sum(p > 1)), int(np.sum(p < 0))
            bits = []
            if above:
                bits.append(f"above the upper Bollinger band ({above} bars)")
            if below:
                bits.append(f"below the lower Bollinger band ({below} bars)")
            if bits:
                parts.append((3, "bollinger", f"Closed {' and '.join(bits)}."))
                meta["bollinger"] = "both" if len(bits) == 2 else ("up" if above else "down")
        if series.atr is not None:
            at = np.asarray(series.atr[a:b + 1], dtype=np.float64)
            rng = h[a:b + 1] - low[a:b + 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                mult = np.where(at > 0, rng / at, np.nan)
            if np.isfinite(mult).any() and float(np.nanmax(mult)) >= 2.5:
                j = int(np.nanargmax(mult))
                parts.append((6, "atr", f"Range spike: a bar {float(mult[j]):.1f}x ATR."))
                meta["atr_spike"] = round(float(mult[j]), 2)
        # model outputs known at as_of
        if outputs:  # those known at as_of and recent enough to matter (a slice: no scan of every output)
            lo_at = min(start, as_of - max(end - start, 2 * tf_us, 2 * 3600 * US))
            known = outputs[int(np.searchsorted(out_at, lo_at, side="right")):
                            int(np.searchsorted(out_at, as_of, side="right"))]
            parts += _output_parts(known, start, end, as_of, series.timeframe, float(c[b]), period, meta)
        text, tokens, dropped = _fit(parts, count_tokens, max_tokens)
        out.append(Summary(series.symbol, series.timeframe, period, start, end, as_of, text, meta, tokens, dropped))
    return out


def _output_parts(known: list[Output], start: int, end: int, as_of: int, tf: str, close: float, period: str,
                  meta: dict) -> list[tuple[int, str, str]]:
    parts = []
    span = end - start

    def ins(o: Output) -> str:
        return ", in-sample" if o.in_sample else ""

    def latest(kind: str, fresh_us: int) -> Output | None:
        cand = [o for o in known if o.kind == kind and o.at_us > as_of - fresh_us]
        return cand[-1] if cand else None

    def who(o: Output) -> str:
        return f"{o.model} v{o.version}" + (" (in-sample)" if o.in_sample else "")

    reg = latest("regime", max(span, 2 * _tf_us(tf), 2 * 3600 * US))
    if reg is not None:
        parts.append((2, "regime", f"Regime: {_regime_words(reg.label)} (p {reg.value:.2f}{ins(reg)})."))
        meta["regime"], meta["regime_model"] = reg.label, who(reg)
    pats = [o for o in known if o.kind == "pattern" and o.timeframe == tf and start < o.at_us <= as_of]
    if pats:
        best: dict[str, Output] = {}
        for o in pats:  # the most probable sighting of each pattern
            if o.label not in best or o.value > best[o.label].value:
                best[o.label] = o
        top = sorted(best.values(), key=lambda o: (-o.value, o.label))[:3]
        parts.append((3, "patterns", "Patterns: " + ", ".join(
            f"{o.label.replace('_', ' ')} (p {o.value:.2f}{ins(o)})" for o in top) + "."))
        meta["patterns"], meta["patterns_model"] = [o.label for o in top], who(top[0])
    fc = [o for o in known if o.kind == "forecast" and o.timeframe == tf and start < o.at_us <= as_of]
    if fc:
        f = fc[-1]
        base = float(f.extra.get("close") or close)
        if base > 0:
            chg = f.value / base - 1.0
            parts.append((4, "forecast", f"Forecast: {_pct(chg)} over the next {f.bars} bars"
                                         f"{' (in-sample)' if f.in_sample else ''}."))
            meta["forecast_pct"], meta["forecast_model"] = round(chg * 100, 4), who(f)
    sig = latest("signal", max(span, 2 * 3600 * US))
    if sig is not None:
        parts.append((7, "signal", f"Signal: {sig.label} (p {sig.value:.2f}{ins(sig)})."))
        meta["signal_model"] = who(sig)
    pump = [o for o in known if o.kind == "pump" and o.timeframe == tf and start < o.at_us <= as_of]
    if pump:
        top = max(pump, key=lambda o: (o.value, o.at_us))
        parts.append((8, "pump", f"Pump risk: p {top.value:.2f}{' (pump)' if top.label == 'pump' else ''}"
                                 f"{' (in-sample)' if top.in_sample else ''}."))
        meta["pump_model"] = who(top)
    return parts


def _fit(parts: list[tuple[int, str, str]], count_tokens, max_tokens: int) -> tuple[str, int, list[str]]:
    """The parts in their order, less the lowest-priority ones until the text fits ``max_tokens``."""
    keep = list(parts)
    dropped: list[str] = []
    while True:
        text = " ".join(p[2] for p in keep)
        if count_tokens is None:
            return text, -1, dropped
        n = int(count_tokens(text))
        if n <= max_tokens or len(keep) == 1:
            return text, n, dropped
        worst = max(range(len(keep)), key=lambda j: (keep[j][0], j))
        dropped.append(keep.pop(worst)[1])


def _tf_us(tf: str) -> int:
    return TIMEFRAMES[tf] * US

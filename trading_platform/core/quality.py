"""Data-quality checks on stored candles (the asset checks call these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .candles import Normalized

US = 1_000_000


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    severity: str  # "ERROR" or "WARN"
    description: str
    metadata: dict = field(default_factory=dict)


CHECKS: dict[str, tuple[str, bool, str]] = {
    # name -> (severity, blocking, description)
    "no_duplicate_keys": ("ERROR", True, "no two candles share (symbol, timeframe, ts)"),
    "ohlc_consistent": ("ERROR", True, "low <= open, close <= high and low <= high for every candle"),
    "prices_volume_valid": ("ERROR", True, "prices positive and present, volume present and not negative"),
    "no_unexpected_gaps": ("WARN", False,
                           "no missing candles while the market trades (crypto 24/7, forex weekdays, "
                           "stock sessions)"),
    "fresh_if_live": ("WARN", False, "latest candle of a live symbol closed within two timeframes"),
}


def run_checks(candles: dict[tuple[str, str], tuple["Normalized", str, str | None, bool]],
               tf_seconds: dict[str, int], *, now_us: int,
               latest_close_us: dict[tuple[str, str], int]) -> list[CheckOutcome]:
    """Run every check over candles keyed by (symbol, timeframe).

    candles[(symbol, tf)] = (candles, category, exchange, live).
    """
    import numpy as np

    from .calendars import find_gaps

    dups, bad_ohlc, bad_vals, gaps, stale = {}, {}, {}, {}, {}
    longest = (0, None, None)
    total = 0
    for (symbol, tf), (c, category, exchange, live) in candles.items():
        label = f"{symbol} {tf}"
        total += len(c)
        n_dup = len(c.ts_us) - len(np.unique(c.ts_us))
        if n_dup:
            dups[label] = int(n_dup)
        with np.errstate(invalid="ignore"):
            bad = (c.low > c.high) | (c.open < c.low) | (c.open > c.high) | (c.close < c.low) | (c.close > c.high)
            prices = np.vstack([c.open, c.high, c.low, c.close])
            invalid = (~np.isfinite(prices) | (prices <= 0)).any(axis=0) | ~np.isfinite(c.volume) | (c.volume < 0)
        if bad.any():
            bad_ohlc[label] = int(bad.sum())
        if invalid.any():
            bad_vals[label] = int(invalid.sum())
        g = find_gaps(category, exchange, c.ts_us, tf_seconds[tf])
        if g["missing"]:
            gaps[label] = g["missing"]
            if g["longest_gap_s"] > longest[0]:
                longest = (g["longest_gap_s"], label, g["longest_gap_start"])
        if live:
            last = latest_close_us.get((symbol, tf))
            if last is None or now_us - last > 2 * tf_seconds[tf] * US:
                stale[label] = None if last is None else round((now_us - last) / US / 60, 1)

    def outcome(name, failures, extra=None):
        sev, _, desc = CHECKS[name]
        md = {"candles_checked": total, "failing_series": len(failures)}
        if failures:
            md["details"] = {k: v for k, v in list(failures.items())[:50]}
        md.update(extra or {})
        return CheckOutcome(name, not failures, sev, desc, md)

    live_n = sum(1 for v in candles.values() if v[3])
    return [
        outcome("no_duplicate_keys", dups, {"duplicates": sum(dups.values())}),
        outcome("ohlc_consistent", bad_ohlc, {"inconsistent": sum(bad_ohlc.values())}),
        outcome("prices_volume_valid", bad_vals, {"invalid": sum(bad_vals.values())}),
        outcome("no_unexpected_gaps", gaps, {
            "missing_candles": sum(gaps.values()),
            "longest_gap_hours": round(longest[0] / 3600, 2),
            "longest_gap_series": longest[1] or "",
            "longest_gap_after": longest[2] or "",
        }),
        outcome("fresh_if_live", stale, {"live_series": live_n,
                                         "note": "" if live_n else "no live symbol in this run: not checked"}),
    ]

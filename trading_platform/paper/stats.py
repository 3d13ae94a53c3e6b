"""A run's statistics from its equity curve (marked at every close) and its trades.

Sharpe and Sortino come from per-candle equity returns, annualized by the candles per year the series really
has: its market's calendar (24/7 crypto, forex on weekdays, stock sessions), counted as open slots over a
reference year; a portfolio over the union of its series' candle times. The drawdown is measured on the curve
marked at closes. Returns and drawdowns are fractions.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

REFERENCE_YEAR = 2024


def periods_per_year(series: list[tuple[str, str | None, int]], year: int = REFERENCE_YEAR) -> float:
    """Open candle slots in ``year`` of the union of ``series`` ((category, exchange, timeframe seconds))."""
    from ..core.calendars import slot_open

    start = int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000
    end = int(datetime(year + 1, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000
    slots = set()
    for category, exchange, tf_s in series:
        ts = np.arange(start, end, tf_s * 1_000_000, dtype="int64")
        slots.update(ts[slot_open(category, exchange, ts, tf_s)].tolist())
    return float(len(slots))


def summary(equity: list[float], trades: list[dict], *, ppy: float, exposure: list[float] | None = None,
            traded_notional: float = 0.0, fees: float = 0.0) -> dict:
    """``total_return``, ``sharpe``, ``sortino``, ``max_drawdown``, ``calmar``, ``turnover``, ``exposure``,
    ``hit_rate``, ``profit_factor``, ``sqn``, ``trades``, ``periods_per_year``, ``costs_paid`` of a curve."""
    eq = np.asarray(equity, dtype=float)
    out = {"periods_per_year": ppy, "trades": len(trades), "costs_paid": float(fees)}
    if len(eq) < 2 or eq[0] <= 0:
        return {**out, "total_return": 0.0, "sharpe": None, "sortino": None, "max_drawdown": 0.0, "calmar": None,
                "turnover": 0.0, "exposure": 0.0, "hit_rate": None, "profit_factor": None, "sqn": None}
    ret = eq[1:] / eq[:-1] - 1.0
    total = float(eq[-1] / eq[0] - 1.0)
    sd = float(ret.std(ddof=1)) if len(ret) > 1 else 0.0
    mean = float(ret.mean())
    downside = float(np.sqrt(np.mean(np.minimum(ret, 0.0) ** 2)))
    peak = np.maximum.accumulate(eq)
    mdd = float(np.max(1.0 - eq / peak))
    years = len(ret) / ppy if ppy else 0.0
    annual = (eq[-1] / eq[0]) ** (1 / years) - 1.0 if years > 0 and eq[-1] > 0 else None
    pnl = np.array([t["pnl"] for t in trades], dtype=float)
    r = np.array([t["pnl_pct"] for t in trades], dtype=float)
    wins, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    return {
        **out,
        "total_return": total,
        "sharpe": mean / sd * math.sqrt(ppy) if sd > 0 else None,
        "sortino": mean / downside * math.sqrt(ppy) if downside > 0 else None,
        "max_drawdown": mdd,
        "calmar": annual / mdd if annual is not None and mdd > 0 else None,
        "turnover": float(traded_notional / eq.mean() / years) if years > 0 else 0.0,
        "exposure": float(np.mean(exposure)) if exposure is not None and len(exposure) else 0.0,
        "hit_rate": float((pnl > 0).mean()) if len(pnl) else None,
        "profit_factor": float(wins / losses) if losses > 0 else None,
        "sqn": float(math.sqrt(len(r)) * r.mean() / r.std(ddof=1)) if len(r) > 1 and r.std(ddof=1) > 0 else None,
    }

"""Risk rules: pure functions that accept, resize or reject an entry with a named reason.

Checked in this order, the first refusal wins: the drawdown breaker (``max_drawdown``: no entries for the rest of
the run), the daily loss limit (``daily_loss_limit``: none until the next UTC day), the stop-loss guard
(``stop_guard``: N stop-outs within M candles lock entries for K candles), the cooldown after an exit
(``cooldown_bars``, per series), one position per series, ``max_positions``. Then the size: ``position_fraction``
of equity, or ``risk_per_trade`` of equity ÷ the stop's distance, by default an equal share of equity per series
of the universe (a spec without ``risk`` is fully invested); resized to the per-symbol cap, the total cap (no
leverage by default), the cash (costs included) and the lot (stocks trade whole shares). Every refusal and every
resize is a risk event: ``(rule, detail)``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .orders import floor_lots
from .spec import Spec


@dataclass
class Book:
    """What the risk rules read: cash, the open positions' notional per series (marked at the last close),
    equity and its peak, the UTC day's starting equity, recent stop-outs and exits (candle indexes)."""

    cash: float
    equity: float
    peak: float
    day: object = None
    day_start: float = 0.0
    exposure: dict = field(default_factory=dict)        # series -> notional at the last close
    symbol_exposure: dict = field(default_factory=dict)  # symbol -> notional
    pending: dict = field(default_factory=dict)         # series -> cash an accepted, unfilled entry commits
    last_exit: dict = field(default_factory=dict)       # series -> candle index of its last exit
    stopouts: deque = field(default_factory=deque)      # times of recent stop-outs
    locked_until: object = None                         # stop guard: no entries up to this time
    halted: bool = False                                # drawdown breaker tripped: no entries for the rest of the run
    day_locked: object = None                           # the UTC day whose loss limit was reached
    lots: dict = field(default_factory=dict)            # series -> its market's lot (stocks: 1, whole shares)

    def mark_day(self, day) -> None:
        if day != self.day:
            self.day, self.day_start = day, self.equity


@dataclass(frozen=True)
class Decision:
    quantity: float
    events: tuple[tuple[str, str], ...] = ()   # (rule, detail): a refusal (quantity 0) or the resizes

    @property
    def rejected(self) -> bool:
        return self.quantity <= 0


def _refuse(rule: str, detail: str) -> Decision:
    return Decision(0.0, ((rule, detail),))


def update_breakers(spec: Spec, book: Book, now) -> list[tuple[str, str]]:
    """After every close (equity marked): the drawdown breaker and the day's loss limit trip as soon as equity
    crosses them, whether or not an entry is being tried, and stay tripped (the breaker for the run, the limit
    until the next UTC day) even if equity recovers. Returns the events of what tripped now."""
    r = spec.risk
    out = []
    if r is None:
        return out
    if (r.max_drawdown is not None and not book.halted and book.peak > 0
            and (book.peak - book.equity) / book.peak >= r.max_drawdown):
        book.halted = True
        out.append(("max_drawdown", f"drawdown {(book.peak - book.equity) / book.peak:.2%} ≥ {r.max_drawdown:.2%}: "
                                    "no entries for the rest of the run"))
    if (r.daily_loss_limit is not None and book.day_locked != book.day and book.day_start > 0
            and (book.day_start - book.equity) / book.day_start >= r.daily_loss_limit):
        book.day_locked = book.day
        out.append(("daily_loss_limit", f"the day's loss {(book.day_start - book.equity) / book.day_start:.2%} ≥ "
                                        f"{r.daily_loss_limit:.2%}: no entries until the next UTC day"))
    return out


def entry(spec: Spec, book: Book, series: tuple[str, str], price: float, index: int,
          cost_fraction: float = 0.0, now=None) -> Decision:
    """The quantity of a long entry on ``series`` at about ``price`` (the decision candle's close, at ``now``),
    candle ``index`` of its series; ``cost_fraction``: what a fill costs on top of the price (spread, slippage,
    fee)."""
    r = spec.risk
    if price <= 0 or not math.isfinite(price):
        return _refuse("price", f"no usable price ({price})")
    if r is not None:
        if book.halted:
            return _refuse("max_drawdown", "the drawdown breaker tripped: no entries for the rest of the run")
        if book.day_locked is not None and book.day_locked == book.day:
            return _refuse("daily_loss_limit", "the day's loss limit was reached: no entries until the next UTC day")
        if book.locked_until is not None and now is not None and now < book.locked_until:
            return _refuse("stop_guard", f"locked after {r.stop_guard.stops} stop-outs until {book.locked_until}")
        last = book.last_exit.get(series)
        if r.cooldown_bars and last is not None and index - last <= r.cooldown_bars:
            return _refuse("cooldown", f"{index - last} candle(s) since the last exit ≤ {r.cooldown_bars}")
    if series in book.exposure or series in book.pending:
        return _refuse("in_position", "a position on this series is open or being entered (no pyramiding)")
    held = len(set(book.exposure) | set(book.pending))  # an accepted entry counts before it fills
    if r is not None and r.max_positions is not None and held >= r.max_positions:
        return _refuse("max_positions", f"{held} positions open or being entered = max_positions")
    equity = book.equity
    share = 1.0 / len(spec.universe)
    if r is not None and r.position_fraction is not None:
        notional = r.position_fraction * equity
    elif r is not None and r.risk_per_trade is not None and spec.rules.stop_loss:
        notional = r.risk_per_trade * equity / spec.rules.stop_loss
    else:
        notional = share * equity
    events = []
    committed = {s: v for s, v in book.pending.items()}
    sym_cap = ((r.max_symbol_fraction if r is not None else 1.0) * equity - book.symbol_exposure.get(series[0], 0.0)
               - sum(v for s, v in committed.items() if s[0] == series[0]))
    if notional > sym_cap:
        notional = max(0.0, sym_cap)
        events.append(("max_symbol_fraction", f"resized to the per-symbol cap ({notional:.2f})"))
    total_cap = ((r.max_total_fraction if r is not None else 1.0) * equity - sum(book.exposure.values())
                 - sum(committed.values()))
    if notional > total_cap:
        notional = max(0.0, total_cap)
        events.append(("max_total_fraction", f"resized to the total cap ({notional:.2f})"))
    affordable = (book.cash - sum(committed.values())) / (1.0 + cost_fraction)
    lever = r is not None and r.max_total_fraction > 1.0
    if not lever and notional > affordable:
        notional = max(0.0, affordable)
        events.append(("cash", f"resized to the cash ({notional:.2f})"))
    qty = notional / price
    lot = lot_of(spec, book, series)
    qty = floor_lots(qty, lot)
    if qty <= 0 or notional <= 0:
        rule = events[-1][0] if events else ("lot" if lot else "size")
        return Decision(0.0, tuple(events) + ((rule, "nothing left to buy"),))
    return Decision(qty, tuple(events))


def lot_of(spec: Spec, book: Book, series) -> float | None:
    """The quantity step of ``series``: the larger of the spec's ``risk.lot`` and its market's (stocks: 1)."""
    lots = [x for x in ((spec.risk.lot if spec.risk is not None else None), book.lots.get(series)) if x]
    return max(lots) if lots else None


def record_exit(spec: Spec, book: Book, series: tuple[str, str], index: int, reason: str,
                now=None) -> list[tuple[str, str]]:
    """An exit at candle ``index`` of its series (at ``now``): the series' cooldown starts; a stop-out counts
    towards the stop guard, whose window and lock are counted in candles of the series that stopped out (as time:
    series of other timeframes share it). Returns the lock's risk event when it locks."""
    book.last_exit[series] = index
    r = spec.risk
    if reason != "stop_loss" or r is None or r.stop_guard is None or now is None:
        return []
    from datetime import timedelta

    from ..core.timeframes import seconds

    g = r.stop_guard
    step = timedelta(seconds=seconds(series[1]))
    book.stopouts.append(now)
    while book.stopouts and book.stopouts[0] <= now - g.window * step:
        book.stopouts.popleft()
    if len(book.stopouts) >= g.stops:
        book.locked_until = now + g.lock * step
        book.stopouts.clear()
        return [("stop_guard", f"{g.stops} stop-outs within {g.window} candles: entries locked for the next "
                               f"{g.lock} candles")]
    return []

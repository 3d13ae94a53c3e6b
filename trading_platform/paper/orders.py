"""Orders and their fills: an enforced state machine, the next candle's open, costs, partial fills, and exits
checked against a candle's range. Pure: the engine (``engine.py``) and the store call it.

A market order decided on candle ``t`` fills at the open of the series' next candle (``latency_bars`` more
candles later), never at ``t``'s close; with no next candle it stays ``accepted``. Its price is the open moved
against the order by half the spread, the slippage and the impact (``impact`` × quantity ÷ the candle's volume);
a fee of ``fee_bps`` of the notional is paid on every fill; with ``participation`` at most that fraction of the
candle's volume fills (the rest on the next candles: ``partially_filled``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from ..errors import PlatformError
from .spec import Costs

STATES = ("new", "accepted", "partially_filled", "filled", "rejected", "cancelled", "expired")
TERMINAL = frozenset({"filled", "rejected", "cancelled", "expired"})
TRANSITIONS = {
    "new": frozenset({"accepted", "rejected"}),
    "accepted": frozenset({"partially_filled", "filled", "rejected", "cancelled", "expired"}),
    "partially_filled": frozenset({"partially_filled", "filled", "cancelled", "expired"}),
}


class IllegalTransition(PlatformError):
    """An order asked to move where its state machine does not go (a bug in the caller, never input)."""


@dataclass
class Order:
    client_order_id: str
    symbol: str
    timeframe: str
    side: str                 # buy | sell
    quantity: float
    signal_ts: object         # the candle the decision was made on (its close)
    intent: str               # entry | exit:<reason>
    status: str = "new"
    filled: float = 0.0
    stop: float | None = None
    target: float | None = None
    risk_score: float | None = None
    reason: str | None = None  # why rejected / cancelled / expired

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    def to(self, status: str, reason: str | None = None) -> None:
        """Move to ``status``; an illegal move raises :class:`IllegalTransition`."""
        if status not in TRANSITIONS.get(self.status, frozenset()):
            raise IllegalTransition(f"order {self.client_order_id}: {self.status} -> {status} is not a transition "
                                    f"(from {self.status}: {', '.join(sorted(TRANSITIONS.get(self.status, ()))) or 'none, it is final'})",
                                    field="status")
        self.status = status
        if reason is not None:
            self.reason = reason


def client_order_id(run_id: str, version: str, symbol: str, timeframe: str, signal_ts, intent: str) -> str:
    """The order's idempotency key: a hash of what decided it (re-running a decision makes the same id)."""
    ts = signal_ts.isoformat() if hasattr(signal_ts, "isoformat") else str(signal_ts)
    raw = "|".join((run_id, version, symbol, timeframe, ts, intent))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def rejects(order_id: str, rate: float) -> bool:
    """The seed's mock failures, reproducible: rejected when the order id's hash falls under ``rate``."""
    if rate <= 0:
        return False
    u = int(hashlib.sha256(("reject|" + order_id).encode()).hexdigest()[:13], 16) / float(16 ** 13)
    return u < rate


@dataclass(frozen=True)
class Fill:
    quantity: float
    price: float
    fee: float


def fill_price(side: str, open_: float, quantity: float, volume: float | None, costs: Costs) -> float:
    """The open moved against the order: half the spread, the slippage, and the impact of its share of the
    candle's volume."""
    frac = (costs.spread_bps / 2 + costs.slippage_bps) / 1e4
    if costs.impact and volume and volume > 0:
        frac += costs.impact * quantity / volume
    return open_ * (1 + frac) if side == "buy" else open_ * (1 - frac)


def floor_lots(qty: float, lot: float | None) -> float:
    """``qty`` rounded down to whole lots, counted as an integer number of lots (float ``//`` would lose a lot
    about half the time: ``0.5 // 0.1 == 4.0``). Every rounding of the engine goes through here."""
    if not lot:
        return qty
    return math.floor(qty / lot + 1e-9) * lot


def fill_at_open(order: Order, open_: float, volume: float | None, costs: Costs, lot: float | None = None) -> Fill | None:
    """Fill what the candle allows of ``order`` at its open (the participation cap, lots); None when nothing
    fills (a zero-volume candle under a cap)."""
    qty = order.remaining
    if costs.participation is not None:
        cap = costs.participation * (volume or 0.0)
        qty = min(qty, cap)
    qty = floor_lots(qty, lot)
    if qty <= 1e-12:
        return None
    price = fill_price(order.side, open_, qty, volume, costs)
    return Fill(qty, price, abs(qty * price) * costs.fee_bps / 1e4)


def apply_fill(order: Order, fill: Fill) -> None:
    order.filled += fill.quantity
    order.to("filled" if order.remaining <= 1e-9 * max(1.0, order.quantity) else "partially_filled")


def exit_in_range(open_: float, high: float, low: float, stop: float | None, target: float | None) -> tuple[str, float] | None:
    """A long position's stop or target hit inside a candle: an open beyond the stop (or the target) exits at the
    open; else the stop when the low reaches it, the target when the high does; both inside one candle: the stop
    (the worse, never knowing which came first). Returns (reason, price) or None."""
    if stop is not None and open_ <= stop:
        return "stop_loss", open_
    if target is not None and open_ >= target:
        return "take_profit", open_
    if stop is not None and low <= stop:
        return "stop_loss", stop
    if target is not None and high >= target:
        return "take_profit", target
    return None

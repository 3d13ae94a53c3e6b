"""The paper-trading engine: one step function, two drivers (a backtest over stored candles, the live path).

``Engine.step(t, bars, decisions)`` advances the portfolio through one time ``t`` at which the series in ``bars``
closed a candle (a ``Bar``: open, high, low, close, volume and the series' own candle index):

1. orders decided on earlier candles fill at this candle's open (``latency_bars`` more candles later; the
   participation cap may leave a rest for the next candles);
2. open positions meet their stop or target inside this candle's range (``orders.exit_in_range``: an open
   beyond the stop exits at the open; both inside: the stop), filled at once and in full at that price, costs on
   top (the impact of the whole quantity is charged; the participation cap does not hold back a protective exit);
   what was still being bought is cancelled;
3. a position held ``time_exit`` candles gets an exit order (filled at the next open);
4. everything is marked to market at the closes (a series without a candle at ``t`` keeps its last close);
5. the decisions made on this candle's close (``decisions``: series -> ``Decision``) become orders, sized and
   checked by the risk rules (``risk.py``), to be filled at a later open: never at this close.

After the marks, the drawdown breaker and the day's loss limit trip (``risk.update_breakers``). An order not
(fully) filled within ``ORDER_TTL_BARS`` candles of its first chance expires; a rejected exit is decided again at
the next close. A trade is a round trip: every entry and exit fill of one position.

Nothing reads a candle or an output after ``t``: the step is given only what closed by ``t``. The records
(orders, their events, fills, trades, equity, risk events) are lists of plain tuples the store writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import risk as risk_rules
from .orders import Order, apply_fill, client_order_id, exit_in_range, fill_at_open, fill_price, floor_lots, rejects
from .spec import Spec

ORDER_TTL_BARS = 10  # an order not (fully) filled this many candles after it could first fill expires


@dataclass(frozen=True)
class Bar:
    open: float
    high: float
    low: float
    close: float
    volume: float
    index: int            # the series' candle number in the run (latency, holding times, cooldowns count these)
    ts: object = None     # the candle's own time (its open); a fill is recorded at it (else at the step's time)


@dataclass(frozen=True)
class Signal:
    enter: bool                  # the rules say enter (long) on this close
    reason: str = ""             # why not, when not: below_threshold, regime, pump_veto, missing_output, in_sample
    risk_score: float | None = None


@dataclass
class Position:
    quantity: float
    entry_price: float
    entry_ts: object
    entry_index: int
    stop: float | None
    target: float | None
    order_id: str
    fees: float = 0.0         # entry fees of what is held
    held: int = 0
    exiting: bool = False
    bought: float = 0.0       # the round trip so far: quantity bought, its cost with fees
    cost: float = 0.0
    sold: float = 0.0         # quantity sold, its proceeds net of fees, the exit fees
    proceeds: float = 0.0
    exit_fees: float = 0.0


@dataclass
class Records:
    orders: list = field(default_factory=list)        # Order objects, in creation order
    order_events: list = field(default_factory=list)  # (client_order_id, ts, from, to, reason)
    fills: list = field(default_factory=list)         # (client_order_id, the fill candle's ts, price, quantity, fee)
    trades: list = field(default_factory=list)        # dicts: series, entry/exit ts and price, qty, pnl, pnl_pct, reason
    equity: list = field(default_factory=list)        # (ts, equity, cash, exposure)
    risk_events: list = field(default_factory=list)   # (ts, symbol, timeframe, rule, detail)
    skipped: dict = field(default_factory=dict)       # reason -> decisions that placed no order
    touched: dict = field(default_factory=dict)       # id -> every order with an event here (carried ones too)


class Engine:
    def __init__(self, spec: Spec, run_id: str, *, version: str | None = None, lots: dict | None = None):
        self.spec, self.run_id = spec, run_id
        self.version = version or spec.version
        self.cash = spec.cash
        self.positions: dict[tuple, Position] = {}
        self.pending: dict[tuple, Order] = {}     # series -> its open order (one at a time)
        self.due: dict[str, int] = {}             # order id -> the series candle index it may fill from
        self.last_close: dict[tuple, float] = {}
        self.book = risk_rules.Book(cash=spec.cash, equity=spec.cash, peak=spec.cash, lots=dict(lots or {}))
        self.rec = Records()
        c = spec.costs
        self.cost_fraction = (c.spread_bps / 2 + c.slippage_bps + c.fee_bps) / 1e4

    # ---- a run that continues another (the next month of a backtest) ---------------------------------------
    STATE_VERSION = 1

    def snapshot(self, next_index: dict) -> bytes:
        """The engine's state at its last step (cash, positions, open orders, the risk book, the last closes) and
        each series' next candle index, for the run that continues from here (``resume``). Records stay behind."""
        import pickle

        return pickle.dumps({"v": self.STATE_VERSION, "cash": self.cash, "positions": self.positions,
                             "pending": self.pending, "due": self.due, "last_close": self.last_close,
                             "book": self.book, "next_index": dict(next_index)}, protocol=5)

    @classmethod
    def resume(cls, spec: Spec, run_id: str, state: bytes, *, version: str | None = None,
               lots: dict | None = None) -> tuple["Engine", dict]:
        """An engine that goes on from ``state`` (``snapshot``) under a new run id, and the series' next candle
        indexes. The open orders keep their ids (their fills and events become the new run's records)."""
        import pickle

        d = pickle.loads(state)
        if not isinstance(d, dict) or d.get("v") != cls.STATE_VERSION:
            raise ValueError("the stored state was written by another version of the engine: run the earlier "
                             "month again")
        e = cls(spec, run_id, version=version)
        e.cash, e.positions, e.pending, e.due = d["cash"], d["positions"], d["pending"], d["due"]
        e.last_close, e.book = d["last_close"], d["book"]
        e.book.lots = dict(lots or {})
        return e, d["next_index"]

    # ---- one time --------------------------------------------------------------------------------------------
    def step(self, t, bars: dict, decisions: dict | None = None) -> None:
        self.book.mark_day(t.date() if hasattr(t, "date") else t)
        for series, bar in bars.items():
            self._fill_pending(series, bar, t)
            self._check_exits(series, bar, t)
            self.last_close[series] = bar.close
        self._mark(t)
        for rule, detail in risk_rules.update_breakers(self.spec, self.book, t):
            self.rec.risk_events.append((t, "*", "*", rule, detail))
        for series, bar in bars.items():
            pos = self.positions.get(series)
            if pos is not None and not pos.exiting and self.spec.rules.time_exit and pos.held >= self.spec.rules.time_exit:
                self.exit(series, t, bar, "time_exit")
        self.book.pending = {s: o.remaining * self.last_close.get(s, 0.0) * (1 + self.cost_fraction)
                             for s, o in self.pending.items() if o.side == "buy"}
        for series, sig in (decisions or {}).items():
            if series not in bars:
                continue
            if not sig.enter:
                if sig.reason:
                    self.rec.skipped[sig.reason] = self.rec.skipped.get(sig.reason, 0) + 1
                continue
            if series in self.pending or series in self.positions:
                continue
            self._enter(series, bars[series], t, sig)
        self.rec.equity.append((t, self.book.equity, self.cash, sum(self.book.exposure.values())))

    def exit(self, series, t, bar: Bar, reason: str) -> None:
        """Leave the position on ``series`` at the next open: what is still being bought is cancelled first; a
        rejected exit order leaves the position as it is (decided again at the next close)."""
        pos = self.positions.get(series)
        if pos is None or pos.exiting:
            return
        self._cancel_pending(series, t, f"the position leaves ({reason})")
        o = self._order(series, "sell", pos.quantity, t, bar, f"exit:{reason}")
        pos.exiting = o.status == "accepted"

    def _cancel_pending(self, series, t, reason: str) -> None:
        o = self.pending.pop(series, None)
        if o is not None:
            self._move(o, "cancelled", t, reason)
            self.due.pop(o.client_order_id, None)

    # ---- orders ----------------------------------------------------------------------------------------------
    def _order(self, series, side: str, qty: float, t, bar: Bar, intent: str, sig: Signal | None = None) -> Order:
        coid = client_order_id(self.run_id, self.version, series[0], series[1], t, intent)
        o = Order(coid, series[0], series[1], side, qty, t, intent,
                  risk_score=sig.risk_score if sig is not None else None)
        self.rec.orders.append(o)
        # the simulated venue's draw hangs on the decision, not on the run id: a chain of months rejects what one
        # run over them rejects
        ts = t.isoformat() if hasattr(t, "isoformat") else str(t)
        if rejects("|".join((self.version, series[0], series[1], ts, intent)), self.spec.reject_rate):
            self._move(o, "rejected", t, "the simulated venue rejected it (reject_rate)")
            return o
        self._move(o, "accepted", t)
        self.pending[series] = o
        self.due[coid] = bar.index + 1 + self.spec.latency_bars
        return o

    def _move(self, o: Order, status: str, t, reason: str | None = None) -> None:
        before = o.status
        o.to(status, reason)
        self.rec.order_events.append((o.client_order_id, t, before, status, reason))
        self.rec.touched[o.client_order_id] = o

    def _enter(self, series, bar: Bar, t, sig: Signal) -> None:
        d = risk_rules.entry(self.spec, self.book, series, bar.close, bar.index, self.cost_fraction, now=t)
        for rule, detail in d.events:
            self.rec.risk_events.append((t, series[0], series[1], rule, detail))
        if d.rejected:
            return
        o = self._order(series, "buy", d.quantity, t, bar, "entry", sig)
        if o.status == "accepted":
            self.book.pending[series] = d.quantity * bar.close * (1 + self.cost_fraction)
        r = self.spec.rules
        o.stop = None if r.stop_loss is None else bar.close * (1 - r.stop_loss)      # re-anchored at the fill
        o.target = None if r.take_profit is None else bar.close * (1 + r.take_profit)

    def _fill_pending(self, series, bar: Bar, t) -> None:
        o = self.pending.get(series)
        if o is None or bar.index < self.due[o.client_order_id]:
            return
        if bar.index >= self.due[o.client_order_id] + ORDER_TTL_BARS:
            # not (fully) filled within its time to live (the participation cap, a lot larger than the cap allows)
            self._move(o, "expired", t, f"not filled within {ORDER_TTL_BARS} candles of its first chance")
            del self.pending[series]
            self.due.pop(o.client_order_id, None)
            pos = self.positions.get(series)
            if o.side == "sell" and pos is not None:
                pos.exiting = False  # decided again at the next close
            return
        lot = risk_rules.lot_of(self.spec, self.book, series)
        f = fill_at_open(o, bar.open, bar.volume, self.spec.costs, lot if o.side == "buy" else None)
        if f is None:
            return
        leveraged = self.spec.risk is not None and self.spec.risk.max_total_fraction > 1.0
        if o.side == "buy" and not leveraged:
            cap = floor_lots(self.cash / (f.price * (1 + self.spec.costs.fee_bps / 1e4)), lot)
            if f.quantity > cap * (1 + 1e-12):
                # the open gapped above the close the entry was sized on: what the cash buys, the rest dropped
                self.rec.risk_events.append((t, series[0], series[1], "cash",
                                             f"resized at the fill from {o.remaining:g} to {max(cap, 0.0):g}: the "
                                             "open is above the close the entry was sized on"))
                o.quantity = o.filled + max(cap, 0.0)
                if o.remaining <= 1e-12:
                    self._move(o, "cancelled", t, "no cash left at the fill")
                    del self.pending[series]
                    return
                f = fill_at_open(o, bar.open, bar.volume, self.spec.costs, lot)
                if f is None:
                    return
        before = o.status
        apply_fill(o, f)
        self.rec.order_events.append((o.client_order_id, t, before, o.status, None))
        self.rec.touched[o.client_order_id] = o
        self.rec.fills.append((o.client_order_id, t if bar.ts is None else bar.ts, f.price, f.quantity, f.fee))
        if o.side == "buy":
            self.cash -= f.quantity * f.price + f.fee
            pos = self.positions.get(series)
            if pos is None:
                r = self.spec.rules
                pos = self.positions[series] = Position(
                    0.0, f.price, t, bar.index, None if r.stop_loss is None else f.price * (1 - r.stop_loss),
                    None if r.take_profit is None else f.price * (1 + r.take_profit), o.client_order_id)
            pos.entry_price = (pos.entry_price * pos.quantity + f.price * f.quantity) / (pos.quantity + f.quantity)
            pos.quantity += f.quantity
            pos.fees += f.fee
            pos.bought += f.quantity
            pos.cost += f.quantity * f.price + f.fee
        else:
            self._close(series, f.quantity, f.price, f.fee, t, bar, o.intent.split(":", 1)[1])
        if o.status == "filled" and self.pending.get(series) is o:
            del self.pending[series]

    def _check_exits(self, series, bar: Bar, t) -> None:
        pos = self.positions.get(series)
        if pos is None:
            return
        hit = exit_in_range(bar.open, bar.high, bar.low, pos.stop, pos.target)
        if hit is None:
            pos.held += 1
            return
        reason, level = hit
        price = fill_price("sell", level, pos.quantity, bar.volume, self.spec.costs)
        fee = pos.quantity * price * self.spec.costs.fee_bps / 1e4
        coid = client_order_id(self.run_id, self.version, series[0], series[1], t, f"exit:{reason}")
        o = Order(coid, series[0], series[1], "sell", pos.quantity, t, f"exit:{reason}")
        self.rec.orders.append(o)
        self._move(o, "accepted", t)
        o.filled = pos.quantity
        self._move(o, "filled", t)
        self.rec.fills.append((coid, t if bar.ts is None else bar.ts, price, pos.quantity, fee))
        # what was still being bought, or a time exit waiting for the next open: not needed now
        self._cancel_pending(series, t, f"the position left by {reason}")
        self._close(series, pos.quantity, price, fee, t, bar, reason)

    def _close(self, series, qty: float, price: float, fee: float, t, bar: Bar, reason: str) -> None:
        """An exit fill: cash in; once the position is flat, its round trip is one trade (every entry and exit
        fill of it: the volume-weighted prices, all the fees, the whole holding time)."""
        pos = self.positions[series]
        self.cash += qty * price - fee
        share = qty / pos.quantity
        pos.fees -= pos.fees * share
        pos.quantity -= qty
        pos.sold += qty
        pos.proceeds += qty * price - fee
        pos.exit_fees += fee
        if pos.quantity > 1e-12:
            return
        pnl = pos.proceeds - pos.cost
        entry_fees = pos.cost - pos.bought * pos.entry_price
        self.rec.trades.append({"symbol": series[0], "timeframe": series[1], "entry_order": pos.order_id,
                                "entry_ts": pos.entry_ts, "entry_price": pos.entry_price, "exit_ts": t,
                                "exit_price": (pos.proceeds + pos.exit_fees) / pos.sold, "quantity": pos.sold,
                                "pnl": pnl, "pnl_pct": pnl / pos.cost if pos.cost else 0.0,
                                "fees": entry_fees + pos.exit_fees, "exit_reason": reason, "bars_held": pos.held})
        del self.positions[series]
        self.book.exposure.pop(series, None)
        for ev in risk_rules.record_exit(self.spec, self.book, series, bar.index, reason, t):
            self.rec.risk_events.append((t, series[0], series[1], *ev))

    def _mark(self, t) -> None:
        exposure, per_symbol = {}, {}
        for series, pos in self.positions.items():
            v = pos.quantity * self.last_close.get(series, pos.entry_price)
            exposure[series] = v
            per_symbol[series[0]] = per_symbol.get(series[0], 0.0) + v
        equity = self.cash + sum(exposure.values())
        b = self.book
        b.cash, b.equity, b.exposure, b.symbol_exposure = self.cash, equity, exposure, per_symbol
        if math.isfinite(equity):
            b.peak = max(b.peak, equity)

"""The random-entry control's replicates, all at once: the engine's step, vectorized over replicates.

``controls.run_schedule`` runs one replicate through ``Engine.step``; 200 of them over a year of 5-minute candles
of four symbols would take minutes. Here every replicate advances through the same times together: the state of
each series is an array over replicates (quantity, stop, target, candles held, the pending order, the cooldown),
and the portfolio's cash, equity, peak and day are too. It follows the engine's order inside a step (fills at the
open, stops and targets inside the range, the marks, the breakers, the entries sized by the risk rules, the
time exits by each entry's holding time) with the same formulas, so a replicate's equity is the engine's to
rounding (tests/test_paper_engine.py checks one against ``run_schedule``; the benchmark reports the difference).

What it does not model (``supported`` says why): a participation cap (partial fills and expiries), a reject
rate, the stop-loss guard. A spec with one of those runs its replicates through the engine instead.
"""

from __future__ import annotations

import numpy as np

from .spec import Spec


def floor_lots(q, lot):
    """``orders.floor_lots`` over an array: whole lots, counted as integers."""
    return q if not lot else np.floor(q / lot + 1e-9) * lot


def supported(spec: Spec) -> str | None:
    """None when the vectorized replicates reproduce the engine for ``spec``; else the reason they do not."""
    if spec.costs.participation is not None:
        return "a participation cap (partial fills)"
    if spec.reject_rate > 0:
        return "a reject rate"
    if spec.risk is not None and spec.risk.stop_guard is not None:
        return "the stop-loss guard"
    return None


def replicate_equity(spec: Spec, candles: dict, schedules: list[dict], lots: dict | None = None) -> np.ndarray:
    """Equity at every step (the union of the series' close times) of each replicate: shape (replicates, steps).

    ``candles``: series -> [(close time, Bar)] in order (``Bar.index`` counting the series' candles);
    ``schedules``: per replicate, series -> {decision candle index: candles held} (``controls.random_schedule``).
    ``spec``: the random-entry control's spec (``controls.random_entry``): its stop and target, costs, risk."""
    why = supported(spec)
    if why:
        raise ValueError(f"the vectorized replicates do not model {why}")
    R = len(schedules)
    series = list(candles)
    S = len(series)
    times = sorted({t for rows in candles.values() for t, _ in rows})
    T = len(times)
    pos_of_time = {t: i for i, t in enumerate(times)}
    # per series, per step: the bar's fields (NaN where the series has no candle) and its candle index
    O, Hh, L, C, V = (np.full((S, T), np.nan) for _ in range(5))
    I = np.full((S, T), -1, dtype=np.int64)
    for k, s in enumerate(series):
        for t, b in candles[s]:
            j = pos_of_time[t]
            O[k, j], Hh[k, j], L[k, j], C[k, j], V[k, j], I[k, j] = b.open, b.high, b.low, b.close, b.volume, b.index
    n_idx = [int(I[k].max()) + 1 if T else 0 for k in range(S)]
    hold_at = [np.zeros((R, max(n, 1)), dtype=np.int64) for n in n_idx]   # decision index -> candles held (0: none)
    for r, sched in enumerate(schedules):
        for k, s in enumerate(series):
            for i, h in (sched.get(s) or {}).items():
                if 0 <= i < n_idx[k]:
                    hold_at[k][r, i] = h

    c, rk, rl = spec.costs, spec.risk, spec.rules
    fee = c.fee_bps / 1e4
    base = (c.spread_bps / 2 + c.slippage_bps) / 1e4
    cf = (c.spread_bps / 2 + c.slippage_bps + c.fee_bps) / 1e4
    lev = rk is not None and rk.max_total_fraction > 1.0
    spec_lot = rk.lot if rk is not None else None
    lot = [max([x for x in (spec_lot, (lots or {}).get(s)) if x], default=None) for s in series]
    symbols = [s[0] for s in series]
    latency = spec.latency_bars

    def price(side, level, qty, vol):
        frac = base + (c.impact * qty / vol if c.impact and vol > 0 else np.zeros(np.shape(qty)))
        return level * (1 + frac) if side > 0 else level * (1 - frac)

    cash = np.full(R, float(spec.cash))
    equity = cash.copy()
    peak = cash.copy()
    day_start = np.zeros(R)
    day_locked = np.full(R, -1, dtype=np.int64)
    halted = np.zeros(R, dtype=bool)
    qty = np.zeros((S, R))                       # open position's quantity (0: none)
    stop = np.full((S, R), np.nan)
    target = np.full((S, R), np.nan)
    held = np.zeros((S, R), dtype=np.int64)
    exiting = np.zeros((S, R), dtype=bool)
    pend = np.zeros((S, R))                       # pending order's quantity: > 0 buy, < 0 sell, 0 none
    due = np.zeros((S, R), dtype=np.int64)
    want = np.zeros((S, R), dtype=np.int64)       # the holding time of the last scheduled entry
    last_exit = np.full((S, R), -(10 ** 12), dtype=np.int64)
    last_close = np.zeros(S)                      # 0 until the series' first candle (no position before it)
    out = np.empty((R, T))
    day = None
    day_no = -1

    for j, t in enumerate(times):
        d = t.date() if hasattr(t, "date") else t
        if d != day:
            day, day_no = d, day_no + 1
            day_start = equity.copy()
        present = [k for k in range(S) if I[k, j] >= 0]
        for k in present:
            o, hi, lo, cl, vol, idx = O[k, j], Hh[k, j], L[k, j], C[k, j], V[k, j], I[k, j]
            # 1. the pending order fills at this open
            go = (pend[k] != 0) & (idx >= due[k])
            buy = go & (pend[k] > 0)
            if buy.any():
                q = floor_lots(pend[k][buy], lot[k])
                p = price(1, o, q, vol)
                if not lev:
                    cap = floor_lots(cash[buy] / (p * (1 + fee)), lot[k])
                    over = q > cap * (1 + 1e-12)
                    if over.any():
                        q = np.where(over, floor_lots(np.maximum(cap, 0.0), lot[k]), q)
                        p = np.where(over, price(1, o, q, vol), p)
                ok = q > 1e-12
                f = np.abs(q * p) * fee
                b = np.flatnonzero(buy)
                cash[b[ok]] -= q[ok] * p[ok] + f[ok]
                qty[k, b[ok]] = q[ok]
                stop[k, b[ok]] = p[ok] * (1 - rl.stop_loss) if rl.stop_loss is not None else np.nan
                target[k, b[ok]] = p[ok] * (1 + rl.take_profit) if rl.take_profit is not None else np.nan
                held[k, b[ok]] = 0
                pend[k, b] = 0.0
            sell = go & (pend[k] < 0)
            if sell.any():
                s_ = np.flatnonzero(sell)
                q = qty[k, s_]
                p = price(-1, o, q, vol)
                cash[s_] += q * p - np.abs(q * p) * fee
                qty[k, s_] = 0.0
                pend[k, s_] = 0.0
                exiting[k, s_] = False
                last_exit[k, s_] = idx
            # 2. stops and targets inside the range
            has = qty[k] > 0
            if has.any():
                st, tg = stop[k], target[k]
                hit_stop_open = has & (o <= st)
                hit_tg_open = has & ~hit_stop_open & (o >= tg)
                hit_stop = has & ~hit_stop_open & ~hit_tg_open & (lo <= st)
                hit_tg = has & ~hit_stop_open & ~hit_tg_open & ~hit_stop & (hi >= tg)
                level = np.where(hit_stop_open | hit_tg_open, o, np.where(hit_stop, st, tg))
                hit = hit_stop_open | hit_tg_open | hit_stop | hit_tg
                held[k] += (has & ~hit)
                if hit.any():
                    h_ = np.flatnonzero(hit)
                    q = qty[k, h_]
                    p = price(-1, level[h_], q, vol)
                    cash[h_] += q * p - q * p * fee
                    qty[k, h_] = 0.0
                    pend[k, h_] = 0.0          # a time exit waiting for the next open: not needed now
                    exiting[k, h_] = False
                    last_exit[k, h_] = idx
            last_close[k] = cl
        # 3. the marks (summed across series in another order than the engine's: a difference of rounding)
        exposure = qty * last_close[:, None]
        equity = cash + (exposure.sum(axis=0) if S > 1 else exposure[0])
        peak = np.where(np.isfinite(equity), np.maximum(peak, equity), peak)
        # 4. the breakers
        if rk is not None:
            if rk.max_drawdown is not None:
                halted |= (peak > 0) & ((peak - equity) / np.where(peak > 0, peak, 1.0) >= rk.max_drawdown)
            if rk.daily_loss_limit is not None:
                trip = (day_locked != day_no) & (day_start > 0) & (
                    (day_start - equity) / np.where(day_start > 0, day_start, 1.0) >= rk.daily_loss_limit)
                day_locked = np.where(trip, day_no, day_locked)
        # 5. pending buys commit cash at the last close
        committed = np.maximum(pend, 0.0) * (last_close * (1 + cf))[:, None]
        # 6. the scheduled entries, series by series (an earlier series' entry commits cash for the next)
        for k in present:
            idx = I[k, j]
            h = hold_at[k][:, idx] if idx < hold_at[k].shape[1] else np.zeros(R, dtype=np.int64)
            dec = h > 0
            if not dec.any():
                continue
            want[k] = np.where(dec, h, want[k])
            cand = dec & (pend[k] == 0) & (qty[k] <= 0)
            cl = C[k, j]
            if rk is not None:
                cand &= ~halted
                cand &= day_locked != day_no
                if rk.cooldown_bars:
                    cand &= ~(idx - last_exit[k] <= rk.cooldown_bars)
                if rk.max_positions is not None:
                    n_held = ((qty > 0) | (pend > 0)).sum(axis=0)
                    cand &= n_held < rk.max_positions
            if not cand.any() or not (cl > 0):
                continue
            if rk is not None and rk.position_fraction is not None:
                notional = rk.position_fraction * equity
            elif rk is not None and rk.risk_per_trade is not None and rl.stop_loss:
                notional = rk.risk_per_trade * equity / rl.stop_loss
            else:
                notional = (1.0 / len(spec.universe)) * equity
            same = [m for m in range(S) if symbols[m] == symbols[k]]
            msf = rk.max_symbol_fraction if rk is not None else 1.0
            mtf = rk.max_total_fraction if rk is not None else 1.0
            sym_exposure = exposure[same].sum(axis=0) if len(same) > 1 else exposure[k]
            sym_cap = msf * equity - sym_exposure - committed[same].sum(axis=0)
            notional = np.where(notional > sym_cap, np.maximum(0.0, sym_cap), notional)
            total_cap = mtf * equity - exposure.sum(axis=0) - committed.sum(axis=0)
            notional = np.where(notional > total_cap, np.maximum(0.0, total_cap), notional)
            if not lev:
                affordable = (cash - committed.sum(axis=0)) / (1.0 + cf)
                notional = np.where(notional > affordable, np.maximum(0.0, affordable), notional)
            q = floor_lots(notional / cl, lot[k])
            enter = cand & (q > 0) & (notional > 0)
            pend[k] = np.where(enter, q, pend[k])
            due[k] = np.where(enter, idx + 1 + latency, due[k])
            committed[k] = np.where(enter, q * cl * (1 + cf), committed[k])
        out[:, j] = equity
        # 7. each entry's own holding time: an exit at the next open
        for k in present:
            go = (qty[k] > 0) & ~exiting[k] & (want[k] > 0) & (held[k] >= want[k])
            if go.any():
                pend[k] = np.where(go, -qty[k], pend[k])
                due[k] = np.where(go, I[k, j] + 1 + latency, due[k])
                exiting[k] |= go
    return out

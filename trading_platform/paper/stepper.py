"""From candles as they arrive to the engine's steps: what makes a live run step as the backtest does.

The engine steps a portfolio once per close time ``t`` with every series' candle that closed at ``t`` (the
backtest sees them all at once). Live, the candles of a universe arrive series by series, in any interleaving, late
or twice. ``Stepper`` buffers them and releases the step at ``t`` only once ``t`` is complete: every series of the
universe has delivered its candle closing at ``t``, or a later one (so none at ``t`` is coming: a gap), or its
market is closed at ``t`` (``expects``: the calendar says no candle closes then). The steps come out in close
order with the same candles grouped the same way as in the backtest, so both drivers give the engine the same
steps: the backtest feeds its stored candles through the same ``Stepper`` (``backtest.run``).

What the live run cannot know, a candle that never came, it learns from the series' next candle (or the
calendar); until then the portfolio waits, as the backtest, which steps ``t`` without that series, does in
effect. A candle delivered again (a replayed event) or for a time already stepped changes nothing. Both drivers
pass the same ``expects`` (``backtest.calendar_expects``: the markets' calendars), so a mixed portfolio's crypto
series step through a weekend while the stock market is closed, and a candle stamped at a time its calendar calls
closed (one that shares its close time with a series already stepped) is left out by both alike.
"""

from __future__ import annotations


class Stepper:
    def __init__(self, universe, expects=None, *, after=None):
        """``universe``: the series (symbol, timeframe); ``expects(series, t)``: False when no candle of the series
        closes at ``t`` (a closed market), None to wait for every series; ``after``: the last close time already
        stepped (a resumed run)."""
        self.universe = [tuple(s) for s in universe]
        self.expects = expects
        self.buf: dict = {}                              # close -> {series: (bar, decision)}
        self.seen: dict = {s: after for s in self.universe}  # the newest close delivered per series
        self.done = after                                # the last close stepped
        self.duplicates = 0

    def add(self, series, close, bar, decision=None) -> list[tuple]:
        """A candle of ``series`` closing at ``close`` (and the decision made on it): the steps it completes, in
        order, as (t, {series: bar}, {series: decision})."""
        series = tuple(series)
        if series not in self.seen:
            raise ValueError(f"{series} is not in the universe")
        if (self.done is not None and close <= self.done) or series in self.buf.get(close, {}):
            self.duplicates += 1
            return []
        self.buf.setdefault(close, {})[series] = (bar, decision)
        if self.seen[series] is None or close > self.seen[series]:
            self.seen[series] = close
        return self._release()

    def flush(self) -> list[tuple]:
        """Every buffered step, in order (the end of a backtest: no later candle will say more)."""
        out = [self._step(t) for t in sorted(self.buf)]
        return out

    def pending(self) -> int:
        return sum(len(v) for v in self.buf.values())

    def _complete(self, t) -> bool:
        for s in self.universe:
            got = self.seen[s]
            if got is not None and got >= t:
                continue
            if self.expects is not None and not self.expects(s, t):
                continue
            return False
        return True

    def _release(self) -> list[tuple]:
        out = []
        while self.buf:
            t = min(self.buf)
            if not self._complete(t):
                break
            out.append(self._step(t))
        return out

    def _step(self, t) -> tuple:
        got = self.buf.pop(t)
        self.done = t if self.done is None or t > self.done else self.done
        bars = {s: got[s][0] for s in self.universe if s in got}
        decisions = {s: got[s][1] for s in self.universe if s in got and got[s][1] is not None}
        return t, bars, decisions

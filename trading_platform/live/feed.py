"""A live feeder for the demo and the benchmark: closed candles through the live write path at a rate.

Synthetic candles (any source spec: the deterministic generator by default, so the candles are the
ones an ingestion would store) continue each symbol's series after its last stored candle; a file
(CSV or Parquet, one symbol or a ``symbol`` column) is replayed in time order. Each candle is written
in its own transaction through ``MarketStore.write_live``, as an exchange poller would, so each one
records its outbox event and NOTIFY. A candle is fed only once it is closed (``ts + timeframe <= now``):
a series that has caught up with the clock waits for its next candle to close.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ..core.candles import Normalized, normalize_candles
from ..core.timeframes import TIMEFRAMES, parse_timeframe
from ..errors import InvalidInput

US = 1_000_000
CHUNK = 500
DEFAULT_START_CANDLES = 1_000  # a series with no stored candle starts this many candles before now


@dataclass
class _Series:
    info: object
    tf: str
    next_us: int                     # open time of the next candle to fetch
    buf: Normalized | None = None
    pos: int = 0
    done: bool = False
    fed: int = 0

    def ready(self, now_us: int) -> bool:
        return self.buf is not None and self.pos < len(self.buf) and int(self.buf.ts_us[self.pos]) + \
            TIMEFRAMES[self.tf] * US <= now_us


@dataclass
class FeedResult:
    fed: int = 0
    events: int = 0
    written: dict = field(default_factory=dict)     # inserted, updated, unchanged, rejected
    per_symbol: dict = field(default_factory=dict)  # candles fed per symbol
    duration_s: float = 0.0
    first_event: int | None = None
    last_event: int | None = None

    def as_dict(self) -> dict:
        return {**self.__dict__, "duration_s": round(self.duration_s, 3),
                "rate": round(self.fed / self.duration_s, 3) if self.duration_s else 0.0}


def _check_symbols(store, symbols: list[str], timeframe: str | None) -> list[tuple[object, str]]:
    if not symbols:
        raise InvalidInput("--symbols names no symbol", field="symbols")
    out = []
    for s in symbols:
        info = store.get_symbol(s)
        if info is None:
            raise InvalidInput(f"symbol {s!r} is not in the symbols table; add it first "
                               f"(tp symbols add {s} --live)", field="symbols")
        if not (info.live and info.enabled):
            raise InvalidInput(f"symbol {s!r} is not an enabled live symbol: its candles would make no live "
                               f"event (tp symbols update {s} --live --enable)", field="symbols")
        tf = parse_timeframe(timeframe) if timeframe else info.base_timeframe
        if tf not in info.timeframes:
            raise InvalidInput(f"{s} does not list timeframe {tf} (it lists {', '.join(info.timeframes)})",
                               field="timeframe")
        if info.resample_source(tf):
            raise InvalidInput(f"{s} derives {tf} by resampling {info.resample_source(tf)}: feed "
                               f"{info.base_timeframe} (the live path resamples {tf})", field="timeframe")
        out.append((info, tf))
    return out


def _fill_from_source(store, source, s: _Series, now_us: int) -> None:
    """Fetch the next closed candles of a series (up to CHUNK), skipping stretches where its market is closed."""
    step = TIMEFRAMES[s.tf] * US
    while s.next_us + step <= now_us:
        end_us = min(s.next_us + CHUNK * step, (now_us // step) * step)
        if end_us <= s.next_us:
            return
        df = source.fetch(s.info, s.tf, datetime.fromtimestamp(s.next_us / US, timezone.utc),
                          datetime.fromtimestamp(end_us / US, timezone.utc))
        s.next_us = end_us
        norm = normalize_candles(df, s.tf, forming="skip")
        if len(norm):
            s.buf, s.pos = norm, 0
            return


def _start_us(store, info, tf: str, start: datetime | None, now_us: int) -> int:
    step = TIMEFRAMES[tf] * US
    if start is not None:
        return int(start.timestamp() * US) // step * step
    last = store.candle_stats(info.symbol, tf)["last_ts"]
    if last is not None:
        return int(last.timestamp() * US) + step
    return (now_us // step - DEFAULT_START_CANDLES) * step


def _read_file(path: str, symbols: list[tuple[object, str]]) -> dict[str, Normalized]:
    from ..sources.files import read_ohlcv_file

    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"--file: no such file {path}", field="file")
    try:  # as tp ingest reads one: an empty, headless or unreadable file is named, not a reader's traceback
        df = read_ohlcv_file(p)
    except InvalidInput as e:
        raise InvalidInput(f"--file: {e.message}", field="file") from None
    cols = {c.lower(): c for c in df.columns}
    out = {}
    for info, tf in symbols:
        part = df[df[cols["symbol"]] == info.symbol].drop(columns=[cols["symbol"]]) if "symbol" in cols else df
        if "symbol" not in cols and len(symbols) > 1:
            raise InvalidInput("--file has no symbol column: give one symbol", field="file")
        out[info.symbol] = normalize_candles(part, tf, forming="skip", where=str(p))
    return out


def feed(store, symbols: list[str], rate: float, duration: float | None = None, *, timeframe: str | None = None,
         source_spec: str = "synthetic:7", file: str | None = None, start: datetime | None = None,
         count: int | None = None, source_name: str = "tp live feed", log=None, stop=None,
         replay_days: float | None = None) -> FeedResult:
    """Feed closed candles of ``symbols`` at ``rate`` candles per second in total (round robin) through
    the live write path, for ``duration`` seconds or ``count`` candles (or until a file, or with ``replay_days``
    the stored candles of that many recent days, is replayed). A candle the live path has seen already makes
    no second event. Caught up with the clock, it says which candle it waits for and when it closes."""
    import math

    if not rate or not math.isfinite(rate) or rate <= 0:  # nan passes 'rate <= 0'; inf would pace nothing
        raise InvalidInput(f"--rate must be a positive number, got {rate}", field="rate")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise InvalidInput(f"--duration must be a positive number of seconds, got {duration}", field="duration")
    if count is not None and count <= 0:
        raise InvalidInput(f"--count must be a positive number of candles, got {count}", field="count")
    if replay_days is not None and not replay_days > 0:
        raise InvalidInput(f"--replay must be a positive number of days, got {replay_days}", field="replay")
    if replay_days is not None and (file or start is not None):
        raise InvalidInput("--replay names what to replay, and so do --file and --start: give one", field="replay")
    checked = _check_symbols(store, symbols, timeframe)
    now_us = int(time.time() * US)
    series = [_Series(info, tf, _start_us(store, info, tf, start, now_us)) for info, tf in checked]
    source = None
    if file:
        for s, norm in zip(series, _read_file(file, checked).values()):
            s.buf, s.pos, s.done = norm, 0, True
    elif replay_days is not None:
        since = datetime.fromtimestamp(now_us / US - replay_days * 86_400, timezone.utc)
        for s in series:
            s.buf, s.pos, s.done = store.read_candles(s.info.symbol, s.tf, start=since), 0, True
        if log is not None:
            log("replaying " + ", ".join(f"{len(s.buf)} stored {s.info.symbol} {s.tf} candles" for s in series)
                + f" since {since:%Y-%m-%d %H:%M} UTC")
    else:
        from ..sources.base import build_source

        source = build_source(source_spec)
        # each series' first candles are fetched before the clock starts, as a file or a replay is read: the rate
        # paces the candles fed, and a source that generates or downloads years of history first would eat into it
        for s in series:
            _fill_from_source(store, source, s, now_us)
    out = FeedResult(per_symbol={s.info.symbol: 0 for s in series})
    t0 = time.monotonic()
    interval = 1.0 / rate
    due = t0
    turn = 0
    waiting = False
    while True:
        now = time.monotonic()
        if (duration is not None and now - t0 >= duration) or (count is not None and out.fed >= count):
            break
        if stop is not None and stop():
            break
        if now < due:
            time.sleep(min(due - now, 0.05))
            continue
        now_us = int(time.time() * US)
        chosen = None
        for k in range(len(series)):
            s = series[(turn + k) % len(series)]
            if not s.ready(now_us) and not s.done and source is not None:
                _fill_from_source(store, source, s, now_us)
            if s.ready(now_us):
                chosen = s
                turn = (turn + k + 1) % len(series)
                break
        if chosen is None:
            if all(s.done and (s.buf is None or s.pos >= len(s.buf)) for s in series):
                break  # the file is replayed
            if log is not None and not waiting:
                log(_waiting_for(series, now_us))
            waiting = True
            time.sleep(0.2)  # every series has caught up with the clock: wait for a candle to close
            due = time.monotonic()
            continue
        waiting = False
        i = chosen.pos
        one = chosen.buf.take(np.arange(len(chosen.buf)) == i)
        chosen.pos += 1
        r = store.write_live(chosen.info.symbol, chosen.tf, one, source=source_name)
        out.fed += 1
        out.per_symbol[chosen.info.symbol] += 1
        for k, v in r.counts().items():
            out.written[k] = out.written.get(k, 0) + v
        out.events += len(r.events)
        if r.events:
            out.first_event = out.first_event or r.events[0]
            out.last_event = r.events[-1]
        due += interval
        if due < time.monotonic() - 1.0:  # fell behind by more than a second: do not burst to catch up
            due = time.monotonic()
    out.duration_s = time.monotonic() - t0
    if log is not None:
        log(f"fed {out.fed} candles ({out.events} events) in {out.duration_s:.1f} s")
    return out


def _waiting_for(series: list[_Series], now_us: int) -> str:
    """What a caught-up feeder waits for: the next candle of each series and when it closes."""
    parts = []
    for s in series:
        step = TIMEFRAMES[s.tf] * US
        nxt = int(s.buf.ts_us[s.pos]) if s.buf is not None and s.pos < len(s.buf) else max(s.next_us, now_us // step * step)
        closes = nxt + step
        parts.append(f"{s.info.symbol} {s.tf} candle {datetime.fromtimestamp(nxt / US, timezone.utc):%H:%M} closes at "
                     f"{datetime.fromtimestamp(closes / US, timezone.utc):%Y-%m-%d %H:%M:%S} UTC "
                     f"(in {max(0, closes - now_us) / US:.0f} s)")
    return ("caught up with the clock (real candles are fed as they close): waiting for " + "; ".join(parts)
            + ". `tp live feed --replay DAYS` replays stored history instead")


def next_closed(source, info, tf: str, after: datetime, n: int) -> Normalized:
    """The next ``n`` closed candles of a series after ``after`` from a source (tests, benchmarks)."""
    step = TIMEFRAMES[tf]
    df = source.fetch(info, tf, after + timedelta(seconds=step), after + timedelta(seconds=step * (n + 1)))
    return normalize_candles(df, tf, forming="skip")

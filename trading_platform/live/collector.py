"""`tp live collect`: closed candles from exchanges into the live path, as they close.

One asyncio process per deployment. For every enabled live crypto symbol (its ``exchange`` is a ccxt id) it
collects each timeframe the symbol does not derive by resampling (the live path resamples the rest):

- **Streams** with ccxt's WebSocket API (``ccxt.pro``): ``watch_ohlcv_for_symbols`` where the exchange has
  it (Binance), ``watch_ohlcv`` per series otherwise; at most ``streams_per_connection`` series per
  subscription, which ccxt puts on a connection of its own. An exchange without a stream is **polled** over
  REST (``fetch_ohlcv``), and so is a series while its stream is down.
- **Only closed candles are written.** The stream repeats the forming candle; a candle is written when a
  later bucket starts on the stream (with the last values the stream gave), or when its end plus
  ``grace_s`` has passed without one, then with the values REST gives (the stream may have dropped the
  last update). A frame for a candle already written, repeated or out of order, writes nothing; a stored
  candle that REST later gives with other values is written again (a revision, through the same path).
- **Through the live write path**: ``tp_live_candle()`` writes each candle, its outbox event and the NOTIFY in
  one transaction (the candles of one bucket end share it).
- **Gaps heal themselves**: at start, after a disconnect, and when a stream skips buckets, the candles after
  the newest stored one are fetched over REST and written in order (with their events) before the stream
  resumes.
- **Subscriptions follow the symbols table**, re-read every ``refresh_s``: ``tp symbols add/update --live``
  takes effect without a restart. A symbol the exchange does not list, or a timeframe it does not offer, is
  reported in ``collector_status`` and skipped; the other series go on.
- **Status as data**: ``collector_status`` (store/collector.py), flushed every ``status_s``.

Exchange keys come from ``TP_EXCHANGE_<ID>_API_KEY`` / ``_SECRET`` / ``_PASSWORD`` and are scrubbed from every
message the collector logs or stores, as is the database password. The clock is injectable (``clock``: now
in ms) and so is the exchange (``exchange_factory``), which is how tests and the benchmark point it at local
servers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..core.timeframes import TIMEFRAMES
from ..errors import InvalidInput, redact_secrets

log = logging.getLogger("trading_platform.collector")

PAGE = 500  # candles per REST request (MEXC's most; Binance serves 1000)


@dataclass(frozen=True)
class CollectorSettings:
    grace_s: float = 5.0                 # TP_COLLECT_GRACE_S: a candle with no later frame is closed this long after its end
    refresh_s: float = 2.0               # TP_COLLECT_REFRESH_S: how often the symbols table is re-read
    poll_s: float = 10.0                 # TP_COLLECT_POLL_S: REST polling period (no stream, or stream down)
    heal_max: int = 1000                 # TP_COLLECT_HEAL_MAX: candles fetched at most per series and heal
    streams_per_connection: int = 200    # TP_COLLECT_STREAMS_PER_CONNECTION: series per stream subscription
    reconnect_s: float = 1.0             # first wait before reconnecting (doubles up to 30 s)
    status_s: float = 1.0                # how often collector_status is written
    heartbeat: Optional[str] = None      # TP_COLLECT_HEARTBEAT: a file touched at every status write (healthchecks)


def collector_settings() -> CollectorSettings:
    from .settings import _num

    d = CollectorSettings()
    return CollectorSettings(
        grace_s=_num("TP_COLLECT_GRACE_S", d.grace_s, float, 0.0),
        refresh_s=_num("TP_COLLECT_REFRESH_S", d.refresh_s, float, 0.1),
        poll_s=_num("TP_COLLECT_POLL_S", d.poll_s, float, 0.1),
        heal_max=_num("TP_COLLECT_HEAL_MAX", d.heal_max, int, 1),
        streams_per_connection=_num("TP_COLLECT_STREAMS_PER_CONNECTION", d.streams_per_connection, int, 1),
        heartbeat=os.environ.get("TP_COLLECT_HEARTBEAT") or None,
    )


def known_exchanges() -> list[str]:
    import ccxt

    return list(ccxt.exchanges)


def check_exchange(exchange_id: str) -> str:
    """The ccxt id of a crypto symbol's exchange; an id ccxt does not know is bad input naming it."""
    ex = (exchange_id or "").strip().lower()
    if ex not in known_exchanges():
        raise InvalidInput(f"exchange {exchange_id!r} is not a ccxt exchange id (e.g. binance, mexc, okx, kraken; "
                           "`python -c 'import ccxt; print(ccxt.exchanges)'` lists them)", field="exchange")
    return ex


def exchange_credentials(exchange_id: str) -> dict:
    """apiKey / secret / password of an exchange from TP_EXCHANGE_<ID>_API_KEY, _SECRET, _PASSWORD."""
    prefix = f"TP_EXCHANGE_{exchange_id.upper()}_"
    out = {}
    for key, env in (("apiKey", "API_KEY"), ("secret", "SECRET"), ("password", "PASSWORD")):
        v = os.environ.get(prefix + env, "")
        if v:
            out[key] = v
    return out


def default_exchange(exchange_id: str):
    """A ccxt.pro exchange (the REST calls of ccxt.pro instances are ccxt's async ones), rate limited."""
    import ccxt.pro as ccxtpro

    cls = getattr(ccxtpro, exchange_id, None)
    if cls is None:  # no WebSocket support in ccxt: REST polling
        import ccxt.async_support as ccxt_async

        cls = getattr(ccxt_async, exchange_id)
    ex = cls({"enableRateLimit": True, "timeout": 15_000, **exchange_credentials(exchange_id)})
    fm = ex.options.get("fetchMarkets")
    if isinstance(fm, dict) and "types" in fm:  # Binance, Bybit, OKX...: spot markets only
        ex.options["fetchMarkets"] = {**fm, "types": ["spot"]}
    return ex


WEEK_MS = 7 * 86_400_000
MONDAY_MS = 4 * 86_400_000  # the epoch was a Thursday: weekly candles open on Mondays


def bucket_open(t_ms: int, tf_ms: int) -> int:
    """Open time of the bucket holding ``t_ms`` (weeks open on Mondays, as the platform's weekly candles)."""
    if tf_ms == WEEK_MS:
        return (t_ms - MONDAY_MS) // WEEK_MS * WEEK_MS + MONDAY_MS
    return t_ms // tf_ms * tf_ms


async def load_spot_markets(ex) -> None:
    """The exchange's spot markets (the collector's symbols are spot pairs): where ccxt can fetch them alone
    (``fetch_spot_markets``, MEXC), only them; a swap contract list costs MEXC's rate limiter 5 s."""
    fetch = getattr(ex, "fetch_spot_markets", None)
    if fetch is not None:
        ex.set_markets(await fetch({}))
    else:
        await ex.load_markets()


@dataclass(eq=False)
class Series:
    exchange: str
    symbol: str
    timeframe: str
    tf_ms: int
    last_ms: Optional[int] = None        # open time of the newest stored candle
    forming: Optional[list] = None       # the newest candle the stream gave, not yet written
    ready: list = field(default_factory=list)  # closed by a later bucket, written once the clock passes its end
    state: str = "starting"
    frames: int = 0
    written: int = 0
    gap: int = 0
    last_frame_ms: Optional[int] = None
    last_written_ms: Optional[int] = None
    last_error: Optional[str] = None
    last_error_ms: Optional[int] = None
    queue: list = field(default_factory=list)  # candle updates as ccxt parsed them, in message order
    heal_retry: Optional[tuple] = None   # (loop time, wait) of the next try after a failed heal
    streamed_since: Optional[int] = None  # clock when its subscription last delivered after (re)connecting
    heal_task: Optional[asyncio.Task] = None  # a heal running in the background
    heal_again: bool = False             # a heal was asked for while one ran
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return f"{self.symbol} {self.timeframe}"


@dataclass(eq=False)
class Connection:
    exchange: str
    index: int
    series: list
    connected: bool = False
    state: str = "starting"
    frames: int = 0
    reconnects: int = 0
    last_frame_ms: Optional[int] = None
    last_error: Optional[str] = None
    last_error_ms: Optional[int] = None
    tasks: list = field(default_factory=list)
    failed_at: float = float("-inf")

    @property
    def name(self) -> str:
        return f"{self.exchange}#{self.index}"


def _ts_iso(ms):
    from datetime import datetime, timezone

    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


_RECORDING = None


class _Discard(list):
    def append(self, item) -> None:  # the updates of a series no longer collected
        pass


def _record_updates(ex, s: Series) -> None:
    """Install, as ccxt's candle cache of the series, one that also records each update as ccxt's own message
    handler parses it (a copy, in message order) into ``s.queue``: ccxt keeps only a candle's latest values,
    so a late frame of an older bucket would otherwise overwrite what the stream said before it."""
    global _RECORDING
    if _RECORDING is None:
        from ccxt.async_support.base.ws.cache import ArrayCacheByTimestamp

        class Recording(ArrayCacheByTimestamp):
            sink: list

            def append(self, item):
                super().append(item)
                self.sink.append([*item[:6]])

        _RECORDING = Recording
    if ex.ohlcvs is None:
        ex.ohlcvs = {}
    caches = ex.ohlcvs.setdefault(s.symbol, {})
    cache = caches.get(s.timeframe)
    if not isinstance(cache, _RECORDING) or cache.sink is not s.queue:
        cache = _RECORDING(ex.safe_integer(ex.options, "OHLCVLimit", 1000))
        cache.sink = s.queue
        caches[s.timeframe] = cache


class Collector:
    def __init__(self, dsn: str, *, settings: CollectorSettings | None = None,
                 clock: Callable[[], int] | None = None, exchange_factory: Callable[[str], object] | None = None,
                 exchanges: list[str] | None = None):
        self.dsn = dsn
        self.settings = settings or collector_settings()
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.factory = exchange_factory or default_exchange
        self.only = [e.lower() for e in exchanges] if exchanges else None
        self.ex: dict[str, object] = {}           # exchange id -> ccxt instance
        self.series: dict[tuple, Series] = {}     # (exchange, symbol, tf) -> state
        self.skipped: dict[tuple, Series] = {}    # series reported and skipped
        self.waiting: dict[tuple, Series] = {}    # series whose exchange could not be reached yet (retried)
        self.connections: dict[str, list[Connection]] = {}
        self.pollers: dict[str, asyncio.Task] = {}
        self._secrets = self._secret_values()
        self._wlock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._gone: list[tuple[str, str, str]] = []  # status rows of series no longer collected
        self._pending: list[tuple[Series, list]] = []
        self._wconn = None
        self._sconn = None
        # ccxt's own DEBUG log prints request headers (API keys) and response bodies: never below INFO here
        ccxt_log = logging.getLogger("ccxt")
        if ccxt_log.getEffectiveLevel() < logging.INFO:
            ccxt_log.setLevel(logging.INFO)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _secret_values(self) -> list[str]:
        out = [v for k, v in os.environ.items()
               if v and len(v) >= 4 and (k.startswith("TP_EXCHANGE_") or k == "TP_LIVE_WRITER_PASSWORD")]
        try:
            from psycopg.conninfo import conninfo_to_dict

            pw = conninfo_to_dict(self.dsn).get("password")
            if pw:
                out.append(pw)
        except Exception:
            pass
        return out

    def scrub(self, text: str) -> str:
        text = redact_secrets(str(text))
        for s in self._secrets:
            text = text.replace(s, "***")
        return text[:500]

    def _error(self, obj, e: BaseException | str) -> str:
        msg = self.scrub(e if isinstance(e, str) else f"{type(e).__name__}: {e}")
        obj.last_error, obj.last_error_ms = msg, self.clock()
        return msg

    async def _connect(self):
        import psycopg

        try:
            return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as e:
            from ..errors import StoreUnavailable
            from ..store.db import describe_dsn

            raise StoreUnavailable(f"cannot reach the market store at {describe_dsn(self.dsn)}: "
                                   f"{self.scrub(str(e).strip().splitlines()[0] if str(e).strip() else e)}",
                                   field="TP_DATABASE_URL") from None

    # ---- which series ------------------------------------------------------------------------------------------
    async def wanted(self) -> dict[tuple, tuple[str, str]]:
        """(exchange, symbol, tf) -> (symbol, tf) of every series the symbols table asks for."""
        from ..core.symbols import SymbolInfo
        from ..store import collector as sql

        out = {}
        for symbol, category, exchange, tfs in await sql.live_symbols(self._sconn):
            if category != "crypto" or not exchange:
                continue
            ex = exchange.lower()
            if self.only and ex not in self.only:
                continue
            info = SymbolInfo(symbol, category, ex, None, None, tfs)
            for tf in tfs:
                if tf in TIMEFRAMES and info.resample_source(tf) is None:
                    out[(ex, symbol, tf)] = (symbol, tf)
        return out

    async def exchange(self, ex_id: str):
        if ex_id not in self.ex:
            check_exchange(ex_id)
            ex = self.factory(ex_id)
            self.ex[ex_id] = ex
        ex = self.ex[ex_id]
        if not getattr(ex, "markets", None):
            await load_spot_markets(ex)
        return ex

    async def _add_series(self, key) -> Optional[Series]:
        from ..store import collector as sql

        ex_id, symbol, tf = key
        s = Series(ex_id, symbol, tf, TIMEFRAMES[tf] * 1000)
        try:
            ex = await self.exchange(ex_id)
        except InvalidInput as e:
            self._error(s, e.message)
            s.state = "skipped"
            self.skipped[key] = s
            log.error("%s: %s", s.name, s.last_error)
            return None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the exchange unreachable: reported, retried with backoff by refresh
            old = self.waiting.get(key)
            wait = min(60.0, 2 * old.heal_retry[1]) if old and old.heal_retry else 5.0
            s.heal_retry = (asyncio.get_running_loop().time() + wait, wait)
            s.state = "unreachable"
            msg = self._error(s, e)
            if old is None:
                log.warning("%s: cannot load %s's markets (retrying): %s", s.name, ex_id, msg)
            self.waiting[key] = s
            return None
        self.waiting.pop(key, None)
        if symbol not in ex.markets:
            why = f"{ex_id} does not list {symbol}"
        elif tf not in (getattr(ex, "timeframes", None) or {}):
            why = f"{ex_id} does not offer the {tf} timeframe (it offers {', '.join(ex.timeframes or [])})"
        else:
            why = None
        if why:
            self._error(s, why)
            s.state = "skipped"
            self.skipped[key] = s
            log.warning("%s: skipped: %s", s.name, why)
            return None
        s.last_ms = await sql.last_candle_ms(self._sconn, symbol, tf)
        self.skipped.pop(key, None)
        self.series[key] = s
        return s

    # ---- writing -----------------------------------------------------------------------------------------------
    async def _write(self, s: Series, rows: list[list]) -> int:
        """Closed candles of one series, in order, through the live write path; returns how many were new."""
        from ..store import collector as sql

        rows = sorted(rows, key=lambda r: r[0])
        if not rows:
            return 0
        async with self._wlock:
            out = await sql.write_closed(self._wconn, [(s.symbol, s.timeframe, r) for r in rows],
                                         f"collector:{s.exchange}")
        now = self.clock()
        bad = [(r, o) for r, (o, _) in zip(rows, out) if o == "quarantined"]
        if bad:
            self._error(s, f"{len(bad)} candle(s) quarantined by the live write path (ingest_rejects), the first at "
                           f"{_ts_iso(bad[0][0][0]).isoformat()}")
        s.last_ms = max(s.last_ms or rows[-1][0], rows[-1][0])
        s.written += sum(o in ("inserted", "updated") for o, _ in out)
        s.last_written_ms = now
        return sum(o in ("inserted", "updated") for o, _ in out)

    async def heal(self, s: Series, *, count_gap: bool = True) -> int:
        """Fetch over REST every closed candle after the newest stored one (at most ``heal_max``; a series with
        nothing stored starts ``heal_max`` candles before now) and write them in order. The newest stored one is
        fetched again and written too: other values than the stored ones (its last update was lost with the
        stream) are a revision, equal ones write nothing. Returns how many candles were new."""
        ex = self.ex[s.exchange]
        now = self.clock()
        newest_closed = bucket_open(now, s.tf_ms) - s.tf_ms  # open time of the newest candle closed by now
        start = s.last_ms if s.last_ms is not None else newest_closed - (self.settings.heal_max - 1) * s.tf_ms
        start = max(start, newest_closed - (self.settings.heal_max - 1) * s.tf_ms)
        rows: list[list] = []
        since = start
        while since <= newest_closed:
            batch = await ex.fetch_ohlcv(s.symbol, s.timeframe, since=int(since), limit=PAGE)
            closed = [list(r[:6]) for r in batch or [] if since <= r[0] <= newest_closed and r[0] + s.tf_ms <= now]
            rows += closed
            # the next page starts after the last closed candle; a page with none (the series starts later, or
            # the market was closed) is stepped over: exchanges answer from `since` on, at most PAGE candles
            since = closed[-1][0] + s.tf_ms if closed else since + PAGE * s.tf_ms
        n = 0
        await self._flush_pending()  # the stream's queued candles first: REST's values are written after them
        async with s.lock:
            again = [r for r in rows if r[0] == s.last_ms]
            rows = [r for r in rows if s.last_ms is None or r[0] > s.last_ms]
            if again:
                await self._write(s, again)
            for i in range(0, len(rows), 500):
                n += await self._write(s, rows[i:i + 500])
            if s.forming is not None and s.last_ms is not None and s.forming[0] <= s.last_ms:
                s.forming = None
            s.ready = [r for r in s.ready if s.last_ms is None or r[0] > s.last_ms]
        if count_gap:
            s.gap += len(rows)
        return len(rows)

    async def _heal_logged(self, s: Series) -> None:
        """``heal``, reporting a failure; a failed heal is retried by ``tick`` (1 s, doubling up to ``poll_s``)."""
        loop = asyncio.get_running_loop()
        try:
            n = await self.heal(s)
            s.heal_retry = None
            if n:
                log.info("%s: %d candle(s) fetched over REST and written", s.name, n)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            wait = min(self.settings.poll_s, 2 * s.heal_retry[1]) if s.heal_retry else 1.0
            s.heal_retry = (loop.time() + wait, wait)
            log.warning("%s: REST fetch failed (retrying in %.0f s): %s", s.name, wait, self._error(s, e))

    # ---- frames ------------------------------------------------------------------------------------------------
    async def on_frame(self, s: Series, c: list) -> None:
        """One candle the stream gave (forming or final). Writes the candles it proves closed."""
        now = self.clock()
        s.frames += 1
        s.last_frame_ms = now
        ts = int(c[0])
        gap = False
        async with s.lock:
            if s.last_ms is not None and ts <= s.last_ms:
                return                                   # written already: a repeat or a late frame
            f = s.forming
            if f is not None and ts < f[0]:
                return                                   # out of order: older than the forming candle
            if f is None or ts == f[0]:
                s.forming = list(c)
                if f is None and s.last_ms is not None and ts > s.last_ms + s.tf_ms:
                    gap = True                           # buckets between the stored and this one
            else:                                        # a later bucket started: the forming one is closed
                if s.streamed_since is not None and f[0] >= s.streamed_since:
                    s.ready.append(f)                    # streamed from its start: the stream's values are final
                    gap = ts > f[0] + s.tf_ms
                else:
                    gap = True                           # it began before the stream (re)connected: updates may be
                s.forming = list(c)                      # missing, so REST gives its values
            await self._flush_ready(s, now)
        if gap:
            self._heal_soon(s)

    def _heal_soon(self, s: Series) -> None:
        """Heal a series in a task of its own (a REST call waits on the exchange's rate limit: the stream of the
        other series goes on meanwhile); its later closed candles wait until the healed ones are written."""
        if s.heal_task is None or s.heal_task.done():
            s.heal_task = asyncio.create_task(self._heal_until_done(s))
        else:
            s.heal_again = True  # asked while one runs: it may have started before what is asked for closed

    async def _heal_until_done(self, s: Series) -> None:
        while True:
            s.heal_again = False
            await self._heal_logged(s)
            if not s.heal_again or s.heal_retry is not None:
                return

    async def _flush_ready(self, s: Series, now: int) -> None:
        if s.heal_task is not None and not s.heal_task.done():
            return  # after the candles the heal writes (tick flushes them)
        due = []
        for r in sorted(s.ready, key=lambda r: r[0]):
            if r[0] + s.tf_ms > now:
                break
            expected = s.last_ms + s.tf_ms if s.last_ms is not None else r[0]
            if (due[-1][0] + s.tf_ms if due else expected) != r[0]:
                self._heal_soon(s)  # a hole before it (a lost heal, a skipped bucket): REST fills it first
                break
            due.append(r)
        if due:
            s.ready = [r for r in s.ready if r[0] > due[-1][0]]
            self._enqueue(s, due)

    def _enqueue(self, s: Series, rows: list[list]) -> None:
        """Closed candles for the batch writer: every series' candles closed at once commit together."""
        rows = sorted(rows, key=lambda r: r[0])
        self._pending += [(s, r) for r in rows]
        s.last_ms = max(s.last_ms if s.last_ms is not None else rows[-1][0], rows[-1][0])
        self._wake.set()

    async def _flush_pending(self) -> None:
        """Write every queued candle now, in one statement and transaction; on failure they stay queued."""
        from ..store import collector as sql

        while self._pending:
            async with self._wlock:
                batch, self._pending = self._pending, []
                try:
                    out = await sql.write_batch(self._wconn, [(s.symbol, s.timeframe, r, f"collector:{s.exchange}")
                                                              for s, r in batch])
                except BaseException:
                    self._pending = batch + self._pending
                    raise
            now = self.clock()
            for (s, r), (o, _) in zip(batch, out):
                if o in ("inserted", "updated"):
                    s.written += 1
                elif o == "quarantined":  # (the store's clock behind ours: "not closed yet") fetched again by
                    self._error(s, f"a candle quarantined by the live write path (ingest_rejects) at "  # a heal,
                                   f"{_ts_iso(r[0]).isoformat()}; fetching it again over REST")   # whose own
                    s.last_ms = min(s.last_ms, r[0] - s.tf_ms) if s.last_ms is not None else None  # write moves
                    self._heal_soon(s)                                                      # past a bad one
                s.last_written_ms = now

    async def _writer(self) -> None:
        """Write what ``_enqueue`` collected; a failed batch (the store restarting) is retried, never dropped (a
        crash loses it from memory: the restart heals it from REST)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush_pending()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("writing %d candle(s) failed (retrying in 1 s): %s", len(self._pending), self.scrub(e))
                await asyncio.sleep(1.0)
                if self._wconn.closed:
                    try:
                        self._wconn = await self._connect()
                    except Exception:
                        pass
                self._wake.set()

    async def tick(self) -> None:
        """Candles due: those a later bucket closed once the clock passes their end; forming ones whose end plus
        the grace has passed, confirmed over REST (their last update may be lost)."""
        now = self.clock()
        grace = int(self.settings.grace_s * 1000)
        loop = asyncio.get_running_loop()
        for s in list(self.series.values()):
            if s.heal_retry is not None and loop.time() >= s.heal_retry[0]:
                self._heal_soon(s)
            elif (s.heal_retry is None and s.last_ms is not None and not s.ready
                  and bucket_open(now - grace, s.tf_ms) - s.tf_ms > s.last_ms
                  and (s.heal_task is None or s.heal_task.done())
                  and (s.forming is None or s.forming[0] > s.last_ms + s.tf_ms)):
                self._heal_soon(s)  # a candle closed a grace ago is not written: a silent stream, a lost frame
            if s.ready:
                async with s.lock:
                    await self._flush_ready(s, now)
            f = s.forming
            if f is not None and f[0] + s.tf_ms + grace <= now and (s.heal_task is None or s.heal_task.done()):
                async with s.lock:
                    if s.forming is f:
                        s.forming = None  # REST gives it (if not yet, the next frame or heal will)
                self._heal_soon(s)

    # ---- streams -----------------------------------------------------------------------------------------------
    async def _stream(self, conn: Connection, only: Optional[Series] = None) -> None:
        """One subscription: all of ``conn``'s series with ``watch_ohlcv_for_symbols``, or ``only`` one series with
        ``watch_ohlcv`` (an exchange without the former)."""
        ex = self.ex[conn.exchange]
        mine = [only] if only is not None else conn.series
        pairs = [[s.symbol, s.timeframe] for s in conn.series]  # fixed: one subscription (series dropped later are ignored)
        delay = self.settings.reconnect_s
        first = True
        while not self._stop.is_set():
            for s in mine:
                _record_updates(ex, s)
            try:
                if only is not None:
                    await ex.watch_ohlcv(only.symbol, only.timeframe)
                else:
                    await ex.watch_ohlcv_for_symbols(pairs)
                if not conn.connected:
                    if not first:
                        log.info("%s: stream back", conn.name)
                    conn.connected, conn.state, first = True, "streaming", False
                    delay = self.settings.reconnect_s
                for s in mine:
                    if s.streamed_since is None:
                        s.streamed_since, s.state = self.clock(), "streaming"
                conn.frames += 1
                conn.last_frame_ms = self.clock()
                # every update ccxt parsed since the last look, in the order the messages came (ccxt resolves a
                # call with one symbol's update; the others wait in its cache, which keeps only the latest values)
                for s in mine:
                    if s.queue and self._current(s):
                        frames, s.queue[:] = list(s.queue), []
                        for c in frames:
                            await self.on_frame(s, c)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                msg = self._error(conn, e)
                was = conn.connected
                conn.connected, conn.state = False, "reconnecting"
                t = asyncio.get_running_loop().time()
                if t - conn.failed_at > 1.0:  # once per drop, whichever of its subscriptions sees it first
                    conn.reconnects += 1
                conn.failed_at = t
                first = False
                if was:
                    log.warning("%s: stream lost (%s); healing over REST, then reconnecting", conn.name, msg)
                for s in mine:  # healed in the background (rate limited); the stream resumes meanwhile and
                    s.state, s.streamed_since = "polling", None  # what it closes waits for the healed candles
                    self._heal_soon(s)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    async def _poll(self, ex_id: str) -> None:
        """An exchange without a stream: every ``poll_s``, each series' closed candles after the stored ones."""
        while not self._stop.is_set():
            for s in [s for s in self.series.values() if s.exchange == ex_id]:
                s.state = "polling"
                await self._heal_logged(s)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.poll_s)
            except asyncio.TimeoutError:
                pass

    def _streams(self, ex) -> bool:
        return bool(ex.has.get("watchOHLCVForSymbols") or ex.has.get("watchOHLCV"))

    async def _subscribe(self, ex_id: str, new: list[Series]) -> None:
        """Stream subscriptions (or the poller) for newly collected series of an exchange: each subscription holds
        at most ``streams_per_connection`` series (ccxt gives each its own connection); the ones running go on."""
        ex = self.ex[ex_id]
        if not new:
            return
        if not self._streams(ex):
            if ex_id not in self.pollers or self.pollers[ex_id].done():
                self.pollers[ex_id] = asyncio.create_task(self._poll(ex_id))
            return
        size = self.settings.streams_per_connection
        conns = self.connections.setdefault(ex_id, [])
        for i in range(0, len(new), size):
            c = Connection(ex_id, len(conns), new[i:i + size])
            if ex.has.get("watchOHLCVForSymbols"):
                c.tasks = [asyncio.create_task(self._stream(c))]
            else:  # one watch_ohlcv per series (ccxt multiplexes them on its connection)
                c.tasks = [asyncio.create_task(self._stream(c, s)) for s in c.series]
            conns.append(c)

    def _current(self, s: Series) -> bool:
        """Whether a series is still collected (frames of one dropped from the symbols table are ignored)."""
        return self.series.get((s.exchange, s.symbol, s.timeframe)) is s

    def _unsubscribe(self, key) -> None:
        """A series no longer collected: its frames are dropped (ccxt has no unwatch for every exchange: the
        exchange may go on sending them), its status row removed; a subscription left with none is cancelled."""
        s = self.series.pop(key)
        cache = ((getattr(self.ex.get(key[0]), "ohlcvs", None) or {}).get(s.symbol) or {}).get(s.timeframe)
        if _RECORDING is not None and isinstance(cache, _RECORDING):
            cache.sink = _Discard()
        s.queue.clear()
        if s.heal_task is not None:
            s.heal_task.cancel()
        self._gone.append((s.exchange, "series", s.name))
        for c in list(self.connections.get(key[0], [])):
            if s in c.series:
                c.series.remove(s)
                if not c.series:
                    for t in c.tasks:
                        t.cancel()
                    self.connections[key[0]].remove(c)

    async def refresh(self) -> None:
        """Follow the symbols table: new live series are healed and subscribed, removed ones dropped."""
        wanted = await self.wanted()
        for key in [k for k in self.series if k not in wanted]:
            self._unsubscribe(key)
            log.info("%s %s: no longer live; unsubscribed", key[1], key[2])
        for key in [k for k in self.skipped if k not in wanted]:
            self.skipped.pop(key)
        for key in [k for k in self.waiting if k not in wanted]:
            self.waiting.pop(key)
        new: dict[str, list[Series]] = {}
        now = asyncio.get_running_loop().time()
        for key in wanted:
            if key in self.series or key in self.skipped:
                continue
            w = self.waiting.get(key)
            if w is not None and w.heal_retry and now < w.heal_retry[0]:
                continue
            s = await self._add_series(key)
            if s is not None:
                self._heal_soon(s)  # the stream starts meanwhile; what it closes is written after the heal's
                new.setdefault(key[0], []).append(s)
                log.info("%s: collecting from %s", s.name, s.exchange)
        for ex_id, added in new.items():
            await self._subscribe(ex_id, added)

    # ---- status ------------------------------------------------------------------------------------------------
    def status_rows(self) -> list[dict]:
        rows = []
        for conns in self.connections.values():
            for c in conns:
                rows.append({"exchange": c.exchange, "kind": "connection", "name": c.name, "state": c.state,
                             "connected": c.connected, "last_frame_at": _ts_iso(c.last_frame_ms),
                             "frames": c.frames, "reconnects": c.reconnects,
                             "gap_candles": sum(s.gap for s in c.series), "last_error": c.last_error,
                             "last_error_at": _ts_iso(c.last_error_ms)})
        for s in [*self.series.values(), *self.skipped.values(), *self.waiting.values()]:
            lag = None
            if s.last_ms is not None and s.last_written_ms is not None:
                lag = max(0.0, (s.last_written_ms - (s.last_ms + s.tf_ms)) / 1000)
            streaming = any(c.connected for c in self.connections.get(s.exchange, []) if s in c.series)
            rows.append({"exchange": s.exchange, "kind": "series", "name": s.name, "symbol": s.symbol,
                         "timeframe": s.timeframe, "state": s.state, "connected": streaming,
                         "last_frame_at": _ts_iso(s.last_frame_ms), "last_candle_ts": _ts_iso(s.last_ms),
                         "last_written_at": _ts_iso(s.last_written_ms), "lag_s": lag, "frames": s.frames,
                         "candles_written": s.written, "gap_candles": s.gap, "last_error": s.last_error,
                         "last_error_at": _ts_iso(s.last_error_ms)})
        return rows

    async def save_status(self) -> None:
        from ..store import collector as sql

        if self._gone:
            gone, self._gone = self._gone, []
            await sql.delete_status(self._sconn, gone)
        await sql.save_status(self._sconn, self.status_rows())
        if self.settings.heartbeat:
            from pathlib import Path

            Path(self.settings.heartbeat).touch()

    # ---- running -----------------------------------------------------------------------------------------------
    async def _open(self) -> None:
        from ..store import collector as sql

        self._wconn = await self._connect()
        self._sconn = await self._connect()
        for ex_id in self.only or []:
            check_exchange(ex_id)
        wanted = await self.wanted()
        unknown = sorted({k[0] for k in wanted} - set(known_exchanges()))
        if unknown:
            raise InvalidInput(f"live symbols name exchange(s) ccxt does not know: {', '.join(unknown)}",
                               field="exchange")
        await sql.clear_status(self._sconn, self.only)

    async def _close(self) -> None:
        for ex in self.ex.values():
            try:
                await ex.close()
            except Exception:
                pass
        for c in (self._wconn, self._sconn):
            if c is not None:
                await c.close()

    async def once(self) -> dict:
        """Fetch and write over REST what is due for every live series, save the status, and return a summary."""
        try:
            await self._open()
            for key in await self.wanted():
                s = await self._add_series(key)
                if s is not None:
                    s.state = "polled"
                    await self._heal_logged(s)
            await self.save_status()
            return self.summary()
        finally:
            await self._close()

    def summary(self) -> dict:
        return {"series": len(self.series), "written": sum(s.written for s in self.series.values()),
                "gap_candles": sum(s.gap for s in self.series.values()),
                "skipped": {s.name: s.last_error for s in [*self.skipped.values(), *self.waiting.values()]},
                "errors": {s.name: s.last_error for s in self.series.values() if s.last_error}}

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> dict:
        """Collect until ``stop()`` (or for ``duration_s``): refresh, stream, close candles, keep the status."""
        writer = None
        try:
            await self._open()
            writer = asyncio.create_task(self._writer())
            await self.refresh()
            await self.save_status()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            next_refresh = next_status = t0
            while not self._stop.is_set():
                now = loop.time()
                if duration_s is not None and now - t0 >= duration_s:
                    break
                try:
                    if now >= next_refresh:
                        await self.refresh()
                        next_refresh = now + self.settings.refresh_s
                    await self.tick()
                    if now >= next_status:
                        await self.save_status()
                        next_status = now + self.settings.status_s
                except Exception as e:  # the store restarting or failing over: reconnect, go on
                    import psycopg

                    if not isinstance(e, psycopg.Error):
                        raise
                    log.warning("the market store failed (%s); reconnecting in 2 s", self.scrub(e))
                    await asyncio.sleep(2.0)
                    try:
                        if self._sconn is None or self._sconn.closed:
                            self._sconn = await self._connect()
                    except Exception as e2:
                        log.warning("reconnecting failed: %s", self.scrub(e2))
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=0.1)
                except asyncio.TimeoutError:
                    pass
            return self.summary()
        finally:
            tasks = [t for cs in self.connections.values() for c in cs for t in c.tasks] + list(self.pollers.values())
            tasks += [s.heal_task for s in self.series.values() if s.heal_task is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                try:
                    await self._flush_pending()
                except Exception as e:
                    log.warning("%d candle(s) not written at stop (the next start fetches them): %s",
                                len(self._pending), self.scrub(e))
            for cs in self.connections.values():
                for c in cs:
                    c.connected, c.state = False, "stopped"
            for s in self.series.values():
                s.state = "stopped"
            try:
                if self._sconn is not None:
                    await self.save_status()
            except Exception:
                pass
            await self._close()

"""A local fake of Binance's spot market data: REST and the kline WebSocket stream on one port.

``FakeBinance`` serves, on ``127.0.0.1`` and a random free port, with ``aiohttp.web``:

* REST ``GET /api/v3/exchangeInfo``, ``/api/v3/klines``, ``/api/v3/time``, ``/api/v3/ping``, answered the way
  Binance answers them (klines as 12-field arrays of strings, errors as ``{"code": -1121, "msg": ...}``);
* the raw-stream WebSocket (``/ws``, ``/ws/<n>``, and the same under ``/stream/ws`` - see ``ws_url``), where a
  client subscribes with ``{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1}`` and is answered
  ``{"result": null, "id": 1}``, then receives bare kline events - the style ``ccxt.pro.binance`` uses;
* the combined-stream WebSocket (``/stream?streams=a/b``), whose events come wrapped as
  ``{"stream": "btcusdt@kline_1m", "data": {...}}``.

``configure(exchange)`` points a ccxt binance instance (sync, async or pro) at it by rewriting URLs only, so
ccxt's own request building, parsing and WebSocket message handlers run unchanged. Anything the fake does not
serve answers 404 and lands in ``unexpected``.
"""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from fake_local import Conn, LocalExchange

FIXTURE = Path(__file__).parent / "fixtures" / "recorded" / "binance" / "api_v3_exchangeInfo.json"

_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# the kline intervals Binance spot accepts ("1M" has no fixed length and is not served by the fake)
BINANCE_INTERVALS = {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
_EIGHT = Decimal("0.00000001")


def timeframe_ms(timeframe: str) -> int:
    """Length of a Binance kline interval in ms ("1m" -> 60000)."""
    try:
        return int(timeframe[:-1]) * _UNITS_MS[timeframe[-1]]
    except (KeyError, ValueError):
        raise ValueError(f"unsupported timeframe {timeframe!r}") from None


def symbol_id(symbol: str) -> str:
    """Binance market id of a unified spot symbol: "BTC/USDT" -> "BTCUSDT"."""
    base, quote = _split(symbol)
    return base + quote


def _split(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote or ":" in quote:
        raise ValueError(f"not a unified spot symbol: {symbol!r}")
    return base.upper(), quote.upper()


def _dec(x: Any) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


def _num(x: Any) -> str:
    """A number as Binance writes it: a string with 8 decimals ("42283.58000000"); strings pass through as-is."""
    if isinstance(x, str):
        return x
    return str(_dec(x).quantize(_EIGHT))


def _derived(row: list) -> dict:
    """Fields Binance sends that truth rows [ts, o, h, l, c, v] do not carry, derived deterministically."""
    o, h, l, c, v = (_dec(x) for x in row[1:6])
    quote = (v * (o + h + l + c) / 4).quantize(_EIGHT)
    trades = 0 if v == 0 else 1 + int(row[0] // 1000) % 997
    return {
        "q": str(quote),
        "n": trades,
        "V": str((v / 2).quantize(_EIGHT)),
        "Q": str((quote / 2).quantize(_EIGHT)),
    }


def kline_rest_row(row: list, timeframe: str) -> list:
    """A truth row as the 12-field array ``GET /api/v3/klines`` returns."""
    ts = int(row[0])
    d = _derived(row)
    return [ts, _num(row[1]), _num(row[2]), _num(row[3]), _num(row[4]), _num(row[5]),
            ts + timeframe_ms(timeframe) - 1, d["q"], d["n"], d["V"], d["Q"], "0"]


def kline_event(symbol_id: str, timeframe: str, row: list, closed: bool, event_ms: int) -> dict:
    """The kline event Binance's spot stream sends (``<symbol>@kline_<interval>``), e.g.

    {"e": "kline", "E": 1672515782136, "s": "BNBBTC", "k": {"t": 1672515780000, "T": 1672515839999,
     "s": "BNBBTC", "i": "1m", "f": 100, "L": 200, "o": "0.0010", "c": "0.0020", "h": "0.0025",
     "l": "0.0015", "v": "1000", "n": 100, "x": false, "q": "1.0000", "V": "500", "Q": "0.500", "B": "123456"}}
    """
    ts = int(row[0])
    d = _derived(row)
    first = -1 if d["n"] == 0 else ts // 1000
    last = -1 if d["n"] == 0 else first + d["n"] - 1
    return {
        "e": "kline",
        "E": int(event_ms),
        "s": symbol_id,
        "k": {
            "t": ts,
            "T": ts + timeframe_ms(timeframe) - 1,
            "s": symbol_id,
            "i": timeframe,
            "f": first,
            "L": last,
            "o": _num(row[1]),
            "c": _num(row[4]),
            "h": _num(row[2]),
            "l": _num(row[3]),
            "v": _num(row[5]),
            "n": d["n"],
            "x": bool(closed),
            "q": d["q"],
            "V": d["V"],
            "Q": d["Q"],
            "B": "0",
        },
    }


class FakeBinance(LocalExchange):
    """Local Binance spot: REST (exchangeInfo, klines, time, ping) over HTTP and the kline stream over WebSocket."""

    NAME = "FakeBinance"

    def __init__(self, candles: dict[str, list[list]], timeframe: str = "1m", *, listed: list[str] | None = None,
                 clock: Callable[[], int] | None = None):
        timeframe_ms(timeframe)  # validate early
        super().__init__(candles, timeframe, listed, clock)
        for s in self.listed:
            _split(s)

    def _routes(self, r) -> None:
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/klines", self._klines)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/ping", self._ping)
        for path in ("/ws", "/ws/{n}", "/stream/ws", "/stream/ws/{n}"):
            r.add_get(path, self._ws_raw)
        r.add_get("/stream", self._ws_combined)

    # ------------------------------------------------------------------ addresses / ccxt

    @property
    def ws_url(self) -> str:
        """Base of the spot raw-stream WebSocket, like wss://stream.binance.com:9443/ws (clients append /<n>).

        The path contains "/stream" on purpose: ccxt.pro.binance decides whether a kline frame is spot or
        contract from ``client.url.find('/stream')`` (true for wss://stream.binance.com only through the host).
        """
        return f"ws://127.0.0.1:{self.port}/stream/ws"

    def configure(self, exchange) -> None:
        """Point a ccxt binance instance (``ccxt.binance``, ``ccxt.async_support.binance``, ``ccxt.pro.binance``)
        at this server, and make ``load_markets`` fetch the spot exchangeInfo only.

        Every REST URL in ``urls['api']`` (and the sandbox/demo sets) is rewritten to this server with its path
        kept (https://api.binance.com/api/v3 -> http://127.0.0.1:<port>/api/v3, https://fapi.binance.com/fapi/v1
        -> http://127.0.0.1:<port>/fapi/v1, ...), so no request can leave the machine and any endpoint the fake
        does not serve answers 404 and is recorded in ``unexpected``. The spot and margin WebSocket URLs become
        ``ws_url``; every other WebSocket URL (futures, options, ws-api, ...) goes to an unserved path.
        """
        self._point_urls(exchange, lambda k: len(k) == 2 and k[0] == "ws" and k[1] in ("spot", "margin"))
        options = exchange.options
        options["fetchMarkets"] = {"types": ["spot"], "loadAllOptions": False}
        options["fetchCurrencies"] = False  # sapi/capital/config/getall (needs keys; skipped without them anyway)
        options["fetchMargins"] = False  # sapi/margin/allPairs (only called with keys)

    # ------------------------------------------------------------------ WebSocket side

    def stream_name(self, symbol: str, timeframe: str | None = None) -> str:
        return f"{symbol_id(symbol).lower()}@kline_{timeframe or self.timeframe}"

    async def push(self, symbol: str, row: list, closed: bool = False, *, event_ms: int | None = None) -> int:
        """Send one kline event for ``symbol`` (unified) at the fake's timeframe to every open connection
        subscribed to its stream; return how many connections it was sent to."""
        stream = self.stream_name(symbol)
        event = kline_event(symbol_id(symbol), self.timeframe, row, closed,
                            self.clock() if event_ms is None else event_ms)
        sent = 0
        for conn in list(self._conns.values()):
            if stream not in conn.streams:
                continue
            payload = {"stream": stream, "data": event} if conn.combined else event
            if await self._send(conn, json.dumps(payload, separators=(",", ":"))):
                sent += 1
        return sent

    async def _ws_raw(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_ws(request, combined=False)

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_ws(request, combined=True)

    async def _serve_ws(self, request: web.Request, combined: bool) -> web.StreamResponse:
        if not web.WebSocketResponse().can_prepare(request).ok:
            return await self._unknown(request)
        ws, conn = await self._accept(request, combined)
        if combined:
            streams = [s for s in request.query.get("streams", "").split("/") if s]
            conn.streams.update(streams)
            self.subscriptions.update(streams)
        return await self._serve(ws, conn)

    async def _on_ws_text(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self.ws_messages.append((conn.number, text))
            self.unexpected.append(f"WS#{conn.number} {text[:200]}")
            await self._send(conn, json.dumps({"code": 3, "msg": "Invalid JSON: expected value", "id": None}))
            return
        self.ws_messages.append((conn.number, msg))
        method = msg.get("method") if isinstance(msg, dict) else None
        req_id = msg.get("id") if isinstance(msg, dict) else None
        params = msg.get("params", []) if isinstance(msg, dict) else []
        if method == "SUBSCRIBE" and isinstance(params, list):
            conn.streams.update(params)
            self.subscriptions.update(params)
            reply: dict = {"result": None, "id": req_id}
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            conn.streams.difference_update(params)
            reply = {"result": None, "id": req_id}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(conn.streams), "id": req_id}
        else:
            self.unexpected.append(f"WS#{conn.number} {text[:200]}")
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": req_id}
        await self._send(conn, json.dumps(reply, separators=(",", ":")))
        await self._notify()

    # ------------------------------------------------------------------ REST side

    def _markets_by_id(self) -> dict[str, str]:
        out = {}
        for s in list(self.listed) + list(self.candles):
            out.setdefault(symbol_id(s), s)
        return out

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self._record(request)
        recorded = json.loads(FIXTURE.read_text())
        template = recorded["symbols"][0]
        entries = []
        for s in self.listed:
            base, quote = _split(s)
            entry = copy.deepcopy(template)
            entry.update(symbol=base + quote, baseAsset=base, quoteAsset=quote)
            entries.append(entry)
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = json.loads(request.query["symbols"])
            except ValueError:
                return self._error(400, -1100, "Illegal characters found in parameter 'symbols'.")
        if wanted is not None:
            known = {e["symbol"] for e in entries}
            if not set(wanted) <= known:
                return self._error(400, -1121, "Invalid symbol.")
            entries = [e for e in entries if e["symbol"] in wanted]
        recorded["serverTime"] = self.clock()
        recorded["symbols"] = entries
        return web.json_response(recorded)

    async def _time(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"serverTime": self.clock()})

    async def _ping(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({})

    async def _klines(self, request: web.Request) -> web.Response:
        self._record(request)
        failed = self._failure(request)
        if failed is not None:
            return failed
        q = request.query
        if "symbol" not in q:
            return self._error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if "interval" not in q:
            return self._error(400, -1102,
                               "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        symbol = self._markets_by_id().get(q["symbol"])
        if symbol is None:
            return self._error(400, -1121, "Invalid symbol.")
        interval = q["interval"]
        if interval not in BINANCE_INTERVALS:
            return self._error(400, -1120, "Invalid interval.")
        if interval != self.timeframe:
            self.unexpected.append(f"GET {request.path_qs} (the fake serves interval {self.timeframe} only)")
            return self._error(400, -1120, "Invalid interval.")
        try:
            limit = int(q.get("limit", 500))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in a parameter.")
        if limit < 1:
            return self._error(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1000'.")
        limit = min(limit, 1000)
        if start is not None and end is not None and start > end:
            return self._error(400, -1023, "Start time is greater than end time.")
        now = self.clock()
        rows = [r for r in list(self.candles.get(symbol, []))
                if int(r[0]) <= now and (start is None or int(r[0]) >= start) and (end is None or int(r[0]) <= end)]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return web.json_response([kline_rest_row(r, self.timeframe) for r in rows])

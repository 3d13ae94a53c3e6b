"""A local fake of MEXC's spot market data: REST and the protobuf kline WebSocket stream on one port.

``FakeMexc`` is the MEXC counterpart of ``fake_exchange.FakeBinance`` (same public API) and serves, on
``127.0.0.1`` and a random free port, with ``aiohttp.web``:

* REST ``GET /api/v3/exchangeInfo``, ``/api/v3/klines``, ``/api/v3/time``, ``/api/v3/ping``, answered the way
  MEXC answers them (klines as 8-field rows ``[openTime, "o", "h", "l", "c", "v", closeTime, "quoteVolume"]``,
  errors as ``{"code": -1121, "msg": "Invalid symbol."}``), plus the futures contract list
  ``GET /api/v1/contract/detail`` answered with no contracts: ccxt 4.5.90's ``mexc.fetch_markets`` always
  requests it next to exchangeInfo (no option turns it off), and this fake is spot only;
* the spot WebSocket (``/ws``, like ``wss://wbs-api.mexc.com/ws``), where a client subscribes with
  ``{"method": "SUBSCRIPTION", "params": ["spot@public.kline.v3.api.pb@BTCUSDT@Min1"]}``, is acknowledged with
  ``{"id": 0, "code": 0, "msg": "spot@public.kline.v3.api.pb@BTCUSDT@Min1"}``, has its keepalive
  ``{"method": "ping"}`` (any case) answered ``{"id": 0, "code": 0, "msg": "PONG"}``, and receives kline pushes
  as BINARY frames: ``PushDataV3ApiWrapper`` protobuf messages serialized with the pb2 classes ccxt ships
  (``ccxt.protobuf.mexc``), the wire format MEXC's ``*.api.pb`` channels use.

``configure(exchange)`` points a ccxt mexc instance (sync, async or pro) at it by rewriting URLs only, so ccxt's
own request building, parsing, protobuf decoding (``decode_proto_msg``) and WebSocket handlers run unchanged.
Anything the fake does not serve answers 404 (REST) or "Not Subscribed successfully!" (WebSocket) and lands
in ``unexpected``.

Needs ``protobuf>=5.29.3,<7`` (ccxt's mexc pb2 files are protoc 5.29.3 gencode).
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any, Callable

from aiohttp import web

from fake_exchange import symbol_id, timeframe_ms
from fake_local import Conn, LocalExchange

# unified timeframe -> MEXC spot REST interval (ccxt mexc options['timeframes']['spot'])
REST_INTERVALS = {"1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "60m", "4h": "4h", "1d": "1d",
                  "1w": "1W"}
# every interval MEXC spot REST accepts ("1M" has no fixed length and is not served by the fake)
MEXC_REST_INTERVALS = set(REST_INTERVALS.values()) | {"1M"}
# unified timeframe -> MEXC spot WebSocket interval (ccxt.pro mexc options['timeframes'])
WS_INTERVALS = {"1m": "Min1", "5m": "Min5", "15m": "Min15", "30m": "Min30", "1h": "Min60", "4h": "Hour4",
                "8h": "Hour8", "1d": "Day1", "1w": "Week1"}
MEXC_WS_INTERVALS = set(WS_INTERVALS.values()) | {"Month1"}
KLINE_CHANNEL = "spot@public.kline.v3.api.pb"
_EIGHT = Decimal("0.00000001")


def _dec(x: Any) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


def _split(symbol: str) -> tuple[str, str]:
    """("BTC", "USDT") of a unified spot symbol; ValueError for anything else (via fake_exchange.symbol_id)."""
    symbol_id(symbol)
    base, _, quote = symbol.partition("/")
    return base.upper(), quote.upper()


def mexc_num(x: Any) -> str:
    """A number as MEXC writes it: a plain decimal string without trailing zeros ("117341", "3.12599854");
    strings pass through as-is."""
    if isinstance(x, str):
        return x
    d = _dec(x).normalize()
    return format(d, "f")


def _amount(row: list) -> str:
    """Quote volume ("amount"), which truth rows [ts, o, h, l, c, v] do not carry, derived deterministically."""
    o, h, l, c, v = (_dec(x) for x in row[1:6])
    return mexc_num((v * (o + h + l + c) / 4).quantize(_EIGHT))


def internal_symbol_id(market_id: str) -> str:
    """MEXC's 32-hex internal symbol id (``symbolId`` in pushes), derived deterministically from the market id."""
    return hashlib.md5(market_id.encode()).hexdigest()


def kline_rest_row(row: list, timeframe: str) -> list:
    """A truth row as the 8-field array MEXC's ``GET /api/v3/klines`` returns, e.g.
    ``[1640804880000, "47482.36", "47482.36", "47416.57", "47436.1", "3.550717", 1640804940000, "168387.3"]``
    (closeTime = openTime + interval, not - 1 as on Binance)."""
    ts = int(row[0])
    return [ts, mexc_num(row[1]), mexc_num(row[2]), mexc_num(row[3]), mexc_num(row[4]), mexc_num(row[5]),
            ts + timeframe_ms(timeframe), _amount(row)]


def kline_message(market_id: str, timeframe: str, row: list, event_ms: int):
    """The ``PushDataV3ApiWrapper`` MEXC pushes on ``spot@public.kline.v3.api.pb@<ID>@<Interval>``; decoded by
    ccxt (``MessageToDict``) it reads::

        {"channel": "spot@public.kline.v3.api.pb@BTCUSDT@Min1", "symbol": "BTCUSDT",
         "symbolId": "2fb942154ef44a4ab2ef98c8afb6a4a7", "createTime": "1754737941062", "sendTime": "...",
         "publicSpotKline": {"interval": "Min1", "windowStart": "1754737920", "openingPrice": "117317.31",
                             "closingPrice": "117325.26", "highestPrice": "117341", "lowestPrice": "117317.3",
                             "volume": "3.12599854", "amount": "366804.43", "windowEnd": "1754737980"}}

    windowStart/windowEnd are in seconds. There is no "closed" flag: a window is over when the next one shows up.
    """
    from ccxt.protobuf.mexc.PushDataV3ApiWrapper_pb2 import PushDataV3ApiWrapper

    interval = WS_INTERVALS[timeframe]
    start_s = int(row[0]) // 1000
    msg = PushDataV3ApiWrapper()
    msg.channel = f"{KLINE_CHANNEL}@{market_id}@{interval}"
    msg.symbol = market_id
    msg.symbolId = internal_symbol_id(market_id)
    msg.createTime = int(event_ms)
    msg.sendTime = int(event_ms)
    k = msg.publicSpotKline
    k.interval = interval
    k.windowStart = start_s
    k.openingPrice = mexc_num(row[1])
    k.highestPrice = mexc_num(row[2])
    k.lowestPrice = mexc_num(row[3])
    k.closingPrice = mexc_num(row[4])
    k.volume = mexc_num(row[5])
    k.amount = _amount(row)
    k.windowEnd = start_s + timeframe_ms(timeframe) // 1000
    return msg


def kline_frame(market_id: str, timeframe: str, row: list, event_ms: int) -> bytes:
    """``kline_message`` serialized: the payload of the binary WebSocket frame."""
    return kline_message(market_id, timeframe, row, event_ms).SerializeToString()


def _ack(msg: str, req_id: Any = 0) -> str:
    return json.dumps({"id": 0 if req_id is None else req_id, "code": 0, "msg": msg}, separators=(",", ":"))


class FakeMexc(LocalExchange):
    """Local MEXC spot: REST (exchangeInfo, klines, time, ping, an empty contract list) over HTTP and the
    protobuf kline stream over WebSocket."""

    NAME = "FakeMexc"
    KLINES_DEFAULT_LIMIT = 500
    KLINES_MAX_LIMIT = 500  # MEXC documents 1000; ccxt notes "in practice it's 500"

    def __init__(self, candles: dict[str, list[list]], timeframe: str = "1m", *, listed: list[str] | None = None,
                 clock: Callable[[], int] | None = None):
        if timeframe not in REST_INTERVALS or timeframe not in WS_INTERVALS:
            raise ValueError(f"unsupported timeframe {timeframe!r} (MEXC spot REST and WebSocket both serve: "
                             f"{sorted(set(REST_INTERVALS) & set(WS_INTERVALS))})")
        super().__init__(candles, timeframe, listed, clock)
        for s in list(self.listed) + list(candles):
            _split(s)
        self.pings = 0  # keepalive pings answered with PONG

    def _routes(self, r) -> None:
        r.add_get("/api/v3/exchangeInfo", self._exchange_info)
        r.add_get("/api/v3/klines", self._klines)
        r.add_get("/api/v3/time", self._time)
        r.add_get("/api/v3/ping", self._ping)
        r.add_get("/api/v1/contract/detail", self._contract_detail)
        r.add_get("/ws", self._serve_ws)

    # ------------------------------------------------------------------ addresses / ccxt

    @property
    def ws_url(self) -> str:
        """The spot WebSocket, like wss://wbs-api.mexc.com/ws (ccxt connects to it as is)."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def configure(self, exchange) -> None:
        """Point a ccxt mexc instance (``ccxt.mexc``, ``ccxt.async_support.mexc``, ``ccxt.pro.mexc``) at this
        server.

        Every REST URL in ``urls['api']`` is rewritten to this server with its path kept (https://api.mexc.com ->
        http://127.0.0.1:<port>, https://api.mexc.com/api/v1/contract -> http://127.0.0.1:<port>/api/v1/contract,
        https://www.mexc.com/open/api/v2 -> http://127.0.0.1:<port>/open/api/v2, ...), so no request can leave
        the machine and any endpoint the fake does not serve answers 404 and is recorded in ``unexpected``. The
        spot WebSocket URL becomes ``ws_url``; the swap one goes to an unserved path.

        ccxt 4.5.90's mexc has no option that limits ``fetch_markets`` to spot (it always requests the contract
        list too, which the fake answers empty); ``options['fetchMarkets']['types']`` is still set to spot only
        for ccxt versions that honour it. ``fetch_currencies`` makes no request without API keys.
        """
        self._point_urls(exchange, lambda k: k == ("ws", "spot"))
        options = exchange.options
        fetch_markets = dict(options.get("fetchMarkets") or {})
        fetch_markets["types"] = {"spot": True, "swap": {"linear": False, "inverse": False}}
        options["fetchMarkets"] = fetch_markets
        options["adjustForTimeDifference"] = False  # no /api/v3/time before exchangeInfo

    # ------------------------------------------------------------------ WebSocket side

    def stream_name(self, symbol: str, timeframe: str | None = None) -> str:
        """The kline channel of a unified symbol: "spot@public.kline.v3.api.pb@BTCUSDT@Min1"."""
        tf = timeframe or self.timeframe
        if tf not in WS_INTERVALS:
            raise ValueError(f"unsupported timeframe {tf!r}")
        return f"{KLINE_CHANNEL}@{symbol_id(symbol)}@{WS_INTERVALS[tf]}"

    async def push(self, symbol: str, row: list, closed: bool = False, *, event_ms: int | None = None) -> int:
        """Send one kline push (a binary protobuf frame) for ``symbol`` (unified) at the fake's timeframe to every
        open connection subscribed to its channel; return how many connections it was sent to.

        ``closed`` is accepted for API parity with FakeBinance and ignored: MEXC pushes carry no closed flag."""
        del closed
        stream = self.stream_name(symbol)
        frame = kline_frame(symbol_id(symbol), self.timeframe, row, self.clock() if event_ms is None else event_ms)
        sent = 0
        for conn in list(self._conns.values()):
            if stream in conn.streams and await self._send(conn, frame):
                sent += 1
        return sent

    async def _serve_ws(self, request: web.Request) -> web.StreamResponse:
        if not web.WebSocketResponse().can_prepare(request).ok:
            return await self._unknown(request)
        if request.query_string:  # e.g. ?listenKey=... (private streams): not served
            self.unexpected.append(f"WS {request.path_qs}")
        ws, conn = await self._accept(request)
        return await self._serve(ws, conn)

    def _kline_channel_ok(self, channel: Any) -> bool:
        """A kline channel on a market the fake knows, with an interval MEXC knows."""
        if not isinstance(channel, str):
            return False
        parts = channel.split("@")
        return (len(parts) == 4 and "@".join(parts[:2]) == KLINE_CHANNEL and parts[2] in self._markets_by_id()
                and parts[3] in MEXC_WS_INTERVALS)

    async def _on_ws_text(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        self.ws_messages.append((conn.number, text if msg is None else msg))
        if not isinstance(msg, dict):
            self.unexpected.append(f"WS#{conn.number} {text[:200]}")
            await self._send(conn, _ack("Invalid request"))  # MEXC answers junk without an error code
            return
        method = str(msg.get("method", "")).upper()
        req_id = msg.get("id", 0)
        params = msg.get("params", [])
        if method == "PING":
            self.pings += 1
            await self._send(conn, _ack("PONG", req_id))
            return
        if method in ("SUBSCRIPTION", "UNSUBSCRIPTION") and isinstance(params, list) and params:
            good = [p for p in params if self._kline_channel_ok(p)]
            bad = [p for p in params if p not in good]
            if method == "SUBSCRIPTION":
                conn.streams.update(good)
                self.subscriptions.update(good)
                wanted = WS_INTERVALS[self.timeframe]
                for p in good:
                    if p.split("@")[3] != wanted:
                        self.unexpected.append(f"WS#{conn.number} {p} (the fake pushes interval {wanted} only)")
            else:
                conn.streams.difference_update(good)
            if good:
                await self._send(conn, _ack(",".join(good), req_id))
            if bad:
                self.unexpected.append(f"WS#{conn.number} {text[:200]}")
                await self._send(conn, _ack(
                    f"Not Subscribed successfully! [{','.join(map(str, bad))}].  Reason： Blocked! ", req_id))
            await self._notify()
            return
        self.unexpected.append(f"WS#{conn.number} {text[:200]}")
        await self._send(conn, _ack("Invalid request", req_id))

    # ------------------------------------------------------------------ REST side

    def _markets_by_id(self) -> dict[str, str]:
        out = {}
        for s in list(self.listed) + list(self.candles):
            out.setdefault(symbol_id(s), s)
        return out

    @staticmethod
    def _symbol_entry(symbol: str) -> dict:
        """One ``symbols[]`` entry of MEXC's exchangeInfo (the shape api.mexc.com returned in 2025)."""
        base, quote = _split(symbol)
        return {
            "symbol": base + quote,
            "status": "1",
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 2,
            "quoteAssetPrecision": 2,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 2,
            "orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"],
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "quoteAmountPrecision": "1.000000000000000000000000000000",
            "baseSizePrecision": "0.000001",
            "permissions": ["SPOT"],
            "filters": [],
            "maxQuoteAmount": "2000000.000000000000000000000000000000",
            "makerCommission": "0",
            "takerCommission": "0.0005",
            "quoteAmountPrecisionMarket": "1.000000000000000000000000000000",
            "maxQuoteAmountMarket": "100000.000000000000000000000000000000",
            "fullName": base,
            "tradeSideType": 1,
            "contractAddress": "",
            "st": False,
        }

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self._record(request)
        entries = [self._symbol_entry(s) for s in self.listed]
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            wanted = [s for s in request.query["symbols"].split(",") if s]
        if wanted is not None:
            known = {e["symbol"] for e in entries}
            if not set(wanted) <= known:
                return self._error(400, -1121, "Invalid symbol.")
            entries = [e for e in entries if e["symbol"] in wanted]
        return web.json_response({"timezone": "CST", "serverTime": self.clock(), "rateLimits": [],
                                  "exchangeFilters": [], "symbols": entries})

    async def _time(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"serverTime": self.clock()})

    async def _ping(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({})

    async def _contract_detail(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"success": True, "code": 0, "data": []})

    async def _klines(self, request: web.Request) -> web.Response:
        self._record(request)
        failed = self._failure(request)
        if failed is not None:
            return failed
        q = request.query
        if "symbol" not in q:
            return self._error(400, 700004, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if "interval" not in q:
            return self._error(400, 700004,
                               "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        symbol = self._markets_by_id().get(q["symbol"])
        if symbol is None:
            return self._error(400, -1121, "Invalid symbol.")
        interval = q["interval"]
        if interval not in MEXC_REST_INTERVALS:
            return self._error(400, -1121, "Invalid interval.")
        if interval != REST_INTERVALS[self.timeframe]:
            self.unexpected.append(
                f"GET {request.path_qs} (the fake serves interval {REST_INTERVALS[self.timeframe]} only)")
            return self._error(400, -1121, "Invalid interval.")
        try:
            limit = int(q.get("limit", self.KLINES_DEFAULT_LIMIT))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return self._error(400, 700008, "Illegal characters found in a parameter.")
        if limit < 1:
            return self._error(400, 700008, "Illegal characters found in parameter 'limit'.")
        limit = min(limit, self.KLINES_MAX_LIMIT)
        if start is not None and end is not None and start > end:
            return self._error(400, -1128, "Combination of optional parameters invalid.")
        now = self.clock()
        # endTime is exclusive on MEXC (ccxt adds 1 ms to `until` for that reason)
        rows = [r for r in list(self.candles.get(symbol, []))
                if int(r[0]) <= now and (start is None or int(r[0]) >= start) and (end is None or int(r[0]) < end)]
        rows = rows[:limit] if start is not None else rows[-limit:]
        return web.json_response([kline_rest_row(r, self.timeframe) for r in rows])

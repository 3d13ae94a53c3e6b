"""The local MEXC fake (tests/fake_mexc.py) driven through ccxt's real REST and WebSocket code paths.

Nothing in ccxt is patched: ``FakeMexc.configure`` only rewrites URLs (and market-loading options), so every
value asserted here went through ccxt's request building, HTTP/WebSocket client, ``decode_proto_msg`` (protobuf
-> dict) and its MEXC parsers and message handlers (fetch_spot_markets, parse_ohlcv, handle_message ->
handle_protobuf_message -> handle_ohlcv, handle_subscription_status -> handle_pong, the ArrayCache).
pytest-asyncio is not installed: each test is a sync function running its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
from aiohttp import WSMsgType

from fake_mexc import FakeMexc, kline_frame, kline_rest_row

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
BTC = "spot@public.kline.v3.api.pb@BTCUSDT@Min1"
ETH = "spot@public.kline.v3.api.pb@ETHUSDT@Min1"
# ccxt's throttle would space requests out (exchangeInfo costs 25, contract/detail 100): seconds per test locally
FAST = {"enableRateLimit": False}


def truth(n: int, price: float) -> list[list]:
    return [[T0 + i * MIN, price + i, price + i + 2.5, price + i - 1.25, price + i + 1.5, 1.5 + i] for i in range(n)]


def run(coro, timeout: float = 15.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(predicate, timeout: float = 3.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def floats(rows):
    return [[int(r[0])] + [float(x) for x in r[1:6]] for r in rows]


def decode(frame: bytes) -> dict:
    from ccxt.protobuf.mexc.PushDataV3ApiWrapper_pb2 import PushDataV3ApiWrapper
    from google.protobuf.json_format import MessageToDict

    msg = PushDataV3ApiWrapper()
    msg.ParseFromString(frame)
    return MessageToDict(msg)


# --------------------------------------------------------------------------- protobuf runtime


def test_protobuf_runtime_loads_ccxt_mexc_gencode():
    import google.protobuf
    from ccxt.protobuf.mexc import PushDataV3ApiWrapper_pb2  # raises VersionError on a too-old runtime

    assert "publicSpotKline" in PushDataV3ApiWrapper_pb2.PushDataV3ApiWrapper.DESCRIPTOR.fields_by_name
    major, minor, patch = (int(x) for x in google.protobuf.__version__.split(".")[:3])
    assert (5, 29, 3) <= (major, minor, patch) < (7, 0, 0)


# --------------------------------------------------------------------------- REST


def test_pro_load_markets_and_fetch_ohlcv_through_ccxt():
    now = [T0 + 5 * MIN + 30_000]  # inside the 6th candle (index 5): it is forming

    async def main():
        candles = {"BTC/USDT": truth(10, 42000.0), "ETH/USDT": truth(10, 2300.0)}
        async with FakeMexc(candles, listed=["BTC/USDT", "ETH/USDT", "SOL/USDT"], clock=lambda: now[0]) as fake:
            ex = ccxt.pro.mexc(FAST)
            fake.configure(ex)
            try:
                markets = await ex.load_markets()
                assert sorted(markets) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
                eth = markets["ETH/USDT"]
                assert eth["id"] == "ETHUSDT" and eth["spot"] is True and eth["active"] is True
                # parsed from baseAssetPrecision / quoteAssetPrecision
                assert (eth["precision"]["amount"], eth["precision"]["price"]) == (1e-08, 0.01)
                # exchangeInfo plus the (empty) futures contract list ccxt always asks for; nothing needing keys
                assert sorted(fake.requests) == ["/api/v1/contract/detail", "/api/v3/exchangeInfo"]

                got = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=100)
                assert got == floats(candles["BTC/USDT"][:6])  # includes the forming candle, like MEXC
                assert all(isinstance(x, float) for row in got for x in row[1:])
                assert fake.requests[-1] == (f"/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={T0}"
                                             f"&endTime={T0 + 500 * MIN}&limit=100")

                assert await ex.fetch_ohlcv("ETH/USDT", "1m", since=T0 + 2 * MIN, limit=2) == floats(
                    candles["ETH/USDT"][2:4])
                # no since: the latest `limit` rows up to now
                assert await ex.fetch_ohlcv("ETH/USDT", "1m", limit=3) == floats(candles["ETH/USDT"][3:6])
                # params.until -> endTime = until + 1 (MEXC's endTime is exclusive)
                assert await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, params={"until": T0 + MIN}) == floats(
                    candles["BTC/USDT"][:2])
                assert f"&endTime={T0 + MIN + 1}&" in fake.requests[-1]  # ccxt also passes until= along
                assert await ex.fetch_ohlcv("SOL/USDT", "1m", since=T0) == []

                # the clock moves and the truth grows: later requests see both
                now[0] = T0 + 11 * MIN + 1
                fake.candles["BTC/USDT"].append([T0 + 10 * MIN, 1, 2, 0.5, 1.5, 7])
                got = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0 + 8 * MIN)
                assert got == floats(candles["BTC/USDT"][8:11])
                assert fake.unexpected == []
                assert all(r.startswith(("/api/v3/", "/api/v1/contract/")) for r in fake.requests)
            finally:
                await ex.close()

    run(main())


def test_sync_ccxt_configured_too_and_unserved_endpoints_are_recorded():
    async def main():
        candles = {"BTC/USDT": truth(5, 42000.0)}
        async with FakeMexc(candles) as fake:
            sync = ccxt.mexc(FAST)
            fake.configure(sync)
            assert list(await asyncio.to_thread(sync.load_markets)) == ["BTC/USDT"]
            got = await asyncio.to_thread(sync.fetch_ohlcv, "BTC/USDT", "1m", T0, 2)
            assert got == floats(candles["BTC/USDT"][:2])
            assert fake.unexpected == []

            ex = ccxt.pro.mexc(FAST)
            fake.configure(ex)
            assert ex.urls["api"]["contract"]["public"] == f"http://127.0.0.1:{fake.port}/api/v1/contract"
            assert ex.urls["api"]["ws"]["spot"] == fake.ws_url
            assert all(u.startswith(("http://127.0.0.1:", "ws://127.0.0.1:"))  # nothing reaches the internet
                       for sec in ex.urls["api"].values() for u in sec.values())
            try:
                await ex.load_markets()
                with pytest.raises(ccxt.ExchangeNotAvailable):  # ccxt's mapping of a bare 404
                    await ex.fetch_ticker("BTC/USDT")
                with pytest.raises(ccxt.BadSymbol):  # an interval the fake does not hold: MEXC error -1121
                    await ex.fetch_ohlcv("BTC/USDT", "5m")
            finally:
                await ex.close()
            assert fake.unexpected[0] == "GET /api/v3/ticker/24hr?symbol=BTCUSDT"
            assert fake.unexpected[1].startswith("GET /api/v3/klines?symbol=BTCUSDT&interval=5m")
            assert len(fake.unexpected) == 2

    run(main())


def test_rest_wire_format_is_mexc_like():
    now = T0 + 2 * MIN + 5

    async def main():
        async with FakeMexc({"BTC/USDT": truth(5, 42283.58)}, listed=["BTC/USDT", "ETH/USDT"],
                            clock=lambda: now) as fake:
            async with aiohttp.ClientSession() as http:
                async with http.get(fake.rest_url + "/klines",
                                    params={"symbol": "BTCUSDT", "interval": "1m", "startTime": T0}) as r:
                    rows = await r.json()
                async with http.get(fake.rest_url + "/klines", params={"symbol": "XRPUSDT", "interval": "1m"}) as r:
                    assert r.status == 400 and await r.json() == {"code": -1121, "msg": "Invalid symbol."}
                async with http.get(fake.rest_url + "/time") as r:
                    assert await r.json() == {"serverTime": now}
                async with http.get(fake.rest_url + "/ping") as r:
                    assert await r.json() == {}
                async with http.get(fake.rest_url + "/exchangeInfo", params={"symbols": "ETHUSDT"}) as r:
                    info = await r.json()
                async with http.get(f"http://127.0.0.1:{fake.port}/api/v3/capital/config/getall") as r:
                    assert r.status == 404
            assert len(rows) == 3  # the forming third candle included, later ones are in the future
            assert rows[0] == [T0, "42283.58", "42286.08", "42282.33", "42285.08", "1.5", T0 + MIN, "63426.40125"]
            assert rows[0] == kline_rest_row(truth(1, 42283.58)[0], "1m")
            assert [s["symbol"] for s in info["symbols"]] == ["ETHUSDT"]
            s = info["symbols"][0]
            assert (s["status"], s["isSpotTradingAllowed"], s["baseAsset"], s["quoteAsset"]) == ("1", True, "ETH",
                                                                                                  "USDT")
            assert info["serverTime"] == now
            assert fake.unexpected == ["GET /api/v3/capital/config/getall"]

    run(main())


# --------------------------------------------------------------------------- WebSocket


def test_ws_wire_format_subscription_ack_ping_and_binary_push():
    async def main():
        async with FakeMexc({"BTC/USDT": truth(2, 100.0)}, clock=lambda: T0 + 7) as fake:
            assert fake.stream_name("BTC/USDT") == BTC
            assert fake.stream_name("BTC/USDT", "1h") == "spot@public.kline.v3.api.pb@BTCUSDT@Min60"
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(fake.ws_url) as ws:
                    await ws.send_str(json.dumps({"method": "SUBSCRIPTION", "params": [BTC]}))
                    assert json.loads((await ws.receive(timeout=2)).data) == {"id": 0, "code": 0, "msg": BTC}
                    await ws.send_str(json.dumps({"method": "PING"}))
                    assert json.loads((await ws.receive(timeout=2)).data) == {"id": 0, "code": 0, "msg": "PONG"}
                    await ws.send_str(json.dumps({"method": "SUBSCRIPTION",
                                                  "params": ["spot@public.kline.v3.api.pb@XRPUSDT@Min1"]}))
                    nack = json.loads((await ws.receive(timeout=2)).data)
                    assert nack["code"] == 0 and nack["msg"].startswith("Not Subscribed successfully! [spot@")

                    row = [T0 + MIN, 101.25, 103, 100.5, 102.125, 0.75]
                    assert await fake.push("BTC/USDT", row) == 1
                    assert await fake.push("ETH/USDT", row) == 0  # nobody subscribed
                    frame = await ws.receive(timeout=2)
                    assert frame.type == WSMsgType.BINARY
                    assert frame.data == kline_frame("BTCUSDT", "1m", row, T0 + 7)
                    msg = decode(frame.data)
                    assert msg["channel"] == BTC and msg["symbol"] == "BTCUSDT" and len(msg["symbolId"]) == 32
                    assert msg["createTime"] == str(T0 + 7)
                    assert msg["publicSpotKline"] == {
                        "interval": "Min1", "windowStart": str((T0 + MIN) // 1000),
                        "windowEnd": str((T0 + 2 * MIN) // 1000), "openingPrice": "101.25", "highestPrice": "103",
                        "lowestPrice": "100.5", "closingPrice": "102.125", "volume": "0.75",
                        "amount": "76.2890625"}

                    await ws.send_str(json.dumps({"method": "UNSUBSCRIPTION", "params": [BTC]}))
                    assert json.loads((await ws.receive(timeout=2)).data) == {"id": 0, "code": 0, "msg": BTC}
                    assert fake.active_subscriptions == set()
                    assert await fake.push("BTC/USDT", row) == 0
            await until(lambda: fake.connections == 0, what="connections to close")
            assert fake.connects == 1 and fake.subscriptions == {BTC} and fake.pings == 1
            assert fake.unexpected == ["WS#1 " + json.dumps({"method": "SUBSCRIPTION",
                                                             "params": ["spot@public.kline.v3.api.pb@XRPUSDT@Min1"]})]
            with pytest.raises(TimeoutError, match="ETHUSDT@Min1"):
                await fake.wait_subscribed(ETH, timeout=0.1)

    run(main())


def test_watch_ohlcv_returns_pushed_protobuf_values():
    async def main():
        async with FakeMexc({"BTC/USDT": truth(3, 42000.0), "ETH/USDT": truth(3, 2300.0)}) as fake:
            ex = ccxt.pro.mexc(FAST)
            fake.configure(ex)
            try:
                assert not ex.has.get("watchOHLCVForSymbols")  # MEXC in ccxt: one symbol per watch call
                task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await fake.wait_subscribed(BTC)
                # the subscription ccxt's watch_spot_public sends, on the spot url as is; acknowledged by the fake
                assert fake.ws_messages == [(1, {"method": "SUBSCRIPTION", "params": [BTC]})]
                assert list(ex.clients) == [fake.ws_url]
                assert fake.sent == [(1, json.dumps({"id": 0, "code": 0, "msg": BTC}, separators=(",", ":")))]

                steps = [
                    [T0 + 3 * MIN, 42003.0, 42004.0, 42002.0, 42003.5, 0.5],  # forming
                    [T0 + 3 * MIN, 42003.0, 42009.0, 42001.0, 42008.0, 2.75],  # same candle, updated
                    [T0 + 3 * MIN, 42003.0, 42009.0, 42001.0, 42007.0, 3.0],  # its last update
                    [T0 + 4 * MIN, 42007.0, 42007.5, 42006.0, 42006.5, 0.25],  # the next minute
                ]
                for i, row in enumerate(steps):
                    if i:
                        task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                        await asyncio.sleep(0)
                    assert await fake.push("BTC/USDT", row) == 1
                    got = await asyncio.wait_for(task, 3)
                    # newUpdates: only the candle touched since the previous call, with the pushed values
                    assert [list(r) for r in got] == [row], (i, got)
                    # the frame that produced it was binary protobuf, decoded by ccxt's own decode_proto_msg
                    conn, frame = fake.sent[-1]
                    assert conn == 1 and isinstance(frame, bytes)
                    assert decode(frame)["publicSpotKline"]["windowStart"] == str(row[0] // 1000)
                    assert ex.decode_proto_msg(frame)["channel"] == BTC
                assert [list(r) for r in ex.ohlcvs["BTC/USDT"]["1m"]] == [steps[2], steps[3]]
                assert sum(isinstance(f, bytes) for _, f in fake.sent) == 4
                assert fake.connects == 1 and fake.unexpected == []
            finally:
                await ex.close()

    run(main())


def test_keepalive_pings_are_answered_and_the_connection_survives():
    async def main():
        async with FakeMexc({"BTC/USDT": truth(2, 100.0)}) as fake:
            ex = ccxt.pro.mexc(FAST)
            fake.configure(ex)
            ex.options["ws"] = {"keepAlive": 250}  # ccxt pings every 250 ms, times out after 2 missed PONGs
            try:
                task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await fake.wait_subscribed(BTC)
                await until(lambda: fake.pings >= 3, what="3 pings")
                assert (1, {"method": "ping"}) in fake.ws_messages  # ccxt.pro.mexc's ping(): lowercase
                assert ex.clients[fake.ws_url].lastPong is not None  # handle_subscription_status -> handle_pong
                await fake.push("BTC/USDT", [T0, 1, 2, 0.5, 1.5, 3])
                assert await asyncio.wait_for(task, 3) == [[T0, 1.0, 2.0, 0.5, 1.5, 3.0]]
                assert fake.connects == 1 and fake.connections == 1 and fake.unexpected == []
            finally:
                await ex.close()

    run(main())


@pytest.mark.parametrize("code", [None, 1001])
def test_drop_rejects_pending_watch_and_next_watch_reconnects(code):
    async def main():
        async with FakeMexc({"BTC/USDT": truth(2, 100.0)}) as fake:
            ex = ccxt.pro.mexc(FAST)
            fake.configure(ex)
            try:
                task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await fake.wait_subscribed(BTC)
                assert fake.connects == 1
                await fake.drop(code)
                with pytest.raises(ccxt.NetworkError) as err:
                    await asyncio.wait_for(task, 3)
                assert str(err.value) == f"Connection closed by remote server, closing code {code or 1006}"
                assert fake.connections == 0

                task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await fake.wait_subscribed(BTC)  # re-subscribed on the new connection
                assert fake.connects == 2 and fake.connections == 1
                assert fake.ws_messages[-1] == (2, {"method": "SUBSCRIPTION", "params": [BTC]})
                assert await fake.push("BTC/USDT", [T0 + MIN, 1, 2, 0.5, 1.5, 3]) == 1
                assert await asyncio.wait_for(task, 3) == [[T0 + MIN, 1.0, 2.0, 0.5, 1.5, 3.0]]
                assert fake.unexpected == []
            finally:
                await ex.close()
            await until(lambda: fake.connections == 0, what="ccxt to close its connection")

    run(main())

"""The local Binance fake (tests/fake_exchange.py) driven through ccxt's real REST and WebSocket code paths.

Nothing in ccxt is patched: ``FakeBinance.configure`` only rewrites URLs and market-loading options, so every
value asserted here went through ccxt's request building, HTTP/WebSocket client, and its Binance parsers and
message handlers (parse_ohlcv, handle_message -> handle_ohlcv, handle_subscription_status, the ArrayCache).
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

from fake_exchange import FakeBinance, kline_event, kline_rest_row

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000


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


# --------------------------------------------------------------------------- REST


def test_pro_load_markets_and_fetch_ohlcv_through_ccxt():
    now = [T0 + 5 * MIN + 30_000]  # inside the 6th candle (index 5): it is forming

    async def main():
        candles = {"BTC/USDT": truth(10, 42000.0), "ETH/USDT": truth(10, 2300.0)}
        async with FakeBinance(candles, listed=["BTC/USDT", "ETH/USDT", "SOL/USDT"], clock=lambda: now[0]) as fake:
            ex = ccxt.pro.binance()
            fake.configure(ex)
            try:
                markets = await ex.load_markets()
                assert sorted(markets) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
                assert markets["ETH/USDT"]["id"] == "ETHUSDT" and markets["ETH/USDT"]["spot"] is True
                assert markets["ETH/USDT"]["precision"]["price"] == 0.01  # parsed from the recorded filters
                assert fake.requests == ["/api/v3/exchangeInfo"]  # spot only: no fapi/dapi/sapi call

                got = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=100)
                assert got == floats(candles["BTC/USDT"][:6])  # includes the forming candle, like Binance
                assert all(isinstance(x, float) for row in got for x in row[1:])
                assert fake.requests[-1] == "/api/v3/klines?interval=1m&limit=100&symbol=BTCUSDT&startTime=%d" % T0

                assert await ex.fetch_ohlcv("ETH/USDT", "1m", since=T0 + 2 * MIN, limit=2) == floats(
                    candles["ETH/USDT"][2:4])
                # no since: the latest `limit` rows up to now
                assert await ex.fetch_ohlcv("ETH/USDT", "1m", limit=3) == floats(candles["ETH/USDT"][3:6])
                # params.until -> endTime
                assert await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0, params={"until": T0 + MIN}) == floats(
                    candles["BTC/USDT"][:2])
                assert await ex.fetch_ohlcv("SOL/USDT", "1m", since=T0) == []

                # the clock moves and the truth grows: later requests see both
                now[0] = T0 + 11 * MIN + 1
                fake.candles["BTC/USDT"].append([T0 + 10 * MIN, 1, 2, 0.5, 1.5, 7])
                got = await ex.fetch_ohlcv("BTC/USDT", "1m", since=T0 + 8 * MIN)
                assert got == floats(candles["BTC/USDT"][8:11])
                assert fake.unexpected == []
            finally:
                await ex.close()

    run(main())


def test_sync_and_async_ccxt_configured_too():
    async def main():
        candles = {"BTC/USDT": truth(5, 42000.0)}
        async with FakeBinance(candles) as fake:
            sync = ccxt.binance()
            fake.configure(sync)
            assert list(await asyncio.to_thread(sync.load_markets)) == ["BTC/USDT"]
            got = await asyncio.to_thread(sync.fetch_ohlcv, "BTC/USDT", "1m", T0, 2)
            assert got == floats(candles["BTC/USDT"][:2])

            aex = ccxt.async_support.binance()
            fake.configure(aex)
            try:
                assert await aex.fetch_ohlcv("BTC/USDT", "1m", since=T0 + 4 * MIN) == floats(candles["BTC/USDT"][4:])
            finally:
                await aex.close()
            assert fake.unexpected == []
            assert all(r.startswith("/api/v3/") for r in fake.requests)

    run(main())


def test_unserved_endpoints_answer_404_and_are_recorded():
    async def main():
        async with FakeBinance({"BTC/USDT": truth(3, 100.0)}) as fake:
            ex = ccxt.pro.binance()
            fake.configure(ex)
            assert ex.urls["api"]["fapiPublic"].startswith("http://127.0.0.1:")  # nothing can reach the internet
            try:
                await ex.load_markets()
                with pytest.raises(ccxt.ExchangeNotAvailable):  # ccxt's mapping of a bare 404
                    await ex.fetch_ticker("BTC/USDT")
                with pytest.raises(ccxt.BadRequest):  # an interval the fake does not hold
                    await ex.fetch_ohlcv("BTC/USDT", "5m")
            finally:
                await ex.close()
            assert fake.unexpected[0] == "GET /api/v3/ticker/24hr?symbol=BTCUSDT"
            assert fake.unexpected[1].startswith("GET /api/v3/klines?interval=5m")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{fake.port}/sapi/v1/capital/config/getall") as r:
                    assert r.status == 404
                async with http.get(fake.rest_url + "/klines?symbol=XRPUSDT&interval=1m") as r:
                    assert r.status == 400 and await r.json() == {"code": -1121, "msg": "Invalid symbol."}
            assert fake.unexpected[-1] == "GET /sapi/v1/capital/config/getall"
            assert len(fake.unexpected) == 3  # an invalid symbol is a Binance error, not an unserved endpoint

    run(main())


def test_rest_wire_format_is_binance_like():
    now = T0 + 2 * MIN + 5

    async def main():
        async with FakeBinance({"BTC/USDT": truth(5, 42283.58)}, clock=lambda: now) as fake:
            async with aiohttp.ClientSession() as http:
                async with http.get(fake.rest_url + "/klines",
                                    params={"symbol": "BTCUSDT", "interval": "1m", "startTime": T0}) as r:
                    rows = await r.json()
                async with http.get(fake.rest_url + "/time") as r:
                    assert await r.json() == {"serverTime": now}
                async with http.get(fake.rest_url + "/ping") as r:
                    assert await r.json() == {}
                async with http.get(fake.rest_url + "/exchangeInfo") as r:
                    info = await r.json()
            assert len(rows) == 3  # the forming third candle included, later ones are in the future
            first = rows[0]
            assert len(first) == 12
            assert first[0] == T0 and first[6] == T0 + MIN - 1 and isinstance(first[8], int)
            assert first[1:6] == ["42283.58000000", "42286.08000000", "42282.33000000", "42285.08000000",
                                  "1.50000000"]
            assert all(isinstance(first[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10, 11))
            assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT"]
            assert info["serverTime"] == now and info["symbols"][0]["quoteAsset"] == "USDT"

    run(main())


def test_kline_event_shape():
    ev = kline_event("BNBBTC", "1m", [1672515780000, "0.0010", "0.0025", "0.0015", "0.0020", "1000"], False,
                     1672515782136)
    assert set(ev) == {"e", "E", "s", "k"} and ev["e"] == "kline" and ev["E"] == 1672515782136
    k = ev["k"]
    assert set(k) == set("tTsifLochlvnxqVQB")
    assert (k["t"], k["T"], k["s"], k["i"], k["x"]) == (1672515780000, 1672515839999, "BNBBTC", "1m", False)
    assert (k["o"], k["h"], k["l"], k["c"], k["v"]) == ("0.0010", "0.0025", "0.0015", "0.0020", "1000")
    assert kline_event("BTCUSDT", "1h", [T0, 1, 2, 0.5, 1.5, 3.25], True, T0)["k"]["v"] == "3.25000000"
    assert kline_rest_row([T0, 1, 2, 0.5, 1.5, 3.25], "1m")[:7] == [
        T0, "1.00000000", "2.00000000", "0.50000000", "1.50000000", "3.25000000", T0 + MIN - 1]


# --------------------------------------------------------------------------- WebSocket


def test_ws_frames_raw_and_combined():
    async def main():
        async with FakeBinance({"BTC/USDT": truth(2, 100.0)}) as fake:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(fake.ws_url + "/0") as raw, \
                        http.ws_connect(f"ws://127.0.0.1:{fake.port}/stream?streams=btcusdt@kline_1m") as comb:
                    await raw.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7}))
                    assert json.loads((await raw.receive(timeout=2)).data) == {"result": None, "id": 7}
                    await fake.wait_connections(2)
                    assert fake.connections == 2
                    assert await fake.push("BTC/USDT", [T0, 1, 2, 0.5, 1.5, 3], closed=True, event_ms=T0 + 5) == 2
                    want = kline_event("BTCUSDT", "1m", [T0, 1, 2, 0.5, 1.5, 3], True, T0 + 5)
                    assert json.loads((await raw.receive(timeout=2)).data) == want
                    assert json.loads((await comb.receive(timeout=2)).data) == {"stream": "btcusdt@kline_1m",
                                                                               "data": want}
                    assert await fake.push("ETH/USDT", [T0, 1, 2, 0.5, 1.5, 3]) == 0  # nobody subscribed
                    assert await fake.push_raw('{"hello":1}') == 2
                    assert json.loads((await raw.receive(timeout=2)).data) == {"hello": 1}
                    await raw.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
                    assert json.loads((await raw.receive(timeout=2)).data) == {"result": ["btcusdt@kline_1m"],
                                                                              "id": 8}
            assert fake.unexpected == []
            await until(lambda: fake.connections == 0, what="connections to close")
            assert fake.connects == 2 and fake.subscriptions == {"btcusdt@kline_1m"}
            with pytest.raises(TimeoutError, match="ethusdt@kline_1m"):
                await fake.wait_subscribed("ethusdt@kline_1m", timeout=0.1)

    run(main())


class Collector:
    """Loops on ccxt's watch_ohlcv_for_symbols and keeps the latest row seen per symbol."""

    def __init__(self, ex, pairs):
        self.ex, self.pairs = ex, pairs
        self.calls: list[dict] = []  # every return value, rows copied (ccxt hands out its cache rows)
        self.latest: dict[str, list] = {}
        self.task = asyncio.ensure_future(self.loop())

    async def loop(self):
        while True:
            res = await self.ex.watch_ohlcv_for_symbols(self.pairs)
            snap = {s: {tf: [list(r) for r in rows] for tf, rows in by_tf.items()} for s, by_tf in res.items()}
            self.calls.append(snap)
            for s, by_tf in snap.items():
                for rows in by_tf.values():
                    for r in rows:
                        self.latest.setdefault(s, {})[r[0]] = r

    def last(self, symbol):
        rows = self.latest.get(symbol, {})
        return rows[max(rows)] if rows else None

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass


def test_watch_ohlcv_for_symbols_returns_pushed_values():
    async def main():
        async with FakeBinance({"BTC/USDT": truth(3, 42000.0), "ETH/USDT": truth(3, 2300.0)}) as fake:
            ex = ccxt.pro.binance()
            fake.configure(ex)
            col = None
            try:
                col = Collector(ex, [["BTC/USDT", "1m"], ["ETH/USDT", "1m"]])
                await fake.wait_subscribed("btcusdt@kline_1m")
                await fake.wait_subscribed("ethusdt@kline_1m")
                # one SUBSCRIBE carrying both streams, on the URL ccxt builds: ws_url + "/" + stream index
                assert fake.ws_messages == [(1, {"method": "SUBSCRIBE", "id": 1,
                                                 "params": ["btcusdt@kline_1m", "ethusdt@kline_1m"]})]
                assert list(ex.clients) == [fake.ws_url + "/0"]

                steps = [
                    ("BTC/USDT", [T0 + 3 * MIN, 42003.0, 42004.0, 42002.0, 42003.5, 0.5], False),  # forming
                    ("ETH/USDT", [T0 + 3 * MIN, 2303.0, 2303.0, 2303.0, 2303.0, 0.1], False),
                    ("BTC/USDT", [T0 + 3 * MIN, 42003.0, 42009.0, 42001.0, 42008.0, 2.75], False),  # same candle
                    ("BTC/USDT", [T0 + 3 * MIN, 42003.0, 42009.0, 42001.0, 42007.0, 3.0], True),  # it closes
                    ("ETH/USDT", [T0 + 3 * MIN, 2303.0, 2310.0, 2301.0, 2309.0, 4.0], True),
                    ("BTC/USDT", [T0 + 4 * MIN, 42007.0, 42007.5, 42006.0, 42006.5, 0.25], False),  # next minute
                    ("ETH/USDT", [T0 + 4 * MIN, 2309.0, 2309.0, 2308.0, 2308.5, 0.5], False),
                ]
                for symbol, row, closed in steps:
                    n = len(col.calls)
                    assert await fake.push(symbol, row, closed) == 1
                    await until(lambda: len(col.calls) > n, what=f"ccxt to return {symbol} {row}")
                    # one symbol per return, holding only the candle(s) updated since the last call (newUpdates)
                    assert col.calls[-1] == {symbol: {"1m": [row]}}
                assert col.last("BTC/USDT") == steps[5][1] and col.last("ETH/USDT") == steps[6][1]
                assert col.latest["BTC/USDT"][T0 + 3 * MIN] == steps[3][1]
                assert col.latest["ETH/USDT"][T0 + 3 * MIN] == steps[4][1]
                assert fake.connects == 1 and fake.unexpected == []
            finally:
                if col:
                    await col.stop()
                await ex.close()

    run(main())


def test_watch_ohlcv_single_symbol_and_ccxt_quirks():
    async def main():
        async with FakeBinance({"BTC/USDT": truth(2, 100.0), "ETH/USDT": truth(2, 10.0)}) as fake:
            ex = ccxt.pro.binance()
            fake.configure(ex)
            try:
                task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await fake.wait_subscribed("btcusdt@kline_1m")
                await fake.push("BTC/USDT", [T0, 1, 2, 0.5, 1.5, 3])
                first = await asyncio.wait_for(task, 3)
                assert first == [[T0, 1.0, 2.0, 0.5, 1.5, 3.0]]

                # quirk: ccxt returns its cache rows, later updates of the same candle mutate them in place
                task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await fake.push("BTC/USDT", [T0, 1, 2.5, 0.5, 2.25, 4])
                second = await asyncio.wait_for(task, 3)
                assert second == [[T0, 1.0, 2.5, 0.5, 2.25, 4.0]] and first[0] is second[0]

                # quirk: frames arriving before the next call are coalesced - per symbol, the next call returns
                # every candle touched since the previous call, the latest values of each
                await fake.push("BTC/USDT", [T0, 1, 3, 0.5, 2.75, 5])
                await fake.push("BTC/USDT", [T0 + MIN, 2.75, 3, 2, 2.5, 1])
                await until(lambda: ex.ohlcvs["BTC/USDT"]["1m"][-1][0] == T0 + MIN, what="frames to be handled")
                task = asyncio.ensure_future(ex.watch_ohlcv("BTC/USDT", "1m"))
                await fake.push("BTC/USDT", [T0 + MIN, 2.75, 3.5, 2, 3.25, 2])
                got = await asyncio.wait_for(task, 3)
                assert got == [[T0, 1.0, 3.0, 0.5, 2.75, 5.0], [T0 + MIN, 2.75, 3.5, 2.0, 3.25, 2.0]]

                # a later watch_ohlcv_for_symbols with more symbols re-sends SUBSCRIBE, with all its streams,
                # on the same connection (same url: every kline watch maps to stream index "0")
                task = asyncio.ensure_future(ex.watch_ohlcv_for_symbols([["BTC/USDT", "1m"], ["ETH/USDT", "1m"]]))
                await fake.wait_subscribed("ethusdt@kline_1m")
                conn, msg = fake.ws_messages[-1]
                assert conn == 1 and msg["method"] == "SUBSCRIBE"
                assert msg["params"] == ["btcusdt@kline_1m", "ethusdt@kline_1m"]
                # only two frames were ever sent: watch calls with nothing new to subscribe send nothing
                # (they still bump ccxt's request id, so ids are not consecutive)
                assert fake.connects == 1 and len(fake.ws_messages) == 2 and msg["id"] > 2
                await fake.push("ETH/USDT", [T0, 10, 11, 9, 10.5, 1])
                assert await asyncio.wait_for(task, 3) == {"ETH/USDT": {"1m": [[T0, 10.0, 11.0, 9.0, 10.5, 1.0]]}}

                # quirk: with several symbols, frames of two symbols that arrive together resolve one call only;
                # the other symbol's update sits in ex.ohlcvs and is returned with that symbol's next frame
                task = asyncio.ensure_future(ex.watch_ohlcv_for_symbols([["BTC/USDT", "1m"], ["ETH/USDT", "1m"]]))
                await fake.push("BTC/USDT", [T0 + MIN, 2.75, 3.5, 2, 3.0, 3])
                await fake.push("ETH/USDT", [T0, 10, 12, 9, 11.5, 2])
                res = await asyncio.wait_for(task, 3)
                assert len(res) == 1
                await until(lambda: ex.ohlcvs["ETH/USDT"]["1m"][-1][4] == 11.5, what="ETH frame to be handled")
                assert fake.unexpected == []
            finally:
                await ex.close()

    run(main())


@pytest.mark.parametrize("code", [None, 1001])
def test_drop_rejects_pending_watch_and_next_watch_reconnects(code):
    async def main():
        async with FakeBinance({"BTC/USDT": truth(2, 100.0), "ETH/USDT": truth(2, 10.0)}) as fake:
            ex = ccxt.pro.binance()
            fake.configure(ex)
            try:
                pairs = [["BTC/USDT", "1m"], ["ETH/USDT", "1m"]]
                task = asyncio.ensure_future(ex.watch_ohlcv_for_symbols(pairs))
                await fake.wait_subscribed("ethusdt@kline_1m")
                assert fake.connects == 1
                await fake.drop(code)
                with pytest.raises(ccxt.NetworkError) as err:
                    await asyncio.wait_for(task, 3)
                assert type(err.value) is ccxt.NetworkError  # the base class itself, not RequestTimeout & co
                assert str(err.value) == f"Connection closed by remote server, closing code {code or 1006}"
                assert fake.connections == 0

                task = asyncio.ensure_future(ex.watch_ohlcv_for_symbols(pairs))
                await fake.wait_subscribed("btcusdt@kline_1m")  # re-subscribed on the new connection
                assert fake.connects == 2 and fake.connections == 1
                assert fake.ws_messages[-1][0] == 2 and fake.ws_messages[-1][1]["method"] == "SUBSCRIBE"
                assert await fake.push("BTC/USDT", [T0 + MIN, 1, 2, 0.5, 1.5, 3]) == 1
                assert await asyncio.wait_for(task, 3) == {"BTC/USDT": {"1m": [[T0 + MIN, 1.0, 2.0, 0.5, 1.5, 3.0]]}}
                assert fake.unexpected == []
            finally:
                await ex.close()
            await until(lambda: fake.connections == 0, what="ccxt to close its connection")

    run(main())

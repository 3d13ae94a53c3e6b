"""What the local exchanges of the tests share (``fake_exchange.FakeBinance``, ``fake_mexc.FakeMexc``): one
``aiohttp.web`` server on 127.0.0.1 and a free port for REST and WebSocket, its lifecycle, the WebSocket
connections (numbered, with the streams each subscribed), dropping them, waiting for subscriptions, queued
REST failures, and the record of what was asked (``requests``) and what the fake does not serve
(``unexpected``, answered 404).

A subclass sets ``NAME``, adds its routes in ``_routes`` and handles its protocol in ``_on_ws_text``."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web


class Conn:
    """One accepted WebSocket connection."""

    def __init__(self, number: int, ws: web.WebSocketResponse, request: web.Request, combined: bool = False):
        self.number = number
        self.ws = ws
        self.request = request
        self.combined = combined
        self.streams: set[str] = set()


class LocalExchange:
    NAME = "LocalExchange"

    def __init__(self, candles: dict[str, list[list]], timeframe: str, listed: list[str] | None,
                 clock: Callable[[], int] | None):
        self.candles = candles
        self.timeframe = timeframe
        self.listed = list(candles) if listed is None else list(listed)
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.subscriptions: set[str] = set()  # every stream subscribed so far, on any connection (never shrinks)
        self.connects = 0  # WebSocket connections accepted in total
        self.requests: list[str] = []  # REST path + query, in order (WebSocket upgrades not included)
        self.unexpected: list[str] = []  # "METHOD /path?query" (or "WS ...") the fake does not serve
        self.ws_messages: list[tuple[int, Any]] = []  # (connection number, decoded message) client -> server
        self.sent: list[tuple[int, str | bytes]] = []  # (connection number, frame) server -> client, in order
        self._conns: dict[int, Conn] = {}
        self._failures: dict[str, list[tuple[int, str]]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._changed: asyncio.Condition | None = None

    # ------------------------------------------------------------------ lifecycle

    def _routes(self, router) -> None:
        raise NotImplementedError

    async def start(self):
        app = web.Application()
        self._routes(app.router)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._changed = asyncio.Condition()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is None:
            return
        for conn in list(self._conns.values()):
            try:
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"server shutdown"), 1.0)
            except (asyncio.TimeoutError, Exception):
                self._abort(conn)
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.NAME} is not started")
        return self._port

    @property
    def rest_url(self) -> str:
        """Base of the spot REST API (like https://api.binance.com/api/v3)."""
        return f"http://127.0.0.1:{self.port}/api/v3"

    def _point_urls(self, exchange, spot_ws: Callable[[tuple], bool]) -> None:
        """Rewrite every URL of a ccxt instance to this server, path kept, so no request can leave the machine
        and any endpoint the fake does not serve answers 404 (recorded in ``unexpected``): ``urls['api']`` and
        the sandbox/demo sets. The WebSocket URL whose key path ``spot_ws`` accepts becomes ``ws_url``; every
        other one goes to an unserved path."""
        base = f"http://127.0.0.1:{self.port}"
        ws_base = f"ws://127.0.0.1:{self.port}"

        def rewrite(value, key_path):
            if isinstance(value, dict):
                return {k: rewrite(v, key_path + (k,)) for k, v in value.items()}
            if not isinstance(value, str) or "://" not in value:
                return value
            parts = urlsplit(value)
            if parts.scheme in ("ws", "wss"):
                return self.ws_url if spot_ws(key_path) else f"{ws_base}/unserved-ws/{'/'.join(key_path)}"
            return base + parts.path.rstrip("/")

        urls = copy.deepcopy(exchange.urls)
        for name in ("api", "test", "demo"):
            if isinstance(urls.get(name), dict):
                urls[name] = rewrite(urls[name], ())
        exchange.urls = urls

    # ------------------------------------------------------------------ WebSocket side

    @property
    def connections(self) -> int:
        """WebSocket connections currently open."""
        return len(self._conns)

    @property
    def active_subscriptions(self) -> set[str]:
        """Streams subscribed on the connections open now."""
        out: set[str] = set()
        for conn in self._conns.values():
            out |= conn.streams
        return out

    async def push_raw(self, data: str | bytes) -> int:
        """Send raw text (str) or a raw binary frame (bytes) to every open connection; return how many."""
        sent = 0
        for conn in list(self._conns.values()):
            if await self._send(conn, data):
                sent += 1
        return sent

    async def drop(self, code: int | None = None) -> None:
        """Close every WebSocket connection from the server side: by default abruptly (TCP abort, no close
        frame), as a network drop would; with ``code`` (e.g. 1001), with a close frame carrying that code."""
        for conn in list(self._conns.values()):
            if code is None:
                self._abort(conn)
            else:
                try:
                    await asyncio.wait_for(conn.ws.close(code=code), 1.0)
                except (asyncio.TimeoutError, Exception):
                    self._abort(conn)
        await self._wait_for(lambda: not self._conns, 5.0, "connections to close after drop()")

    async def wait_subscribed(self, stream: str, timeout: float = 5.0) -> None:
        """Wait until an open connection has subscribed to ``stream`` (so it also waits for a re-subscription
        after a reconnect); raise TimeoutError naming the stream otherwise."""
        await self._wait_for(lambda: stream in self.active_subscriptions, timeout, f"subscription to {stream!r}")

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` connections have been accepted in total (``connects >= n``)."""
        await self._wait_for(lambda: self.connects >= n, timeout, f"{n} WebSocket connects")

    async def _wait_for(self, predicate, timeout: float, what: str) -> None:
        assert self._changed is not None, f"{self.NAME} is not started"
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"{self.NAME}: no {what} within {timeout}s (open connections: {self.connections}, "
                f"active subscriptions: {sorted(self.active_subscriptions)})") from None

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    @staticmethod
    def _abort(conn: Conn) -> None:
        transport = conn.request.transport
        if transport is not None:
            transport.abort()

    async def _send(self, conn: Conn, data: str | bytes) -> bool:
        if conn.ws.closed:
            return False
        try:
            if isinstance(data, (bytes, bytearray)):
                await conn.ws.send_bytes(bytes(data))
            else:
                await conn.ws.send_str(data)
        except (ConnectionError, RuntimeError):
            return False
        self.sent.append((conn.number, data))
        return True

    async def _accept(self, request: web.Request, combined: bool = False) -> tuple[web.WebSocketResponse, Conn]:
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        self.connects += 1
        conn = Conn(self.connects, ws, request, combined)
        self._conns[conn.number] = conn
        return ws, conn

    async def _serve(self, ws: web.WebSocketResponse, conn: Conn) -> web.WebSocketResponse:
        """Read the connection's messages until it closes (text to ``_on_ws_text``)."""
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_ws_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.unexpected.append(f"WS#{conn.number} binary frame")
        finally:
            self._conns.pop(conn.number, None)
            await self._notify()
        return ws

    async def _on_ws_text(self, conn: Conn, text: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ REST side

    def fail_next(self, path: str, status: int, body: str, times: int = 1) -> None:
        """The next ``times`` REST requests to ``path`` (e.g. "/api/v3/klines") answer ``status`` with ``body``
        (an exchange outage, an error quoting the request)."""
        self._failures.setdefault(path, []).extend([(status, body)] * times)

    def _failure(self, request: web.Request) -> web.Response | None:
        queued = self._failures.get(request.path)
        if queued:
            status, body = queued.pop(0)
            return web.Response(status=status, text=body, content_type="application/json")
        return None

    def _record(self, request: web.Request) -> None:
        self.requests.append(request.path_qs)

    async def _unknown(self, request: web.Request) -> web.Response:
        ws_upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not ws_upgrade:
            self._record(request)
        self.unexpected.append(f"{'WS' if ws_upgrade else request.method} {request.path_qs}")
        return web.Response(status=404, text=f"{self.NAME} does not serve {request.method} {request.path_qs}")

    @staticmethod
    def _error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

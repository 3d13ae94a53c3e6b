"""``tp serve``: one uvicorn worker serving the MCP server over streamable HTTP at ``/mcp`` (its session manager run
in the app's lifespan) and the read API, ``GET /api/v1/<route>`` for each read tool (query parameters only: symbols
contain ``/``), generated from the same tool functions; ``/docs``, ``/health`` and ``/ready``.

Access (``access``): a bind that is not loopback needs ``TP_API_TOKEN``; with it every request but ``/health``
carries ``Authorization: Bearer <token>`` (401 without one, 403 for a wrong one), the write tools also need
``TP_API_WRITE_TOKEN`` (compared in constant time, never logged). Rate limits are a token bucket per client (its
token, else its address): ``TP_API_RATE`` reads per second (burst twice that), 6 writes a minute; over them the read
API answers 429 with ``Retry-After`` and a tool answers a tool error. ``/mcp`` checks Host and Origin against
``TP_API_ALLOWED_HOSTS`` (the SDK's ``TransportSecuritySettings``).
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import ipaddress
import math
import os
import threading
import time
import typing

from ..errors import InvalidInput
from . import tools as registry
from .metrics import REQUESTS

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# ---- settings and access ---------------------------------------------------------------------------------------
class Access:
    """Tokens, rate limits and allowed hosts, read from the environment once (a bad one exits 2 naming it)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.token = os.environ.get("TP_API_TOKEN") or None
        self.write_token = os.environ.get("TP_API_WRITE_TOKEN") or None
        raw = os.environ.get("TP_API_RATE", "20")
        try:
            self.rate = float(raw)
        except ValueError:
            raise InvalidInput(f"TP_API_RATE must be a number of reads per second, got {raw!r}",
                               field="TP_API_RATE") from None
        if not 0 < self.rate <= 10_000:
            raise InvalidInput(f"TP_API_RATE must be above 0 and at most 10000, got {raw!r}", field="TP_API_RATE")
        if not _loopback(host) and not self.token:
            raise InvalidInput(f"--host {host} is not loopback: set TP_API_TOKEN (every request then needs it as a "
                               "bearer token), or bind 127.0.0.1", field="TP_API_TOKEN")
        hosts = [h.strip() for h in os.environ.get("TP_API_ALLOWED_HOSTS", "").split(",") if h.strip()]
        self.allowed_hosts = hosts or ([f"{host}:*"] if not _loopback(host) and host != "0.0.0.0" else [])
        self._buckets: dict[tuple, list[float]] = {}
        self._lock = threading.Lock()

    def security(self):
        from mcp.server.transport_security import TransportSecuritySettings

        local = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        hosts = local + self.allowed_hosts
        origins = [f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts]
        return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                         allowed_origins=origins)

    def check(self, authorization: str | None, write: bool = False) -> tuple[int, str] | None:
        """(status, message) when the request may not go on; None when it may."""
        if write and not self.write_token:
            return 403, "writes need TP_API_WRITE_TOKEN set on the server"
        want = self.write_token if write else self.token
        if want is None:
            return None
        if not authorization or not authorization.lower().startswith("bearer "):
            return 401, "missing bearer token (Authorization: Bearer ...)"
        given = authorization[7:].strip()
        ok = hmac.compare_digest(given.encode(), want.encode())
        if not ok and not write and self.write_token:  # the write token may read too
            ok = hmac.compare_digest(given.encode(), self.write_token.encode())
        return None if ok else (403, "wrong token" + (" for writes" if write else ""))

    def take(self, client: str, write: bool = False) -> float | None:
        """Take one token from the client's bucket: None when allowed, else the seconds to wait."""
        rate, burst = (6 / 60.0, 6.0) if write else (self.rate, 2 * self.rate)
        key = (client, write)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, [burst, now])
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[key] = [tokens - 1, now]
                return None
            self._buckets[key] = [tokens, now]
            return (1 - tokens) / rate


def _loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_key(authorization: str | None, address: str | None) -> str:
    """A client: its token's hash when it gives one, else its address (a token itself is never kept)."""
    import hashlib

    if authorization:
        return "t:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    return f"a:{address}"


# ---- the app -------------------------------------------------------------------------------------------------------
def query_error(items, names: set[str], lists: set[str]) -> dict | None:
    """``{"error", "field"}`` for a query parameter the route does not take (``?symbl=`` answered every symbol) or
    one given twice that takes one value (the last one won, silently); None when the query is sound."""
    seen: set[str] = set()
    for key, _ in items:
        if key not in names:
            return {"error": f"{key}: not a parameter of this route (it takes {', '.join(sorted(names)) or 'none'})",
                    "field": key}
        if key in seen and key not in lists:
            return {"error": f"{key}: given more than once; it takes one value", "field": key}
        seen.add(key)
    return None


def _route(app, t: registry.Tool, pool, access: Access) -> None:
    from fastapi import Query, Request
    from fastapi.responses import JSONResponse

    from .mcp_server import call

    hints = typing.get_type_hints(t.fn)
    sig = inspect.signature(t.fn)
    params = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    for p in sig.parameters.values():
        if p.name == "store":
            continue
        default = Query(...) if p.default is inspect.Parameter.empty else Query(p.default)
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=hints.get(p.name, p.annotation)))

    names = {p.name for p in params[1:]}
    lists = {p.name for p in params[1:] if typing.get_origin(p.annotation) is list
             or any(typing.get_origin(a) is list for a in typing.get_args(p.annotation))}

    async def endpoint(**kwargs):
        request = kwargs.pop("request")
        bad = query_error(request.query_params.multi_items(), names, lists)
        if bad is not None:
            return JSONResponse(bad, status_code=422)
        wait = access.take(client_key(request.headers.get("authorization"),
                                      request.client.host if request.client else None))
        if wait is not None:
            REQUESTS.observe("http", t.name, "refused", 0.0)
            retry = max(1, math.ceil(wait))  # the body and the header say the same (it said 0.0 s beside 1)
            return JSONResponse({"error": f"rate limited: try again in {retry} s", "field": None}, status_code=429,
                                headers={"Retry-After": str(retry)})
        from anyio import to_thread

        is_error, body = await to_thread.run_sync(lambda: call(t, pool, kwargs, face="http"))
        if is_error:  # the store or the registry not answering is the server's state, not the request's fault
            down = body.get("field") in ("TP_DATABASE_URL", "MLFLOW_TRACKING_URI")
            return JSONResponse(body, status_code=503 if down else 500 if body.get("internal") else 422)
        return body

    endpoint.__name__ = t.name
    endpoint.__signature__ = inspect.Signature(params)
    app.add_api_route(f"/api/v1/{t.route}", endpoint, methods=["GET"], name=t.name, summary=t.name,
                      description=t.description, response_model=None)


def build_app(host: str = "127.0.0.1", port: int = 8000, allow_writes: bool = False, pool=None):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from .. import __version__
    from .mcp_server import build
    from .reads import ReadPool

    from .metrics import PlatformCollector, cache_s

    access = Access(host, port)
    cache = cache_s()  # a bad TP_METRICS_CACHE_S stops tp serve at start, naming it
    pool = pool or ReadPool()
    collector = PlatformCollector(pool, cache=cache)
    server = build(allow_writes=allow_writes, pool=pool, access=access)
    mcp_app = server.streamable_http_app(streamable_http_path="/mcp", transport_security=access.security(),
                                         host=host)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        import gc

        collector.start()  # the registry's champions, read in the background from the start
        gc.freeze()  # what start-up made lives as long as the server: full collections skip it (scrape p95)
        async with server.session_manager.run():
            yield
        collector.stop()
        pool.close()

    app = FastAPI(title="trading_platform", version=__version__, lifespan=lifespan,
                  description="The platform's read API: the same functions as the MCP tools and the CLI.")
    app.state.access, app.state.pool, app.state.metrics = access, pool, collector

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if path == "/health":
            return await call_next(request)
        denied = access.check(request.headers.get("authorization"))
        if denied is not None:
            REQUESTS.observe("mcp-http" if path.startswith("/mcp") else "http", "", "refused", 0.0)
            return JSONResponse({"error": denied[1], "field": "Authorization"}, status_code=denied[0],
                                headers={"WWW-Authenticate": "Bearer"} if denied[0] == 401 else None)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        e = exc.errors()[0] if exc.errors() else {}
        loc = [x for x in e.get("loc", ()) if x not in ("query", "body")]
        field = str(loc[-1]) if loc else None
        return JSONResponse({"error": f"{field}: {e.get('msg', 'invalid')}", "field": field}, status_code=422)

    @app.get("/health", include_in_schema=False)
    def health():
        return {"ok": True}

    @app.get("/ready", include_in_schema=False)
    def ready():
        from ..store.migrations import MIGRATIONS

        try:
            with pool.store() as s:
                have = s.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"ready": False, "error": getattr(e, "message", str(e)).splitlines()[0]},
                                status_code=503)
        want = max(m[0] for m in MIGRATIONS)
        if have < want:
            return JSONResponse({"ready": False, "error": f"the store's schema is at {have}, this code needs {want}: "
                                                          "run `tp db migrate`"}, status_code=503)
        return {"ready": True, "schema_version": have}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        """Prometheus' text format (faces/metrics.py); behind the read token like the API."""
        from anyio import to_thread
        from fastapi.responses import Response
        from prometheus_client import CONTENT_TYPE_LATEST

        from .metrics import render

        return Response(await to_thread.run_sync(lambda: render(collector)), media_type=CONTENT_TYPE_LATEST)

    for t in registry.tools(False):
        if t.route:
            _route(app, t, pool, access)
    api_paths = {f"/api/v1/{t.route}" for t in registry.tools(False) if t.route}

    async def no_route(request):
        """Under /api/, what no route answers: JSON like every other error (the MCP app mounted at / answered a
        plain-text 404, a POST to a read route included). A Starlette endpoint: it takes the request as it is."""
        path = request.url.path
        if path in api_paths:
            return JSONResponse({"error": f"{request.method} is not allowed on {path}: the read API answers GET",
                                 "field": None}, status_code=405, headers={"Allow": "GET"})
        return JSONResponse({"error": f"no route {path}: the routes are listed at /docs", "field": None},
                            status_code=404)

    app.add_route("/api/{rest:path}", no_route,
                  methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"], include_in_schema=False)

    app.mount("/", mcp_app)  # last: its route is exactly /mcp
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, allow_writes: bool = False) -> None:
    import uvicorn

    app = build_app(host, port, allow_writes)
    uvicorn.run(app, host=host, port=port, workers=1, log_level=os.environ.get("TP_API_LOG_LEVEL", "warning"),
                access_log=False)

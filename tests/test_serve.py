"""``tp serve`` (issue 27) as a process on a real PostgreSQL: the read API and the MCP server over streamable HTTP
with the SDK's client, bearer tokens (401 without, 403 wrong, a read token refused on writes), Origin checks,
rate limits (429 with Retry-After; a tool error over MCP), bad input as 422 ``{"error", "field"}``, a lost
connection answered in one line and the next call working, and a non-loopback bind refused without a token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import anyio
import pytest

from test_mcp import READS, T0, market  # noqa: F401 (the fixture)

TOKEN, WRITE_TOKEN = "read-token-x1", "write-token-y2"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve(market, dsn, tmp_path):
    procs = []

    def start(*extra, env_extra=None, wait=True):
        port = _port()
        env = {**os.environ, "TP_DATABASE_URL": dsn, "TP_API_TOKEN": TOKEN, "TP_API_WRITE_TOKEN": WRITE_TOKEN,
               "PYTHONPATH": os.pathsep.join(sys.path), **(env_extra or {})}
        log = open(tmp_path / f"serve-{port}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "serve", "--port", str(port), *extra],
                             env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        base = f"http://127.0.0.1:{port}"
        if wait:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(base + "/health", timeout=2)
                    break
                except OSError:
                    assert p.poll() is None, (tmp_path / f"serve-{port}.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, "tp serve did not come up"
                    time.sleep(0.2)
        return base, p

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def get(url, token=TOKEN, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def test_the_read_api_answers_with_a_token_and_refuses_without(serve):
    base, _ = serve()
    assert get(base + "/health", token=None)[0] == 200
    assert get(base + "/api/v1/candles?symbol=BTC/USDT&timeframe=1h", token=None)[0] == 401
    assert get(base + "/api/v1/candles?symbol=BTC/USDT&timeframe=1h", token="nope")[0] == 403
    status, body, _ = get(base + "/api/v1/candles?symbol=BTC/USDT&timeframe=1h&limit=3")
    assert status == 200 and [c["ts"] for c in body["candles"]][0] == T0.isoformat() and body["truncated"]
    status, body, _ = get(base + "/api/v1/predictions?symbol=BTC/USDT&limit=2")
    assert status == 200 and len(body["predictions"]) == 2
    assert get(base + "/ready")[1]["ready"] is True
    status, body, _ = get(base + "/api/v1/features?symbol=BTC/USDT&timeframe=1h&columns=rsi_14&limit=2")
    assert status == 200 and body["rows"][0]["rsi_14"] == 50.0
    # bad input: 422 with the error naming its field, as the tools answer it
    for query, field in (("symbol=BTC/USDT&timeframe=1h&limit=5001", "limit"),
                         ("symbol=BTC/USDT&timeframe=1M", "timeframe"),
                         ("symbol=BTC/USDT&timeframe=1h&limit=abc", "limit"),
                         ("timeframe=1h", "symbol")):
        status, body, _ = get(base + "/api/v1/candles?" + query)
        assert status == 422 and body["field"] == field, (query, body)
    # a misspelt parameter answered every symbol; a repeated one was the last one, silently
    status, body, _ = get(base + "/api/v1/predictions?symbl=ETH/USDT")
    assert status == 422 and body["field"] == "symbl" and "symbol" in body["error"], body
    status, body, _ = get(base + "/api/v1/candles?symbol=BTC/USDT&timeframe=1h&limit=1&limit=2")
    assert status == 422 and body["field"] == "limit", body
    status, body, _ = get(base + "/api/v1/features?symbol=BTC/USDT&timeframe=1h&columns=rsi_14&columns=rsi_14&limit=1")
    assert status == 200 and body["rows"][0]["rsi_14"] == 50.0, body  # a list parameter takes it repeated
    assert "/api/v1/candles" in get(base + "/openapi.json")[1]["paths"]
    # what no route answers is JSON too (it was the MCP app's plain-text 404, a POST to a read route included)
    status, body, _ = get(base + "/api/v1/nosuch")
    assert status == 404 and "/api/v1/nosuch" in body["error"], body
    req = urllib.request.Request(base + "/api/v1/candles", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 405 and e.value.headers["Allow"] == "GET" and "GET" in json.loads(e.value.read())["error"]


def _logs(tmp_path) -> str:
    """What the servers of a test printed (a tool's failure is logged with its traceback there)."""
    return "\n".join(f.read_text()[-4000:] for f in sorted(tmp_path.glob("serve-*.log")))


def test_mcp_over_http_with_tokens_origin_and_a_read_token_refused_on_writes(serve, market, tmp_path):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    base, _ = serve("--allow-writes")

    async def go(token):
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as hc:
            async with Client(streamable_http_client(base + "/mcp", http_client=hc)) as c:
                names = {t.name for t in (await c.list_tools()).tools}
                r = await c.call_tool("get_candles", {"symbol": "BTC/USDT", "timeframe": "1h", "limit": 2})
                w = await c.call_tool("add_symbol", {"symbol": "SOL/USDT", "timeframes": ["1h"]})
                return names, r, w

    names, r, w = anyio.run(go, TOKEN)
    assert READS < names and "add_symbol" in names
    assert not r.is_error and len(r.structured_content["candles"]) == 2
    assert w.is_error and "write" in w.structured_content["error"]  # a read token does not write
    assert market.conn.execute("SELECT count(*) FROM symbols WHERE symbol = 'SOL/USDT'").fetchone()[0] == 0
    _, _, w = anyio.run(go, WRITE_TOKEN)
    assert not w.is_error, (w.structured_content, _logs(tmp_path))
    assert market.conn.execute("SELECT face, ok FROM api_audit WHERE tool = 'add_symbol' ORDER BY id").fetchall() == \
        [("mcp-http", False), ("mcp-http", True)]
    # a browser page from elsewhere: its Origin is refused
    req = urllib.request.Request(base + "/mcp", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example",
                                          "Content-Type": "application/json", "Accept": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    # no token: 401 before MCP sees the request
    req = urllib.request.Request(base + "/mcp", data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_over_the_rate_a_client_gets_429_with_retry_after(serve):
    base, _ = serve(env_extra={"TP_API_RATE": "1"})
    codes = [get(base + "/api/v1/symbols")[0] for _ in range(4)]
    assert codes[:2] == [200, 200] and 429 in codes[2:]
    status, body, headers = get(base + "/api/v1/symbols")
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "rate" in body["error"]
    assert f"try again in {headers['Retry-After']} s" in body["error"]  # the body said 0.0 s beside Retry-After: 1


def test_a_lost_connection_is_one_line_and_the_next_call_works(serve, market):
    base, _ = serve()
    assert get(base + "/api/v1/symbols")[0] == 200
    # the server's pooled connections are cut (a database restart does this)
    market.conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()")
    status, body, _ = get(base + "/api/v1/symbols")
    assert status == 503 and body["error"].startswith("lost the market store (host") and "\n" not in body["error"]
    assert get(base + "/api/v1/symbols")[0] == 200


def test_a_public_bind_without_a_token_refuses_to_start(dsn, tmp_path):
    env = {**os.environ, "TP_DATABASE_URL": dsn, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TP_API_TOKEN", None)
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", "serve", "--host", "0.0.0.0", "--port",
                          str(_port())], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "TP_API_TOKEN" in out.stderr
    env["TP_API_RATE"] = "fast"
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", "serve", "--port", str(_port())], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "TP_API_RATE" in out.stderr


@pytest.mark.parametrize("name,args,field", __import__("test_mcp").BAD,
                         ids=[f"{n}-{f}-{i}" for i, (n, _, f) in enumerate(__import__("test_mcp").BAD)])
def test_the_same_bad_arguments_are_422_naming_their_field_over_http(serve_once, market, name, args, field):
    """The MCP tests' table of bad arguments, against the read API: the same field named, the store unchanged."""
    from urllib.parse import urlencode

    from trading_platform.faces.tools import TOOLS

    before = market.conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0]
    query = urlencode([(k, x) for k, v in args.items() for x in (v if isinstance(v, list) else [v])])
    status, body, _ = get(f"{serve_once}/api/v1/{TOOLS[name].route}?{query}")
    assert status == 422 and body["field"] == field, body
    assert market.conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == before


@pytest.fixture
def serve_once(serve):
    return serve(env_extra={"TP_API_RATE": "1000"})[0]


def test_no_result_or_error_quotes_a_password(market, dsn, tmp_path, monkeypatch):
    """Passwords in the database URL and the MLflow URI: every read tool's result, and the error of a store that
    cannot be reached, are free of both."""
    import anyio
    from mcp import Client

    from trading_platform.faces.mcp_server import build
    from trading_platform.faces.reads import ReadPool
    from trading_platform.faces.tools import TOOLS

    db_secret, ml_secret = "Db-Secret-pw-41", "Ml-Secret-pw-97"
    # the embedded server trusts local connections, so a password in the URL is carried but not needed
    with_pw = dsn.replace("postgresql://postgres:@", f"postgresql://postgres:{db_secret}@", 1) \
        if "postgres:@" in dsn else dsn.replace("postgresql://postgres@", f"postgresql://postgres:{db_secret}@", 1)
    assert db_secret in with_pw
    monkeypatch.setenv("TP_DATABASE_URL", with_pw)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://tp:{ml_secret}@127.0.0.1:9")
    calls = {"get_symbol": {"symbol": "BTC/USDT"}, "get_candles": {"symbol": "BTC/USDT", "timeframe": "1h"},
             "get_predictions": {}, "get_forecast": {"symbol": "BTC/USDT", "timeframe": "1h"}, "get_patterns": {},
             "list_models": {}, "list_symbols": {}, "live_status": {}, "paper_status": {}, "list_alerts": {},
             "alert_stats": {}, "pipeline_status": {}, "platform_status": {}}
    assert set(calls) | {"get_features", "search_knowledge", "paper_trades"} == {t for t in TOOLS if not TOOLS[t].write}

    async def go(server):
        async with Client(server) as c:
            return [await c.call_tool(n, a) for n, a in calls.items()]

    results = anyio.run(go, build(pool=ReadPool(with_pw)))
    down = with_pw.replace("/t_", "/nowhere_", 1) + ("&" if "?" in with_pw else "?") + "port=1"
    results += anyio.run(go, build(pool=ReadPool(down)))
    text = json.dumps([r.model_dump(by_alias=True, mode="json") for r in results])
    assert db_secret not in text and ml_secret not in text
    assert "lost the market store" in text or "cannot reach the market store" in text

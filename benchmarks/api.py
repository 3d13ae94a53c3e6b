"""The MCP server and the read API (issue 27): a tool call against the same SQL, in the same run.

A throwaway PostgreSQL (an embedded server, or TP_DATABASE_URL's) holds BTC/USDT with ``--candles`` hourly candles.

1. **The SQL alone**: ``--calls`` times the query ``get_candles`` runs for 500 rows (on one psycopg connection) and
   the queries ``live_status`` runs (``store.outbox.status`` and the collector's status rows):
   ``candles_sql_p95_ms``, ``status_sql_p95_ms``.
2. **Over streamable HTTP**: ``tp serve`` as a process (a bearer token set, the rate limit raised out of the way);
   the SDK's client calls ``get_candles`` (500 rows) and ``live_status`` ``--calls`` times each, one after the
   other: ``candles_tool_p95_ms``, ``status_tool_p95_ms``, ``calls_per_s``.
3. **Over stdio**: ``tp mcp`` spawned by the SDK's client, ``--calls`` ``get_candles`` calls:
   ``stdio_candles_p95_ms``; and ``mcp_start_s``, from spawning ``tp mcp`` to its answer to ``tools/list`` (the
   median of ``--starts``).

Target: tool p95 ≤ max(2 × SQL p95, SQL p95 + 25 ms); ``mcp_start_s`` ≤ 3 s.

    python benchmarks/api.py [--calls 1000] [--candles 20000] [--starts 5]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from benchmarks.scale import fresh_db  # noqa: E402

TOKEN = "bench-token"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def p95(values: list[float]) -> float:
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))] * 1000, 2)


def market(dsn: str, n: int) -> None:
    import numpy as np
    import psycopg

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.store.db import connect

    with connect(dsn) as store:
        store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"], live=True))
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, n)))
    with psycopg.connect(dsn, autocommit=True) as c:
        with c.cursor() as cur, cur.copy("COPY ohlcv (symbol, timeframe, ts, open, high, low, close, volume) "
                                         "FROM STDIN") as cp:
            for i in range(n):
                cp.write_row(("BTC/USDT", "1h", T0 + timedelta(hours=i), close[i], close[i] * 1.01, close[i] * 0.99,
                              close[i], 10.0))
        c.execute("ANALYZE")


def sql_baseline(dsn: str, calls: int) -> tuple[list[float], list[float]]:
    """The SQL the two tools run, on one connection."""
    import psycopg

    from trading_platform.store.collector import read_status
    from trading_platform.store.outbox import status

    start = T0 + timedelta(hours=1000)
    candles, stat = [], []
    with psycopg.connect(dsn, autocommit=True) as c:
        for _ in range(calls):
            t = time.perf_counter()
            rows = c.execute("SELECT ts, open, high, low, close, volume FROM ohlcv WHERE symbol = %s AND timeframe = %s "
                             "AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
                             ("BTC/USDT", "1h", start, datetime.now(timezone.utc), 501)).fetchall()
            [{"ts": r[0].isoformat(), "open": float(r[1]), "high": float(r[2]), "low": float(r[3]),
              "close": float(r[4]), "volume": float(r[5])} for r in rows[:500]]
            candles.append(time.perf_counter() - t)
        for _ in range(calls):
            t = time.perf_counter()
            status(c)
            read_status(c)
            stat.append(time.perf_counter() - t)
    return candles, stat


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def tool_calls(client, calls: int) -> tuple[list[float], list[float], float]:
    start = (T0 + timedelta(hours=1000)).isoformat()
    candles, stat = [], []
    t_all = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        r = await client.call_tool("get_candles", {"symbol": "BTC/USDT", "timeframe": "1h", "start": start,
                                                   "limit": 500})
        candles.append(time.perf_counter() - t)
        assert not r.is_error and len(r.structured_content["candles"]) == 500, r.structured_content
    for _ in range(calls):
        t = time.perf_counter()
        r = await client.call_tool("live_status", {})
        stat.append(time.perf_counter() - t)
        assert not r.is_error, r.structured_content
    return candles, stat, 2 * calls / (time.perf_counter() - t_all)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--candles", type=int, default=20_000)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    import anyio
    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tp-api-bench-"))
    admin, pg_tmp = os.environ.get("TP_DATABASE_URL"), None
    if not admin:
        from trading_platform.store.embedded import ensure_embedded

        pg_tmp = tmp / "pg"
        admin = ensure_embedded(pg_tmp)
    dsn = fresh_db(admin, "api")
    env = {**os.environ, "TP_DATABASE_URL": dsn, "TP_HOME": str(tmp / "home"), "TP_EMBEDDED": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "TP_API_TOKEN": TOKEN, "TP_API_RATE": "10000",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "TP_LOG_LEVEL": "WARNING"}
    figures: dict = {"calls": args.calls, "candles_stored": args.candles}
    serve = None
    try:
        market(dsn, args.candles)
        sql_c, sql_s = sql_baseline(dsn, args.calls)
        figures.update(candles_sql_p95_ms=p95(sql_c), status_sql_p95_ms=p95(sql_s))
        log(f"SQL: candles p95 {figures['candles_sql_p95_ms']} ms, status p95 {figures['status_sql_p95_ms']} ms")

        port = free_port()
        serve = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "serve", "--port", str(port)], env=env,
                                 stdout=open(tmp / "serve.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if serve.poll() is not None or time.time() > deadline:
                    raise RuntimeError("tp serve did not come up: " + (tmp / "serve.log").read_text()[-2000:])
                time.sleep(0.2)

        async def over_http():
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as hc:
                async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=hc)) as c:
                    await tool_calls(c, 20)  # warm up
                    return await tool_calls(c, args.calls)

        http_c, http_s, rate = anyio.run(over_http)
        figures.update(candles_tool_p95_ms=p95(http_c), status_tool_p95_ms=p95(http_s), calls_per_s=round(rate, 1),
                       candles_tool_p50_ms=round(statistics.median(http_c) * 1000, 2))
        log(f"HTTP: candles p95 {figures['candles_tool_p95_ms']} ms, status p95 {figures['status_tool_p95_ms']} ms, "
            f"{figures['calls_per_s']} calls/s")

        params = StdioServerParameters(command=sys.executable, args=["-m", "trading_platform.cli", "mcp"],
                                       env={k: env[k] for k in ("TP_DATABASE_URL", "TP_HOME", "TP_EMBEDDED",
                                                                "MLFLOW_TRACKING_URI", "PYTHONPATH", "TP_LOG_LEVEL")})

        async def start_once():
            t = time.perf_counter()
            async with Client(params) as c:
                await c.list_tools()
                return time.perf_counter() - t

        starts = [anyio.run(start_once) for _ in range(args.starts)]
        figures["mcp_start_s"] = round(statistics.median(starts), 2)
        figures["mcp_start_max_s"] = round(max(starts), 2)

        async def over_stdio():
            async with Client(params) as c:
                await tool_calls(c, 20)
                return await tool_calls(c, args.calls)

        stdio_c, _, _ = anyio.run(over_stdio)
        figures["stdio_candles_p95_ms"] = p95(stdio_c)
        log(f"stdio: start {figures['mcp_start_s']} s (max {figures['mcp_start_max_s']}), candles p95 "
            f"{figures['stdio_candles_p95_ms']} ms")
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=30)
        if pg_tmp is not None:
            from trading_platform.store.embedded import stop_embedded

            stop_embedded(pg_tmp)
        shutil.rmtree(tmp, ignore_errors=True)

    def ok(tool, sql):
        return figures[tool] <= max(2 * figures[sql], figures[sql] + 25)

    figures["wall_s"] = round(time.perf_counter() - t_all, 1)
    figures["targets"] = {"candles_http": ok("candles_tool_p95_ms", "candles_sql_p95_ms"),
                          "status_http": ok("status_tool_p95_ms", "status_sql_p95_ms"),
                          "candles_stdio": ok("stdio_candles_p95_ms", "candles_sql_p95_ms"),
                          "mcp_start_at_most_3s": figures["mcp_start_s"] <= 3.0,
                          "within_20_min": figures["wall_s"] <= 1200}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

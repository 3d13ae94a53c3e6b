"""The MCP server (issue 27) against a real PostgreSQL holding a small market: through the SDK's client, in process
and over stdio (``tp mcp``). It lists exactly the read tools with their annotations and output schemas; every
tool's structured content validates against its schema; bad arguments come back as tool errors naming their
field, with the store unchanged; no password leaks."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta, timezone

import anyio
import jsonschema
import pytest

from conftest import signed_versions

READS = {"list_symbols", "get_symbol", "get_candles", "get_features", "get_predictions", "get_forecast",
         "get_patterns", "search_knowledge", "list_models", "list_alerts", "alert_stats", "paper_status",
         "paper_trades", "live_status", "pipeline_status", "platform_status"}
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def market(store, dsn, tmp_path, monkeypatch):
    """Two symbols, 300 hourly candles of BTC/USDT with features, today's pump champion's predictions and a
    challenger's, a forecast and patterns; MLflow a SQLite store in the test's directory."""
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.models.scoring import Version
    from trading_platform.store.outputs import OutputWriter

    monkeypatch.setenv("TP_DATABASE_URL", dsn)
    monkeypatch.setenv("TP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("TP_EMBEDDED", "1")
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"], live=True))
    store.add_symbol(SymbolInfo.create("AAPL", category="stock", timeframes=["1d"]))
    conn = store.conn
    for i in range(300):
        p = 100 + i * 0.1
        conn.execute("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES "
                     "('BTC/USDT', '1h', %s, %s, %s, %s, %s, 10)", (T0 + i * timedelta(hours=1), p, p + 1, p - 1, p))
    conn.execute("ALTER TABLE features ADD COLUMN IF NOT EXISTS rsi_14 double precision")
    for i in range(300):
        conn.execute("INSERT INTO features (symbol, timeframe, ts, rsi_14) VALUES ('BTC/USDT', '1h', %s, %s)",
                     (T0 + i * timedelta(hours=1), 50 + i % 7))
    for name, alias, version in (("pump_xgb", "champion", "1"), ("pump_xgb", "challenger", "2"),
                                 ("nhits.1h", "champion", "1"), ("pattern_tcn", "champion", "1")):
        conn.execute("INSERT INTO model_champions (model_name, alias, version, valid_from, moved_by) VALUES "
                     "(%s, %s, %s, %s, 'seed')", (name, alias, version, T0 - timedelta(days=1)))
    vs = [Version("pump_xgb", "1", "champion", {"tp.family": "pump_xgb"}),
          Version("pump_xgb", "2", "challenger", {"tp.family": "pump_xgb"}),
          Version("nhits.1h", "1", "champion", {"tp.family": "nhits"}),
          Version("pattern_tcn", "1", "champion", {"tp.family": "pattern_tcn"})]
    w = OutputWriter(conn, vs, "backfill")
    ts = [T0 + i * timedelta(hours=1) for i in range(200, 300)]
    w.add("predictions", [("pump_xgb", "1", "BTC/USDT", "1h", t, 0.1 + (k % 10) / 20, "", "{}", False)
                          for k, t in enumerate(ts)])
    w.add("predictions", [("pump_xgb", "2", "BTC/USDT", "1h", t, 0.9, "", "{}", False) for t in ts])
    w.add("forecasts", [("nhits.1h", "1", "BTC/USDT", "1h", ts[-1], s, 130 + s, json.dumps({"0.1": 129, "0.9": 131}),
                         False) for s in (1, 2, 3)])
    w.add("patterns", [("pattern_tcn", "1", "BTC/USDT", "1h", ts[-5], "double_bottom", 0.8, 20, False),
                       ("pattern_tcn", "1", "BTC/USDT", "1h", ts[-9], "head_shoulders", 0.3, 20, False)])
    with conn.transaction():
        w.flush()
    return store


def _run(coro_fn):
    return anyio.run(coro_fn)


def _server(allow_writes=False):
    from trading_platform.faces.mcp_server import build

    return build(allow_writes=allow_writes)


def test_the_read_tools_are_listed_with_their_annotations_and_validate_against_their_schemas(market):
    from mcp import Client

    server = _server()

    async def go():
        async with Client(server) as c:
            listed = {t.name: t for t in (await c.list_tools()).tools}
            assert set(listed) == READS  # no write tool without --allow-writes
            for t in listed.values():
                a = t.annotations
                assert a.read_only_hint is True and a.idempotent_hint is True and a.open_world_hint is False
                assert t.output_schema and t.output_schema.get("type") == "object", t.name
            calls = {
                "list_symbols": {}, "get_symbol": {"symbol": "BTC/USDT"},
                "get_candles": {"symbol": "BTC/USDT", "timeframe": "1h", "limit": 50},
                "get_features": {"symbol": "BTC/USDT", "timeframe": "1h", "columns": ["rsi_14"], "limit": 10},
                "get_predictions": {"symbol": "BTC/USDT", "limit": 5},
                "get_forecast": {"symbol": "BTC/USDT", "timeframe": "1h"},
                "get_patterns": {"symbol": "BTC/USDT"}, "live_status": {}, "paper_status": {},
                "alert_stats": {}, "list_alerts": {}, "pipeline_status": {"hours": 2}, "platform_status": {},
                "list_models": {},
            }
            out = {}
            for name, args in calls.items():
                r = await c.call_tool(name, args)
                assert not r.is_error, (name, r.structured_content or r.content)
                jsonschema.validate(r.structured_content, listed[name].output_schema)
                out[name] = r.structured_content
            return out

    out = _run(go)
    assert [s["symbol"] for s in out["list_symbols"]["symbols"]] == ["AAPL", "BTC/USDT"]
    btc = out["get_symbol"]["series"][0]
    assert btc["count"] == 300 and btc["last_close"] == pytest.approx(129.9)
    assert btc["change_24h"] == pytest.approx(129.9 / 127.5 - 1)
    page = out["get_candles"]
    assert len(page["candles"]) == 50 and page["truncated"] and page["next_start"] == (T0 + timedelta(hours=50)).isoformat()
    assert page["candles"][0]["ts"] == T0.isoformat()  # oldest first
    assert out["get_features"]["rows"][0] == {"ts": T0.isoformat(), "rsi_14": 50.0}
    preds = out["get_predictions"]["predictions"]
    assert len(preds) == 5 and {p["model_version"] for p in preds} == {"1"}  # the champion's, not the challenger's
    assert preds[0]["ts"] == (T0 + timedelta(hours=299)).isoformat()  # newest first
    f = out["get_forecast"]
    assert [s["step"] for s in f["steps"]] == [1, 2, 3] and f["model"] == "nhits.1h"
    assert [p["pattern"] for p in out["get_patterns"]["patterns"]] == ["double_bottom"]  # 0.3 < 0.5 left out


def test_a_challenger_and_as_of_read_through_the_record(market):
    from mcp import Client

    server = _server()

    async def go():
        async with Client(server) as c:
            ch = await c.call_tool("get_predictions", {"role": "challenger", "limit": 3})
            past = await c.call_tool("get_predictions", {"as_of": "2020-01-01T00:00:00Z"})
            return ch.structured_content, past.structured_content

    ch, past = _run(go)
    assert {p["model_version"] for p in ch["predictions"]} == {"2"} and ch["predictions"][0]["value"] == 0.9
    assert past["predictions"] == []  # nothing was known in 2020


BAD = [
    ("get_candles", {"symbol": "NOPE/USDT", "timeframe": "1h"}, "symbol"),
    ("get_candles", {"symbol": "BTC/USDT", "timeframe": "1M"}, "timeframe"),
    ("get_candles", {"symbol": "BTC/USDT", "timeframe": "4h"}, "timeframe"),
    ("get_candles", {"symbol": "BTC/USDT", "timeframe": "1h", "start": "2025-02-01", "end": "2025-01-01"}, "start"),
    ("get_candles", {"symbol": "BTC/USDT", "timeframe": "1h", "limit": 5001}, "limit"),
    ("get_features", {"symbol": "BTC/USDT", "timeframe": "1h", "columns": ["close; DROP TABLE ohlcv"]}, "columns"),
    ("get_features", {"symbol": "BTC/USDT", "timeframe": "1h", "columns": ["nope"]}, "columns"),
    ("get_predictions", {"limit": 1001}, "limit"),
    ("get_predictions", {"role": "boss"}, "role"),
    ("search_knowledge", {"query": "  "}, "query"),
    ("paper_trades", {"run": "nope"}, "run"),
    ("pipeline_status", {"hours": 169}, "hours"),
    ("list_symbols", {"category": "bonds"}, "category"),
    # each of these was a 200 with an empty answer, a DataError naming no field, or named another field
    ("get_predictions", {"model": "a\x00b"}, "model"),
    ("paper_trades", {"run": "\x00"}, "run"),
    ("get_predictions", {"since": "2026-13-45"}, "since"),
    ("get_patterns", {"since": "2026-13-45"}, "since"),
    ("get_predictions", {"model": "nosuchmodel"}, "model"),
    ("get_forecast", {"symbol": "BTC/USDT", "timeframe": "1h", "model": "nosuch"}, "model"),
    ("get_forecast", {"symbol": "BTC/USDT", "timeframe": "4h"}, "timeframe"),
    ("list_alerts", {"symbol": "NOPE/USDT"}, "symbol"),
    ("alert_stats", {"model": "nosuch"}, "model"),
    # refused by the SDK's schema before the tool runs: pydantic's text, no structured content, before
    ("get_candles", {"symbol": 123, "timeframe": "1h"}, "symbol"),
    ("get_candles", {"timeframe": "1h"}, "symbol"),
    # a boolean where a number goes (pydantic's lax mode read true as 1)
    ("get_candles", {"symbol": "BTC/USDT", "timeframe": "1h", "limit": True}, "limit"),
    ("pipeline_status", {"hours": True}, "hours"),
    ("get_predictions", {"since": "02.01.2026"}, "since"),  # read as 1 February: which number is the day?
]


@pytest.mark.parametrize("name,args,field", BAD, ids=[f"{n}-{f}-{i}" for i, (n, _, f) in enumerate(BAD)])
def test_a_bad_argument_is_a_tool_error_naming_its_field(market, name, args, field):
    from mcp import Client

    server = _server()
    before = market.conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0]

    async def go():
        async with Client(server) as c:
            return await c.call_tool(name, args)

    r = _run(go)
    assert r.is_error and r.structured_content["field"] == field, r.structured_content
    if field == "limit" and not isinstance(args["limit"], bool):
        assert "maximum" in r.structured_content["error"]
    assert market.conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == before


def test_tp_mcp_over_stdio_answers_and_keeps_passwords_out(market, dsn, tmp_path):
    """``tp mcp --home DIR`` launched by the SDK's stdio client (which passes the server only HOME, PATH and a few
    more, plus the client's ``env``): stdout carries the protocol only; no result names the password."""
    from mcp import Client, StdioServerParameters

    home = tmp_path / "mcp-home"
    home.mkdir()
    params = StdioServerParameters(command=sys.executable, args=["-m", "trading_platform.cli", "mcp", "--home",
                                                                 str(home)],
                                   env={"PYTHONPATH": os.pathsep.join(sys.path), "TP_DATABASE_URL": dsn,
                                        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})

    async def go():
        async with Client(params) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            r = await c.call_tool("get_candles", {"symbol": "BTC/USDT", "timeframe": "1h", "limit": 3})
            st = await c.call_tool("platform_status", {})
            return names, r, st

    names, r, st = _run(go)
    assert names == READS
    assert not r.is_error and len(r.structured_content["candles"]) == 3
    from psycopg.conninfo import conninfo_to_dict

    password = conninfo_to_dict(dsn).get("password")
    text = json.dumps(st.structured_content)
    assert "database" in st.structured_content["store"]
    if password:
        assert password not in text


def test_tp_mcp_without_a_store_exits_naming_it(tmp_path):
    import subprocess

    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", "mcp", "--home", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no market store" in out.stderr and str(tmp_path) in out.stderr
    assert out.stdout == ""


# ---- the write tools -------------------------------------------------------------------------------------------------
def test_the_write_tools_change_the_store_and_are_audited(market, dsn, tmp_path):
    """With allow_writes: add_symbol adds the row and its partition, promote_model moves the champion alias,
    start_backfill records one backfill (the same request again returns it), add_note stores a note; every call,
    failed ones too, has an api_audit row. A failed write leaves nothing behind."""
    import mlflow
    from dagster import DagsterInstance
    from mcp import Client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri, registry_uri=uri)  # not the process's registry URI, an earlier test's
    signed_versions(client, "pump_xgb", 2, tmp_path / "artifacts")  # registered by hand: signed (tp models sign)
    client.set_registered_model_alias("pump_xgb", "champion", "1")
    server = _server(allow_writes=True)

    async def go():
        async with Client(server) as c:
            names = {t.name: t for t in (await c.list_tools()).tools}
            assert set(names) == READS | {"add_symbol", "start_backfill", "promote_model", "add_note"}
            assert names["promote_model"].annotations.destructive_hint is True
            assert names["add_symbol"].annotations.read_only_hint is False
            out = {"added": await c.call_tool("add_symbol", {"symbol": "ETH/USDT", "timeframes": ["1h"]}),
                   "bad": await c.call_tool("add_symbol", {"symbol": "ETH USDT!"}),
                   "promoted": await c.call_tool("promote_model", {"name": "pump_xgb", "version": "2"}),
                   "backfill": await c.call_tool("start_backfill", {"symbol": "ETH/USDT", "start": "2025-01-01",
                                                                    "end": "2025-02-28",
                                                                    "assets": ["market", "features"]})}
            out["again"] = await c.call_tool("start_backfill", {"symbol": "ETH/USDT", "start": "2025-01-01",
                                                                "end": "2025-02-28", "assets": ["market", "features"]})
            return out

    out = _run(go)
    assert not out["added"].is_error, out["added"].structured_content
    assert out["bad"].is_error and out["bad"].structured_content["field"] == "symbol"
    conn = market.conn
    assert conn.execute("SELECT count(*) FROM symbols WHERE symbol = 'ETH/USDT'").fetchone()[0] == 1
    instance = DagsterInstance.get()
    assert "ETH/USDT" in instance.get_dynamic_partitions("symbol")
    assert not out["promoted"].is_error, out["promoted"].structured_content
    assert str(client.get_model_version_by_alias("pump_xgb", "champion").version) == "2"
    b, again = out["backfill"].structured_content, out["again"].structured_content
    assert not out["backfill"].is_error and b["already_running"] is False
    assert again["already_running"] is True and again["backfill_id"] == b["backfill_id"]
    assert [x.backfill_id for x in instance.get_backfills()] == [b["backfill_id"]]
    from trading_platform.faces.mcp_server import writer_role

    assert writer_role() == "tp_api_writer"  # the writes above ran as the write role (migration 21)
    audit = conn.execute("SELECT tool, ok, face, arguments->>'symbol' FROM api_audit ORDER BY id").fetchall()
    assert audit == [("add_symbol", True, "mcp-stdio", "ETH/USDT"), ("add_symbol", False, "mcp-stdio", "ETH USDT!"),
                     ("promote_model", True, "mcp-stdio", None), ("start_backfill", True, "mcp-stdio", "ETH/USDT"),
                     ("start_backfill", True, "mcp-stdio", "ETH/USDT")]


def test_the_faces_read_as_tp_reader_which_cannot_write(market, dsn):
    """Reads go through the read-only role (migration 20): a statement that escaped its read-only transaction is
    still refused by the role's privileges, and the tools answer as before."""
    import psycopg

    from trading_platform.faces.reads import ReadPool

    pool = ReadPool(dsn)
    with pool.store() as s:
        assert s.conn.execute("SELECT current_user").fetchone()[0] == "tp_reader" and pool.role == "tp_reader"
        assert s.conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 300
        s.conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.conn.execute("INSERT INTO symbols (symbol, category) VALUES ('X/USDT', 'crypto')")
    pool.close()
    assert market.conn.execute("SELECT count(*) FROM symbols WHERE symbol = 'X/USDT'").fetchone()[0] == 0


def test_the_write_role_writes_what_the_write_tools_write_and_nothing_else(market):
    """tp_api_writer (migration 21) may add a symbol and audit a call, not touch candles or drop anything."""
    import psycopg

    conn = market.conn
    with conn.transaction():
        conn.execute("SET LOCAL ROLE tp_api_writer")
        conn.execute("INSERT INTO symbols (symbol, category) VALUES ('W/USDT', 'crypto')")
        conn.execute("INSERT INTO api_audit (face, tool, arguments, ok) VALUES ('mcp-stdio', 't', '{}', true)")
    for sql in ("DELETE FROM ohlcv", "UPDATE ohlcv SET close = 0", "DELETE FROM symbols WHERE symbol = 'W/USDT'",
                "DELETE FROM api_audit", "TRUNCATE model_champions"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.transaction():
                conn.execute("SET LOCAL ROLE tp_api_writer")
                conn.execute(sql)
    assert conn.execute("SELECT count(*) FROM ohlcv").fetchone()[0] == 300

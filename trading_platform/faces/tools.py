"""The tool layer: every tool of the MCP server and every route of the read API is one function here.

A tool is a typed function over the ``api/`` functions (the CLI's), registered with ``@tool``: its name, whether it
writes (registered only with ``--allow-writes``; ``destructive`` for what cannot be taken back by a second call),
its docstring (the description an assistant reads) and its result type (a ``TypedDict``: the output schema). It
adds nothing else: the validation and the errors are the ``api/`` functions' (``InvalidInput`` naming its field),
and the adapters (``faces/mcp_server.py``, ``faces/http.py``) turn an error into ``{"error", "field"}``.

Rules every tool keeps:

- every list has a ``limit`` with a hard maximum (over it: an error naming the maximum); a result over 1 MiB is
  cut by the adapters (``cut``) with ``truncated`` and, where the rows are in time order, ``next_start``;
- reads run on a pooled read-only connection with a statement timeout (``faces/reads.py``), passed in as
  ``store``; every read of model outputs goes through the record's reads (``api.outputs.get_outputs``:
  ``tp_<table>_for_candles`` and ``tp_<table>_known_at``), never straight at the output tables;
- no argument is SQL or a free table or column name: feature columns are checked against the stored feature
  columns before they reach SQL (as identifiers).

Importing this module loads no MCP, HTTP, Dagster or MLflow library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from typing_extensions import TypedDict

from ..errors import InvalidInput

MAX_RESULT_BYTES = 1 << 20
LIMITS = {"get_candles": 5000, "get_features": 2000, "get_predictions": 1000, "get_patterns": 1000,
          "search_knowledge": 50, "list_alerts": 1000, "paper_trades": 1000, "pipeline_status": 168}


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable
    write: bool = False
    destructive: bool = False
    route: str | None = None  # the read API's path under /api/v1 (reads only)

    @property
    def description(self) -> str:
        return " ".join((self.fn.__doc__ or "").split())


TOOLS: dict[str, Tool] = {}


def tool(*, write: bool = False, destructive: bool = False, route: str | None = None):
    def register(fn):
        TOOLS[fn.__name__] = Tool(fn.__name__, fn, write, destructive, route)
        return fn
    return register


def tools(allow_writes: bool = False) -> list[Tool]:
    return [t for t in TOOLS.values() if allow_writes or not t.write]


def _limit(limit, name: str) -> int:
    most = LIMITS[name]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInput(f"limit must be an integer from 1 to {most} (the maximum), got {limit!r}", field="limit")
    return limit


def _iso(v):
    return v.isoformat() if isinstance(v, datetime) else v


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        return v.item()
    return v


def _symbol(store, symbol):
    from ..core.symbols import validate_symbol

    if not isinstance(symbol, str) or not symbol.strip():
        raise InvalidInput("symbol is required (e.g. BTC/USDT)", field="symbol")
    return store.require_symbol(validate_symbol(symbol))


def _timeframe(tf, field: str = "timeframe") -> str:
    from ..core.timeframes import parse_timeframe

    if not isinstance(tf, str) or not tf.strip():
        raise InvalidInput(f"{field} is required (e.g. 1h)", field=field)
    return parse_timeframe(tf, field)


def _model(store, model, field: str = "model"):
    """``model`` when the platform knows it (a champion history or outputs, else the MLflow registry); None when
    not given. An unknown name is an error listing the models, not an empty answer."""
    if model is None:
        return None
    from ..api._context import mlflow_client
    from ..api.alerts import _check_models
    from ..store.alerts import known_models

    if not isinstance(model, str) or not model.strip():
        raise InvalidInput(f"{field} is empty", field=field)
    model = model.strip()
    if model not in known_models(store.conn):  # only then the registry: a server that is down is a 503, not 'unknown'
        _check_models(store.conn, [model], field, client=mlflow_client())
    return model


def _since(since):
    """``since`` as a UTC datetime, its errors naming ``since`` (the record's reads call it ``start``)."""
    from ..api.market import parse_time

    return parse_time(since, "since")


def _range(start, end):
    from ..api.market import parse_time

    start, end = parse_time(start, "start"), parse_time(end, "end")
    if start is not None and end is not None and end <= start:
        raise InvalidInput(f"start ({start.isoformat()}) is not before end ({end.isoformat()})", field="start")
    return start, end


_SECRET_HINT = re.compile(r"@|password|/bot|hook|=|token|secret|key|[0-9]{6,}:", re.I)


def redact_tree(v):
    """``v`` (a JSON-ready value) with ``redact_secrets`` applied to every string that could quote a secret: one
    with a URI's ``@``, a ``password``, a bot or webhook path, a query parameter, a token or key, or a long
    ``digits:`` run (a bot token). Numbers and plain times pass untouched (a 500-candle page costs no regex pass
    beyond one search per string)."""
    from ..errors import redact_secrets

    t = type(v)
    if t is str:
        return redact_secrets(v) if _SECRET_HINT.search(v) else v
    if t is dict:
        out = {}
        for k, x in v.items():  # rows: their numbers kept without a call each
            tx = type(x)
            out[k] = x if tx is float or tx is int or tx is bool or x is None else \
                (redact_secrets(x) if _SECRET_HINT.search(x) else x) if tx is str else redact_tree(x)
        return out
    if t is list:
        return [redact_tree(x) for x in v]
    return v


def cut(result: dict, max_bytes: int = MAX_RESULT_BYTES) -> dict:
    """``result`` with its row list cut so the JSON stays under ``max_bytes``: ``truncated`` true and, where the
    rows carry a time, ``next_start`` (the first row left out). The row list is the first list value."""
    body = json.dumps(result, default=str)
    if len(body.encode()) <= max_bytes:
        return result
    key = next((k for k, v in result.items() if isinstance(v, list)), None)
    if key is None:
        return {"error": f"the result is over {max_bytes} bytes", "field": None, "truncated": True}
    rows = result[key]
    lo, hi = 0, len(rows)
    while lo < hi:  # the most rows that fit
        mid = (lo + hi + 1) // 2
        trial = {**result, key: rows[:mid], "truncated": True, "next_start": None}
        if len(json.dumps(trial, default=str).encode()) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    dropped = rows[lo] if lo < len(rows) else None
    nxt = None
    if isinstance(dropped, dict):
        nxt = dropped.get("ts") or dropped.get("origin_ts")
    return {**result, key: rows[:lo], "truncated": True, "next_start": nxt}


# ---- results (the output schemas) ------------------------------------------------------------------------------
class SymbolRow(TypedDict):
    symbol: str
    category: str
    exchange: Optional[str]
    timeframes: list[str]
    base_timeframe: str
    live: bool
    enabled: bool


class SymbolsResult(TypedDict):
    symbols: list[SymbolRow]


class SeriesSummary(TypedDict):
    timeframe: str
    count: int
    first_ts: Optional[str]
    last_ts: Optional[str]
    last_close: Optional[float]
    change_24h: Optional[float]


class SymbolResult(TypedDict):
    symbol: str
    category: str
    exchange: Optional[str]
    live: bool
    enabled: bool
    series: list[SeriesSummary]


class Candle(TypedDict):
    ts: str
    open: float
    high: float
    low: float
    close: float
    volume: float


class CandlesResult(TypedDict):
    symbol: str
    timeframe: str
    candles: list[dict[str, Any]]  # Candle's fields; a plain object per row keeps a client's validation cheap
    truncated: bool
    next_start: Optional[str]


class RowsResult(TypedDict):
    rows: list[dict[str, Any]]
    truncated: bool
    next_start: Optional[str]


class PredictionsResult(TypedDict):
    predictions: list[dict[str, Any]]
    truncated: bool
    next_start: Optional[str]


class ForecastResult(TypedDict):
    symbol: str
    timeframe: str
    model: Optional[str]
    model_version: Optional[str]
    origin: Optional[str]
    steps: list[dict[str, Any]]


class PatternsResult(TypedDict):
    patterns: list[dict[str, Any]]
    truncated: bool
    next_start: Optional[str]


class SearchResult(TypedDict):
    query: str
    hits: list[dict[str, Any]]


class ModelsResult(TypedDict):
    models: list[dict[str, Any]]
    champion_history: list[dict[str, Any]]


class AlertsResult(TypedDict):
    alerts: list[dict[str, Any]]
    truncated: bool
    next_start: Optional[str]


class AlertStatsResult(TypedDict):
    stats: list[dict[str, Any]]


class PaperStatusResult(TypedDict):
    runs: list[dict[str, Any]]
    consumer: Optional[dict[str, Any]]


class TradesResult(TypedDict):
    run: str
    trades: list[dict[str, Any]]
    truncated: bool
    next_start: Optional[str]


class LiveStatusResult(TypedDict):
    status: dict[str, Any]


class PipelineResult(TypedDict):
    hours: int
    runs: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    backfills: list[dict[str, Any]]
    sensors: list[dict[str, Any]]
    daemons: list[dict[str, Any]]


class PlatformResult(TypedDict):
    version: str
    schema_version: int
    store: str
    knowledge_base: dict[str, Any]
    mlflow_reachable: bool
    collector: list[dict[str, Any]]
    watchdog: list[dict[str, Any]]


# ---- read tools -----------------------------------------------------------------------------------------------------
def _row(s) -> SymbolRow:
    return {"symbol": s.symbol, "category": s.category, "exchange": s.exchange, "timeframes": list(s.timeframes),
            "base_timeframe": s.base_timeframe, "live": s.live, "enabled": s.enabled}


@tool(route="symbols")
def list_symbols(category: Optional[str] = None, enabled: Optional[bool] = None, live: Optional[bool] = None,
                 *, store=None) -> SymbolsResult:
    """The managed symbols with their category, exchange, timeframes (and the base one, which is ingested; the
    others are resampled from it), and whether each is enabled and live. Filter by category (crypto, forex, stock),
    enabled or live."""
    from ..core.symbols import CATEGORIES

    if category is not None and category not in CATEGORIES:
        raise InvalidInput(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}", field="category")
    rows = [_row(s) for s in store.list_symbols(False)
            if (category is None or s.category == category) and (enabled is None or s.enabled == enabled)
            and (live is None or s.live == live)]
    return {"symbols": rows}


@tool(route="symbol")
def get_symbol(symbol: str, *, store=None) -> SymbolResult:
    """One symbol and, per timeframe, how many candles are stored, the first and last candle's time, the last close
    and the change over the last 24 hours."""
    info = _symbol(store, symbol)
    series = []
    for tf in info.timeframes:
        n, first, last = store.conn.execute("SELECT count(*), min(ts), max(ts) FROM ohlcv WHERE symbol = %s AND "
                                            "timeframe = %s", (info.symbol, tf)).fetchone()
        close = change = None
        if last is not None:
            close = store.conn.execute("SELECT close FROM ohlcv WHERE symbol = %s AND timeframe = %s AND ts = %s",
                                       (info.symbol, tf, last)).fetchone()[0]
            ago = store.conn.execute("SELECT close FROM ohlcv WHERE symbol = %s AND timeframe = %s AND ts <= %s "
                                     "ORDER BY ts DESC LIMIT 1", (info.symbol, tf, last - timedelta(hours=24))
                                     ).fetchone()
            change = (float(close) / float(ago[0]) - 1.0) if ago and ago[0] else None
        series.append({"timeframe": tf, "count": int(n), "first_ts": _iso(first), "last_ts": _iso(last),
                       "last_close": None if close is None else float(close), "change_24h": change})
    return {"symbol": info.symbol, "category": info.category, "exchange": info.exchange, "live": info.live,
            "enabled": info.enabled, "series": series}


@tool(route="candles")
def get_candles(symbol: str, timeframe: str, start: Optional[str] = None, end: Optional[str] = None,
                limit: int = 500, *, store=None) -> CandlesResult:
    """Closed candles of one series, oldest first, each {ts (the open time, UTC), open, high, low, close, volume},
    from start (default: the first stored) to end (exclusive); at most limit (500 by default, 5000 at most). When
    more remain, truncated is true and next_start is the start of the next page."""
    from ..api.market import require_series
    from ..core.timeframes import seconds

    tf = _timeframe(timeframe)
    info = require_series(store, _symbol(store, symbol).symbol, tf)
    start, end = _range(start, end)
    limit = _limit(limit, "get_candles")
    closed_before = datetime.now(timezone.utc) - timedelta(seconds=seconds(tf))  # a candle still forming: left out
    end = closed_before if end is None or end > closed_before else end
    rows = store.conn.execute(
        "SELECT ts, open, high, low, close, volume FROM ohlcv WHERE symbol = %s AND timeframe = %s AND ts >= %s AND "
        "ts < %s ORDER BY ts LIMIT %s",
        (info.symbol, tf, start or datetime(1970, 1, 1, tzinfo=timezone.utc), end, limit + 1)).fetchall()
    candles = [{"ts": r[0].isoformat(), "open": float(r[1]), "high": float(r[2]), "low": float(r[3]),
                "close": float(r[4]), "volume": float(r[5])} for r in rows[:limit]]
    more = len(rows) > limit
    return {"symbol": info.symbol, "timeframe": tf, "candles": candles, "truncated": more,
            "next_start": rows[limit][0].isoformat() if more else None}


@tool(route="features")
def get_features(symbol: str, timeframe: str, columns: list[str], start: Optional[str] = None,
                 end: Optional[str] = None, limit: int = 500, *, store=None) -> RowsResult:
    """Stored feature values of one series (columns by name, as the feature spec names them: e.g. rsi_14,
    atr_14), oldest first from start; at most limit rows (2000 at most)."""
    import re

    from psycopg import sql

    info = _symbol(store, symbol)
    tf = _timeframe(timeframe)
    start, end = _range(start, end)
    limit = _limit(limit, "get_features")
    if not isinstance(columns, list) or not columns:
        raise InvalidInput("columns lists nothing: name the feature columns (e.g. rsi_14)", field="columns")
    stored = {r[0] for r in store.conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'features'").fetchall()}
    stored -= {"symbol", "timeframe", "ts", "computed_at"}
    for c in columns:
        if not isinstance(c, str) or not re.match(r"^[a-z][a-z0-9_]{0,62}$", c) or c not in stored:
            raise InvalidInput(f"unknown feature column {c!r}; stored: {', '.join(sorted(stored)[:40])}"
                               + (" ..." if len(stored) > 40 else ""), field="columns")
    q = sql.SQL("SELECT ts, {} FROM features WHERE symbol = %s AND timeframe = %s AND ts >= %s AND ts < %s "
                "ORDER BY ts LIMIT %s").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    rows = store.conn.execute(q, (info.symbol, tf, start or datetime(1970, 1, 1, tzinfo=timezone.utc),
                                  end or datetime(9999, 1, 1, tzinfo=timezone.utc), limit + 1)).fetchall()
    out = [{"ts": r[0].isoformat(), **{c: _jsonable(v) for c, v in zip(columns, r[1:])}} for r in rows[:limit]]
    more = len(rows) > limit
    return {"rows": out, "truncated": more, "next_start": rows[limit][0].isoformat() if more else None}


def _challengers(conn) -> dict:
    return {m: v for m, v in conn.execute("SELECT model_name, version FROM model_champions WHERE alias = "
                                          "'challenger' AND valid_to IS NULL").fetchall()}


@tool(route="predictions")
def get_predictions(symbol: Optional[str] = None, model: Optional[str] = None, timeframe: Optional[str] = None,
                    since: Optional[str] = None, role: str = "champion", latest_only: bool = False,
                    as_of: Optional[str] = None, limit: int = 100, *, store=None) -> PredictionsResult:
    """Model predictions (classifier probabilities, regime labels), newest first: by default today's champions'
    current outputs; role=challenger for the challengers' (shadow) outputs; as_of (a time) for what the live
    system knew then; latest_only for each series' newest row. Filter by symbol, model (a registered name such as
    pump_xgb or regime_hmm.BTC_USDT), timeframe and since (candle time); at most limit rows (1000 at most)."""
    from ..api.outputs import get_outputs

    if role not in ("champion", "challenger"):
        raise InvalidInput(f"role must be champion or challenger, got {role!r}", field="role")
    limit = _limit(limit, "get_predictions")
    if symbol is not None:
        symbol = _symbol(store, symbol).symbol
    if timeframe is not None:
        timeframe = _timeframe(timeframe)
    model, since = _model(store, model), _since(since)
    versions = None
    if role == "challenger":
        if as_of is not None:
            raise InvalidInput("as_of reads what the live system knew (its champions): not with role=challenger",
                               field="as_of")
        versions = _challengers(store.conn)
        if model is not None:
            versions = {k: v for k, v in versions.items() if k == model}
        if not versions:
            return {"predictions": [], "truncated": False, "next_start": None}
    if latest_only and as_of is None:
        as_of = datetime.now(timezone.utc)
    out = get_outputs("predictions", symbols=[symbol] if symbol else None, timeframes=[timeframe] if timeframe else None,
                      models=[model] if model else None, start=since, as_of=as_of, latest=latest_only,
                      versions=versions, limit=limit, store=store)
    return {"predictions": out["rows"], "truncated": out["truncated"], "next_start": None}


@tool(route="forecast")
def get_forecast(symbol: str, timeframe: str, model: Optional[str] = None, origin: Optional[str] = None,
                 *, store=None) -> ForecastResult:
    """A forecast's steps (median and quantiles of the close) for one series: the newest origin (the candle the
    forecast was made at), or the one at or before origin; from today's champion forecaster (or model)."""
    from ..api.market import parse_time
    from ..api.outputs import get_outputs

    from ..api.market import require_series

    tf = _timeframe(timeframe)
    info = require_series(store, _symbol(store, symbol).symbol, tf)
    model = _model(store, model)
    at = parse_time(origin, "origin")
    end = at + timedelta(microseconds=1) if at is not None else None
    newest = get_outputs("forecasts", symbols=[info.symbol], timeframes=[tf], models=[model] if model else None,
                         end=end, limit=1, store=store)["rows"]
    if not newest:
        return {"symbol": info.symbol, "timeframe": tf, "model": model, "model_version": None, "origin": None,
                "steps": []}
    first = newest[0]
    o = parse_time(first["origin_ts"], "origin")
    rows = get_outputs("forecasts", symbols=[info.symbol], timeframes=[tf], models=[first["model_name"]], start=o,
                       end=o + timedelta(microseconds=1), limit=1000, store=store)["rows"]
    steps = sorted(({"step": r["step"], "median": r["median"], "quantiles": r["quantiles"],
                     "in_sample": r["in_sample"]} for r in rows), key=lambda r: r["step"])
    return {"symbol": info.symbol, "timeframe": tf, "model": first["model_name"],
            "model_version": first["model_version"], "origin": first["origin_ts"], "steps": steps}


@tool(route="patterns")
def get_patterns(symbol: Optional[str] = None, timeframe: Optional[str] = None, since: Optional[str] = None,
                 min_probability: float = 0.5, limit: int = 100, *, store=None) -> PatternsResult:
    """Chart patterns the champion pattern detector found (double bottom, head and shoulders, ...), newest first,
    with their probability (at least min_probability) and length in candles; at most limit (1000 at most)."""
    from ..api.outputs import get_outputs

    if isinstance(min_probability, bool) or not isinstance(min_probability, (int, float)) or \
            not 0 <= min_probability <= 1:
        raise InvalidInput(f"min_probability must be within [0, 1], got {min_probability!r}", field="min_probability")
    from ..api.market import require_series

    limit = _limit(limit, "get_patterns")
    if symbol is not None:
        symbol = _symbol(store, symbol).symbol
    if timeframe is not None:
        timeframe = _timeframe(timeframe)
        if symbol is not None:
            require_series(store, symbol, timeframe)
    since = _since(since)
    rows, more = [], False
    # the record's read has no probability floor: the newest rows, four times the most a call returns, filtered here
    out = get_outputs("patterns", symbols=[symbol] if symbol else None, timeframes=[timeframe] if timeframe else None,
                      start=since, limit=4 * LIMITS["get_patterns"], store=store)
    for r in out["rows"]:
        if r["probability"] is not None and r["probability"] >= min_probability:
            if len(rows) == limit:
                more = True
                break
            rows.append(r)
    return {"patterns": rows, "truncated": more or out["truncated"], "next_start": None}


@tool(route="knowledge")
def search_knowledge(query: str, symbol: Optional[str] = None, timeframe: Optional[str] = None,
                     since: Optional[str] = None, kind: Optional[str] = None, k: int = 5,
                     *, store=None) -> SearchResult:
    """The k (at most 50) documents of the knowledge base closest in meaning to query: run summaries, model
    cards, alerts, notes and news, with their score; filter by symbol, timeframe, kind and since."""
    from ..api.kb import search

    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query is empty: say what to look for", field="query")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= LIMITS["search_knowledge"]:
        raise InvalidInput(f"k must be an integer from 1 to {LIMITS['search_knowledge']} (the maximum), got {k!r}",
                           field="k")
    if symbol is not None:
        symbol = _symbol(store, symbol).symbol
    if timeframe is not None:
        timeframe = _timeframe(timeframe)
    out = search(query, k=k, symbol=symbol, timeframe=timeframe, since=since, kind=kind, store=store)
    return {"query": out["query"], "hits": _jsonable(out["hits"])}


def _mlflow_down(timeout_s: float = 3.0) -> str | None:
    """None when the tracking store answers within ``timeout_s`` (the watchdog's probe), else why not."""
    from ..resources.mlflow import default_tracking_uri
    from ..watchdog.checks import _probe_mlflow

    return _probe_mlflow(default_tracking_uri(), timeout_s)


@tool(route="models")
def list_models(name: Optional[str] = None, *, store=None) -> ModelsResult:
    """Registered models (MLflow's registry): their versions, aliases (champion, challenger), the gate's decision
    and figures, and who held champion and challenger when (the champion history)."""
    from ..api._context import mlflow_client
    from ..models.registry import list_models as registered
    from ..store.champions import history

    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidInput("name is empty", field="name")
    down = _mlflow_down()
    if down is not None:  # a quick answer, not the MLflow client's minutes of retries
        from ..errors import StoreUnavailable

        raise StoreUnavailable(f"the model registry (MLflow) does not answer: {down}", field="MLFLOW_TRACKING_URI")
    models = [m for m in registered(mlflow_client()) if name is None or m["name"] == name]
    if name is not None and not models:
        raise InvalidInput(f"no registered model {name!r}", field="name")
    return {"models": _jsonable(models), "champion_history": _jsonable(history(store.conn, name))}


@tool(route="alerts")
def list_alerts(model: Optional[str] = None, symbol: Optional[str] = None, status: Optional[str] = None,
                since: Optional[str] = None, limit: int = 100, *, store=None) -> AlertsResult:
    """Alerts the models raised (newest first by when their output was known), with their status (pending:
    not judged yet; success, failed or expired: judged on the candles that came; suppressed) and outcome; filter
    by model, symbol, status and since; at most limit (1000 at most)."""
    from ..api.alerts import list_alerts as alerts
    from ..api.market import parse_time

    limit = _limit(limit, "list_alerts")
    t = parse_time(since, "since")
    model = _model(store, model)
    if symbol is not None:
        symbol = _symbol(store, symbol).symbol
    rows = alerts(model=model, symbol=symbol, status=status, limit=limit, store=store)
    rows = [r for r in rows if t is None or (r.get("known_at") and str(_iso(r["known_at"])) >= t.isoformat())]
    return {"alerts": _jsonable(rows), "truncated": len(rows) >= limit, "next_start": None}


@tool(route="alert_stats")
def alert_stats(model: Optional[str] = None, window: int = 30, *, store=None) -> AlertStatsResult:
    """Each alerting model's hit rate over the last window days (1 to 365) with its 95 % interval, the base rate
    and the lift, per version, symbol and timeframe."""
    from ..api.alerts import stats

    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 365:
        raise InvalidInput(f"window must be a number of days from 1 to 365, got {window!r}", field="window")
    model = _model(store, model)
    since = (datetime.now(timezone.utc) - timedelta(days=window)).isoformat()
    return {"stats": _jsonable(stats(model=model, since=since, store=store))}


@tool(route="paper")
def paper_status(strategy: Optional[str] = None, *, store=None) -> PaperStatusResult:
    """Paper trading's live runs: per strategy its positions, open orders, equity, the UTC day's P&L, exposure,
    risk locks and the champions promoted since it started; and the paper consumer's backlog."""
    from ..api.paper import live_status

    out = live_status(store=store)
    runs = [r for r in out["runs"] if strategy is None or r["strategy"] == strategy]
    if strategy is not None and not runs:
        raise InvalidInput(f"no live run of strategy {strategy!r} (running or stopped in the last 7 days)",
                           field="strategy")
    return {"runs": _jsonable(runs), "consumer": _jsonable(out.get("consumer"))}


@tool(route="paper_trades")
def paper_trades(run: str, limit: int = 100, *, store=None) -> TradesResult:
    """The round trips of a paper run (backtest or live): entry and exit times and prices, quantity, P&L, fees,
    the exit reason and candles held, oldest first; at most limit (1000 at most)."""
    from ..api.paper import trades

    limit = _limit(limit, "paper_trades")
    if not isinstance(run, str) or not run.strip():
        raise InvalidInput("run is required (a paper run id, see paper_status)", field="run")
    rows = trades(run, store=store)
    return {"run": run, "trades": _jsonable(rows[:limit]), "truncated": len(rows) > limit,
            "next_start": _iso(rows[limit].get("entry_ts")) if len(rows) > limit else None}


@tool(route="live")
def live_status(*, store=None) -> LiveStatusResult:
    """Whether the live path keeps up: the events not yet predicted (backlog) and the oldest one's lag, batches in
    flight and retried, the last error, the insert-to-prediction latency over the last hour, and each exchange
    collector's connection state."""
    from ..api.live import status

    return {"status": _jsonable(status(store=store))}


@tool(route="pipeline")
def pipeline_status(hours: int = 24, *, store=None) -> PipelineResult:
    """Dagster's view over the last hours (1 to 168): runs by job and status, failed runs with their first error
    line, backfills, the sensors' last ticks and the daemons' heartbeats."""
    from ..api._context import instance
    from .dagster_view import pipeline

    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= LIMITS["pipeline_status"]:
        raise InvalidInput(f"hours must be an integer from 1 to {LIMITS['pipeline_status']} (the maximum), got "
                           f"{hours!r}", field="hours")
    return pipeline(instance(), hours)


@tool(route="status")
def platform_status(*, store=None) -> PlatformResult:
    """The platform itself: its version, the store's schema version and address (host:port/database, no
    password), the knowledge base's counts and index, whether MLflow answers, and the collector's and the
    watchdog's states."""
    from ..api.kb import status as kb_status
    from ..api.live import status as live
    from ..api.watchdog import status as watchdog
    from ..store.db import describe_dsn

    from .. import __version__

    schema = store.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
    reachable = _mlflow_down() is None
    try:
        kb = _jsonable(kb_status(store=store))
    except Exception as e:  # noqa: BLE001 - the knowledge base is optional
        kb = {"error": str(e).splitlines()[0]}
    return {"version": __version__, "schema_version": int(schema), "store": describe_dsn(store.dsn),
            "knowledge_base": kb, "mlflow_reachable": reachable,
            "collector": _jsonable(live(store=store).get("collector", [])),
            "watchdog": _jsonable([{k: r.get(k) for k in ("check", "state", "since", "subjects", "detail")}
                                   for r in watchdog(store=store)])}


# ---- write tools (registered only with --allow-writes; each call audited in api_audit) ---------------------------
class SymbolAdded(TypedDict):
    symbol: str
    category: str
    exchange: Optional[str]
    timeframes: list[str]
    live: bool
    enabled: bool


class BackfillResult(TypedDict):
    backfill_id: str
    symbol: str
    months: list[str]
    assets: list[str]
    status: str
    already_running: bool


class PromoteResult(TypedDict):
    model: str
    version: str
    result: dict[str, Any]


class NoteResult(TypedDict):
    note: dict[str, Any]


@tool(write=True)
def add_symbol(symbol: str, category: Optional[str] = None, exchange: Optional[str] = None,
               timeframes: Optional[list[str]] = None, live: bool = False, enabled: bool = True) -> SymbolAdded:
    """Add a managed symbol (and its Dagster partition): its category (crypto, forex, stock; inferred from the
    symbol when left out), exchange, timeframes (the first is ingested, the rest resampled) and whether it is live
    (streamed) and enabled. Its history is loaded by a backfill (start_backfill)."""
    from ..api.symbols import add_symbol as add

    row = add(symbol, category=category, exchange=exchange, timeframes=timeframes, enabled=enabled, live=live)
    return {k: row.get(k) for k in ("symbol", "category", "exchange", "timeframes", "live", "enabled")}


@tool(write=True)
def start_backfill(symbol: str, start: str, end: str, assets: Optional[list[str]] = None) -> BackfillResult:
    """Backfill one symbol's months from start to end (dates) through the daemon: the model outputs (predictions,
    forecasts, patterns, the versions pinned) by default, or market and features. An identical backfill still
    running is returned instead of a second one."""
    from ..api._context import instance, mlflow_client, open_store
    from ..api.runs import parse_date
    from ..backfill import OUTPUTS, create_backfill, validate

    names = tuple(assets) if assets else OUTPUTS
    if not all(isinstance(a, str) and a.strip() for a in names):
        raise InvalidInput("assets lists names such as predictions, forecasts, patterns, market, features",
                           field="assets")
    d0, d1 = parse_date(start, "start"), parse_date(end, "end")
    with open_store() as s:
        info, months = validate(s, symbol, d0, d1, names)
        title = f"{', '.join(names)}: {info.symbol} {months[0][:7]}..{months[-1][:7]}"
        inst = instance()
        from dagster._core.execution.backfill import BulkActionStatus

        for b in inst.get_backfills(status=BulkActionStatus.REQUESTED, limit=200):
            if getattr(b, "title", None) == title:
                return {"backfill_id": b.backfill_id, "symbol": info.symbol, "months": [m[:7] for m in months],
                        "assets": list(names), "status": b.status.value, "already_running": True}
        client = mlflow_client() if set(names) & set(OUTPUTS) else None
        out = create_backfill(inst, s, client, info.symbol, d0, d1, names)
    return {"backfill_id": out["backfill_id"], "symbol": out["symbol"], "months": out["months"],
            "assets": out["assets"], "status": "REQUESTED", "already_running": False}


@tool(write=True, destructive=True)
def promote_model(name: str, version: str) -> PromoteResult:
    """Make version the champion of registered model name by hand (the live path and the scoring pick it up; the
    previous champion's outputs stay in the record). Recorded in the champion history."""
    from ..api.models import promote

    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name is required (a registered model, see list_models)", field="name")
    if not isinstance(version, str) or not version.strip():
        raise InvalidInput("version is required", field="version")
    return {"model": name, "version": version, "result": _jsonable(promote(name, version))}


@tool(write=True)
def add_note(text: str, symbol: Optional[str] = None, timeframe: Optional[str] = None,
             at: Optional[str] = None) -> NoteResult:
    """Add a note or news snippet to the knowledge base (embedded at once; the same text twice is stored once),
    about a symbol and timeframe and a time if given."""
    from ..api.kb import add_note as add

    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text is empty", field="text")
    return {"note": _jsonable(add(text, symbol=symbol, timeframe=timeframe, at=at, literal=True))}

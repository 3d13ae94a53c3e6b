"""Features of stored candles, written back to the store: what the asset, the
export command and (later) the live path call."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from ..core.candles import Normalized
from ..core.symbols import SymbolInfo
from ..core.timeframes import TIMEFRAMES
from .compute import compute_features, feature_columns, join_context
from .spec import FeatureSpec
from .storage import read_features, write_features

US = 1_000_000
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=timezone.utc)


def to_polars(c: Normalized, symbol: str, timeframe: str) -> pl.DataFrame:
    return pl.DataFrame({
        "symbol": pl.Series([symbol] * len(c), dtype=pl.String),
        "timeframe": pl.Series([timeframe] * len(c), dtype=pl.String),
        "ts": pl.Series(c.ts_us, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume,
    })


def higher_timeframe(info: SymbolInfo, tf: str) -> str | None:
    """The next coarser timeframe the symbol lists (the multi-timeframe context of tf)."""
    coarser = [t for t in info.timeframes if TIMEFRAMES[t] > TIMEFRAMES[tf]]
    return min(coarser, key=TIMEFRAMES.__getitem__) if coarser else None


def compute_series(store, info: SymbolInfo, spec: FeatureSpec, until: datetime) -> dict[str, pl.DataFrame]:
    """Full-history features of every listed timeframe with candles before ``until``, with context."""
    out: dict[str, pl.DataFrame] = {}
    for tf in sorted(info.timeframes, key=TIMEFRAMES.__getitem__, reverse=True):  # coarsest first
        candles = store.read_candles(info.symbol, tf, None, until)
        if len(candles) == 0:
            continue
        df = compute_features(to_polars(candles, info.symbol, tf), spec)
        htf = higher_timeframe(info, tf)
        if htf in out:
            df = join_context(df, out[htf], TIMEFRAMES[tf], TIMEFRAMES[htf], spec.context)
        out[tf] = df
    return out


def _spans(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Contiguous spans of the (sorted) month ranges of a run."""
    out: list[list[datetime]] = []
    for a, b in sorted(ranges):
        if out and out[-1][1] >= a:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _continue(store, info: SymbolInfo, tf: str, spec: FeatureSpec, prev: dict, until: datetime | None):
    """Features of the candles after the stored row ``prev`` (and before ``until``), continued from its
    state and a tail of ``max_window`` candles: (frame, candles read), or None when the row has no
    state to continue from (still in warm-up, or the spec changed)."""
    last_ts = prev["ts"]
    new = store.read_candles(info.symbol, tf, last_ts + timedelta(microseconds=1), until)
    if len(new) == 0:
        return None, 0
    tail = store.read_candles_tail(info.symbol, tf, last_ts, spec.max_window + 1)
    frame = to_polars(tail, info.symbol, tf).vstack(to_polars(new, info.symbol, tf))
    try:
        return compute_features(frame, spec, state={**prev, "_row": len(tail) - 1}), len(tail) + len(new)
    except ValueError:
        return False, len(tail) + len(new)


def _state_before(store, info: SymbolInfo, tf: str, start: datetime) -> tuple[dict | None, str]:
    """The stored feature row a computation from ``start`` can continue from, or (None, why not)."""
    prev = read_features(store.conn, info.symbol, tf, end=start, last=1)
    if len(prev) == 0:
        return None, "no stored features before it"
    row = prev.row(0, named=True)
    before = store.read_candles_tail(info.symbol, tf, start - timedelta(microseconds=1), 1)
    if len(before) and int(before.ts_us[-1]) != int(prev["ts"].dt.epoch("us")[0]):
        return None, "the previous month's features are incomplete"
    revised = store.conn.execute(
        "SELECT 1 FROM ohlcv_revisions WHERE symbol = %s AND timeframe = %s AND first_ts <= %s "
        "AND (revised_at > %s OR (features_done_at IS NULL AND coalesce(features_seen_at, 'infinity') > %s)) "
        "LIMIT 1",  # a late commit has an early revised_at: not seen by a features run before the state was stored
        (info.symbol, tf, row["ts"], row["computed_at"], row["computed_at"])).fetchone()
    if revised:
        return None, "candles before it were revised after its state was stored"
    return row, ""


def _with_context(store, info: SymbolInfo, tf: str, df: pl.DataFrame, spec: FeatureSpec,
                  htf_frame: pl.DataFrame | None = None) -> pl.DataFrame:
    """Join the next higher timeframe's features as of their last closed candle: from ``htf_frame``
    when it was computed in this run from the first candle, else from the store."""
    htf = higher_timeframe(info, tf)
    if not htf or len(df) == 0:
        return df
    ctx = htf_frame
    if ctx is None:
        back = timedelta(seconds=max(2 * TIMEFRAMES[htf], 4 * 86_400))  # weekends included
        ctx = read_features(store.conn, info.symbol, htf, df["ts"][0] - back, df["ts"][-1] + timedelta(seconds=1))
    if len(ctx) == 0:
        return df
    return join_context(df, ctx, TIMEFRAMES[tf], TIMEFRAMES[htf], spec.context)


def compute_span(store, info: SymbolInfo, tf: str, spec: FeatureSpec, start: datetime, end: datetime,
                 full_recompute: bool = False) -> tuple[pl.DataFrame, dict]:
    """Features of one timeframe up to ``end`` (without context), and how they were computed.

    Continued from the stored state at the end of the month before ``start`` when it is usable,
    so the cost does not depend on how much history precedes it (the frame then starts at
    ``start``); else computed from the first stored candle (the whole series is returned, for the
    finer timeframes' context). Callers keep ``ts >= start``."""
    why = "full_recompute asked"
    if not full_recompute:
        prev, why = _state_before(store, info, tf, start)
        if prev is not None:
            df, read = _continue(store, info, tf, spec, prev, end)
            if df is None:
                return pl.DataFrame(), {"mode": "incremental", "rows_read": read, "full": False}
            if df is not False:
                return df, {"mode": "incremental", "rows_read": read, "full": False}
            why = "the stored row before it has no state (warm-up, or another feature spec)"
    candles = store.read_candles(info.symbol, tf, None, end)
    if len(candles) == 0:
        return pl.DataFrame(), {"mode": f"full: {why}", "rows_read": 0, "full": True}
    df = compute_features(to_polars(candles, info.symbol, tf), spec)
    return df, {"mode": f"full: {why}", "rows_read": len(candles), "full": True}


def materialize(store, info: SymbolInfo, spec: FeatureSpec, ranges: list[tuple[datetime, datetime]],
                full_recompute: bool = False) -> dict:
    """Compute and store the features of ``info`` for each [start, end) range; returns a report.

    Coarsest timeframe first, so each finer one can join its context. Each contiguous span of
    months continues from the stored state before it (``compute_span``)."""
    from ..core.calendars import find_gaps

    report = {"rows": {}, "warmup_rows": {}, "too_little_history": {}, "gaps": {}, "columns": 0, "mode": {},
              "rows_read": {}}
    spans = _spans(ranges)
    full: dict[tuple[str, datetime], pl.DataFrame] = {}  # whole series computed this run, per (tf, span)
    for tf in sorted(info.timeframes, key=TIMEFRAMES.__getitem__, reverse=True):
        parts, modes, read = [], [], 0
        htf = higher_timeframe(info, tf)
        for a, b in spans:
            df, how = compute_span(store, info, tf, spec, a, b, full_recompute)
            modes.append(how["mode"])
            read += how["rows_read"]
            if how["full"] and len(df):
                full[(tf, a)] = df
            if len(df):
                df = df.filter(pl.col("ts") >= a)
                df = _with_context(store, info, tf, df, spec, full.get((htf, a)) if how["full"] else None)
                parts.append(df)
            write_features(store.conn, df, info.symbol, tf, a, b)
        if read == 0:
            continue
        report["mode"][tf] = modes[0] if len(set(modes)) == 1 else modes
        report["rows_read"][tf] = read
        in_range = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
        report["rows"][tf] = len(in_range)
        if not len(in_range):
            continue
        cols = feature_columns(in_range)
        report["columns"] = max(report["columns"], len(cols))
        report["warmup_rows"][tf] = int(in_range.select(pl.any_horizontal(pl.col(cols).is_null()).sum()).item())
        empty = [c for c in cols if in_range[c].null_count() == len(in_range)]
        if empty:
            report["too_little_history"][tf] = f"{len(in_range)} rows: {', '.join(empty)} all null"
        g = find_gaps(info.category, info.exchange, in_range["ts"].dt.epoch("us").to_numpy(), TIMEFRAMES[tf])
        if g["missing"]:
            report["gaps"][tf] = g
    return report


def update_latest(store, info: SymbolInfo, timeframe: str, spec: FeatureSpec | None = None) -> pl.DataFrame:
    """Features of the candles stored after the last feature row, from that row's state.

    The live path: no history is recomputed, only a tail of ``spec.max_window``
    candles is read. Falls back to the full computation when there is no usable
    stored row yet. Returns the rows written.
    """
    spec = spec or FeatureSpec()
    last = read_features(store.conn, info.symbol, timeframe, last=1)
    df = None
    if len(last):
        df, _ = _continue(store, info, timeframe, spec, last.row(0, named=True), None)
        if df is None:
            return last.clear()
    if df is None or df is False:
        df = compute_series(store, info, spec, until=FAR_FUTURE).get(timeframe)
        if df is None:
            return last
        if len(last):
            df = df.filter(pl.col("ts") > last["ts"][0])
    else:
        df = _with_context(store, info, timeframe, df, spec)
    if len(df):
        write_features(store.conn, df, info.symbol, timeframe, df["ts"][0], df["ts"][-1] + timedelta(microseconds=1))
    return df


def stale_months(store, info: SymbolInfo, timeframe: str) -> list[datetime]:
    """Months whose stored features are missing, incomplete, or older than a revision of earlier candles."""
    rows = store.conn.execute(
        """
        WITH o AS (SELECT date_trunc('month', ts, 'UTC') AS m, count(*) AS n FROM ohlcv
                   WHERE symbol = %(s)s AND timeframe = %(tf)s GROUP BY 1),
             f AS (SELECT date_trunc('month', ts, 'UTC') AS m, count(*) AS n, min(computed_at) AS c FROM features
                   WHERE symbol = %(s)s AND timeframe = %(tf)s GROUP BY 1)
        SELECT o.m FROM o LEFT JOIN f USING (m)
        WHERE f.n IS DISTINCT FROM o.n
           OR EXISTS (SELECT 1 FROM ohlcv_revisions r WHERE r.symbol = %(s)s
                      AND r.first_ts < o.m + interval '1 month' AND (r.revised_at > f.c OR (r.features_done_at IS NULL
                                                                    AND coalesce(r.features_seen_at, 'infinity') > f.c)))
        ORDER BY 1
        """,
        {"s": info.symbol, "tf": timeframe},
    ).fetchall()
    return [r[0] for r in rows]


def export(store, info: SymbolInfo, timeframe: str, path, spec: FeatureSpec | None = None) -> dict:
    """Write one series' features to Parquet, computing and storing missing or stale months first."""
    from ..core.months import month_bounds, month_key

    spec = spec or FeatureSpec()
    stale = stale_months(store, info, timeframe)
    if stale:
        materialize(store, info, spec, [month_bounds(month_key(m)) for m in stale])
    df = read_features(store.conn, info.symbol, timeframe)
    df = df.drop([c for c in df.columns if c.startswith("state_") or c == "computed_at"])
    df.write_parquet(path)
    return {"path": str(path), "rows": len(df), "columns": len(df.columns),
            "recomputed_months": [month_key(m) for m in stale]}

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


def materialize(store, info: SymbolInfo, spec: FeatureSpec, ranges: list[tuple[datetime, datetime]]) -> dict:
    """Compute and store the features of ``info`` for each [start, end) range; returns a report."""
    from ..core.calendars import find_gaps

    until = max(end for _, end in ranges)
    series = compute_series(store, info, spec, until)
    report = {"rows": {}, "warmup_rows": {}, "too_little_history": {}, "gaps": {}, "columns": 0}
    for tf, df in series.items():
        written = sum(write_features(store.conn, df, info.symbol, tf, a, b) for a, b in ranges)
        in_range = df.filter(pl.any_horizontal([(pl.col("ts") >= a) & (pl.col("ts") < b) for a, b in ranges]))
        cols = feature_columns(df)
        report["columns"] = max(report["columns"], len(cols))
        report["rows"][tf] = written
        report["warmup_rows"][tf] = int(in_range.select(pl.any_horizontal(pl.col(cols).is_null()).sum()).item())
        empty = [c for c in cols if df[c].null_count() == len(df)]
        if empty:
            report["too_little_history"][tf] = f"{len(df)} candles: {', '.join(empty)} all null"
        ts_us = in_range["ts"].dt.epoch("us").to_numpy()
        g = find_gaps(info.category, info.exchange, ts_us, TIMEFRAMES[tf])
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
    tf_s = TIMEFRAMES[timeframe]
    last = read_features(store.conn, info.symbol, timeframe, last=1)
    df = None
    if len(last):
        last_ts = last["ts"][0]
        new = store.read_candles(info.symbol, timeframe, last_ts + timedelta(microseconds=1), None)
        if len(new) == 0:
            return last.clear()
        tail = store.read_candles_tail(info.symbol, timeframe, last_ts, spec.max_window + 1)
        frame = to_polars(tail, info.symbol, timeframe).vstack(to_polars(new, info.symbol, timeframe))
        state = last.row(0, named=True)
        state["_row"] = len(tail) - 1
        try:
            df = compute_features(frame, spec, state=state)
        except ValueError:  # the last row is still in warm-up: it has no state to continue from
            df = None
    if df is None:
        df = compute_series(store, info, spec, until=FAR_FUTURE).get(timeframe)
        if df is None:
            return last
        if len(last):
            df = df.filter(pl.col("ts") > last["ts"][0])
        if len(df):
            write_features(store.conn, df, info.symbol, timeframe, df["ts"][0],
                           df["ts"][-1] + timedelta(microseconds=1))
        return df
    htf = higher_timeframe(info, timeframe)
    if htf:
        first_new = df["ts"][0]
        # the higher candles that can be "last closed" for the new rows (weekends included)
        back = timedelta(seconds=max(2 * TIMEFRAMES[htf], 4 * 86_400))
        ctx = read_features(store.conn, info.symbol, htf, first_new - back, None)
        if len(ctx):
            df = join_context(df, ctx, tf_s, TIMEFRAMES[htf], spec.context)
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
                      AND r.first_ts < o.m + interval '1 month' AND r.revised_at > f.c)
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

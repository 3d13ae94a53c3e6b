"""The model outputs as an append-only, point-in-time record (migration 13).

``predictions`` (classifiers, regimes), ``forecasts`` (NHITS) and ``patterns`` (TCN) keep every value a
consumer may have read. A row records the version behind it, when it became known (``known_at``) and, once a
correction replaced it, when (``superseded_at``). Nothing is updated in place but ``superseded_at``, set once:

- a row whose recomputed value equals the current one writes nothing (a retry, a second path, a re-run);
- a changed value supersedes the current row and adds the new one, both stamped with the same time;
- a *scope* (version, series, ``[lo, hi)``) says "everything of this version in this stretch was recomputed":
  a current row inside it that the recomputation no longer produces (a pattern below the threshold now) is
  superseded with no successor.

``known_at`` is ``clock_timestamp()`` taken by :meth:`OutputWriter.flush`, which every write path calls as
the last write of its transaction, so it precedes the commit by the flush's own time (its COPY, UPDATE and
INSERT: milliseconds for a live batch, up to a second or so for a month rescored) and the commit's: a reader
asking "as known at T" for a T inside that gap is shown a row it could not yet see. The alternative,
``track_commit_timestamp`` and ``pg_xact_commit_timestamp(xmin)``, was rejected: setting ``superseded_at``
gives the tuple a new ``xmin`` (its commit time would become the correction's), a function of ``xmin`` cannot
be indexed for the as-of reads, and an external server needs a restart to turn it on.

The reads (``tp_<table>_known_at``, ``tp_<table>_for_candles``, ``current_champion_<table>``) are SQL in
migration 13; ``known_at`` and ``for_candles`` below call the functions.
"""

from __future__ import annotations

from datetime import datetime

# table -> (columns written, key columns, time column, floats compared with a tolerance, JSON objects compared
# with it, the rest compared exactly)
TABLES = {
    "predictions": (["model_name", "model_version", "symbol", "timeframe", "ts", "value", "label", "details",
                     "in_sample"], 5, "ts", ["value"], ["details"], ["label", "in_sample"]),
    "forecasts": (["model_name", "model_version", "symbol", "timeframe", "origin_ts", "step", "median", "quantiles",
                   "in_sample"], 6, "origin_ts", ["median"], ["quantiles"], ["in_sample"]),
    "patterns": (["model_name", "model_version", "symbol", "timeframe", "ts", "pattern", "probability", "bars",
                  "in_sample"], 6, "ts", ["probability"], [], ["bars", "in_sample"]),
}
# a recomputed float "equals" the stored one within this (a batch of another size can move the last bits)
REL_TOL, ABS_TOL = 1e-6, 1e-9


class OutputWriter:
    """Collects output rows and the scopes they recompute; :meth:`flush` writes the difference."""

    def __init__(self, conn, versions=None, origin: str = "live"):
        """``versions``: the ``models.scoring.Version`` s whose rows this writer takes (their role and ``tp.target``
        make the alerts, ``alerts.core.on_flush``; none given: no alert is made); ``origin``: live | schedule |
        backfill (a backfill's alerts are judged but never sent)."""
        self.conn = conn
        self.versions = {(v.name, str(v.version)): (v.role, (v.tags or {}).get("tp.target")) for v in versions or ()}
        self.origin = origin
        self.alerts: dict[str, int] = {}
        self.rows: dict[str, list[tuple]] = {t: [] for t in TABLES}
        self.scopes: dict[str, list[tuple]] = {t: [] for t in TABLES}
        self.compare: dict[str, bool] = {t: False for t in TABLES}

    def add(self, table: str, rows: list[tuple], scope: tuple | None = None, new: bool = False) -> None:
        """Rows in the table's column order (``TABLES``); ``scope``: (model, version, symbol, timeframe, lo, hi)
        when every row of that version and series in ``[lo, hi)`` was recomputed (rows it no longer yields are
        superseded). ``new``: the rows are for candles with no current row (a gap being filled): nothing to
        compare or supersede, so the flush only inserts them (a row another path wrote meanwhile wins)."""
        self.rows[table].extend(rows)
        if scope is not None:
            self.scopes[table].append(scope)
        self.compare[table] = self.compare[table] or not new

    def pending(self) -> int:
        return sum(map(len, self.rows.values())) + sum(map(len, self.scopes.values()))

    def flush(self) -> dict[str, dict[str, int]]:
        """Write what differs from the current rows, in the caller's transaction (a savepoint) or its own.
        Returns {table: {"inserted", "superseded", "staged"}} for the tables that had anything."""
        out: dict[str, dict[str, int]] = {}
        if not self.pending():
            return out
        with self.conn.transaction():
            if self.versions and (self.rows["predictions"] or self.scopes["predictions"]):
                from ..alerts.core import before_flush

                # alerts may follow: the per-symbol locks first (a live batch holds them already)
                before_flush(self.conn, self.versions, {r[2] for r in self.rows["predictions"]}
                             | {sc[2] for sc in self.scopes["predictions"]})
            now = self.conn.execute("SELECT clock_timestamp()").fetchone()[0]
            for table in TABLES:
                if self.rows[table] or self.scopes[table]:
                    out[table] = _flush_table(self.conn, table, self.rows[table], self.scopes[table], now,
                                              self.compare[table])
                    if table == "predictions" and self.versions:
                        from ..alerts.core import on_flush

                        # the alerts of the rows just made current, and the retractions of those they replaced,
                        # before the next table's flush empties the staging tables
                        for k, v in on_flush(self.conn, now, self.versions, self.origin).items():
                            self.alerts[k] = self.alerts.get(k, 0) + v
                    self.rows[table], self.scopes[table], self.compare[table] = [], [], False
        return out


def _flush_table(conn, table: str, rows: list[tuple], scopes: list[tuple], now: datetime,
                 compare: bool = True) -> dict[str, int]:
    from psycopg import sql

    cols, nkey, tcol, floats, jsons, others = TABLES[table]
    key = cols[:nkey]
    stage, scope_t = sql.Identifier(f"_tp_stage_{table}"), sql.Identifier("_tp_scope")
    T = sql.Identifier(table)
    ident = lambda names: sql.SQL(", ").join(map(sql.Identifier, names))  # noqa: E731
    conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                 .format(stage, T))
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _tp_scope (model_name text, model_version text, symbol text, "
                 "timeframe text, lo timestamptz, hi timestamptz) ON COMMIT DELETE ROWS")
    conn.execute(sql.SQL("TRUNCATE {}, {}").format(stage, scope_t))
    if rows:
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, ident(cols))) as cp:
            for r in rows:
                cp.write_row(r)
    if scopes:
        with conn.cursor() as cur, cur.copy("COPY _tp_scope FROM STDIN") as cp:
            for s in scopes:
                cp.write_row(s)
    same_key = lambda a, b: sql.SQL(" AND ").join(  # noqa: E731
        sql.SQL("{}.{} = {}.{}").format(sql.Identifier(a), sql.Identifier(c), sql.Identifier(b), sql.Identifier(c))
        for c in key)
    tol = {"a": sql.Literal(ABS_TOL), "r": sql.Literal(REL_TOL)}
    differs = sql.SQL(" OR ").join(
        [sql.SQL("(t.{c} IS DISTINCT FROM s.{c} AND NOT coalesce(abs(t.{c} - s.{c}) <= {a} + {r} * "
                 "greatest(abs(t.{c}), abs(s.{c})), false))").format(c=sql.Identifier(c), **tol) for c in floats]
        + [sql.SQL("NOT tp_json_close(t.{c}, s.{c}, {r}, {a})").format(c=sql.Identifier(c), **tol) for c in jsons]
        + [sql.SQL("t.{c} IS DISTINCT FROM s.{c}").format(c=sql.Identifier(c)) for c in others])
    superseded = 0 if not compare else conn.execute(sql.SQL(
        "UPDATE {T} t SET superseded_at = %(now)s FROM {stage} s WHERE t.superseded_at IS NULL AND {k} AND ({d})")
        .format(T=T, stage=stage, k=same_key("t", "s"), d=differs), {"now": now}).rowcount
    if scopes and compare:
        superseded += conn.execute(sql.SQL(
            "UPDATE {T} t SET superseded_at = %(now)s FROM _tp_scope sc WHERE t.superseded_at IS NULL "
            "AND t.model_name = sc.model_name AND t.model_version = sc.model_version AND t.symbol = sc.symbol "
            "AND t.timeframe = sc.timeframe AND t.{tc} >= sc.lo AND t.{tc} < sc.hi "
            "AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {k})")
            .format(T=T, stage=stage, tc=sql.Identifier(tcol), k=same_key("t", "s")), {"now": now}).rowcount
    inserted = 0
    if rows:
        inserted = conn.execute(sql.SQL(
            "WITH ins AS ("
            " INSERT INTO {T} ({c}, known_at) SELECT DISTINCT ON ({sk}) {sc}, %(now)s FROM {stage} s"
            " WHERE {fresh} OR NOT EXISTS (SELECT 1 FROM {T} t WHERE {k} AND t.superseded_at IS NULL)"
            " ON CONFLICT ({kc}) WHERE superseded_at IS NULL DO NOTHING"
            " RETURNING model_name, model_version, symbol, timeframe, {tc} AS t),"
            " series AS ("
            " INSERT INTO output_series AS o (output_table, model_name, model_version, symbol, timeframe, first_ts,"
            " last_ts) SELECT %(table)s, model_name, model_version, symbol, timeframe, min(t), max(t) FROM ins"
            " GROUP BY 2, 3, 4, 5 ORDER BY 2, 3, 4, 5"
            " ON CONFLICT (output_table, model_name, model_version, symbol, timeframe) DO UPDATE SET"
            " first_ts = least(o.first_ts, EXCLUDED.first_ts), last_ts = greatest(o.last_ts, EXCLUDED.last_ts)"
            " RETURNING 1)"
            " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM series)")
            .format(T=T, c=ident(cols), sc=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in cols),
                    sk=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in key),
                    stage=stage, k=same_key("t", "s"), kc=ident(key), tc=sql.Identifier(tcol),
                    fresh=sql.SQL("false" if compare else "true")),
            {"now": now, "table": table}).fetchone()[0]
    if table == "patterns":
        for s in scopes:
            add_coverage(conn, table, *s)
    return {"inserted": int(inserted), "superseded": int(superseded), "staged": len(rows)}


def add_coverage(conn, table: str, name: str, version: str, symbol: str, tf: str, lo: datetime, hi: datetime) -> None:
    """Record that ``[lo, hi)`` of the series was scored by the version (merged with what touches it)."""
    conn.execute(
        "WITH gone AS (DELETE FROM output_coverage WHERE output_table = %(t)s AND model_name = %(n)s "
        "AND model_version = %(v)s AND symbol = %(s)s AND timeframe = %(tf)s AND lo <= %(hi)s AND hi >= %(lo)s "
        "RETURNING lo, hi) "
        "INSERT INTO output_coverage SELECT %(t)s, %(n)s, %(v)s, %(s)s, %(tf)s, least(%(lo)s, min(lo)), "
        "greatest(%(hi)s, max(hi)) FROM gone",
        {"t": table, "n": name, "v": version, "s": symbol, "tf": tf, "lo": lo, "hi": hi})


# ---- which candles still want an output --------------------------------------------------------------------
def missing_runs(conn, table: str, name: str, version: str, symbol: str, tf: str, start: datetime,
                 end: datetime | None, live_since: datetime | None = None,
                 inputs: tuple[str, ...] = ()) -> list[tuple[datetime, datetime]]:
    """(first, last) of each stretch of consecutive closed candles of the series in ``[start, end)`` the version
    has no current output for (interior gaps too, not only what follows the newest row). Predictions and
    forecasts: feature rows without a current row (a forecast at step 1); patterns: candles outside the
    stretches the version has scanned. From
    ``live_since`` on (a live series) a candle whose live event is still pending is the live path's to score.
    ``inputs``: feature columns without which the version writes no row (the regime model's): a candle missing
    one is not a gap."""
    live = ("AND NOT EXISTS (SELECT 1 FROM market_events e JOIN market_event_queue q ON q.event_id = e.id "
            "AND q.consumer = 'predictions' AND q.status <> 'done' WHERE e.symbol = c.symbol "
            "AND e.timeframe = c.timeframe AND e.ts = c.ts AND c.ts >= %(live)s)") if live_since is not None else ""
    if table == "predictions":
        has = ("EXISTS (SELECT 1 FROM predictions p WHERE p.model_name = %(n)s AND p.model_version = %(v)s "
               "AND p.symbol = c.symbol AND p.timeframe = c.timeframe AND p.ts = c.ts AND p.superseded_at IS NULL)")
        src = "features"
    elif table == "forecasts":
        has = ("EXISTS (SELECT 1 FROM forecasts p WHERE p.model_name = %(n)s AND p.model_version = %(v)s "
               "AND p.symbol = c.symbol AND p.timeframe = c.timeframe AND p.origin_ts = c.ts AND p.step = 1 "
               "AND p.superseded_at IS NULL)")
        src = "features"
    else:
        has = ("EXISTS (SELECT 1 FROM output_coverage p WHERE p.output_table = 'patterns' AND p.model_name = %(n)s "
               "AND p.model_version = %(v)s AND p.symbol = c.symbol AND p.timeframe = c.timeframe "
               "AND p.lo <= c.ts AND c.ts < p.hi)")
        src = "ohlcv"
    need = "".join(f' AND c."{c}" IS NOT NULL AND c."{c}" <> \'NaN\'::float8' for c in inputs)
    return [(r[0], r[1]) for r in conn.execute(
        f"SELECT min(ts), max(ts) FROM (SELECT c.ts, n - row_number() OVER (ORDER BY c.ts) AS run FROM ("
        f" SELECT c.symbol, c.timeframe, c.ts, row_number() OVER (ORDER BY c.ts) AS n FROM {src} c"
        f" WHERE c.symbol = %(s)s "
        f" AND c.timeframe = %(tf)s AND c.ts >= %(start)s AND c.ts < coalesce(%(end)s::timestamptz, 'infinity')"
        f" {need}) c "
        f" WHERE NOT {has} {live}) m GROUP BY run ORDER BY 1",
        {"n": name, "v": version, "s": symbol, "tf": tf, "start": start, "end": end, "live": live_since}).fetchall()]


# ---- series owners -------------------------------------------------------------------------------------------
def live_since(conn, symbol: str, tf: str) -> datetime | None:
    """When the live path took the series over, if it owns it now (``series_owners``), else None."""
    row = conn.execute("SELECT path, since FROM series_owners WHERE symbol = %s AND timeframe = %s "
                       "ORDER BY since DESC LIMIT 1", (symbol, tf)).fetchone()
    return row[1] if row and row[0] == "live" else None


def claim_series(conn, symbol: str, tf: str, path: str, since: datetime) -> bool:
    """Record that ``path`` owns the series from ``since`` (no-op when it already does)."""
    row = conn.execute("SELECT path FROM series_owners WHERE symbol = %s AND timeframe = %s ORDER BY since DESC "
                       "LIMIT 1", (symbol, tf)).fetchone()
    if (row[0] if row else "schedule") == path:
        return False
    conn.execute("INSERT INTO series_owners (symbol, timeframe, path, since) VALUES (%s, %s, %s, %s) "
                 "ON CONFLICT DO NOTHING", (symbol, tf, path, since))
    return True


# ---- revisions: read by state --------------------------------------------------------------------------------
def pending_revisions(conn, table: str, symbol: str, lock: bool = True) -> list[tuple]:
    """(id, timeframe, first_ts, last_ts) of the symbol's revisions whose features are recomputed and whose
    ``table`` outputs are not corrected yet, locked for this transaction (another run skips them)."""
    col = f"{table}_done_at"
    return conn.execute(
        f"SELECT id, timeframe, first_ts, coalesce(last_ts, first_ts) FROM ohlcv_revisions WHERE symbol = %s "
        f"AND {col} IS NULL "
        f"AND features_done_at IS NOT NULL ORDER BY id" + (" FOR UPDATE SKIP LOCKED" if lock else ""),
        (symbol,)).fetchall()


def mark_revisions(conn, column: str, ids: list[int]) -> None:
    if ids:
        conn.execute(f"UPDATE ohlcv_revisions SET {column} = clock_timestamp() WHERE id = ANY(%s) "
                     f"AND {column} IS NULL", (list(ids),))


# ---- reads ---------------------------------------------------------------------------------------------------
# newest first, then a fixed order among rows of the same time (a page never cuts differently twice)
_NEWEST_FIRST = {"predictions": "ts DESC, symbol, timeframe, model_name, model_version",
                 "forecasts": "origin_ts DESC, symbol, timeframe, model_name, model_version, step",
                 "patterns": "ts DESC, symbol, timeframe, model_name, model_version, pattern"}


def _page(table: str, limit: int | None) -> str:
    return f" ORDER BY {_NEWEST_FIRST[table]} LIMIT {int(limit)}" if limit is not None else ""


def known_at(conn, table: str, as_of: datetime, *, symbols=None, timeframes=None, models=None, start=None,
             end=None, latest: bool = False, limit: int | None = None) -> list[tuple]:
    """``tp_<table>_known_at``: what the live system knew at ``as_of`` (``limit``: the newest rows only)."""
    return conn.execute(f"SELECT * FROM tp_{table}_known_at(%s, %s, %s, %s, %s, %s, %s)" + _page(table, limit),
                        (as_of, symbols, timeframes, models, start, end, latest)).fetchall()


def for_candles(conn, table: str, *, symbols=None, timeframes=None, models=None, start=None, end=None,
                versions: dict | None = None, champions_at: datetime | None = None,
                limit: int | None = None) -> list[tuple]:
    """``tp_<table>_for_candles``: the current outputs of pinned versions (default: today's champions;
    ``limit``: the newest rows only)."""
    import json

    return conn.execute(f"SELECT * FROM tp_{table}_for_candles(%s, %s, %s, %s, %s, %s::jsonb, %s)"
                        + _page(table, limit),
                        (symbols, timeframes, models, start, end, json.dumps(versions) if versions else None,
                         champions_at)).fetchall()


SUPERSEDED_RETENTION_ENV = "TP_SUPERSEDED_RETENTION_DAYS"


def superseded_retention_days(environ=None) -> float | None:
    """``TP_SUPERSEDED_RETENTION_DAYS``: superseded output rows older than this many days are deleted by the
    maintenance job (unset or empty: kept forever)."""
    from ..settings import env_days

    # at least 1: the knowledge base's sync and the alerts read corrections within a day; finite and at most
    # settings.MAX_DAYS: the cutoff is computed from it
    return env_days(SUPERSEDED_RETENTION_ENV, None, minimum=1, hint=" (unset: keep every superseded row)",
                    environ=environ)


def compact_superseded(conn, days: float, *, now: datetime | None = None) -> dict[str, int]:
    """Delete the rows of the output tables superseded more than ``days`` ago, one symbol and table per
    transaction (the ``(symbol, superseded_at)`` partial index finds them). Current rows are never touched, so
    every read of current outputs is unchanged; an as-of read at a time older than the cutoff no longer sees a
    row that was corrected before the cutoff (``docs/outputs.md``, "Retention")."""
    from datetime import timedelta, timezone

    from ..settings import MAX_DAYS, check_number

    days = check_number(SUPERSEDED_RETENTION_ENV, days, minimum=1, maximum=MAX_DAYS, unit="days")
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    symbols = [r[0] for r in conn.execute("SELECT symbol FROM symbols ORDER BY symbol").fetchall()]
    deleted = {}
    for table in TABLES:
        n = 0
        for symbol in symbols:
            with conn.transaction():
                n += conn.execute(f"DELETE FROM {table} WHERE symbol = %s AND superseded_at IS NOT NULL "
                                  "AND superseded_at < %s", (symbol, cutoff)).rowcount
        deleted[table] = n
    return deleted

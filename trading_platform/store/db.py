"""Connection to the market store and the bulk write/read paths.

Writes use binary COPY built with numpy (one fixed-size record per candle, no
per-row Python). Candles that cannot collide with stored ones (outside the
stored time range of that symbol and timeframe) are copied straight into
``ohlcv``; only the ones that may overlap are staged and upserted with
``INSERT ... ON CONFLICT``, which counts inserted, updated (values changed) and
unchanged rows. A per-(symbol, timeframe) advisory lock makes the range
decision safe against concurrent writers.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from ..core.candles import VALUE_COLUMNS, Normalized, Reject, normalize_candles, reject_json
from ..core.months import month_key
from ..core.symbols import SymbolInfo, validate_symbol
from ..core.timeframes import parse_timeframe
from ..errors import InvalidInput, StoreUnavailable, UnknownSymbol, redact_secrets
from .migrations import migrate

log = logging.getLogger(__name__)

PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (URI and key=value forms)."""
    return redact_secrets(dsn)


def describe_dsn(dsn: str) -> str:
    """Host, port and database of a DSN, for error messages (never the password)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(dsn)
    except Exception:
        return redact_dsn(dsn)
    host = d.get("host") or "localhost"
    return f"host {host} port {d.get('port') or 5432} database {d.get('dbname') or '(default)'}"


@dataclass
class WriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicates_collapsed: int = 0
    forming_skipped: int = 0

    def __add__(self, other: "WriteResult") -> "WriteResult":
        return WriteResult(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def counts(self) -> dict:
        return {k: getattr(self, k) for k in ("inserted", "updated", "unchanged", "rejected")}


@dataclass
class LiveWriteResult(WriteResult):
    """What a live write did, and the ids of the outbox events it recorded."""

    events: list = field(default_factory=list)



def _copy_payload(columns: list[tuple[str, np.ndarray]], n: int) -> bytes:
    """A binary COPY stream of n rows; every field is a fixed-size value.

    columns: (kind, values) with kind ``"ts"`` (Unix microseconds, int64),
    ``"f8"`` (float64) or ``"text"`` (one constant bytes value for every row).
    """
    fields = [("nfields", ">i2")]
    for i, (kind, val) in enumerate(columns):
        size = len(val) if kind == "text" else 8
        fields.append((f"len{i}", ">i4"))
        fields.append((f"v{i}", f"S{size}" if kind == "text" else (">i8" if kind == "ts" else ">f8")))
    rec = np.empty(n, dtype=np.dtype(fields))
    rec["nfields"] = len(columns)
    for i, (kind, val) in enumerate(columns):
        rec[f"len{i}"] = len(val) if kind == "text" else 8
        rec[f"v{i}"] = (val - PG_EPOCH_US) if kind == "ts" else val
    return _COPY_HEADER + rec.tobytes() + _COPY_TRAILER


_READ_DTYPE = np.dtype(
    [("n", ">i2"), ("l0", ">i4"), ("ts", ">i8")]
    + [x for k in VALUE_COLUMNS for x in ((f"l_{k}", ">i4"), (k, ">f8"))]
)


class MarketStore:
    """One connection to the market store. Use as a context manager."""

    def __init__(self, conn, dsn: str):
        self.conn = conn
        self.dsn = dsn
        self._stage_ready = False

    # ---- lifecycle -------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "MarketStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def migrate(self) -> list[int]:
        return migrate(self.conn)

    # ---- symbols ---------------------------------------------------------
    def get_symbol(self, symbol: str) -> SymbolInfo | None:
        row = self.conn.execute(
            "SELECT symbol, category, exchange, base, quote, timeframes, enabled, live, metadata "
            "FROM symbols WHERE symbol = %s",
            (symbol,),
        ).fetchone()
        return SymbolInfo(*row[:5], list(row[5]), *row[6:]) if row else None

    def require_symbol(self, symbol: str) -> SymbolInfo:
        validate_symbol(symbol)
        info = self.get_symbol(symbol)
        if info is None:
            raise UnknownSymbol(symbol)
        return info

    def list_symbols(self, enabled_only: bool = False) -> list[SymbolInfo]:
        rows = self.conn.execute(
            "SELECT symbol, category, exchange, base, quote, timeframes, enabled, live, metadata "
            "FROM symbols" + (" WHERE enabled" if enabled_only else "") + " ORDER BY symbol"
        ).fetchall()
        return [SymbolInfo(*r[:5], list(r[5]), *r[6:]) for r in rows]

    def add_symbol(self, info: SymbolInfo, exist_ok: bool = False) -> bool:
        """Insert a symbol; returns False (and changes nothing) if it exists and exist_ok. A name that differs from
        a stored one only in case (btc/usdt beside BTC/USDT: one market twice, one file for both) is refused."""
        with self.conn.transaction():
            twin = self.conn.execute("SELECT symbol FROM symbols WHERE upper(symbol) = upper(%s) AND symbol <> %s",
                                     (info.symbol, info.symbol)).fetchone()
            if twin:
                raise InvalidInput(f"symbol {info.symbol!r} differs from the stored {twin[0]!r} only in case: use "
                                   f"{twin[0]!r}", field="symbol")
            cur = self.conn.execute(
                "INSERT INTO symbols (symbol, category, exchange, base, quote, timeframes, "
                "enabled, live, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (symbol) DO NOTHING",
                (info.symbol, info.category, info.exchange, info.base, info.quote,
                 info.timeframes, info.enabled, info.live, json.dumps(info.metadata)),
            )
        if cur.rowcount == 0 and not exist_ok:
            raise InvalidInput(f"symbol {info.symbol!r} already exists (use update)", field="symbol")
        return cur.rowcount == 1

    def update_symbol(self, symbol: str, **changes) -> SymbolInfo:
        current = self.require_symbol(symbol)
        allowed = {"category", "exchange", "timeframes", "enabled", "live", "metadata", "base", "quote"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidInput(f"cannot update {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        merged = {**asdict(current), **{k: v for k, v in changes.items() if v is not None}}
        info = SymbolInfo.create(**merged)
        with self.conn.transaction():
            if info.timeframes != current.timeframes:
                self._refuse_stranding(current, info)
            self.conn.execute(
                "UPDATE symbols SET category=%s, exchange=%s, base=%s, quote=%s, timeframes=%s, "
                "enabled=%s, live=%s, metadata=%s, updated_at=now() WHERE symbol=%s",
                (info.category, info.exchange, info.base, info.quote, info.timeframes,
                 info.enabled, info.live, json.dumps(info.metadata), symbol),
            )
            if current.live and not info.live:  # its series go back to the schedules from now on
                from .outputs import claim_series

                now = self.conn.execute("SELECT clock_timestamp()").fetchone()[0]
                for tf in current.timeframes:
                    claim_series(self.conn, symbol, tf, "schedule", now)
        return info

    def _refuse_stranding(self, current: SymbolInfo, info: SymbolInfo) -> None:
        """New timeframes must leave every stored candle where it is read: a timeframe dropped while it has
        loaded candles would hide them (derived ones may go: resampling rebuilds them), and one whose candles were loaded (not derived now) made derived by a finer
        listed timeframe would have them overwritten by resampling (``ingest.refuse_derived``'s rule)."""
        sym = current.symbol
        for tf in current.timeframes:
            dropped = tf not in info.timeframes
            if dropped and current.resample_source(tf) is not None:
                continue  # derived candles: resampling rebuilds them if the timeframe is listed again
            source = None if dropped or current.resample_source(tf) is not None else info.resample_source(tf)
            if not dropped and source is None:
                continue
            n = self.conn.execute("SELECT count(*) FROM ohlcv WHERE symbol = %s AND timeframe = %s",
                                  (sym, tf)).fetchone()[0]
            if not n:
                continue
            if dropped:
                raise InvalidInput(
                    f"{sym} has {n} stored {tf} candles: dropping {tf} from its timeframes would leave them "
                    f"unreachable; keep {tf} in --timeframes, or remove the symbol with --purge to delete them",
                    field="timeframes",
                )
            raise InvalidInput(
                f"{sym} has {n} stored {tf} candles loaded as its base timeframe; with timeframes "
                f"{','.join(info.timeframes)} it would derive {tf} by resampling {source} and overwrite them: keep "
                f"{tf} its base timeframe (no finer timeframe that divides it), or remove the symbol with --purge",
                field="timeframes",
            )

    # every table of the platform keyed by symbol (the migrations' tables with a symbol column) beside ohlcv:
    # what a symbol's removal deletes. The records a user reads (model outputs, alerts) go, like its candles, only
    # with purge.
    _SYMBOL_OUTPUTS = (("predictions", "predictions"), ("forecasts", "forecast steps"), ("patterns", "patterns"),
                       ("alerts", "alerts"))
    _SYMBOL_TABLES = ("alert_stats", "alert_base", "alert_base_cursor", "output_series", "output_coverage",
                      "rag_sync_state", "market_events", "collector_status", "features", "ohlcv_revisions",
                      "series_owners")
    # a paper run is one record of its strategy over all its symbols (its equity and statistics included), not an
    # output served for the symbol: runs are kept, like the quarantine (ingest_rejects), and a removal is refused
    # only while a live run trades the symbol

    def remove_symbol(self, symbol: str, purge: bool = False) -> int:
        """Remove a symbol. Refuses while candles, model outputs or alerts of it are stored unless purge (then
        deletes them, and every other row served for it; paper runs and quarantined rows stay). Returns the
        candles deleted."""
        self.require_symbol(symbol)
        q = {"s": symbol}
        with self.conn.transaction():
            self.conn.execute("SELECT 1 FROM symbols WHERE symbol = %s FOR UPDATE", (symbol,))
            live = self.conn.execute(
                "SELECT r.run_id, r.strategy_name FROM paper_runs r JOIN strategies st ON st.name = r.strategy_name "
                "AND st.version = r.strategy_version WHERE r.mode = 'live' AND r.status = 'running' AND EXISTS ("
                "SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(st.spec->'universe') = 'array' THEN "
                "st.spec->'universe' ELSE '[]'::jsonb END) u WHERE jsonb_typeof(u) = 'object' "
                "AND btrim(u->>'symbol') = %(s)s) ORDER BY r.run_id LIMIT 1", q).fetchone()
            if live:
                raise InvalidInput(
                    f"symbol {symbol!r} is traded by the running live paper run {live[0]} of strategy {live[1]!r}: "
                    f"stop it first (tp paper stop {live[1]})", field="symbol")
            n = self.conn.execute("SELECT count(*) FROM ohlcv WHERE symbol = %s", (symbol,)).fetchone()[0]
            held = [f"{n} stored candles"] if n else []
            for table, what in self._SYMBOL_OUTPUTS:
                k = self.conn.execute(f"SELECT count(*) FROM {table} WHERE symbol = %(s)s", q).fetchone()[0]
                if k:
                    held.append(f"{k} {what}")
            if held and not purge:
                listed = held[0] if len(held) == 1 else ", ".join(held[:-1]) + " and " + held[-1]
                raise InvalidInput(
                    f"symbol {symbol!r} has {listed}; disable it "
                    "(tp symbols update --disable) or remove with --purge to delete them",
                    field="symbol",
                )
            for table, _ in self._SYMBOL_OUTPUTS:  # an alert's deliveries go with it
                self.conn.execute(f"DELETE FROM {table} WHERE symbol = %(s)s", q)
            for table in self._SYMBOL_TABLES:  # market_events: its queue rows go with it
                self.conn.execute(f"DELETE FROM {table} WHERE symbol = %(s)s", q)
            self.conn.execute("DELETE FROM ohlcv WHERE symbol = %s", (symbol,))
            self.conn.execute("DELETE FROM symbols WHERE symbol = %s", (symbol,))
            # its knowledge-base documents leave search at once (the index sync purges them)
            self.conn.execute("UPDATE rag_documents SET deleted_at = now() WHERE symbol = %s AND deleted_at IS NULL",
                              (symbol,))
        return int(n)

    # ---- candles: write ----------------------------------------------------
    def ingest_frame(self, symbol, timeframe, df, source: str, *, now=None, forming="reject",
                     where: str | None = None) -> WriteResult:
        """Normalize a raw frame, quarantine what is bad, and write the rest."""
        tf = parse_timeframe(timeframe)
        self.require_symbol(symbol)
        norm = normalize_candles(df, tf, now=now, forming=forming, where=where or source)
        return self.write_candles(symbol, tf, norm, source)

    def write_candles(self, symbol: str, timeframe: str, norm: Normalized, source: str) -> WriteResult:
        """Historical candles (no live events), counted in ``tp_ingest_rows_total`` in the same transaction."""
        from .metrics import count_ingest, write_counts

        with self.conn.transaction():
            result = self._write_candles(symbol, timeframe, norm, source)
            count_ingest(self.conn, write_counts(result, source))
        return result

    def _write_candles(self, symbol: str, timeframe: str, norm: Normalized, source: str) -> WriteResult:
        tf = parse_timeframe(timeframe)
        result = WriteResult(
            rejected=len(norm.rejects),
            duplicates_collapsed=norm.duplicates_collapsed,
            forming_skipped=norm.forming_skipped,
        )
        with self.conn.transaction():
            if not self.conn.execute("SELECT 1 FROM symbols WHERE symbol = %s", (symbol,)).fetchone():
                raise UnknownSymbol(symbol)
            if norm.rejects:
                self.write_rejects(symbol, tf, source, norm.rejects)
            if len(norm) == 0:
                return result
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"ohlcv|{symbol}|{tf}",)
            )
            lo, hi = self.conn.execute(
                "SELECT min(ts), max(ts) FROM ohlcv WHERE symbol = %s AND timeframe = %s",
                (symbol, tf),
            ).fetchone()
            if lo is None:
                direct = np.ones(len(norm), dtype=bool)
            else:
                direct = (norm.ts_us < _to_us(lo)) | (norm.ts_us > _to_us(hi))
            revised_from, revised_to, revised_rows = None, None, 0
            if direct.any():
                part = norm.take(direct)
                self._copy(
                    "COPY ohlcv (symbol, timeframe, ts, open, high, low, close, volume) "
                    "FROM STDIN (FORMAT BINARY)",
                    [("text", symbol.encode()), ("text", tf.encode()), *_value_columns(part)],
                    len(part),
                )
                result.inserted += len(part)
                if lo is None or part.ts_us[0] < _to_us(lo):  # the series' first candles, or older ones
                    self._lower_history_start(_from_us(part.ts_us[0]))
                    if lo is not None:  # history extended backwards
                        revised_from = _from_us(part.ts_us[0])
                        revised_to = _from_us(part.ts_us[part.ts_us < _to_us(lo)][-1])
                        revised_rows = int((part.ts_us < _to_us(lo)).sum())
            if not direct.all():
                staged = norm.take(~direct)
                ins, upd, first_changed, last_changed = self._upsert(symbol, tf, staged)
                result.inserted += ins
                result.updated += upd
                result.unchanged += len(staged) - ins - upd
                if first_changed is not None:
                    revised_from = min(first_changed, revised_from or first_changed)
                    revised_to = max(last_changed, revised_to or last_changed)
                    revised_rows += ins + upd
            if revised_from is not None:
                # candles changed under stored history: what was derived from them is stale
                self.conn.execute(
                    "INSERT INTO ohlcv_revisions (symbol, timeframe, first_ts, last_ts, rows) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (symbol, tf, revised_from, revised_to, revised_rows),
                )
        return result

    # ---- candles: the live write path -----------------------------------------
    def write_live(self, symbol: str, timeframe: str, df, source: str = "live", *,
                   now: datetime | None = None) -> "LiveWriteResult":
        """Closed candles from a live writer (an exchange poller, ``tp live feed``), in one transaction.

        Each clean candle goes through ``tp_live_candle()`` (migration 10), which upserts it and, in the
        same transaction, records its ``market_events`` row and NOTIFYs ``tp_market_events`` when it is
        new, changed, or stored but never seen by the live path, for an enabled live symbol. Bad rows,
        rows not closed yet, and every candle of a symbol not in ``symbols`` are quarantined with their
        reason. Historical loads (``write_candles``) never create events."""
        tf = parse_timeframe(timeframe)
        validate_symbol(symbol)
        norm = df if isinstance(df, Normalized) else normalize_candles(df, tf, now=now, where=source)
        result = LiveWriteResult(rejected=len(norm.rejects), duplicates_collapsed=norm.duplicates_collapsed)
        from .metrics import count_ingest, write_counts

        with self.conn.transaction():
            if norm.rejects:
                self.write_rejects(symbol, tf, source, norm.rejects)
            if len(norm) == 0:
                count_ingest(self.conn, write_counts(result, source))
                return result
            rows = self.conn.execute(
                "SELECT r.outcome, r.event_id FROM unnest(%(ts)s::bigint[], %(o)s::float8[], %(h)s::float8[], "
                "%(l)s::float8[], %(c)s::float8[], %(v)s::float8[]) WITH ORDINALITY AS u(t, o, h, l, c, v, i) "
                "CROSS JOIN LATERAL tp_live_candle(%(s)s, %(tf)s, timestamptz 'epoch' + u.t * interval '1 microsecond', u.o, u.h, u.l, u.c, "
                "u.v, %(src)s) r ORDER BY u.i",
                {"ts": norm.ts_us.tolist(), "o": norm.open.tolist(), "h": norm.high.tolist(),
                 "l": norm.low.tolist(), "c": norm.close.tolist(), "v": norm.volume.tolist(),
                 "s": symbol, "tf": tf, "src": source},
            ).fetchall()
            for outcome, event_id in rows:
                if outcome == "quarantined":
                    result.rejected += 1
                else:
                    setattr(result, outcome, getattr(result, outcome) + 1)
                if event_id is not None:
                    result.events.append(int(event_id))
            count_ingest(self.conn, write_counts(result, source))  # in the candles' transaction
        return result

    def _copy(self, statement: str, columns, n: int) -> None:
        payload = _copy_payload(columns, n)
        with self.conn.cursor() as cur, cur.copy(statement) as cp:
            cp.write(payload)

    def _upsert(self, symbol: str, tf: str, staged: Normalized) -> tuple[int, int, datetime | None]:
        """Upsert staged candles; returns (inserted, updated, first and last changed ts). The rest were unchanged."""
        if not self._stage_ready:
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _ohlcv_stage (ts timestamptz NOT NULL, "
                "open float8, high float8, low float8, close float8, volume float8) "
                "ON COMMIT DELETE ROWS"
            )
            self._stage_ready = True
        self._copy(
            "COPY _ohlcv_stage (ts, open, high, low, close, volume) FROM STDIN (FORMAT BINARY)",
            _value_columns(staged),
            len(staged),
        )
        if len(staged) >= _BULK_RELOAD_ROWS:
            # a large overlap is usually a re-load: drop the rows stored exactly as they are
            # with one join (about 2x faster than letting ON CONFLICT probe each of them)
            self.conn.execute("ANALYZE _ohlcv_stage")
            self.conn.execute(
                """
                DELETE FROM _ohlcv_stage s USING ohlcv o
                WHERE o.symbol = %(s)s AND o.timeframe = %(tf)s AND o.ts = s.ts
                  AND o.ts >= %(lo)s AND o.ts <= %(hi)s
                  AND o.open = s.open AND o.high = s.high AND o.low = s.low
                  AND o.close = s.close AND o.volume = s.volume
                """,
                {"s": symbol, "tf": tf, "lo": _from_us(staged.ts_us[0]), "hi": _from_us(staged.ts_us[-1])},
            )
        row = self.conn.execute(
            """
            WITH up AS (
                INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume)
                SELECT %(s)s, %(tf)s, ts, open, high, low, close, volume FROM _ohlcv_stage
                ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET
                    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                    close = EXCLUDED.close, volume = EXCLUDED.volume
                WHERE (ohlcv.open, ohlcv.high, ohlcv.low, ohlcv.close, ohlcv.volume)
                      IS DISTINCT FROM
                      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
                RETURNING ts, (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted), min(ts), max(ts) FROM up
            """,
            {"s": symbol, "tf": tf},
        ).fetchone()
        return int(row[0]), int(row[1]), row[2], row[3]

    def write_rejects(self, symbol: str | None, timeframe: str | None, source: str,
                      rejects: list[Reject]) -> None:
        """Quarantine rows; a row already quarantined for the same symbol, timeframe and source (the same
        file re-ingested, say) is stored once (unique key: symbol, timeframe, source, md5 of the raw row)."""
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _rejects_stage (symbol text, timeframe text, source text, "
            "raw jsonb, reason text) ON COMMIT DELETE ROWS"
        )
        with self.conn.transaction():
            with self.conn.cursor() as cur, cur.copy(
                "COPY _rejects_stage (symbol, timeframe, source, raw, reason) FROM STDIN"
            ) as cp:
                for r in rejects:
                    cp.write_row((symbol, timeframe, source, reject_json(r), r.reason))
            self.conn.execute(
                "INSERT INTO ingest_rejects (symbol, timeframe, source, raw, reason) "
                "SELECT symbol, timeframe, source, raw, reason FROM _rejects_stage "
                "ON CONFLICT DO NOTHING"
            )
            self.conn.execute("TRUNCATE _rejects_stage")

    # ---- candles: read -----------------------------------------------------
    def read_candles(self, symbol: str, timeframe: str, start: datetime | None = None,
                     end: datetime | None = None) -> Normalized:
        """Stored candles with start <= ts < end, sorted by ts."""
        from psycopg import sql

        cond = [sql.SQL("symbol = {}").format(sql.Literal(symbol)),
                sql.SQL("timeframe = {}").format(sql.Literal(parse_timeframe(timeframe)))]
        if start is not None:
            cond.append(sql.SQL("ts >= {}").format(sql.Literal(start)))
        if end is not None:
            cond.append(sql.SQL("ts < {}").format(sql.Literal(end)))
        q = sql.SQL(
            "COPY (SELECT ts, open, high, low, close, volume FROM ohlcv WHERE {} ORDER BY ts) "
            "TO STDOUT (FORMAT BINARY)"
        ).format(sql.SQL(" AND ").join(cond))
        return self._read_copy(q)

    def read_candles_tail(self, symbol: str, timeframe: str, until: datetime, n: int) -> Normalized:
        """The last n stored candles with ts <= until, sorted by ts."""
        from psycopg import sql

        q = sql.SQL(
            "COPY (SELECT ts, open, high, low, close, volume FROM ohlcv WHERE symbol = {} AND timeframe = {} "
            "AND ts <= {} ORDER BY ts DESC LIMIT {}) TO STDOUT (FORMAT BINARY)"
        ).format(sql.Literal(symbol), sql.Literal(parse_timeframe(timeframe)), sql.Literal(until), sql.Literal(n))
        out = self._read_copy(q)
        return Normalized(*(a[::-1].copy() for a in (out.ts_us, out.open, out.high, out.low, out.close, out.volume)))

    def _read_copy(self, q) -> Normalized:
        buf = bytearray()
        with self.conn.cursor() as cur, cur.copy(q) as cp:
            for chunk in cp:
                buf += chunk
        rec = np.frombuffer(bytes(buf[19:-2]), dtype=_READ_DTYPE)
        return Normalized(
            (rec["ts"].astype("int64") + PG_EPOCH_US),
            *(rec[k].astype("float64") for k in VALUE_COLUMNS),
        )

    def candle_stats(self, symbol: str, timeframe: str, start=None, end=None) -> dict:
        row = self.conn.execute(
            "SELECT count(*), min(ts), max(ts) FROM ohlcv WHERE symbol = %s AND timeframe = %s "
            "AND (%s::timestamptz IS NULL OR ts >= %s) AND (%s::timestamptz IS NULL OR ts < %s)",
            (symbol, parse_timeframe(timeframe), start, start, end, end),
        ).fetchone()
        return {"rows": int(row[0]), "first_ts": row[1], "last_ts": row[2]}

    # ---- the history's first month (where the month partitions start) ----------
    def history_start(self) -> str | None:
        """'YYYY-MM-01' of the market's first month: the oldest month stored or asked for by a backfill
        (``history_start``, migration 14); None while there is no history."""
        from .history import history_start

        return history_start(self.conn)

    def extend_history(self, month: str) -> bool:
        """Record that the history starts at ``month`` ('YYYY-MM-01') at the latest: a backfill of months
        before any stored. Returns whether the first month moved (it never moves later)."""
        return self._lower_history_start(datetime.strptime(month, "%Y-%m-%d").replace(tzinfo=timezone.utc))

    def _lower_history_start(self, ts: datetime) -> bool:
        # locks the row only when it moves it (rare: a series' first write, or an older one); with no month
        # recorded yet, the live path's candles count too
        cur = self.conn.execute(
            "UPDATE history_start SET updated_at = now(), first_month = least(%(m)s::date, "
            "CASE WHEN first_month IS NULL THEN tp_first_candle_month() END) "
            "WHERE first_month IS NULL OR first_month > %(m)s::date",
            {"m": month_key(ts)},
        )
        return cur.rowcount > 0




_BULK_RELOAD_ROWS = 5_000


def _from_us(us) -> datetime:
    return datetime.fromtimestamp(int(us) / 1_000_000, tz=timezone.utc)


def _to_us(ts: datetime) -> int:
    return int(ts.replace(tzinfo=ts.tzinfo or timezone.utc).timestamp() * 1_000_000)


def _value_columns(n: Normalized):
    return [("ts", n.ts_us), ("f8", n.open), ("f8", n.high), ("f8", n.low), ("f8", n.close),
            ("f8", n.volume)]


def candle_counts(conn, symbols: list[str]) -> list[tuple[str, int]]:
    """(timeframe, stored candles) of the symbols, by timeframe (a report: every row of theirs is counted)."""
    return [(tf, int(n)) for tf, n in conn.execute(
        "SELECT timeframe, count(*) FROM ohlcv WHERE symbol = ANY(%s) GROUP BY 1 ORDER BY 1", (symbols,)).fetchall()]


def connect(dsn: str, *, run_migrations: bool | None = None, check_schema: bool = True,
            connect_timeout: int = 10) -> MarketStore:
    """Open the store. An unreachable server raises StoreUnavailable naming the host.

    ``run_migrations``: None applies pending migrations when the platform is embedded (development) and
    leaves them to the deploy step (``tp db migrate``) otherwise, where a schema older than this code is
    then an error naming that step (``check_schema``); True or False decide it here."""
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.OperationalError as e:
        reason = redact_dsn(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise StoreUnavailable(
            f"cannot reach the market store at {describe_dsn(dsn)}: {reason}",
            field="TP_DATABASE_URL",
        ) from None
    except psycopg.ProgrammingError as e:
        raise StoreUnavailable(
            f"invalid market store DSN ({redact_dsn(dsn)}): {redact_dsn(str(e))}",
            field="TP_DATABASE_URL",
        ) from None
    store = MarketStore(conn, dsn)
    try:
        if run_migrations is None:
            from ..settings import get_settings

            run_migrations = get_settings().embedded
        if run_migrations:
            store.migrate()
        elif check_schema:
            require_schema(conn, dsn)
    except BaseException:
        conn.close()
        raise
    return store


def require_schema(conn, dsn: str) -> int:
    """The schema version, if it is at least the one this code needs; else a StoreUnavailable naming the
    deploy step. A newer schema is accepted (an upgrade migrates first, then restarts the services)."""
    from .migrations import MIGRATIONS, current_version

    empty = conn.execute("SELECT to_regclass('schema_migrations') IS NULL").fetchone()[0]
    have, need = (0 if empty else current_version(conn)), MIGRATIONS[-1][0]
    if have < need:
        raise StoreUnavailable(
            f"the market store at {describe_dsn(dsn)} has schema version {have}, this platform needs {need}: "
            "run `tp db migrate` first (a deploy step: the `migrate` service of docker/compose.yaml; "
            "in production nothing migrates on first use)", field="TP_DATABASE_URL")
    return have

"""``rag_documents``: period summaries of every series and the notes users add, with their embeddings.

Postgres is the record: a document's text, metadata and embedding live here, so an index is rebuilt
without re-encoding and always from the same vectors. A document whose text changes (a period
re-summarized after model outputs arrived, say) is a new row with a new id, the old row soft-deleted:
an index never holds a stale vector under a live id, and deletions leave search at once
(``deleted_at``; the index sync purges the rows once no index holds them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timedelta, timezone

import numpy as np

from ..errors import InvalidInput
from . import summaries as S

log = logging.getLogger(__name__)
US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FEATURES = {"rsi": "rsi_14", "pctb": "bb_pctb_20_2", "atr": "atr_14"}
KINDS = {"regime_hmm": "regime", "signal_lgbm": "signal", "pump_xgb": "pump"}
COLUMNS = ("doc_key", "kind", "symbol", "timeframe", "period_start", "period_end", "as_of", "text", "metadata",
           "tokens")


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def _us(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (t - EPOCH) // timedelta(microseconds=1)


# ---- summaries ------------------------------------------------------------------------------------
def load_series(store, info, timeframe: str, start: datetime | None) -> S.Series:
    """Candles of one series from ``start`` on, with the feature columns the summaries use."""
    c = store.read_candles(info.symbol, timeframe, start, None)
    series = S.Series(info.symbol, timeframe, c.ts_us, c.open, c.high, c.low, c.close, c.volume,
                      category=info.category or "", exchange=info.exchange or "")
    if not len(c.ts_us):
        return series
    have = {r[0] for r in store.conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'features'").fetchall()}
    cols = {k: v for k, v in FEATURES.items() if v in have}
    if cols:
        rows = store.conn.execute(
            "SELECT (extract(epoch FROM ts) * 1000000)::bigint, " + ", ".join(f'"{v}"' for v in cols.values())
            + " FROM features WHERE symbol = %s AND timeframe = %s AND ts >= %s ORDER BY features.ts",
            (info.symbol, timeframe, _dt(int(c.ts_us[0])))).fetchall()
        if rows:
            arr = np.array([[np.nan if x is None else x for x in r] for r in rows], dtype=np.float64)
            pos = np.searchsorted(c.ts_us, arr[:, 0].astype(np.int64))
            ok = (pos < len(c.ts_us)) & (c.ts_us[np.minimum(pos, len(c.ts_us) - 1)] == arr[:, 0].astype(np.int64))
            for j, k in enumerate(cols):
                col = np.full(len(c.ts_us), np.nan)
                col[pos[ok]] = arr[ok, j + 1]
                setattr(series, k, col)
    return series


def load_outputs(store, symbol: str, timeframe: str, start: datetime, closes: dict[int, float]) -> list[S.Output]:
    """Today's champions' current outputs for ``symbol`` from ``start`` on (``tp_<table>_for_candles``: history
    scored after the fact included, ``in_sample`` marked), each at its candle's close, when it became usable: a
    summary's ``as_of`` guard keeps every output after its period's end out of its text."""
    from ..core.timeframes import TIMEFRAMES
    from ..store.outputs import for_candles

    out: list[S.Output] = []
    for name, version, _, tf, ts, value, label, _, ins, *_ in for_candles(store.conn, "predictions",
                                                                         symbols=[symbol], start=start):
        kind = KINDS.get(name.split(".")[0])
        if kind:
            out.append(S.Output(_us(ts) + TIMEFRAMES[tf] * US, kind, name, str(version), tf, label or "",
                                float(value) if value is not None else float("nan"), bool(ins)))
    tf_us = TIMEFRAMES[timeframe] * US
    last: dict[tuple, tuple] = {}  # the longest step of each forecast
    for name, version, _, _, origin, step, median, _, ins, *_ in for_candles(
            store.conn, "forecasts", symbols=[symbol], timeframes=[timeframe], start=start):
        k = (name, origin)
        if k not in last or step > last[k][1]:
            last[k] = (version, step, median, ins)
    for (name, origin), (version, step, median, ins) in sorted(last.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        o = _us(origin)
        out.append(S.Output(o + tf_us, "forecast", name, str(version), timeframe, "", float(median), bool(ins),
                            int(step), {"close": closes.get(o)}))
    for name, version, _, _, ts, pattern, prob, bars, ins, *_ in for_candles(
            store.conn, "patterns", symbols=[symbol], timeframes=[timeframe], start=start):
        if prob >= 0.5:
            out.append(S.Output(_us(ts) + tf_us, "pattern", name, str(version), timeframe, pattern, float(prob),
                                bool(ins), int(bars)))
    return out


def outputs_changed_since(store, symbol: str, timeframe: str, since: datetime) -> datetime | None:
    """The earliest candle time of a summarized output of the series (today's champions'; predictions: any
    timeframe of the symbol) that became known or was superseded after ``since``: the periods from it on are
    summarized again. Walks the known_at and superseded_at indexes (only what changed since), not the
    series' history. A promotion is not a change here: the periods already summarized keep the outputs of the
    champion they were summarized with, the next ones read the new champion's."""
    champ = ("AND (model_name, model_version) IN (SELECT model_name, version FROM model_champions "
             "WHERE alias = 'champion' AND valid_to IS NULL)")
    parts = []
    for table, col, by_tf in (("predictions", "ts", False), ("forecasts", "origin_ts", True), ("patterns", "ts", True)):
        for when in ("known_at", "superseded_at"):
            parts.append(f"SELECT min({col}) AS t FROM {table} WHERE {when} > %(t)s AND symbol = %(s)s "
                         + ("AND timeframe = %(tf)s " if by_tf else "") + champ)
    row = store.conn.execute(f"SELECT min(t) FROM ({' UNION ALL '.join(parts)}) u",
                             {"t": since, "s": symbol, "tf": timeframe}).fetchone()
    return row[0] if row else None


def sync_summaries(store, count_tokens=None, max_tokens: int = 256, symbols: list[str] | None = None,
                   since: datetime | None = None, log=log) -> dict:
    """Summaries of every closed period not yet documented, for every enabled symbol and timeframe (or
    ``symbols``): each series continues from its last documented period (re-summarized: outputs may have
    arrived since), or from ``since`` when given (every period from it re-summarized). A summary whose text
    is unchanged is left alone; a changed one replaces its row (a new id)."""
    t0 = time.perf_counter()
    stats = {"series": 0, "periods": 0, "inserted": 0, "replaced": 0, "unchanged": 0, "max_tokens": 0,
             "parts_dropped": 0}
    infos = [store.require_symbol(s) for s in symbols] if symbols else [i for i in store.list_symbols() if i.enabled]
    # one summarizer at a time (the schedule's run and a `tp rag sync` side by side would insert the same keys)
    store.conn.execute("SELECT pg_advisory_lock(hashtext('tp:rag_summaries'))")
    try:
        _sync_all(store, infos, count_tokens, max_tokens, since, stats)
    finally:
        store.conn.execute("SELECT pg_advisory_unlock(hashtext('tp:rag_summaries'))")
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("summaries: %s", json.dumps(stats))
    return stats


def _sync_all(store, infos, count_tokens, max_tokens: int, since, stats: dict) -> None:
    for info in infos:
        for tf in info.timeframes:
            n = _sync_series(store, info, tf, count_tokens, max_tokens, since)
            stats["series"] += 1
            for k in ("periods", "inserted", "replaced", "unchanged", "parts_dropped"):
                stats[k] += n[k]
            stats["max_tokens"] = max(stats["max_tokens"], n["max_tokens"])


def _sync_series(store, info, tf: str, count_tokens, max_tokens: int, since: datetime | None) -> dict:
    period = S.period_of(tf)
    if since is None:
        last, synced = store.conn.execute(
            "SELECT max(period_start), coalesce((SELECT read_at FROM rag_sync_state WHERE symbol = %(s)s "
            "AND timeframe = %(tf)s), max(created_at)) FROM rag_documents WHERE symbol = %(s)s AND timeframe = %(tf)s "
            "AND kind = 'summary' AND deleted_at IS NULL", {"s": info.symbol, "tf": tf}).fetchone()
        from_us = _us(last) if last is not None else None
        # outputs that arrived or were superseded since the series was last read: their periods again
        changed = outputs_changed_since(store, info.symbol, tf, synced) if synced is not None else None
        if changed is not None and from_us is not None:
            from_us = min(from_us, int(S.period_start_us(period, np.array([_us(changed)]))[0]))
    else:
        from_us = int(S.period_start_us(period, np.array([_us(since)]))[0])
    read_from = None
    if from_us is not None:  # enough candles before it for the context of 20 periods that have candles
        from ..core.timeframes import TIMEFRAMES

        span_s = 31 * 86400 if period == "month" else S.PERIOD_S[period]
        per_period = -(-span_s // TIMEFRAMES[tf])
        tail = store.read_candles_tail(info.symbol, tf, _dt(from_us - 1), (S.CONTEXT_PERIODS + 1) * per_period)
        if len(tail.ts_us):  # from the start of the oldest period it reaches (markets with gaps included)
            read_from = _dt(int(S.period_start_us(period, tail.ts_us[:1])[0]))
        else:
            read_from = _dt(from_us)
    read_at = store.conn.execute("SELECT clock_timestamp()").fetchone()[0]  # before the outputs are read
    series = load_series(store, info, tf, read_from)
    n = {"periods": 0, "inserted": 0, "replaced": 0, "unchanged": 0, "max_tokens": 0, "parts_dropped": 0}
    if not len(series.ts_us):
        return n
    closes = dict(zip(series.ts_us.tolist(), series.close.tolist()))
    outputs = load_outputs(store, info.symbol, tf, _dt(int(series.ts_us[0])), closes)
    docs = S.summarize(series, outputs, count_tokens=count_tokens, max_tokens=max_tokens, since_us=from_us)
    n["periods"] = len(docs)
    if not docs:
        _mark_read(store.conn, info.symbol, tf, read_at)
        return n
    n["max_tokens"] = max(d.tokens for d in docs)
    n["parts_dropped"] = sum(len(d.dropped) for d in docs)
    existing = {k: (i, t) for i, k, t in store.conn.execute(
        "SELECT id, doc_key, text FROM rag_documents WHERE symbol = %s AND timeframe = %s AND kind = 'summary' "
        "AND deleted_at IS NULL AND period_start >= %s", (info.symbol, tf, _dt(docs[0].start_us))).fetchall()}
    new, stale = [], []
    for d in docs:
        old = existing.get(d.key)
        if old is not None and old[1] == d.text:
            n["unchanged"] += 1
            continue
        if old is not None:
            stale.append(old[0])
        new.append((d.key, "summary", d.symbol, d.timeframe, _dt(d.start_us), _dt(d.end_us), _dt(d.as_of_us),
                    d.text, json.dumps(d.metadata, sort_keys=True), d.tokens if d.tokens >= 0 else None))
    with store.conn.transaction():
        if stale:
            store.conn.execute("UPDATE rag_documents SET deleted_at = now() WHERE id = ANY(%s)", (stale,))
        _insert(store.conn, new)
        _mark_read(store.conn, info.symbol, tf, read_at)
    n["replaced"] = len(stale)
    n["inserted"] = len(new) - len(stale)
    return n


def _mark_read(conn, symbol: str, tf: str, read_at: datetime) -> None:
    conn.execute("INSERT INTO rag_sync_state (symbol, timeframe, read_at) VALUES (%s, %s, %s) ON CONFLICT "
                 "(symbol, timeframe) DO UPDATE SET read_at = EXCLUDED.read_at", (symbol, tf, read_at))


def _insert(conn, rows: list[tuple]) -> None:
    if not rows:
        return
    with conn.cursor() as cur, cur.copy(f"COPY rag_documents ({', '.join(COLUMNS)}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


# ---- notes --------------------------------------------------------------------------------------
def add_note(store, embedder, text: str, symbol: str | None = None, timeframe: str | None = None,
             at: datetime | None = None, source: str | None = None) -> list[int]:
    """A free-form document (a note, a news snippet): cut into pieces that fit the model's input, stored and
    embedded at once (searchable immediately; the index sync adds it to the index). The same text added
    twice is stored once. Returns the ids."""
    from ..core.timeframes import parse_timeframe

    text = (text or "").strip()
    if not text:
        raise InvalidInput("the note is empty", field="text")
    if symbol is not None:
        store.require_symbol(symbol)  # a clear error naming an unknown symbol
    if timeframe is not None:
        timeframe = parse_timeframe(timeframe)
    at = at or datetime.now(timezone.utc)
    digest = hashlib.sha1(f"{symbol}|{timeframe}|{text}".encode()).hexdigest()[:16]
    pieces = embedder.chunks(text)
    rows = []
    for i, piece in enumerate(pieces):
        meta = {"kind": "note", "symbol": symbol, "timeframe": timeframe, "as_of": at.isoformat(),
                "source": source, "piece": i + 1, "pieces": len(pieces)}
        rows.append((f"note|{digest}|{i + 1}", "note", symbol, timeframe, None, None, at, piece,
                     json.dumps(meta, sort_keys=True), embedder.count_tokens(piece)))
    with store.conn.transaction(), store.conn.cursor() as cur:  # the same note twice, even at once: stored once
        cur.executemany(f"INSERT INTO rag_documents ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
                        "ON CONFLICT (doc_key) WHERE deleted_at IS NULL DO NOTHING", rows)
    ids = [i for (i,) in store.conn.execute(
        "SELECT id FROM rag_documents WHERE doc_key = ANY(%s) AND deleted_at IS NULL ORDER BY id",
        ([r[0] for r in rows],)).fetchall()]
    embed_pending(store, embedder, ids=ids)
    return ids


# ---- embeddings ---------------------------------------------------------------------------------
def embed_pending(store, embedder, chunk: int = 1024, ids: list[int] | None = None, log=log) -> dict:
    """Encode the live documents not yet embedded with ``embedder``'s model (or embedded with another), in
    chunks, each chunk's vectors committed with it. Returns counts and the throughput."""
    t0 = time.perf_counter()
    done, encode_s = 0, 0.0
    last_id = 0
    while True:
        q = ("SELECT id, text FROM rag_documents WHERE deleted_at IS NULL AND id > %s "
             "AND (embedding IS NULL OR embedding_model IS DISTINCT FROM %s)")
        params: list = [last_id, embedder.name]
        if ids is not None:
            q += " AND id = ANY(%s)"
            params.append(list(ids))
        rows = store.conn.execute(q + " ORDER BY id LIMIT %s", (*params, chunk)).fetchall()
        if not rows:
            break
        t = time.perf_counter()
        vecs = embedder.encode([r[1] for r in rows])
        encode_s += time.perf_counter() - t
        with store.conn.transaction(), store.conn.cursor() as cur:
            cur.executemany("UPDATE rag_documents SET embedding = %s, embedding_model = %s, embedded_at = now() "
                            "WHERE id = %s", [(vecs[j].astype("<f4").tobytes(), embedder.name, rows[j][0])
                                              for j in range(len(rows))])
        done += len(rows)
        last_id = rows[-1][0]
    total = time.perf_counter() - t0
    out = {"embedded": done, "seconds": round(total, 3), "encode_seconds": round(encode_s, 3),
           "docs_per_s": round(done / total, 1) if done and total > 0 else None, "model": embedder.name}
    if done:
        log.info("embedded %d documents with %s (%.1f docs/s)", done, embedder.name, out["docs_per_s"])
    return out


def vectors(conn, ids, dim: int) -> np.ndarray:
    """The stored embeddings of ``ids``, in that order."""
    ids = [int(i) for i in ids]
    if not ids:
        return np.zeros((0, dim), dtype=np.float32)
    got = dict(conn.execute("SELECT id, embedding FROM rag_documents WHERE id = ANY(%s)", (ids,)).fetchall())
    return np.stack([np.frombuffer(got[i], dtype="<f4") for i in ids]).astype(np.float32, copy=False)


def all_vectors(conn, model: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of every live document embedded with ``model``, by id (binary COPY: no parsing)."""
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(
            "COPY (SELECT id, embedding FROM rag_documents WHERE deleted_at IS NULL AND embedding IS NOT NULL "
            "AND embedding_model = " + _literal(conn, model) + " ORDER BY id) TO STDOUT (FORMAT BINARY)") as cp:
        for chunk in cp:
            buf += chunk
    return _parse_id_vectors(bytes(buf), dim)


def _literal(conn, value: str) -> str:
    from psycopg import sql

    return sql.Literal(value).as_string(conn)


def _parse_id_vectors(data: bytes, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (bigint, bytea of dim float32) from a binary COPY: fixed-size tuples, read as one array."""
    ext = int.from_bytes(data[15:19], "big") if len(data) >= 19 else 0
    header = 11 + 4 + 4 + ext
    body = data[header:-2]  # less the header (and its extension) and the trailer (-1 as int16)
    row = np.dtype([("n", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"), ("v", "<f4", (dim,))])
    if not body:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    if len(body) % row.itemsize:
        raise RuntimeError(f"embeddings of unexpected size in rag_documents (expected {dim} float32 each)")
    arr = np.frombuffer(body, dtype=row)
    if not ((arr["n"] == 2).all() and (arr["l1"] == 8).all() and (arr["l2"] == 4 * dim).all()):
        raise RuntimeError(f"embeddings of unexpected size in rag_documents (expected {dim} float32 each)")
    return arr["id"].astype(np.int64), np.ascontiguousarray(arr["v"], dtype=np.float32)

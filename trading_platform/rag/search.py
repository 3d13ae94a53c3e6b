"""Search the knowledge base: top-k documents with scores and metadata, filters applied before the cut.

With no filter, the FAISS index answers (deleted documents excluded inside the search by an ID
selector, so they never take a place in the top k), and the documents embedded since the last sync are
scored exactly beside it. With a filter (symbol, timeframe, since, kind), the matching ids come from
Postgres first: at most ``TP_RAG_EXACT_FILTER_MAX`` of them are scored exactly from their stored
vectors (a narrow filter: exact and cheap), more go to the index with an ID selector holding them. The
optional answer step sends the retrieved documents to an Ollama server (``OLLAMA_URL``).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from ..errors import InvalidInput, PlatformError
from .documents import vectors

log = logging.getLogger(__name__)


@dataclass
class Hit:
    id: int
    score: float
    text: str
    kind: str
    symbol: str | None
    timeframe: str | None
    period_start: str | None
    period_end: str | None
    metadata: dict

    def as_dict(self) -> dict:
        return asdict(self)


def _filters(symbol, timeframe, since, kind) -> tuple[str, list]:
    from ..core.timeframes import parse_timeframe

    where, params = [], []
    if symbol:
        where.append("symbol = %s")
        params.append(symbol)
    if timeframe:
        where.append("timeframe = %s")
        params.append(parse_timeframe(timeframe))
    if since is not None:
        where.append("coalesce(period_end, as_of, created_at) >= %s")
        params.append(since)
    if kind:
        if kind not in ("summary", "note"):
            raise InvalidInput(f"kind {kind!r} is not one of summary, note", field="kind")
        where.append("kind = %s")
        params.append(kind)
    return " AND ".join(where), params


def search(store, query, k: int = 10, *, symbol: str | None = None, timeframe: str | None = None,
           since: datetime | None = None, kind: str | None = None, cfg=None, embedder=None) -> list[Hit]:
    """The ``k`` documents closest to ``query`` (text, or a normalized vector of the index's model) among those
    matching the filters, best first."""
    from . import index as ix
    from .settings import rag_settings

    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}", field="k")
    cfg = cfg or rag_settings()
    conn = store.conn
    index, m = ix.load(cfg.index_dir)  # the CPU index: ID selectors (filters, deletions) work there
    model = m.model if m is not None else cfg.model
    if m is not None and m.model != cfg.model:
        raise InvalidInput(f"the index ({m.name}) was built with the embedding model {m.model!r} and TP_EMBED_MODEL "
                           f"is {cfg.model!r}: rebuild it (tp rag sync --rebuild) or set the model back",
                           field="TP_EMBED_MODEL")
    if isinstance(query, str):
        if not query.strip():
            raise InvalidInput("the query is empty", field="query")
        from .embed import get_embedder

        emb = embedder or get_embedder(model)
        q = emb.encode([query])[0]
    else:
        q = np.asarray(query, dtype=np.float32).ravel()
    where, params = _filters(symbol, timeframe, since, kind)
    base = "deleted_at IS NULL AND embedding IS NOT NULL AND embedding_model = %s"
    scored: dict[int, float] = {}
    if where or index is None:
        ids = np.array([r[0] for r in conn.execute(
            f"SELECT id FROM rag_documents WHERE {base}" + (f" AND {where}" if where else "") + " ORDER BY id",
            [model, *params]).fetchall()], dtype=np.int64)
        if index is None or len(ids) <= cfg.exact_filter_max:
            _exact(conn, q, ids, k, scored)
        else:
            held = ix.ids_of(index)
            inside = np.intersect1d(ids, held, assume_unique=True)
            _faiss(index, m, q, k, scored, allow=inside)
            _exact(conn, q, np.setdiff1d(ids, inside, assume_unique=True), k, scored)
    else:
        deleted = [r[0] for r in conn.execute("SELECT id FROM rag_documents WHERE deleted_at IS NOT NULL").fetchall()]
        deny = np.array(sorted(set(deleted) | set(m.tombstones)), dtype=np.int64)
        _faiss(ix.load(cfg.index_dir, gpu=True)[0] if not len(deny) else index, m, q, k, scored, deny=deny)
        live = np.array([r[0] for r in conn.execute(f"SELECT id FROM rag_documents WHERE {base}",
                                                    (model,)).fetchall()], dtype=np.int64)
        _exact(conn, q, np.setdiff1d(live, ix.ids_of(index)), k, scored)  # embedded since the last sync
    top = sorted(scored.items(), key=lambda t: (-t[1], t[0]))
    rows = {r[0]: r for r in conn.execute(  # the filters once more: nothing outside them comes back, ever
        "SELECT id, text, kind, symbol, timeframe, period_start, period_end, metadata FROM rag_documents "
        f"WHERE id = ANY(%s) AND {base}" + (f" AND {where}" if where else ""),
        [[i for i, _ in top], model, *params]).fetchall()}
    out = []
    for i, s in top:
        r = rows.get(i)
        if r is None:  # purged between the index and this read
            continue
        out.append(Hit(int(i), round(float(s), 6), r[1], r[2], r[3], r[4],
                       r[5].isoformat() if r[5] else None, r[6].isoformat() if r[6] else None, r[7] or {}))
        if len(out) == k:
            break
    return out


def _exact(conn, q, ids, k, scored) -> None:
    if not len(ids):
        return
    for lo in range(0, len(ids), 50_000):
        part = ids[lo:lo + 50_000]
        s = vectors(conn, part, len(q)) @ q
        best = np.argsort(-s, kind="stable")[:k]
        scored.update({int(part[j]): float(s[j]) for j in best})


def _faiss(index, m, q, k, scored, allow=None, deny=None) -> None:
    from .index import faiss

    f = faiss()
    params = None
    if allow is not None:
        if not len(allow):
            return
        sel = f.IDSelectorBatch(allow)
    elif deny is not None and len(deny):
        sel = f.IDSelectorNot(f.IDSelectorBatch(deny))
    else:
        sel = None
    if sel is not None:
        if m.kind == "hnsw":
            params = f.SearchParametersHNSW(sel=sel, efSearch=int(m.params["ef_search"]))
        elif m.kind == "ivf":
            params = f.SearchParametersIVF(sel=sel, nprobe=int(m.params["nprobe"]))
        else:
            params = f.SearchParameters(sel=sel)
    d, i = index.search(q.reshape(1, -1).astype(np.float32), k, params=params)
    for s, j in zip(d[0], i[0]):
        if j >= 0:
            scored[int(j)] = float(s)


# ---- the optional answer step ---------------------------------------------------------------------
class NoLLM(PlatformError):
    pass


def prompt(question: str, hits: list[Hit]) -> str:
    ctx = "\n".join(f"[{n}] ({h.kind}{', ' + h.symbol if h.symbol else ''}"
                    f"{' ' + h.timeframe if h.timeframe else ''}{', ' + h.period_start[:16] if h.period_start else ''})"
                    f" {h.text}" for n, h in enumerate(hits, 1))
    return ("You answer questions about market history using only the documents below. Cite them by number, "
            "and say so when they do not contain the answer.\n\nDocuments:\n" + ctx +
            f"\n\nQuestion: {question}\nAnswer:")


def answer(question: str, hits: list[Hit], cfg=None, timeout_s: float = 120.0) -> dict:
    """An answer from the configured Ollama server built on ``hits``; NoLLM when none is configured."""
    from .settings import rag_settings

    cfg = cfg or rag_settings()
    if not cfg.ollama_url:
        raise NoLLM("no LLM is configured: set OLLAMA_URL to an Ollama server (e.g. http://localhost:11434) to get "
                    "answers; the retrieved documents are shown without one", field="OLLAMA_URL")
    text = prompt(question, hits)
    req = urllib.request.Request(cfg.ollama_url.rstrip("/") + "/api/generate", method="POST",
                                 data=json.dumps({"model": cfg.ollama_model, "prompt": text,
                                                  "stream": False}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            body = json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        raise PlatformError(f"the LLM at OLLAMA_URL answered HTTP {e.code}: {e.read()[:300]!r}",
                            field="OLLAMA_URL") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise PlatformError(f"the LLM at OLLAMA_URL ({cfg.ollama_url}) could not be reached: {e}",
                            field="OLLAMA_URL") from None
    return {"model": cfg.ollama_model, "answer": str(body.get("response", "")).strip(),
            "documents": [h.id for h in hits]}

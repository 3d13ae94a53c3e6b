"""The knowledge base: search, notes, the sync of summaries, embeddings and index, its status (``tp rag``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInput
from ._context import store_or_open
from .market import parse_time

KINDS = ("summary", "note")


def search(query: str, *, k: int = 10, symbol: str | None = None, timeframe: str | None = None, since=None,
           kind: str | None = None, answer: bool = False, store=None) -> dict:
    """The ``k`` documents closest to ``query``, filters applied before the cut; ``answer`` also asks the LLM
    at ``OLLAMA_URL`` given them (its error, when there is none, is in the answer)."""
    from ..rag.search import NoLLM
    from ..rag.search import answer as ask
    from ..rag.search import search as find

    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", field="kind")
    since = parse_time(since, "since")
    with store_or_open(store) as s:
        if symbol:  # documents name managed symbols only (a note's symbol is checked): 'no match' would mislead
            s.require_symbol(symbol)
        hits = find(s, query, k=k, symbol=symbol, timeframe=timeframe, since=since, kind=kind)
    out: dict = {"query": query, "hits": [h.as_dict() for h in hits]}
    if answer:
        try:
            out["answer"] = ask(query, hits)
        except NoLLM as e:
            out["answer"] = {"error": e.message}
    return out


def add_note(text: str, *, symbol: str | None = None, timeframe: str | None = None, at=None,
             literal: bool = False, store=None) -> dict:
    """Store and embed a note or news snippet at once: ``text`` is a UTF-8 text file's path or the text itself
    (``literal``: always the text). The same text added twice is stored once."""
    from ..rag.documents import add_note as add
    from ..rag.embed import get_embedder

    src, source = text, None
    path = Path(text)
    try:
        is_file = not literal and len(text) < 4096 and path.is_file()
    except (OSError, ValueError):  # a long text is not a file name
        is_file = False
    if is_file:
        try:
            src, source = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError:
            raise InvalidInput(f"{path} is not a UTF-8 text file", field="text") from None
    at = parse_time(at, "at")
    with store_or_open(store) as s:
        ids = add(s, get_embedder(), src, symbol=symbol, timeframe=timeframe, at=at, source=source or "tp rag add")
    return {"ids": ids, "pieces": len(ids)}


def sync(*, rebuild: bool = False, since=None, symbols=None, store=None) -> dict:
    """Summarize new periods (every period from ``since``), embed new documents, update (``rebuild``: rebuild)
    the index."""
    from ..rag.documents import embed_pending, sync_summaries
    from ..rag.embed import get_embedder
    from ..rag.index import sync_index
    from ..rag.settings import rag_settings

    since = parse_time(since, "since")
    # text: comma-separated ("" as not given: every enabled symbol), or a list
    names = ([x.strip() for x in symbols.split(",")] if symbols else None) if isinstance(symbols, str) else symbols
    cfg = rag_settings()
    emb = get_embedder(cfg.model)
    with store_or_open(store) as s:
        made = sync_summaries(s, emb.count_tokens, emb.max_tokens, symbols=names, since=since)
        embedded = embed_pending(s, emb)
        idx = sync_index(s, cfg, rebuild=rebuild)
    return {"summaries": made, "embedded": embedded, "index": idx}


def status(*, store=None) -> dict:
    """Documents, notes, those embedded with the configured model, deleted ones not yet purged, and the
    current index version."""
    from ..rag.index import current
    from ..rag.settings import rag_settings
    from ..store.rag import document_counts

    cfg = rag_settings()
    with store_or_open(store) as s:
        st = document_counts(s.conn, cfg.model)
    m = current(cfg.index_dir)
    return {**st, "model": cfg.model, "index": None if m is None else {
        "version": m.version, "kind": m.kind, "count": m.count, "model": m.model, "built_at": m.built_at,
        "recall_at_10": m.recall_at_10, "tombstones": len(m.tombstones), "dir": str(cfg.index_dir)}}

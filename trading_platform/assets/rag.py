"""The knowledge base: period summaries and notes embedded in Postgres, and the FAISS index over them.

``rag_documents`` summarizes every closed period not yet documented and embeds every document not yet
embedded (the notes ``tp rag add`` stores are embedded at once); ``rag_index`` adds what the index does
not hold and takes out what was deleted, or rebuilds it from the stored vectors (config ``rebuild``).
``rag_sync_job`` runs both; ``rag_sync_schedule`` runs it every 5 minutes (run kind ``rag``: one at a
time, and never ahead of live runs).
"""

from datetime import datetime
from typing import List, Optional

from dagster import (
    AssetExecutionContext,
    Config,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    asset,
    define_asset_job,
    in_process_executor,
)

from ..errors import InvalidInput
from ..resources import MarketDB
from .watchdog import without_watchdog_checks

GROUP = "rag"


class RagDocumentsConfig(Config):
    since: Optional[str] = None      # re-summarize every period from this date (default: continue each series)
    symbols: Optional[List[str]] = None  # default: every enabled symbol


class RagIndexConfig(Config):
    rebuild: bool = False            # rebuild from the stored vectors (no re-encoding)


def _since(value: Optional[str]) -> Optional[datetime]:
    from ..core.timeframes import parse_time

    return parse_time(value, "since")


@asset(group_name=GROUP, deps=["features", "predictions", "forecasts", "patterns"],
       description="Text summaries of every closed period (each hour of 5m data, each day of 1h data, ...) with "
                   "their notable features and the model outputs known at the period's end, and the notes users "
                   "add; embedded with the configured sentence-transformers model, vectors stored in Postgres.")
def rag_documents(context: AssetExecutionContext, config: RagDocumentsConfig, market_db: MarketDB):
    from ..rag.documents import embed_pending, sync_summaries
    from ..rag.embed import get_embedder
    from ..store.rag import embedding_backlog

    since = _since(config.since)
    if config.symbols is not None and not config.symbols:  # [] read as every symbol
        raise InvalidInput("symbols: name at least one symbol, or leave it out for every enabled symbol",
                           field="symbols")
    with market_db.open() as store:
        for symbol in config.symbols or ():  # before the embedding model loads (13 s), not after
            store.require_symbol(symbol)
    emb = get_embedder()
    with market_db.open() as store:
        made = sync_summaries(store, emb.count_tokens, emb.max_tokens, symbols=config.symbols,
                              since=since, log=context.log)
        embedded = embed_pending(store, emb, log=context.log)
        total, pending = embedding_backlog(store.conn, emb.name)
    return MaterializeResult(metadata={
        "documents": int(total), "not_embedded": int(pending), "summaries_inserted": made["inserted"],
        "summaries_replaced": made["replaced"], "summaries_unchanged": made["unchanged"],
        "max_tokens": made["max_tokens"], "token_limit": emb.max_tokens, "parts_dropped": made["parts_dropped"],
        "embedded": embedded["embedded"], "docs_per_s": embedded["docs_per_s"] or 0.0,
        "embedding_model": emb.name, "device": emb.device})


@asset(group_name=GROUP, deps=[rag_documents],
       description="FAISS index over the stored embeddings (exact up to TP_RAG_EXACT_MAX vectors, HNSW or IVF "
                   "above, recall@10 measured at build): a new version under $TP_HOME/rag per change.")
def rag_index(context: AssetExecutionContext, config: RagIndexConfig, market_db: MarketDB):
    from ..rag.index import sync_index
    from ..rag.settings import rag_settings

    cfg = rag_settings()
    with market_db.open() as store:
        out = sync_index(store, cfg, rebuild=config.rebuild, log=context.log)
    md = {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool)) and v is not None}
    if out.get("path"):
        md["path"] = MetadataValue.path(out["path"])
    return MaterializeResult(metadata=md)


rag_assets = [rag_documents, rag_index]

rag_sync_job = define_asset_job(
    "rag_sync_job", selection=without_watchdog_checks(rag_assets), executor_def=in_process_executor, tags={"tp/run_kind": "rag"},
    description="Summarize and embed what is new, then bring the FAISS index up to date (incremental).")

rag_sync_schedule = ScheduleDefinition(
    name="rag_sync_schedule", job=rag_sync_job, cron_schedule="*/5 * * * *",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every 5 minutes: new period summaries and notes embedded and added to the index.")

"""Knowledge-base (``rag_documents``) queries outside the document and index modules (``rag/``): the backlog
the sync embeds, the counts its status reports."""

from __future__ import annotations


def embedding_backlog(conn, model: str) -> tuple[int, int]:
    """(live documents, those not embedded with ``model`` yet): every live row is counted (one scan)."""
    total, pending = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE embedding IS NULL OR embedding_model IS DISTINCT FROM %s) "
        "FROM rag_documents WHERE deleted_at IS NULL", (model,)).fetchone()
    return int(total), int(pending)


def document_counts(conn, model: str) -> dict:
    """Live documents, notes among them, those embedded with ``model``, and deleted ones not yet purged
    (one scan of ``rag_documents``)."""
    total, embedded, deleted, notes = conn.execute(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NULL AND "
        "embedding_model = %s), count(*) FILTER (WHERE deleted_at IS NOT NULL), count(*) FILTER (WHERE "
        "deleted_at IS NULL AND kind = 'note') FROM rag_documents", (model,)).fetchone()
    return {"documents": int(total), "notes": int(notes), "embedded": int(embedded),
            "deleted_not_purged": int(deleted)}


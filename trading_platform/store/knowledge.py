"""Reads of the knowledge base's documents (``rag_documents``) that its status reports."""

from __future__ import annotations


def document_counts(conn, model: str) -> dict:
    """Live documents, notes among them, those embedded with ``model``, and deleted ones not yet purged
    (one scan of ``rag_documents``)."""
    total, embedded, deleted, notes = conn.execute(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NULL AND "
        "embedding_model = %s), count(*) FILTER (WHERE deleted_at IS NOT NULL), count(*) FILTER (WHERE "
        "deleted_at IS NULL AND kind = 'note') FROM rag_documents", (model,)).fetchone()
    return {"documents": int(total), "notes": int(notes), "embedded": int(embedded),
            "deleted_not_purged": int(deleted)}

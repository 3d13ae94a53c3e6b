"""Knowledge-base (``rag_documents``) queries outside the document and index modules (``rag/``)."""

from __future__ import annotations


def embedding_backlog(conn, model: str) -> tuple[int, int]:
    """(live documents, those not embedded with ``model`` yet): every live row is counted (one scan)."""
    total, pending = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE embedding IS NULL OR embedding_model IS DISTINCT FROM %s) "
        "FROM rag_documents WHERE deleted_at IS NULL", (model,)).fetchone()
    return int(total), int(pending)

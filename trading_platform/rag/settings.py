"""RAG configuration from the environment (read at call time; a bad value fails naming the variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput

ANN_KINDS = ("hnsw", "ivf")


@dataclass(frozen=True)
class RagSettings:
    model: str              # TP_EMBED_MODEL
    index_dir: Path         # TP_RAG_DIR (default $TP_HOME/rag)
    exact_max: int          # TP_RAG_EXACT_MAX: up to this many vectors the index is exact (flat inner product)
    ann: str                # TP_RAG_ANN: hnsw | ivf above exact_max
    hnsw_m: int             # TP_RAG_HNSW_M
    hnsw_ef_search: int     # TP_RAG_HNSW_EF_SEARCH
    hnsw_ef_construction: int
    ivf_nprobe: int         # TP_RAG_IVF_NPROBE
    exact_filter_max: int   # TP_RAG_EXACT_FILTER_MAX: a filter matching at most this many is scored exactly
    keep_versions: int      # TP_RAG_KEEP: index versions kept on disk
    ollama_url: str | None  # OLLAMA_URL: the optional answer step
    ollama_model: str       # TP_OLLAMA_MODEL


def _int(name: str, default: int, low: int = 1, high: int | None = None) -> int:
    from ..settings import env_number

    return env_number(name, default, cast=int, minimum=low, maximum=high)


EMBED_BATCH_MAX = 65_536


def embed_batch() -> int:
    """``TP_EMBED_BATCH`` (default 64): texts per encoding batch, an integer in [1, EMBED_BATCH_MAX]."""
    return _int("TP_EMBED_BATCH", 64, 1, EMBED_BATCH_MAX)


def rag_settings() -> RagSettings:
    from ..settings import get_settings
    from .embed import model_name

    ann = (os.environ.get("TP_RAG_ANN") or "hnsw").strip().lower()
    if ann not in ANN_KINDS:
        raise InvalidInput(f"TP_RAG_ANN={ann!r} is not one of {', '.join(ANN_KINDS)}", field="TP_RAG_ANN")
    home = get_settings().home
    return RagSettings(
        model=model_name(),
        index_dir=Path(os.environ.get("TP_RAG_DIR") or home / "rag").expanduser().resolve(),
        exact_max=_int("TP_RAG_EXACT_MAX", 50_000),
        ann=ann,
        hnsw_m=_int("TP_RAG_HNSW_M", 32, 4),
        hnsw_ef_search=_int("TP_RAG_HNSW_EF_SEARCH", 128),
        hnsw_ef_construction=_int("TP_RAG_HNSW_EF_CONSTRUCTION", 80),
        ivf_nprobe=_int("TP_RAG_IVF_NPROBE", 32),
        exact_filter_max=_int("TP_RAG_EXACT_FILTER_MAX", 20_000, 0),
        keep_versions=_int("TP_RAG_KEEP", 5),
        ollama_url=(os.environ.get("OLLAMA_URL") or "").strip() or None,
        ollama_model=(os.environ.get("TP_OLLAMA_MODEL") or "llama3.2").strip(),
    )

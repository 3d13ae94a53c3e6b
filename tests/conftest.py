"""Shared fixtures: a real PostgreSQL server (a throwaway embedded cluster for the
session, a fresh database per test) and real Dagster instances."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
# one model signing key for the session (models trained under one TP_HOME are served under another); the key
# file an embedded home generates is tested in tests/test_signing.py
os.environ.setdefault("TP_MODEL_SIGNING_KEY", __import__("secrets").token_hex(32))


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the whole session: TP_TEST_DATABASE_URL (admin DSN) or an embedded one."""
    external = os.environ.get("TP_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from trading_platform.store.embedded import ensure_embedded, stop_embedded

    tmp = Path(tempfile.mkdtemp(prefix="tp-test-pg-"))
    dsn = ensure_embedded(tmp / "pg")
    admin = dsn.replace("/trading?", "/postgres?")
    yield admin
    stop_embedded(tmp / "pg")
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def dsn(pg_server):
    """A fresh, empty database on the test server; dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg_server.replace("/postgres?", f"/{name}?") if "/postgres?" in pg_server else _with_db(pg_server, name)
    yield url
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _with_db(dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    d = conninfo_to_dict(dsn)
    d["dbname"] = name
    return make_conninfo(**d)


@pytest.fixture
def store(dsn):
    from trading_platform.store.db import connect

    s = connect(dsn)
    yield s
    s.close()


@pytest.fixture
def instance():
    from dagster import DagsterInstance

    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def tp_env(tmp_path, dsn):
    """Environment for running `tp` as a user would: its own TP_HOME and DAGSTER_HOME, over a throwaway
    database in the development shape (TP_EMBEDDED=1: a local Dagster instance and MLflow store, the schema
    migrated on first use; tests/test_production.py covers the production shape)."""
    env = dict(os.environ)
    env.update({"TP_EMBEDDED": "1", "TP_HOME": str(tmp_path / "home"), "TP_DATABASE_URL": dsn,
                "DAGSTER_HOME": str(tmp_path / "home" / "dagster"), "TP_LOG_LEVEL": "WARNING"})
    return env


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


MODEL_SYMBOLS = ["BTC/USDT", "ETH/USDT"]
MODEL_MONTHS = ("2025-01-01", "2025-04-01")


@pytest.fixture(scope="session")
def model_market(pg_server):
    """Two crypto symbols with 5m and 1h candles and features for Jan-Apr 2025, built once for the model
    tests (which only read it, or write model outputs they clear themselves)."""
    import psycopg
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.features import features
    from trading_platform.assets.market_data import market_assets
    from trading_platform.assets.partitions import market_key
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.resources import MarketDB, MarketSource
    from trading_platform.store.db import connect
    from trading_platform.symbols import sync_partitions

    name = f"m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    dsn = pg_server.replace("/postgres?", f"/{name}?")
    instance = DagsterInstance.ephemeral()
    with connect(dsn) as store:
        for s in MODEL_SYMBOLS:
            store.add_symbol(SymbolInfo.create(s, timeframes=["5m", "1h"]))
        sync_partitions(instance, store)
    res = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec="synthetic:7")}
    for s in MODEL_SYMBOLS:
        materialize([*market_assets, features], instance=instance, resources=res, tags={
            "dagster/asset_partition_range_start": str(market_key(s, MODEL_MONTHS[0])),
            "dagster/asset_partition_range_end": str(market_key(s, MODEL_MONTHS[1]))})
    yield dsn, instance
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


OUTPUT_TABLES = ("predictions", "forecasts", "patterns", "output_series", "output_coverage", "model_champions",
                 "model_refusals")


def model_runner(dsn, instance, tmp_path):
    """(run(asset, config, partition_key, tags), resources, dsn) against a fresh MLflow store; the outputs and the
    champion history in ``dsn`` cleared."""
    import psycopg
    from dagster import materialize

    from trading_platform.resources import MarketDB, MLflowResource, ModelServer, serving

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    serving._MEMORY.clear()
    serving._ALIASES.clear()
    serving._VERIFIED.clear()
    resources = {"market_db": MarketDB(database_url=dsn),
                 "mlflow": MLflowResource(tracking_uri=uri, artifact_root=str(tmp_path / "artifacts")),
                 "model_server": ModelServer(tracking_uri=uri, cache_dir=str(tmp_path / "cache"), device="cpu")}

    def run(asset, config=None, partition_key=None, raise_on_error=True, tags=None):
        key = asset.key.to_python_identifier()
        return materialize([asset], instance=instance, resources=resources, partition_key=partition_key, tags=tags,
                           run_config={"ops": {key: {"config": config}}} if config else None,
                           raise_on_error=raise_on_error)

    with psycopg.connect(dsn, autocommit=True) as c:
        for table in OUTPUT_TABLES:
            c.execute(f"DELETE FROM {table}")
    return run, resources, dsn


@pytest.fixture
def model_env(model_market, tmp_path):
    """(run(asset, config, partition_key), resources, dsn) on the shared model market: read its candles and
    features, write model outputs only."""
    dsn, instance = model_market
    return model_runner(dsn, instance, tmp_path)


def copy_database(pg_server: str, dsn: str) -> str:
    """A new database on the test server made from ``dsn``'s as a template; its DSN."""
    import time

    import psycopg

    name = f"c_{uuid.uuid4().hex[:10]}"
    template = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(pg_server, autocommit=True) as c:
        for _ in range(40):  # a template copy needs the template to have no session open
            try:
                c.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.5)
    return pg_server.replace("/postgres?", f"/{name}?")


def drop_database(pg_server: str, dsn: str) -> None:
    import psycopg

    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def market_copy(model_market, pg_server):
    """A writable copy of the model market: for tests that revise candles or make gaps."""
    copy = copy_database(pg_server, model_market[0])
    yield copy
    drop_database(pg_server, copy)


def signed_versions(client, name: str, n: int, where: Path) -> None:
    """``n`` versions of ``name`` registered by hand (a stub artifact each), signed as `tp models sign` does: what
    the serving resource and `tp models promote` accept."""
    from trading_platform.models.registry import sign

    client.create_registered_model(name)
    for i in range(n):
        art = Path(where) / f"{name}-{i + 1}"
        art.mkdir(parents=True, exist_ok=True)
        (art / "MLmodel").write_text(f"flavors: {{}}\nversion: {i + 1}\n")
        mv = client.create_model_version(name, source=str(art), run_id=None)
        sign(client, name, str(mv.version))

"""tp backup / tp restore: a deployment with candles, features, a trained model, predictions and Dagster runs,
backed up, restored into another (empty) deployment elsewhere, and compared table by table and model by model.
Real PostgreSQL (pg_dump/pg_restore), MLflow on SQLite, Dagster on its SQLite storage."""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest

from conftest import copy_database, drop_database
from test_models_mlflow import ANY_BASELINE, APRIL, STRONG, md
from trading_platform.errors import InvalidInput


def _use(monkeypatch, home, dsn):
    monkeypatch.setenv("TP_EMBEDDED", "1")
    monkeypatch.setenv("TP_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("TP_DATABASE_URL", dsn)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
    monkeypatch.delenv("TP_RAG_DIR", raising=False)


def _tables(dsn) -> dict[str, tuple[int, str]]:
    """Every table of the market store: (rows, md5 of its rows in a fixed order)."""
    with psycopg.connect(dsn) as c:
        names = [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return {t: c.execute(f'SELECT count(*), md5(coalesce(string_agg(x::text, \'|\' ORDER BY x::text), \'\')) '
                             f'FROM "{t}" x').fetchone() for t in names}


def _registry(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client, {(m.name, str(v.version), tuple(sorted((m.aliases or {}).items())))
                    for m in client.search_registered_models() for v in client.search_model_versions(f"name='{m.name}'")}


@pytest.fixture
def deployment(model_market, pg_server, tmp_path, monkeypatch):
    """Deployment A: a copy of the model market, a pump champion, April's predictions, runs in Dagster's storage."""
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.models import predictions, pump_xgb
    from trading_platform.instance import ensure_dagster_home
    from trading_platform.resources import MarketDB, MLflowResource, ModelServer, serving

    dsn = copy_database(pg_server, model_market[0])
    home = tmp_path / "a"
    _use(monkeypatch, home, dsn)
    ensure_dagster_home()
    serving._MEMORY.clear()
    resources = {"market_db": MarketDB(database_url=dsn), "mlflow": MLflowResource(),
                 "model_server": ModelServer(device="cpu")}
    with psycopg.connect(dsn, autocommit=True) as c:  # the copy's outputs are the shared market's tests'
        for t in ("predictions", "forecasts", "patterns", "output_series", "output_coverage", "model_champions"):
            c.execute(f"DELETE FROM {t}")
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("symbol", ["BTC/USDT", "ETH/USDT"])
        r = materialize([pump_xgb], instance=instance, resources=resources,
                        run_config={"ops": {"models__pump_xgb": {"config": {**STRONG, **ANY_BASELINE}}}})
        assert md(r, pump_xgb)["gate_decision"] == "champion"
        materialize([predictions], instance=instance, resources=resources, partition_key=APRIL)
        runs = sorted(r.dagster_run.run_id for r in instance.get_run_records())
    yield {"dsn": dsn, "home": home, "runs": runs}
    drop_database(pg_server, dsn)


def test_backup_wipe_restore_gives_every_table_run_and_served_model_back(deployment, dsn, tmp_path, monkeypatch):
    from dagster import DagsterInstance

    from trading_platform.backup import backup, read_manifest, restore
    from trading_platform.resources import ModelServer, serving
    from trading_platform.resources.serving import ModelRefused

    a = deployment
    before = _tables(a["dsn"])
    assert before["predictions"][0] > 0 and before["ohlcv"][0] > 0
    _, models_before = _registry(f"sqlite:///{a['home']}/mlflow.db")
    served_before = ModelServer(device="cpu").load("pump_xgb")
    out = backup(tmp_path / "bk")
    assert out["parts"]["market"]["tables"]["predictions"] == before["predictions"][0]
    # the model signing key never goes into a backup (keep it apart)
    key = os.environ["TP_MODEL_SIGNING_KEY"].encode()
    for p in (tmp_path / "bk").rglob("*"):
        assert not p.is_file() or key not in p.read_bytes(), p

    # B: another home, another (empty) database: an empty deployment
    _use(monkeypatch, tmp_path / "b", dsn)
    serving._MEMORY.clear()
    serving._VERIFIED.clear()
    got = restore(tmp_path / "bk")
    assert got["rows_diff"] == {} and got["artifact_locations_rewritten"] > 0  # the artifact root moved
    assert _tables(dsn) == before  # every table, row for row
    with DagsterInstance.get() as instance:
        assert sorted(r.dagster_run.run_id for r in instance.get_run_records()) == a["runs"]
    client, models_after = _registry(f"sqlite:///{tmp_path}/b/mlflow.db")
    assert models_after == models_before
    # served from B's own files: the same model, the same predictions, the signature checked
    served_after = ModelServer(device="cpu").load("pump_xgb")
    import xgboost as xgb

    X = np.random.default_rng(0).normal(size=(50, len(served_before.feature_names)))
    np.testing.assert_array_equal(served_after.model.predict(xgb.DMatrix(X, feature_names=served_after.feature_names)),
                                  served_before.model.predict(xgb.DMatrix(X, feature_names=served_before.feature_names)))
    assert str(tmp_path / "b") in client.get_model_version("pump_xgb", "1").source or \
        str(tmp_path / "b") in client.get_model_version_download_uri("pump_xgb", "1")
    # another key: the restored versions are refused, not loaded (the key is not in the backup)
    serving._MEMORY.clear()
    serving._VERIFIED.clear()
    monkeypatch.setenv("TP_MODEL_SIGNING_KEY", "another-key-" + "0" * 32)
    with pytest.raises(ModelRefused, match="another key"):
        ModelServer(device="cpu", cache_dir=str(tmp_path / "cache-other")).load("pump_xgb")

    # a deployment that is not empty is refused before anything is written; so is a damaged backup
    with pytest.raises(InvalidInput, match="not empty"):
        restore(tmp_path / "bk")
    dump = tmp_path / "bk" / "market.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="damaged"):
        read_manifest(tmp_path / "bk")
    with pytest.raises(InvalidInput, match="not an empty directory"):
        backup(tmp_path / "bk")


def test_a_services_own_database_is_restored_as_its_owner(pg_server, tmp_path):
    """Dagster's and MLflow's databases belong to their services' roles in compose (tp_platform, tp_mlflow), and
    the backup service dumps and restores them as the superuser: restored, the tables must be the service's again,
    or it cannot read its own storage."""
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from trading_platform.backup import _dump, _restore_dump

    role, password = f"svc_{uuid.uuid4().hex[:8]}", "svc-pass-" + uuid.uuid4().hex[:8]
    a, b = f"a_{uuid.uuid4().hex[:8]}", f"b_{uuid.uuid4().hex[:8]}"

    def dsn(db, user=None):
        d = conninfo_to_dict(pg_server)
        d["dbname"] = db
        if user:
            d.update(user=user, password=password)
        return make_conninfo(**d)

    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        for db in (a, b):
            admin.execute(f"CREATE DATABASE {db} OWNER {role}")
    try:
        with psycopg.connect(dsn(a, role), autocommit=True) as svc:  # the service makes its own tables
            svc.execute("CREATE TABLE runs (id serial PRIMARY KEY, status text)")
            svc.execute("INSERT INTO runs (status) VALUES ('SUCCESS'), ('FAILURE')")
        part = _dump(dsn(a), tmp_path / "dagster.dump", "Dagster's storage")  # as the superuser
        _restore_dump(dsn(b), tmp_path / "dagster.dump", part, "Dagster's storage")
        with psycopg.connect(dsn(b, role), autocommit=True) as svc:
            assert svc.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'runs'").fetchone() == (role,)
            svc.execute("INSERT INTO runs (status) VALUES ('STARTED')")  # its sequence too
            assert svc.execute("SELECT count(*) FROM runs").fetchone() == (3,)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            for db in (a, b):
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")

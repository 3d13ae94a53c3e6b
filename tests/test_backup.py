"""tp backup / tp restore: a deployment with candles, features, a trained model, predictions and Dagster runs,
backed up, restored into another (empty) deployment elsewhere, and compared table by table and model by model.
Real PostgreSQL (pg_dump/pg_restore), MLflow on SQLite, Dagster on its SQLite storage."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid

import numpy as np
import psycopg
import pytest

from conftest import _with_db, copy_database, drop_database
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


@pytest.fixture(scope="module")
def deployment(model_market, pg_server, tmp_path_factory):
    """Deployment A: a copy of the model market, a pump champion, April's predictions, runs in Dagster's storage;
    and its backup (``bk``), made once for the module: the tests restore it, or damage copies of it (``_copy``).
    A's environment stays set while the module runs (each test sets its own deployment's over it)."""
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.models import predictions, pump_xgb
    from trading_platform.backup import backup
    from trading_platform.instance import ensure_dagster_home
    from trading_platform.resources import MarketDB, MLflowResource, ModelServer, serving

    dsn = copy_database(pg_server, model_market[0])
    tmp = tmp_path_factory.mktemp("backup")
    home = tmp / "a"
    with pytest.MonkeyPatch.context() as monkeypatch:
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
        before = _tables(dsn)
        _, models_before = _registry(f"sqlite:///{home}/mlflow.db")
        served_before = ModelServer(device="cpu").load("pump_xgb")
        manifest = backup(tmp / "bk")
        yield {"dsn": dsn, "home": home, "runs": runs, "bk": tmp / "bk", "manifest": manifest, "before": before,
               "models_before": models_before, "served_before": served_before}
    drop_database(pg_server, dsn)


def _copy(bk, dst, edit=None):
    """A copy of the backup ``bk`` (its files hard links: read them, never write them) with ``edit`` applied to its
    manifest's text."""
    shutil.copytree(bk, dst, copy_function=os.link)
    if edit:
        m = dst / "manifest.json"
        text = edit(m.read_text())
        m.unlink()
        m.write_text(text)
    return dst


def _edit(change):
    """An ``edit`` for ``_copy`` that changes the manifest's parsed object."""
    def edit(text):
        manifest = json.loads(text)
        change(manifest)
        return json.dumps(manifest)
    return edit


def test_backup_wipe_restore_gives_every_table_run_and_served_model_back(deployment, dsn, tmp_path, monkeypatch):
    from dagster import DagsterInstance

    from trading_platform.backup import backup, read_manifest, restore
    from trading_platform.resources import ModelServer, serving
    from trading_platform.resources.serving import ModelRefused

    a = deployment
    before, models_before, served_before, out = a["before"], a["models_before"], a["served_before"], a["manifest"]
    assert before["predictions"][0] > 0 and before["ohlcv"][0] > 0
    assert out["parts"]["market"]["tables"]["predictions"] == before["predictions"][0]
    # the model signing key never goes into a backup (keep it apart)
    key = os.environ["TP_MODEL_SIGNING_KEY"].encode()
    for p in a["bk"].rglob("*"):
        assert not p.is_file() or key not in p.read_bytes(), p

    # B: another home, another (empty) database: an empty deployment
    _use(monkeypatch, tmp_path / "b", dsn)
    serving._MEMORY.clear()
    serving._VERIFIED.clear()
    got = restore(a["bk"])
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
        restore(a["bk"])
    bk = _copy(a["bk"], tmp_path / "bk")
    dump = bk / "market.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.unlink()  # a hard link to the module's backup: a file of its own
    dump.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="damaged"):
        read_manifest(bk)
    with pytest.raises(InvalidInput, match="not an empty directory"):
        backup(bk)


def test_a_backup_dir_that_cannot_be_made_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from trading_platform.cli import main

    _use(monkeypatch, tmp_path / "home", "postgresql://nobody@localhost:1/none")  # never reached
    (tmp_path / "url.txt").write_text("not a directory")
    assert main(["backup", str(tmp_path / "url.txt" / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: DIR {tmp_path}/url.txt/sub cannot be made a backup directory: Not a directory"]
    assert (tmp_path / "url.txt").read_text() == "not a directory"


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t[: len(t) // 2], "is damaged: not JSON"),  # truncated
    (lambda t: "[1, 2]", "is damaged: not a JSON object but list"),
    (_edit(lambda m: m.pop("format")), "is damaged: no format"),
    (_edit(lambda m: m.update(parts=[])), r"is damaged: no parts \(an object\)"),
    (_edit(lambda m: m["parts"].pop("mlflow")), "is damaged: no parts.mlflow"),
    (_edit(lambda m: m["parts"]["market"].pop("file")),
     "is damaged: parts.market.file is None, not the name of a file"),
    (_edit(lambda m: m["parts"]["market"].update(file="../../../../../../etc/passwd")),
     "is damaged: parts.market.file is '../../../../../../etc/passwd', not the name of a file"),
    (_edit(lambda m: m["parts"]["mlflow"].update(sha256=None)), "is damaged: parts.mlflow.sha256 is missing"),
    (_edit(lambda m: m["parts"]["mlartifacts"].update(sha256=None)),
     r"is damaged: parts.mlartifacts.sha256 is null \(nothing backed up\) and mlartifacts is there"),
    (_edit(lambda m: m["parts"]["mlflow"].update(kind="oracle")),
     "is damaged: parts.mlflow.kind is 'oracle', not one of sqlite, postgres"),
    (_edit(lambda m: m["parts"]["market"].update(tables={"ohlcv": "many"})),
     "is damaged: parts.market.tables is not an object of row counts"),
], ids=["truncated", "a-list", "no-format", "parts-a-list", "no-mlflow-part", "no-market-file", "file-outside",
        "mlflow-without-sha256", "mlartifacts-unchecked", "unknown-kind", "table-count-not-a-number"])
def test_a_damaged_manifest_is_refused_in_one_line_naming_what_is_wrong(deployment, tmp_path, monkeypatch, capsys,
                                                                       edit, problem):
    """Refused by the manifest's check, before the restore reads anything else (the deployment's database is never
    reached)."""
    from trading_platform.backup import read_manifest
    from trading_platform.cli import main

    bk = _copy(deployment["bk"], tmp_path / "bk", edit)
    with pytest.raises(InvalidInput, match=f"^{re.escape(str(bk))}/manifest.json {problem}") as e:
        read_manifest(bk)
    assert e.value.field == "DIR"
    _use(monkeypatch, tmp_path / "b", "postgresql://nobody@localhost:1/none")
    assert main(["restore", str(bk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bk}/manifest.json ") and "damaged" in err[0], err


def test_a_backup_that_does_not_fit_the_deployment_is_refused_before_anything_is_written(
        deployment, dsn, pg_server, tmp_path, monkeypatch):
    """The MLflow store's kind and Dagster's storage's are checked with the rest before the first part is restored:
    a refused restore leaves the deployment empty, and the right backup restores into it afterwards."""
    from trading_platform.backup import restore

    a = deployment
    _use(monkeypatch, tmp_path / "b", dsn)

    def untouched():
        assert _tables(dsn) == {}  # the market store
        assert not (tmp_path / "b" / "dagster" / "history").exists()
        assert not (tmp_path / "b" / "mlflow.db").exists() and not (tmp_path / "b" / "mlartifacts").exists()

    # MLflow on PostgreSQL in the backup, on SQLite here
    bk = _copy(a["bk"], tmp_path / "bk", _edit(lambda m: m["parts"]["mlflow"].update(kind="postgres")))
    with pytest.raises(InvalidInput, match="^the backup's MLflow store is postgres and this deployment's is sqlite"):
        restore(bk)
    untouched()
    # Dagster on SQLite in the backup (with runs), on PostgreSQL here (an empty database of its own)
    dagster_db = f"d_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {dagster_db}")
    try:
        d = psycopg.conninfo.conninfo_to_dict(_with_db(pg_server, dagster_db))
        with monkeypatch.context() as m:
            m.setenv("TP_EMBEDDED", "0")
            for k, v in (("HOST", d.get("host")), ("PORT", d.get("port")), ("USERNAME", d.get("user")),
                         ("PASSWORD", d.get("password")), ("DB", dagster_db)):
                if v:
                    m.setenv(f"DAGSTER_PG_{k}", str(v))
                else:
                    m.delenv(f"DAGSTER_PG_{k}", raising=False)
            with pytest.raises(InvalidInput, match="^the backup's Dagster storage is SQLite and this deployment's "
                                                   "is PostgreSQL"):
                restore(a["bk"])
        untouched()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {dagster_db} WITH (FORCE)")
    # nothing was half-restored: the backup that fits restores
    assert restore(a["bk"])["rows_diff"] == {}
    assert _tables(dsn) == a["before"]


def test_a_target_that_is_not_empty_is_refused_before_anything_is_written(deployment, dsn, tmp_path, monkeypatch):
    """Two pre-flight holes: index versions of another knowledge base in TP_RAG_DIR were kept beside the backup's
    (restored after everything else), and a runs.db that is not Dagster's storage ended the restore in a raw
    sqlite3 error. Each is refused naming the path, the market store untouched."""
    from trading_platform.backup import _digest, restore

    a = deployment
    _use(monkeypatch, tmp_path / "b", dsn)
    # A's backup with index versions of its knowledge base (A built none), which a restore copies in last
    bk = _copy(a["bk"], tmp_path / "bk")
    (bk / "rag" / "v1").mkdir(parents=True)
    (bk / "rag" / "v1" / "index.faiss").write_bytes(b"the backup's knowledge base")
    m = json.loads((bk / "manifest.json").read_text())
    m["parts"]["rag"].update(_digest(bk / "rag"))
    (bk / "manifest.json").unlink()
    (bk / "manifest.json").write_text(json.dumps(m))
    rag = tmp_path / "other_rag"
    (rag / "v9").mkdir(parents=True)
    (rag / "v9" / "index.faiss").write_bytes(b"another knowledge base")
    monkeypatch.setenv("TP_RAG_DIR", str(rag))
    with pytest.raises(InvalidInput, match=f"^the knowledge base's directory {rag} \\(TP_RAG_DIR\\) is not empty"):
        restore(bk)
    assert _tables(dsn) == {} and sorted(p.name for p in rag.rglob("*")) == ["index.faiss", "v9"]
    monkeypatch.delenv("TP_RAG_DIR")
    history = tmp_path / "b" / "dagster" / "history"
    history.mkdir(parents=True)
    for junk in (b"", b"not a database at all, some other file"):
        (history / "runs.db").write_bytes(junk)
        with pytest.raises(InvalidInput, match="runs.db is not Dagster's run storage that a restore can replace"):
            restore(bk)
        assert _tables(dsn) == {}
    assert (history / "runs.db").read_bytes() == junk
    # emptied, the same target takes the backup, its knowledge base included
    (history / "runs.db").unlink()
    monkeypatch.setenv("TP_RAG_DIR", str(rag))
    shutil.rmtree(rag / "v9")
    assert restore(bk)["rows_diff"] == {}
    assert (rag / "v1" / "index.faiss").read_bytes() == b"the backup's knowledge base"


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

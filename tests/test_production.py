"""The production shape's promises, one at a time: fail fast instead of falling back to anything embedded,
migrations as a deploy step, docker/dagster.yaml as Dagster reads it, and the purge of old runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def tp(env, *args, cwd=None):
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", *args, "--json"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1]), out


@pytest.fixture
def prod_env(tmp_path, dsn):
    """A production environment over a throwaway database: TP_DATABASE_URL and MLflow set, DAGSTER_HOME with
    an instance configuration of its own (local storage here; the Postgres one is tests/test_deployment.py's)."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "MLFLOW_", "DAGSTER_"))}
    env.update({"TP_HOME": str(tmp_path / "home"), "TP_DATABASE_URL": dsn, "DAGSTER_HOME": str(dagster_home),
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/explicit-mlflow.db", "TP_LOG_LEVEL": "WARNING"})
    return env


def _nothing_created(home: Path) -> list[str]:
    return [str(p) for p in home.rglob("*")] if home.exists() else []


def test_production_without_a_database_url_starts_no_embedded_postgres(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "MLFLOW_", "DAGSTER_"))}
    env.update({"TP_EMBEDDED": "0", "TP_HOME": str(tmp_path / "home")})
    for args in (["symbols", "list"], ["db", "migrate"], ["db", "url"]):
        rc, err, _ = tp(env, *args, cwd=tmp_path)
        assert rc == 2 and err["field"] == "TP_DATABASE_URL" and "never starts an embedded" in err["error"], args
    assert _nothing_created(tmp_path / "home") == []
    # and in-process, through the resource every asset and sensor opens
    from trading_platform.resources import MarketDB
    from trading_platform.resources.market_db import _DSN_CACHE

    old = {k: os.environ.get(k) for k in ("TP_EMBEDDED", "TP_HOME", "TP_DATABASE_URL")}
    os.environ.update({"TP_EMBEDDED": "0", "TP_HOME": str(tmp_path / "home2")})
    os.environ.pop("TP_DATABASE_URL", None)
    try:
        _DSN_CACHE.clear()
        with pytest.raises(Exception, match="TP_DATABASE_URL is not set") as e:
            MarketDB().dsn()
        assert e.value.field == "TP_DATABASE_URL"
        assert not (tmp_path / "home2" / "pg").exists()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_production_without_mlflow_names_it_and_creates_no_sqlite_store(prod_env, tmp_path, dsn):
    from trading_platform.store.db import connect

    connect(dsn, run_migrations=True).close()
    env = {k: v for k, v in prod_env.items() if k != "MLFLOW_TRACKING_URI"}
    rc, err, _ = tp(env, "models", "list", cwd=tmp_path)
    assert rc == 2 and err["field"] == "MLFLOW_TRACKING_URI" and "never falls back" in err["error"]
    assert [p for p in tmp_path.rglob("*.db")] == []
    # an explicit SQLite URI is the user's choice, not a fallback: it is used
    rc, out, _ = tp(prod_env, "models", "list", cwd=tmp_path)
    assert rc == 0 and (tmp_path / "explicit-mlflow.db").exists()


def test_production_refuses_a_local_dagster_instance(prod_env, tmp_path, dsn):
    from trading_platform.store.db import connect

    connect(dsn, run_migrations=True).close()
    env = {k: v for k, v in prod_env.items() if k != "DAGSTER_HOME"}
    rc, err, _ = tp(env, "symbols", "add", "BTC/USDT", "--category", "crypto", cwd=tmp_path)
    assert rc == 2 and err["field"] == "DAGSTER_HOME" and "not set" in err["error"]
    managed = tmp_path / "managed"  # the embedded instance's managed copy is no production configuration
    managed.mkdir()
    from trading_platform.instance import instance_yaml

    (managed / "dagster.yaml").write_text(instance_yaml())
    rc, err, _ = tp({**env, "DAGSTER_HOME": str(managed)}, "symbols", "add", "BTC/USDT", "--category", "crypto",
                    cwd=tmp_path)
    assert rc == 2 and err["field"] == "DAGSTER_HOME" and "embedded instance" in err["error"]
    with psycopg.connect(dsn) as c:  # refused before anything was written
        assert c.execute("SELECT count(*) FROM symbols").fetchone()[0] == 0
    rc, out, _ = tp(prod_env, "symbols", "add", "BTC/USDT", "--category", "crypto", cwd=tmp_path)
    assert rc == 0 and out["symbol"] == "BTC/USDT"


def test_empty_mlflow_credential_variables_do_not_hide_the_uris(monkeypatch):
    """docker/compose.yaml passes MLFLOW_TRACKING_USERNAME/PASSWORD through, empty when unused: a user and
    password in the tracking URI still reach MLflow, and leave the URI."""
    from trading_platform.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://trader:s3cret@mlflow:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "")
    assert get_settings().mlflow_tracking_uri == "http://mlflow:5000"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("trader", "s3cret")


def test_bad_tp_embedded_is_named(tmp_path):
    env = {**os.environ, "TP_EMBEDDED": "maybe", "TP_HOME": str(tmp_path / "home")}
    rc, err, _ = tp(env, "symbols", "list", cwd=tmp_path)
    assert rc == 2 and err["field"] == "TP_EMBEDDED"


def test_migrations_are_a_deploy_step_not_a_side_effect_of_a_run(prod_env, dsn, monkeypatch, tmp_path):
    """In production the first resource use in a run checks the schema and migrates nothing; `tp db migrate`
    does, and afterwards the same run works."""
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.market_data import ohlcv
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.resources import MarketDB, MarketSource
    from trading_platform.resources.market_db import _MIGRATED

    monkeypatch.setenv("TP_DATABASE_URL", dsn)
    monkeypatch.delenv("TP_EMBEDDED", raising=False)
    _MIGRATED.discard(dsn)
    res = {"market_db": MarketDB(database_url=dsn), "market_source": MarketSource(spec="synthetic:7")}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("symbol", ["BTC/USDT"])
        result = materialize([ohlcv], instance=instance, resources=res, partition_key="2025-01-01|BTC/USDT",
                             raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "tp db migrate" in str(failure.event_specific_data.error)
        with psycopg.connect(dsn) as c:
            assert c.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None
        rc, out, _ = tp(prod_env, "db", "migrate", cwd=tmp_path)
        assert rc == 0 and out["applied"] and out["schema_version"] == out["applied"][-1]
        rc, again, _ = tp(prod_env, "db", "migrate", cwd=tmp_path)
        assert rc == 0 and again["applied"] == [] and again["schema_version"] == out["schema_version"]
        from trading_platform.store.db import connect

        with connect(dsn) as store:
            store.add_symbol(SymbolInfo.create("BTC/USDT", timeframes=["1h"]))
        _MIGRATED.discard(dsn)
        assert materialize([ohlcv], instance=instance, resources=res, partition_key="2025-01-01|BTC/USDT").success


def test_two_deploy_steps_at_once_apply_each_migration_once(dsn, prod_env, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "db", "migrate", "--json"],
                              env=prod_env, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    applied = sorted(len(o["applied"]) for o in outs)
    assert applied[:2] == [0, 0] and applied[2] == outs[0]["schema_version"]
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version").fetchall()
    assert len(rows) == outs[0]["schema_version"] and all(n == 1 for _, n in rows)


def test_migrate_waits_for_a_database_that_is_not_up_yet(prod_env, tmp_path):
    env = {**prod_env, "TP_DATABASE_URL": "postgresql://tp:pw@127.0.0.1:1/trading"}
    t0 = datetime.now()
    rc, err, out = tp(env, "db", "migrate", "--wait", "3", cwd=tmp_path)
    assert rc == 2 and err["field"] == "TP_DATABASE_URL" and "127.0.0.1" in err["error"] and "pw" not in err["error"]
    assert (datetime.now() - t0).total_seconds() >= 3 and "retrying" in out.stderr


# ---- docker/dagster.yaml, as Dagster reads it ----------------------------------------------------------------
@pytest.fixture
def docker_instance_ref(tmp_path, monkeypatch):
    from dagster._core.instance.ref import InstanceRef

    shutil.copy(REPO / "docker" / "dagster.yaml", tmp_path / "dagster.yaml")
    for k, v in {"DAGSTER_PG_HOST": "postgres", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "dagster",
                 "DAGSTER_PG_PASSWORD": "pw", "DAGSTER_PG_DB": "dagster"}.items():
        monkeypatch.setenv(k, v)
    return InstanceRef.from_dir(str(tmp_path))


def test_docker_dagster_yaml_is_a_valid_production_instance(docker_instance_ref):
    """Dagster's own config validation of every section, and the classes it names, built from it."""
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    ref = docker_instance_ref
    assert ref.run_storage_data.class_name == PostgresRunStorage.__name__
    assert ref.event_storage_data.class_name == PostgresEventLogStorage.__name__
    assert ref.schedule_storage_data.class_name == PostgresScheduleStorage.__name__
    run_cfg = ref.run_storage_data.config_dict["postgres_db"]
    assert run_cfg["scheme"] == "postgresql+psycopg2" and run_cfg["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    coordinator = ref.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    from trading_platform.live.prefork import PreforkRunLauncher

    router = ref.run_launcher  # live runs to the warm runner, every other run to the DockerRunLauncher
    assert isinstance(router, PreforkRunLauncher) and router.supports_check_run_worker_health
    assert router._address == "live_runner:4001" and router._jobs == {"live_predictions_job"}
    launcher = router.fallback
    assert isinstance(launcher, DockerRunLauncher) and launcher.networks == ["trading_platform"]
    assert {"TP_DATABASE_URL", "MLFLOW_TRACKING_URI", "TP_EMBEDDED", "DAGSTER_PG_PASSWORD"} <= set(launcher.env_vars)
    # the NVIDIA device request is one the Docker SDK (which the launcher calls) accepts as is
    from docker.types import HostConfig

    host = HostConfig(version="1.44", device_requests=launcher.container_kwargs["device_requests"])
    (req,) = host["DeviceRequests"]
    assert (req["Driver"], req["Count"], req["Capabilities"]) == ("nvidia", -1, [["gpu"]])
    settings = ref.settings
    assert settings["run_monitoring"]["enabled"] and settings["run_retries"]["enabled"]
    assert settings["retention"]["sensor"]["purge_after_days"]["skipped"] >= 1


def test_the_light_images_launcher_needs_nothing_else_of_the_platform(docker_instance_ref, tmp_path):
    """The webserver and daemon image (docker/Dockerfile.dagster) holds Dagster and three files of the platform:
    with only those, the production instance's run launcher (and its DockerRunLauncher fallback) is built."""
    lib = tmp_path / "lib"
    for f in ("trading_platform/__init__.py", "trading_platform/live/__init__.py", "trading_platform/live/prefork.py"):
        (lib / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, lib / f)
    code = (f"import sys; sys.path.insert(0, {str(lib)!r})\n"
            "from dagster._core.instance.ref import InstanceRef\n"
            f"launcher = InstanceRef.from_dir({str(tmp_path)!r}).run_launcher\n"
            "import trading_platform.live.prefork as p\n"
            f"assert p.__file__.startswith({str(lib)!r}), p.__file__\n"
            "print(type(launcher).__name__, type(launcher.fallback).__name__)\n"
            "print(sorted(m for m in sys.modules if m.startswith('trading_platform')))\n")
    shutil.copy(REPO / "docker" / "dagster.yaml", tmp_path / "dagster.yaml")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kinds, modules = out.stdout.splitlines()
    assert kinds == "PreforkRunLauncher DockerRunLauncher"
    assert modules == str(["trading_platform", "trading_platform.live", "trading_platform.live.prefork"])


@pytest.mark.parametrize("path", ["docker/dagster.yaml", "dagster.yaml"])
def test_run_queue_keeps_live_slots_and_one_backfill(path, tmp_path):
    """The limits as the queue applies them, in production and embedded: every kind of run the platform tags has
    its cap, and the caps of the others leave the live runs their slots; one backfill at a time."""
    from dagster._core.instance import DagsterInstance

    cfg = yaml.safe_load((REPO / path).read_text())
    limits = cfg["concurrency"]["runs"]["tag_concurrency_limits"]
    by_kind = {(x["key"], x.get("value")): x["limit"] for x in limits}
    assert by_kind[("dagster/backfill", None)] == 1 and by_kind[("tp/run_kind", "live")] >= 1
    others = sum(v for (k, val), v in by_kind.items() if (k, val) != ("tp/run_kind", "live"))
    assert others + by_kind[("tp/run_kind", "live")] <= cfg["concurrency"]["runs"]["max_concurrent_runs"]
    # every tp/run_kind the code sets has its cap (backfill runs are capped by dagster/backfill)
    import re

    source = "\n".join(p.read_text() for p in (REPO / "trading_platform").rglob("*.py"))
    kinds = set(re.findall(r'"tp/run_kind": "(\w+)"', source)) | set(re.findall(r'RUN_KIND_TAG: "(\w+)"', source))
    assert {"live", "retrain", "maintenance"} <= kinds
    assert kinds - {"backfill"} == {val for (k, val) in by_kind if k == "tp/run_kind"}
    for key in ("storage", "run_launcher", "compute_logs"):  # the queue's settings on a local instance
        cfg.pop(key, None)
    home = tmp_path / "q"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    with DagsterInstance.from_config(str(home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == cfg["concurrency"]["runs"]["max_concurrent_runs"]
        assert {(x["key"], x.get("value"), x["limit"]) for x in queue.tag_concurrency_limits} == \
            {(k, v, n) for (k, v), n in by_kind.items()}
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


# ---- the purge of old runs ----------------------------------------------------------------------------------
def test_purge_deletes_old_live_runs_and_old_logs_and_keeps_asset_history(tmp_path, dsn):
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus, asset, job, materialize, op

    from trading_platform.maintenance import purge_runs
    from trading_platform.sensors.maintenance import maintenance_job

    @op
    def write_rows():
        print("rows written")

    @job(tags={"tp/run_kind": "live"})
    def live_like():
        write_rows()

    @asset
    def candles():
        return 1

    home = tmp_path / "dh"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"compute_logs:\n  module: dagster.core.storage.local_compute_log_manager\n"
                                       f"  class: LocalComputeLogManager\n  config:\n    base_dir: {tmp_path}/logs\n")
    logs = tmp_path / "logs"
    with DagsterInstance.from_config(str(home)) as instance:
        live = [live_like.execute_in_process(instance=instance).run_id for _ in range(5)]
        asset_run = materialize([candles], instance=instance).run_id
        # a live run still going (its folder too), and the tick logs of a sensor: old ones and one just written
        running = instance.create_run_for_job(live_like, tags={"tp/run_kind": "live"}).run_id
        (logs / running / "compute_logs").mkdir(parents=True)
        ticks = logs / "__repository__" / "live_predictions_sensor"
        ticks.mkdir(parents=True)
        for name in ("old.err", "new.err"):
            (ticks / name).write_text("tick")
        assert {p.name for p in logs.iterdir()} >= set(live) | {asset_run, running}
        kept = purge_runs(instance, days=7)  # nothing is a week old yet
        assert (kept.runs_deleted, kept.compute_logs_deleted, kept.tick_logs_deleted) == (0, 0, 0)
        assert len(instance.get_run_ids()) == 7
        later = datetime.now(timezone.utc) + timedelta(days=8)
        old = later.timestamp() - 8.5 * 86400
        for p in [*logs.iterdir(), *ticks.iterdir()]:  # what the log purge reads: age them, but the newest tick
            if p.name != "new.err":
                os.utime(p, (old, old))
        os.utime(ticks / "new.err", (later.timestamp(),) * 2)
        result = purge_runs(instance, days=7, now=later, batch=2)  # three batches of at most 2 + 1
        assert result.runs_deleted == 5 and set(instance.get_run_ids()) == {asset_run, running}
        assert instance.all_logs(live[0]) == []  # the live runs' events went with them
        assert instance.get_latest_materialization_event(AssetKey("candles")) is not None  # asset history stays
        assert result.compute_logs_deleted == 1 and not (logs / asset_run).exists()
        assert (logs / running).exists()  # a run not finished keeps its logs
        assert result.tick_logs_deleted == 1 and [p.name for p in ticks.iterdir()] == ["new.err"]
        assert instance.get_run_by_id(running).status == DagsterRunStatus.NOT_STARTED
        # the job as the hourly schedule runs it, on the same instance; it prunes the finished alert deliveries
        # past their retention too (30 days), never one still to send
        from trading_platform.resources import MarketDB
        from trading_platform.store.db import connect

        with connect(dsn) as store:
            did = store.conn.execute("INSERT INTO alert_destinations (name, kind, url_env) VALUES ('d', 'webhook', "
                                     "'U') RETURNING id").fetchone()[0]
            for key, status, age in (("old-done", "delivered", 40), ("old-dead", "dead", 31), ("new-done",
                                     "delivered", 29), ("old-pending", "pending", 40)):
                store.conn.execute("INSERT INTO alert_deliveries (destination_id, key, type, payload, status, "
                                   "created_at) VALUES (%s, %s, 'alert', '{}', %s, now() - make_interval(days => %s))",
                                   (did, key, status, age))
        run = maintenance_job.execute_in_process(instance=instance,
                                                 resources={"market_db": MarketDB(database_url=dsn)})
        assert run.success and run.output_for_node("purge_old_runs")["runs_deleted"] == 0
        assert run.output_for_node("prune_alert_deliveries") == 2
        with connect(dsn) as store:
            left = {r[0] for r in store.conn.execute("SELECT key FROM alert_deliveries")}
        assert left == {"new-done", "old-pending"}


def test_retention_below_a_day_is_refused(monkeypatch):
    from trading_platform.maintenance import retention_days

    for bad in ("0", "-3", "soon", "0.5"):
        monkeypatch.setenv("TP_RUN_RETENTION_DAYS", bad)
        with pytest.raises(Exception, match="TP_RUN_RETENTION_DAYS") as e:
            retention_days()
        assert e.value.field == "TP_RUN_RETENTION_DAYS"
    monkeypatch.setenv("TP_RUN_RETENTION_DAYS", "3")
    assert retention_days() == 3

"""The production configuration, proven with real processes instead of Docker (no engine runs here).

One end-to-end test plays docker/compose.yaml's services as processes on this machine:
- ``postgres``: a separate PostgreSQL cluster (pgserver's bundled binaries, TCP, password auth) holding the
  market store, Dagster's storage and MLflow's backend store;
- ``migrate``: ``tp db migrate``, twice at once (the advisory lock makes the second a no-op);
- ``mlflow``: ``mlflow server`` on that PostgreSQL, ``--serve-artifacts``;
- ``user_code``: ``dagster code-server start``;
- ``daemon``: ``dagster-daemon run`` with docker/dagster.yaml (Postgres storage, QueuedRunCoordinator, pools,
  run monitoring and retries), only the DockerRunLauncher swapped for the default launcher (no engine here).
  The live runner is played by benchmarks/live_latency.py --production.
Everything runs with ``TP_EMBEDDED=0``, as the containers do. It adds two symbols, backfills two months of
market data and features through the daemon (stopped and restarted in the middle), trains a model through the
queue, and checks where everything landed, and that nothing embedded was started or created.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYMBOLS = ("BTC/USDT", "ETH/USDT")
MONTHS = ("2025-01", "2025-02")
PASSWORD = "e2e-Secret-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, procs=(), interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, log in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a process exited ({p.args[0]}, rc {p.returncode}):\n"
                                     + Path(log).read_text()[-4000:])
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    details = "".join(f"\n--- {p.args[:3]}:\n{Path(log).read_text()[-3000:]}" for p, log in procs)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{details}")


class ExternalPostgres:
    """A PostgreSQL cluster of its own (pgserver's binaries, so no system PostgreSQL is needed), on TCP with
    password authentication, as the deployment's `postgres` service is."""

    def __init__(self):
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.root = Path(tempfile.mkdtemp(prefix="tp-external-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: pgserver's own system user
            from pgserver.utils import ensure_user_exists

            ensure_user_exists("pgserver")
            self.user = "pgserver"
            shutil.chown(self.root, "pgserver")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if self.user:
            shutil.chown(pwfile, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--encoding=utf8")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.root}", "start")
        for db in ("trading", "dagster", "mlflow"):
            with psycopg.connect(self.url("postgres"), autocommit=True) as c:
                c.execute(f"CREATE DATABASE {db}")

    def _run(self, exe: str, *args: str) -> None:
        subprocess.run([str(self.bin / exe), *args], check=True, user=self.user, capture_output=True, timeout=120)

    def url(self, db: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://postgres:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def count(self, db: str, sql: str, *params) -> int:
        with psycopg.connect(self.url(db)) as c:
            return int(c.execute(sql, params).fetchone()[0])

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def production_instance_dir(root: Path, code_server_port: int, runner_port: int | None = None) -> tuple[Path, Path]:
    """DAGSTER_HOME with docker/dagster.yaml, the DockerRunLauncher (the fallback of its run launcher) alone
    swapped for the default one, the live runner at 127.0.0.1:``runner_port`` (without one, live runs fall back to
    the default launcher too), compute logs in a temporary folder; and docker/workspace.yaml pointing at this
    machine's code server."""
    home = root / "dagster_home"
    home.mkdir(parents=True)
    cfg = yaml.safe_load((REPO / "docker" / "dagster.yaml").read_text())
    launcher = cfg["run_launcher"]["config"]
    assert launcher["fallback"]["class"] == "DockerRunLauncher"
    del launcher["fallback"]  # the default launcher: runs are processes started by the code server
    if runner_port:
        launcher["address"] = f"127.0.0.1:{runner_port}"
    else:
        del cfg["run_launcher"]
    cfg["compute_logs"]["config"]["base_dir"] = str(root / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    ws = yaml.safe_load((REPO / "docker" / "workspace.yaml").read_text())
    grpc = ws["load_from"][0]["grpc_server"]
    assert (grpc["host"], grpc["port"]) == ("user_code", 4000)
    grpc.update(host="127.0.0.1", port=code_server_port)
    workspace = root / "workspace.yaml"
    workspace.write_text(yaml.safe_dump(ws))
    return home, workspace


@pytest.fixture
def stack(tmp_path):
    pg = ExternalPostgres()
    procs: list[tuple[subprocess.Popen, Path]] = []
    ml_port, cs_port = _free_port(), _free_port()
    dagster_home, workspace = production_instance_dir(tmp_path, cs_port)
    tp_home = tmp_path / "tp_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TP_", "MLFLOW_", "DAGSTER_"))}
    env.update({
        "TP_EMBEDDED": "0", "TP_HOME": str(tp_home), "TP_DATABASE_URL": pg.url("trading"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ml_port}", "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": PASSWORD, "DAGSTER_PG_DB": "dagster", "TP_SOURCE": "synthetic:7",
        "TP_HISTORY_START": "2024-12-01", "TP_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TP_LOG_LEVEL": "WARNING",
        # production requires the model signing key (every process that trains or serves: the same one)
        "TP_MODEL_SIGNING_KEY": os.urandom(32).hex(), "PYTHONUNBUFFERED": "1"})
    cwd = tmp_path / "cwd"  # where the services run: nothing may appear here either
    cwd.mkdir()

    def start(name: str, *cmd: str, extra_env: dict | None = None) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        p = subprocess.Popen(list(cmd), env={**env, **(extra_env or {})}, cwd=cwd, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((p, log))
        return p

    def stop(p: subprocess.Popen, sig=signal.SIGTERM) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    s = type("Stack", (), {})()
    s.pg, s.env, s.cwd, s.tmp, s.start, s.stop, s.procs = pg, env, cwd, tmp_path, start, stop, procs
    s.tp_home, s.dagster_home, s.workspace, s.ml_port, s.cs_port = tp_home, dagster_home, workspace, ml_port, cs_port
    try:
        yield s
    finally:
        for p, _ in procs:
            stop(p)
        pg.stop()


def tp(env, *args, check=True, cwd=None):
    out = subprocess.run([sys.executable, "-m", "trading_platform.cli", *args, "--json"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"tp {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


def test_the_production_configuration_runs_on_external_services(stack):
    env, pg = stack.env, stack.pg

    # before the deploy step, a service refuses to work on the empty database instead of migrating it
    rc, err = tp(env, "symbols", "list", check=False, cwd=stack.cwd)
    assert rc != 0 and "tp db migrate" in err["error"] and err["field"] == "TP_DATABASE_URL"
    assert pg.count("trading", "SELECT count(*) FROM pg_tables WHERE tablename = 'schema_migrations'") == 0

    # the deploy step, started twice at once (two `migrate` containers, say): the advisory lock serializes them
    both = [subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "db", "migrate", "--wait", "30",
                              "--json"], env=env, cwd=stack.cwd, stdout=subprocess.PIPE, text=True) for _ in (1, 2)]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in both]
    assert all(p.returncode == 0 for p in both)
    applied = sorted((r["applied"] for r in results), key=len)
    assert applied[0] == [] and applied[1] == list(range(1, results[0]["schema_version"] + 1))
    assert pg.count("trading", "SELECT count(*) FROM schema_migrations") == results[0]["schema_version"]

    # the other deploy step: the gpu pool's limit (concurrency.pools in dagster.yaml only takes a default)
    subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", "1"], env=env, cwd=stack.cwd,
                   check=True, capture_output=True, timeout=120)
    assert pg.count("dagster", "SELECT count(*) FROM concurrency_limits WHERE concurrency_key = 'gpu' AND "
                               "\"limit\" = 1") == 1

    # the services: MLflow tracking server on the PostgreSQL, configured as docker/compose.yaml does (backend URI
    # and artifact destination from the environment, the password never on the command line)
    stack.start("mlflow", str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(stack.ml_port),
                "--serve-artifacts", "--workers", "2",
                extra_env={"MLFLOW_BACKEND_STORE_URI": pg.url("mlflow", "postgresql+psycopg"),
                           "MLFLOW_ARTIFACTS_DESTINATION": str(stack.tmp / "mlartifacts")})
    code_server = stack.start("user_code", str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p",
                              str(stack.cs_port), "-m", "trading_platform.definitions")
    daemon_cmd = (str(BIN / "dagster-daemon"), "run", "-w", str(stack.workspace))
    daemon = stack.start("daemon", *daemon_cmd)

    def healthy(cmd):
        return subprocess.run(cmd, capture_output=True, env=stack.env, timeout=30).returncode == 0

    _wait(lambda: healthy([str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(stack.cs_port)]), 180,
          "the code server", stack.procs)
    import urllib.request

    def mlflow_up():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{stack.ml_port}/health", timeout=5).status == 200
        except OSError:
            return False

    _wait(mlflow_up, 180, "the MLflow server", stack.procs)

    # two symbols (their partitions go to the Postgres-backed instance), and a backfill of two months of each
    for s in SYMBOLS:
        tp(env, "symbols", "add", s, "--category", "crypto", "--timeframes", "1h,4h", cwd=stack.cwd)
    backfills = [tp(env, "backfill", "--symbol", s, "--from", f"{MONTHS[0]}-01", "--to", f"{MONTHS[1]}-28",
                    "--assets", "market,features", cwd=stack.cwd)[1] for s in SYMBOLS]
    assert all(b["partitions"] == 2 and b["pinned"] == {} for b in backfills)

    from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus

    os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")})
    instance = DagsterInstance.from_config(str(stack.dagster_home))
    try:
        # stop the daemon once the backfill has started runs, and restart it: nothing may be lost
        _wait(lambda: instance.get_runs_count(RunsFilter(tags={"dagster/backfill": backfills[0]["backfill_id"]})),
              180, "the first backfill run", stack.procs)
        stack.stop(daemon)
        stack.procs.remove(next(x for x in stack.procs if x[0] is daemon))
        pending = [b for b in backfills if instance.get_backfill(b["backfill_id"]).status
                   != BulkActionStatus.COMPLETED_SUCCESS]
        assert pending, "the backfills finished before the daemon was stopped: the restart proves nothing"
        time.sleep(2)
        stack.start("daemon-restarted", *daemon_cmd)

        def done():
            states = [instance.get_backfill(b["backfill_id"]).status for b in backfills]
            assert BulkActionStatus.FAILED not in states, states
            return all(st == BulkActionStatus.COMPLETED_SUCCESS for st in states)

        _wait(done, 600, "the backfills", stack.procs, interval=3)
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfills[0]["backfill_id"]}))
        assert runs and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
        keys = {f"{m}-01|{s}" for s in SYMBOLS for m in MONTHS}
        for asset in (AssetKey(["market", "ohlcv"]), AssetKey(["market", "ohlcv_4h"]), AssetKey("features")):
            assert keys <= set(instance.get_materialized_partitions(asset)), asset
        for s in SYMBOLS:  # the candles of both months are in the market store
            n = pg.count("trading", "SELECT count(DISTINCT date_trunc('month', ts)) FROM ohlcv WHERE symbol = %s "
                         "AND timeframe = '1h'", s)
            assert n == 2

        # a training run through the queue: the daemon dequeues it, the code server starts it
        launch = subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(stack.workspace), "-j",
                                 "regime_training_job", "--tags", json.dumps({"dagster/partition": SYMBOLS[0]})],
                                env=env, cwd=stack.cwd, capture_output=True, text=True, timeout=120)
        assert launch.returncode == 0, launch.stderr[-3000:]
        train = RunsFilter(job_name="regime_training_job")
        _wait(lambda: all(r.is_finished for r in instance.get_runs(train)) and instance.get_runs(train), 400,
              "the training run", stack.procs, interval=3)
        run = instance.get_runs(train)[0]
        assert run.status == DagsterRunStatus.SUCCESS, [
            e.message for e in instance.all_logs(run.run_id) if e.is_dagster_event and "FAILURE" in str(e)]
        # the hourly purge on this instance: no live run to delete yet; the asset runs keep their history
        from datetime import datetime, timedelta, timezone

        from trading_platform.maintenance import purge_runs

        n_runs = len(instance.get_run_ids())
        purged = purge_runs(instance, days=7, now=datetime.now(timezone.utc) + timedelta(days=8))
        assert purged.runs_deleted == 0 and purged.compute_logs_deleted >= 1 and len(instance.get_run_ids()) == n_runs
        assert keys <= set(instance.get_materialized_partitions(AssetKey("features")))
        # a schedule turned on by hand keeps its state in Postgres
        subprocess.run([str(BIN / "dagster"), "schedule", "start", "weekly_retraining", "-w", str(stack.workspace)],
                       env=env, cwd=stack.cwd, check=True, capture_output=True, timeout=120)
    finally:
        instance.dispose()

    # runs, event logs and schedule state are in the deployment's PostgreSQL
    assert pg.count("dagster", "SELECT count(*) FROM runs") >= 3
    assert pg.count("dagster", "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'") \
        >= 3 * len(SYMBOLS) * len(MONTHS)
    assert pg.count("dagster", "SELECT count(*) FROM jobs WHERE job_body LIKE '%%weekly_retraining%%' AND job_type = "
                               "'SCHEDULE' AND status = 'RUNNING'") == 1
    assert pg.count("dagster", "SELECT count(*) FROM bulk_actions") == 2

    # the MLflow runs are on the tracking server (its backend store is that PostgreSQL, its artifacts served)
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    found = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=50)
    assert found and pg.count("mlflow", "SELECT count(*) FROM runs") == len(found)
    assert any(p.is_file() for p in (stack.tmp / "mlartifacts").rglob("*"))

    # nothing embedded: no PostgreSQL under TP_HOME, no SQLite MLflow store, no SQLite Dagster storage
    for where in (stack.tp_home, stack.dagster_home, stack.cwd):
        if where.exists():
            leftovers = [p for p in where.rglob("*") if p.suffix in (".db", ".sqlite") or p.name == "PG_VERSION"]
            assert leftovers == [], leftovers
    assert not (stack.tp_home / "pg").exists()
    assert code_server.poll() is None  # and the code server lived through it all

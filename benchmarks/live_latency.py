"""Live predictions: latency from candle insert to prediction commit, through the real daemon.

Everything runs as a user runs it: ``dagster dev`` (the webserver and the daemon, with the repository's
``dagster.yaml`` in a temporary DAGSTER_HOME) against a throwaway PostgreSQL (TP_DATABASE_URL's server
if set, else an embedded one) and a throwaway MLflow store, with a champion of every model family
registered (tiny configurations: the pooled XGBoost pump model and NHITS on 5m, an HMM regime and a
LightGBM signal model per symbol on 1h, the TCN pattern detector on every timeframe) and its
artifacts in the serving resource's on-disk cache.

1. Bare baseline: a second code location holds a plain polling sensor and a job of one trivial op
   (it stamps a row); rows are inserted one at a time, and the latency from insert to the op's
   commit is Dagster's own sensor -> queue -> run overhead on this machine (``bare_p50_s``, ``bare_p95_s``).
2. Live: ``--symbols`` live symbols (5m, with 1h resampled live) with ``--history-days`` of stored
   history ending days ago; ``tp live feed``'s feeder appends their next closed candles at ``--rate``
   candles per second in total for ``--duration`` seconds through the live write path. Latency is
   from the candle's insert (its outbox event's ``created_at``) to the commit of the run that wrote
   its predictions and marked it done. ``lost``: fed candles not predicted once the backlog drained
   (or the drain timed out); ``duplicated``: events marked done by more than one committed run
   (``live_commits``); ``backlog_end``: events not yet predicted at the end.
3. The same feed, shorter (``--backfill-duration``), while a backfill runs: a predictions backfill
   (predictions, forecasts, patterns) when the code location's ``predictions`` asset is partitioned,
   else, as a stand-in, a market-data backfill (ingestion, resampling, features) of extra non-live
   symbols over months of history, launched through the webserver's GraphQL API as the UI does
   (``p99_during_backfill_s``).

Also reported: where a live run's time goes (claim -> run created -> launched -> run worker started
-> op started -> committed, medians), models loaded per run, events per batch.

``--kill-worker-at S``: S seconds into the live feed, one live run in flight is SIGKILLed (as the OOM killer
would); ``killed_batch_done_s`` is the time from the kill to the commit of its batch's events by a later
attempt, against ``retry_after_s`` (the ``TP_LIVE_RETRY_AFTER_S`` in force); the backfill phase is left out.

``--paper``: a live paper strategy over every live symbol's 5m candles (the NHITS forecast's sign, the pump veto,
stop, target and time exit) is started before the feed, so every live run also steps it (the paper consumer,
issue 26); ``paper_steps_end`` and ``paper_backlog_end`` say it kept up.

``--serve RPS``: ``tp serve`` runs beside the platform and a client asks its read API for 500 candles of a live
symbol and for the live status, in turn, at RPS requests a second while the feed runs (issue 27: the live latency
targets hold with it answering); its latency and errors are reported under ``api``.

``--production``: the production shape instead of ``dagster dev``, each service its own process as in
docker/compose.yaml: a separate PostgreSQL server (TCP, password) holding the market store and Dagster's
storage, ``dagster code-server start`` (the platform, and a second one for the bare location),
``dagster-daemon run``, ``dagster-webserver`` and ``tp live runner``, with docker/dagster.yaml and
docker/workspace.yaml, changing only what cannot run here (listed in the output and in the JSON:
``production_changes``).

    python benchmarks/live_latency.py [--symbols 10] [--rate 10] [--duration 300] [--backfill-duration D]
                                      [--kill-worker-at S] [--production]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# out of the path (Python put it first, running this script): benchmarks/watchdog.py would shadow the watchdog
# package Dagster's instance imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SEED = 7
PUMP = {"n_estimators": 40, "max_depth": 3, "rise": 0.01, "min_improvement_auc": -1.0,
        "min_improvement_log_loss": -1.0}
NHITS_TINY = {"max_steps": 20, "horizon": 12, "input_size": 24, "min_origins": 20, "learning_rate": 1e-3,
              "n_boot": 100}
TCN_TINY = {"epochs": 1, "n_synthetic": 400, "channels": 8, "n_boot": 100}

BARE_LOCATION = '''
"""A bare sensor and a job of one trivial op: Dagster's own sensor -> run overhead."""
import os

import psycopg
from dagster import Config, DefaultSensorStatus, Definitions, RunRequest, SkipReason, in_process_executor, job, op, sensor

DSN = os.environ["TP_DATABASE_URL"]


class MarkConfig(Config):
    mark_id: int


@op
def touch(config: MarkConfig):
    with psycopg.connect(DSN, autocommit=True) as c:
        c.execute("UPDATE bench_marks SET done_at = clock_timestamp() WHERE id = %s", (config.mark_id,))


@job(executor_def=in_process_executor, tags={"tp/run_kind": "live", "dagster/priority": "100"})
def bare_job():
    touch()


@sensor(job=bare_job, minimum_interval_seconds=1, default_status=DefaultSensorStatus.RUNNING)
def bare_sensor(context):
    with psycopg.connect(DSN, autocommit=True) as c:
        ids = [r[0] for r in c.execute("UPDATE bench_marks SET requested_at = clock_timestamp() "
                                       "WHERE requested_at IS NULL RETURNING id")]
    if not ids:
        return SkipReason("nothing new")
    return [RunRequest(run_key=f"mark-{i}", run_config={"ops": {"touch": {"config": {"mark_id": i}}}}) for i in ids]


defs = Definitions(jobs=[bare_job], sensors=[bare_sensor])
'''


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 3)


# ---- the market and the models -------------------------------------------------------------------
def load_history(store, symbols: list[str], start: datetime, end: datetime, live: bool) -> None:
    """5m candles from the synthetic source (the historical write path: no events), 1h resampled, features."""
    from trading_platform.core.calendars import slot_open
    from trading_platform.core.resample import resample
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.features.pipeline import materialize
    from trading_platform.features.spec import FeatureSpec
    from trading_platform.sources.synthetic import SyntheticSource

    source = SyntheticSource(SEED)
    for s in symbols:
        info = SymbolInfo.create(s, timeframes=["5m", "1h"], live=live)
        store.add_symbol(info)
        store.ingest_frame(s, "5m", source.fetch(info, "5m", start, end), "synthetic")
        out = resample(store.read_candles(s, "5m"), 300, 3600, now_us=int(end.timestamp() * 1e6),
                       market_open=lambda ts, sec, info=info: slot_open(info.category, info.exchange, ts, sec))
        store.write_candles(s, "1h", out.candles, "resample:5m")
        materialize(store, info, FeatureSpec(), [(start, end)])


def train_models(dsn: str, symbols: list[str], per_symbol: int, home: Path, uri: str) -> dict:
    """A champion of every family (promoted by hand whatever the gate says: the demo-sized models exist to
    be served), their artifacts put in the serving resource's disk cache."""
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.models import nhits_assets, pattern_tcn, pump_xgb, regime_hmm, signal_lgbm
    from trading_platform.models.registry import promote
    from trading_platform.models.scoring import resolve_versions
    from trading_platform.resources import MarketDB, MLflowResource, ModelServer
    from trading_platform.store.db import connect
    from trading_platform.symbols import sync_partitions

    instance = DagsterInstance.ephemeral()
    with connect(dsn) as store:
        sync_partitions(instance, store)
    mlflow = MLflowResource(tracking_uri=uri, artifact_root=str(home / "mlartifacts"))
    res = {"market_db": MarketDB(database_url=dsn), "mlflow": mlflow,
           "model_server": ModelServer(tracking_uri=uri, device="cpu")}

    def run(asset, config, partition_key=None):
        key = asset.key.to_python_identifier()
        materialize([asset], instance=instance, resources=res, partition_key=partition_key,
                    run_config={"ops": {key: {"config": config}},
                                "loggers": {"console": {"config": {"log_level": "WARNING"}}}})

    t = time.perf_counter()
    run(pump_xgb, PUMP)
    for s in symbols[:per_symbol]:
        run(regime_hmm, {"n_iter": 10}, s)
        promote(mlflow.client(), f"regime_hmm.{s.replace('/', '_')}", "1")
        run(signal_lgbm, {"n_estimators": 20}, s)
    [nhits_5m] = [a for a in nhits_assets if a.key.path[-1] == "nhits_5m"]
    run(nhits_5m, NHITS_TINY)
    run(pattern_tcn, TCN_TINY)
    client = mlflow.client()
    for rm in client.search_registered_models():
        if "champion" not in (rm.aliases or {}):
            promote(client, rm.name, "1")
    versions = resolve_versions(client)
    server = ModelServer(tracking_uri=uri, device="cpu", cache_dir=str(home / "model_cache"))
    for v in versions:
        server.load(v.name, version=v.version)  # the artifacts on disk: a run loads without MLflow
    return {"versions": len(versions), "families": sorted({v.family for v in versions}),
            "train_s": round(time.perf_counter() - t, 1)}


# ---- the services -------------------------------------------------------------------------------------
def start_dagster(tmp: Path, env: dict, port: int) -> subprocess.Popen:
    (tmp / "bare_location.py").write_text(BARE_LOCATION)
    (tmp / "workspace.yaml").write_text(
        "load_from:\n"
        f"  - python_module:\n      module_name: trading_platform.definitions\n      attribute: defs\n"
        f"      location_name: trading_platform\n      working_directory: {REPO}\n"
        f"  - python_file:\n      relative_path: {tmp / 'bare_location.py'}\n      location_name: bare\n"
        f"      working_directory: {tmp}\n")
    bindir = Path(sys.executable).parent
    return subprocess.Popen([str(bindir / "dagster"), "dev", "-w", str(tmp / "workspace.yaml"), "-p", str(port),
                             "--log-level", "warning"], env=env, cwd=env["DAGSTER_HOME"],
                            stdout=open(tmp / "dagster.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                 data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def wait_webserver(port: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("dagster dev exited; see dagster.log")
        try:
            out = graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name "
                                "locationOrLoadError { __typename } } } } }")
            entries = out["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                               for e in entries):
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(1)
    raise RuntimeError("the webserver did not come up")


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    """Stop a service's process group (SIGTERM: as docker stop does), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


PRODUCTION_CHANGES = [
    "the DockerRunLauncher (the fallback for runs other than live ones) is the default launcher: no Docker engine "
    "here; those runs are processes of the code server",
    "host names are 127.0.0.1: the live runner's address (live_runner:4001), the code server's (user_code:4000) "
    "and PostgreSQL's",
    "the compute-log directory is under the temporary home",
    "a second code server holds the bare sensor's location beside the platform's",
    "MLflow is a SQLite store in the temporary home, not the tracking server (the live runs read the models from "
    "the serving resource's disk cache)",
]


def start_production(tmp: Path, env: dict, port: int, ports: dict, workspace: Path) -> list[tuple[str, subprocess.Popen]]:
    """docker/compose.yaml's services as processes: the code servers, the live runner, the daemon, the webserver."""
    import yaml

    (tmp / "bare_location.py").write_text(BARE_LOCATION)
    ws = yaml.safe_load(workspace.read_text())
    ws["load_from"].append({"grpc_server": {"host": "127.0.0.1", "port": ports["bare"], "location_name": "bare"}})
    workspace.write_text(yaml.safe_dump(ws))
    bindir = Path(sys.executable).parent
    services = {
        "user_code": [str(bindir / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(ports["code"]),
                      "-m", "trading_platform.definitions"],
        "bare_code": [str(bindir / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(ports["bare"]),
                      "-f", str(tmp / "bare_location.py")],
        "live_runner": [sys.executable, "-m", "trading_platform.cli", "live", "runner", "--listen",
                        f"127.0.0.1:{ports['runner']}"],
    }
    procs = []
    for name, cmd in services.items():
        procs.append((name, subprocess.Popen(cmd, env=env, cwd=env["DAGSTER_HOME"], stdout=open(tmp / f"{name}.log", "w"),
                                             stderr=subprocess.STDOUT, start_new_session=True)))
    from trading_platform.live.prefork import request

    deadline = time.time() + 240
    while True:  # the runner up (its imports take the longest) before the daemon launches anything
        try:
            request(f"127.0.0.1:{ports['runner']}", {"op": "ping"}, timeout=2)
            break
        except OSError:
            if time.time() > deadline or any(p.poll() is not None for _, p in procs):
                raise RuntimeError(f"the live runner did not come up; see {tmp}/*.log")
            time.sleep(1)
    for name, cmd in {"daemon": [str(bindir / "dagster-daemon"), "run", "-w", str(workspace)],
                      "webserver": [str(bindir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w",
                                    str(workspace)]}.items():
        procs.append((name, subprocess.Popen(cmd, env=env, cwd=env["DAGSTER_HOME"], stdout=open(tmp / f"{name}.log", "w"),
                                             stderr=subprocess.STDOUT, start_new_session=True)))
    return procs


def kill_worker_at(instance, at_s: float, out: dict) -> None:
    """``at_s`` seconds from now, SIGKILL the process of a live run in flight (forked or not); what was killed
    goes into ``out``."""
    from dagster import DagsterRunStatus, RunsFilter

    from trading_platform.live.prefork import PID_TAG

    time.sleep(at_s)
    deadline = time.time() + 120
    while time.time() < deadline:
        for r in instance.get_runs(RunsFilter(tags={"tp/run_kind": "live"}, statuses=[DagsterRunStatus.STARTED])):
            pid = r.tags.get(PID_TAG)
            if pid is None:
                got = instance.run_launcher._reported_pid(r.run_id)
                pid = got and got[0]
            if not pid:
                continue
            cfg = r.run_config["ops"]["predict_live_events"]["config"]
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                continue
            out.update(killed_at=time.time(), killed_run=r.run_id, killed_pid=int(pid), killed_forked=PID_TAG in r.tags,
                       killed_batch=cfg["batch_id"], killed_events=cfg["event_ids"])
            log(f"killed run {r.run_id[:8]} (pid {pid}, batch {cfg['batch_id']}, {len(cfg['event_ids'])} events)")
            return
        time.sleep(0.05)
    log("no live run in flight to kill within 120 s")


def killed_figures(dsn: str, instance, killed: dict) -> dict:
    import psycopg
    from dagster import RunsFilter

    if "killed_at" not in killed:
        return {"killed_batch_done_s": None}
    with psycopg.connect(dsn) as c:
        done, last = c.execute("SELECT count(*) FILTER (WHERE status = 'done'), extract(epoch FROM max(done_at)) "
                               "FROM market_event_queue WHERE event_id = ANY(%s)", (killed["killed_events"],)).fetchone()
    runs = instance.get_runs(RunsFilter(tags={"tp/live_batch": str(killed["killed_batch"])}))
    return {"killed_batch_done_s": (round(float(last) - killed["killed_at"], 3)
                                    if last is not None and done == len(killed["killed_events"]) else None),
            "killed_events": len(killed["killed_events"]), "killed_forked": killed["killed_forked"],
            "killed_run_status": next((r.status.value for r in runs if r.run_id == killed["killed_run"]), None),
            "killed_batch_runs": sorted(f"{r.tags.get('tp/live_attempt')}.{r.tags.get('dagster/retry_number', '0')} "
                                        f"{r.status.value}" for r in runs)}


# ---- the phases ---------------------------------------------------------------------------------------
def bare_phase(dsn: str, samples: int, warmup: int = 2, timeout: float = 120) -> list[float]:
    import random

    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS bench_marks (id bigserial PRIMARY KEY, phase text, "
                  "created_at timestamptz NOT NULL DEFAULT clock_timestamp(), requested_at timestamptz, "
                  "done_at timestamptz)")
        rng = random.Random(1)
        for i in range(warmup + samples):
            c.execute("INSERT INTO bench_marks (phase) VALUES (%s)", ("warmup" if i < warmup else "bare",))
            deadline = time.time() + timeout
            while c.execute("SELECT count(*) FROM bench_marks WHERE done_at IS NULL").fetchone()[0]:
                if time.time() > deadline:
                    raise RuntimeError("a bare run did not finish in time; see dagster.log")
                time.sleep(0.2)
            time.sleep(rng.uniform(0, 5))  # land anywhere in the daemon's 5 s loop
        return [r[0] for r in c.execute("SELECT extract(epoch FROM done_at - created_at)::float8 FROM bench_marks "
                                        "WHERE phase = 'bare' ORDER BY id")]


def drain(dsn: str, timeout: float) -> int:
    from trading_platform.live.outbox import status
    from trading_platform.store.db import connect

    deadline = time.time() + timeout
    with connect(dsn) as store:
        while True:
            backlog = status(store.conn)["backlog"]
            if backlog == 0 or time.time() > deadline:
                return backlog
            time.sleep(1)


def feed_phase(dsn: str, symbols: list[str], rate: float, duration: float | None, name: str,
               count: int | None = None) -> dict:
    from trading_platform.live.feed import feed
    from trading_platform.store.db import connect

    with connect(dsn) as store:
        out = feed(store, symbols, rate, duration, source_spec=f"synthetic:{SEED}", source_name=name, count=count)
    return out.as_dict()


def live_figures(dsn: str, name: str) -> dict:
    import psycopg

    with psycopg.connect(dsn) as c:
        lat = [float(r[0]) for r in c.execute(
            "SELECT extract(epoch FROM q.done_at - e.created_at) FROM market_events e JOIN market_event_queue q "
            "ON q.event_id = e.id AND q.consumer = 'predictions' WHERE e.source = %s AND q.status = 'done'",
            (name,))]
        fed_events, not_done, fed_done = c.execute(
            "SELECT count(*), count(*) FILTER (WHERE q.status <> 'done'), count(DISTINCT (e.symbol, e.ts)) FILTER "
            "(WHERE q.status = 'done' AND e.timeframe = '5m') FROM market_events e JOIN market_event_queue q ON "
            "q.event_id = e.id AND q.consumer = 'predictions' WHERE e.source = %s", (name,)).fetchone()
        missing_preds = c.execute(
            "SELECT count(*) FROM market_events e WHERE e.source = %s AND NOT EXISTS (SELECT 1 FROM predictions p "
            "WHERE p.model_name = 'pump_xgb' AND p.symbol = e.symbol AND p.timeframe = e.timeframe AND p.ts = e.ts)",
            (name,)).fetchone()[0]
    return {"events": fed_events, "done": len(lat), "fed_done": fed_done, "not_done": not_done,
            "missing_pump_predictions": missing_preds,
            "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "p99_s": pct(lat, 0.99),
            "max_s": round(max(lat), 3) if lat else None}


def run_breakdown(dsn: str, instance, since: float) -> dict:
    """Medians over the live runs since ``since``: where the time between claim and commit goes."""
    import psycopg
    from dagster import DagsterEventType, RunsFilter

    runs = {r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(tags={"tp/run_kind": "live"}))
            if r.create_timestamp.timestamp() >= since and r.dagster_run.job_name == "live_predictions_job"}
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT c.run_id, extract(epoch FROM b.created_at), extract(epoch FROM c.committed_at), "
                         "c.stats, cardinality(c.event_ids) FROM live_commits c JOIN live_batches b ON b.id = c.batch_id"
                         ).fetchall()
    stages: dict[str, list[float]] = {k: [] for k in ("claim_to_created", "created_to_launched", "launched_to_started",
                                                      "started_to_committed", "op_load_models", "op_features",
                                                      "op_score", "op_lock_wait", "op_mark_done", "op_total",
                                                      "events_per_run", "models_loaded")}
    for run_id, claimed, committed, stats, n in rows:
        rec = runs.get(run_id)
        if rec is None or not rec.start_time:
            continue
        launched = [e.timestamp for e in instance.all_logs(run_id, of_type=DagsterEventType.RUN_STARTING)]
        created = rec.create_timestamp.timestamp()
        stages["claim_to_created"].append(created - float(claimed))
        if launched:
            stages["created_to_launched"].append(launched[0] - created)
            stages["launched_to_started"].append(rec.start_time - launched[0])
        stages["started_to_committed"].append(float(committed) - rec.start_time)
        stages["op_load_models"].append(stats.get("load_models_s", 0))
        stages["op_features"].append(stats.get("features_s", 0))
        stages["op_score"].append(stats.get("score_s", 0))
        stages["op_lock_wait"].append(stats.get("lock_s", 0))
        stages["op_mark_done"].append(stats.get("mark_s", 0))
        stages["op_total"].append(stats.get("total_s", 0))
        stages["events_per_run"].append(n)
        stages["models_loaded"].append(stats.get("models_loaded", 0))
    out = {k: (round(statistics.median(v), 3) if v else None) for k, v in stages.items()}
    out["runs"] = len(stages["op_total"])
    # forked from the warm process (embedded) or the live runner (production), not launched cold
    out["forked_runs"] = sum(1 for run_id, *_ in rows if run_id in runs and "tp/worker_pid" in runs[run_id].dagster_run.tags)
    out["models_loaded_max"] = max(stages["models_loaded"], default=0)
    return out


class ApiLoad:
    """``tp serve`` as a process, and a thread asking its read API for a live symbol's last 500 candles and the live
    status at ``rps`` requests a second in turn; the answers' latency and errors."""

    def __init__(self, env: dict, symbols: list[str], rps: float, tmp: Path):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = {**env, "TP_API_RATE": "10000"}
        self.symbols, self.rps, self.tmp = symbols, rps, tmp
        self.lat: list[float] = []
        self.metrics_lat: list[float] = []  # /metrics, asked every 20th request (as a Prometheus would, more often)
        self.errors = 0
        self.halt = False
        self.proc = None
        self.thread = None

    def start(self) -> None:
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "serve", "--port", str(self.port)],
                                     env=self.env, stdout=open(self.tmp / "serve.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("tp serve did not come up: " + (self.tmp / "serve.log").read_text()[-2000:])
                time.sleep(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from urllib.parse import quote

        base = f"http://127.0.0.1:{self.port}/api/v1"
        k = 0
        while not self.halt:
            url = (f"http://127.0.0.1:{self.port}/metrics" if k % 20 == 19 else
                   f"{base}/candles?symbol={quote(self.symbols[k % len(self.symbols)])}&timeframe=5m&limit=500"
                   if k % 2 == 0 else f"{base}/live")
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    r.read()
                (self.metrics_lat if url.endswith("/metrics") else self.lat).append(time.perf_counter() - t)
            except Exception:  # noqa: BLE001 - counted
                self.errors += 1
            k += 1
            time.sleep(max(0.0, 1.0 / self.rps - (time.perf_counter() - t)))

    def figures(self) -> dict:
        return {"requests": len(self.lat), "errors": self.errors, "p50_ms": pct([x * 1000 for x in self.lat], 0.5),
                "p95_ms": pct([x * 1000 for x in self.lat], 0.95), "metrics_scrapes": len(self.metrics_lat),
                "metrics_p95_ms": pct([x * 1000 for x in self.metrics_lat], 0.95)}

    def counted(self, dsn: str) -> dict:
        """What /metrics says of the predictions consumer against the store, once the feed has drained (the cache's
        5 s waited out): events processed, and the latency histogram's count (the fed candles, not the derived)."""
        import psycopg
        from prometheus_client.parser import text_string_to_metric_families

        time.sleep(6)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            text = r.read().decode()
        got = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.labels.get("consumer") == "predictions" and s.name in (
                   "tp_live_events_processed_total", "tp_live_latency_seconds_count")}
        with psycopg.connect(dsn) as c:
            done, fed_done = c.execute(
                "SELECT count(*), count(*) FILTER (WHERE e.source NOT LIKE 'resample:%%') FROM market_event_queue q "
                "JOIN market_events e ON e.id = q.event_id WHERE q.consumer = 'predictions' AND q.status = 'done'"
                ).fetchone()
        return {"metrics_events_processed": got.get("tp_live_events_processed_total"), "store_events_done": done,
                "metrics_latency_count": got.get("tp_live_latency_seconds_count"), "store_fed_events_done": fed_done}

    def stop(self) -> None:
        self.halt = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def start_paper(dsn: str, symbols: list[str]) -> dict:
    """A live paper strategy over the symbols' 5m candles (what ``tp paper start`` does), started now."""
    from trading_platform.paper import live as paper_live
    from trading_platform.paper.spec import parse
    from trading_platform.store.db import connect
    from trading_platform.store.paper import save_strategy

    spec = parse({"name": "live_latency", "universe": [{"symbol": s, "timeframe": "5m"} for s in symbols],
                  "cash": 10_000, "rules": {"confirm": {"table": "forecasts", "model": "nhits.5m", "min": 0.0},
                                            "pump_veto": {"model": "pump_xgb", "threshold": 0.9}, "stop_loss": 0.01,
                                            "take_profit": 0.01, "time_exit": 6},
                  "costs": {"fee_bps": 10, "spread_bps": 4}, "risk": {"position_fraction": 0.2, "max_positions": 5}})
    with connect(dsn) as store:
        save_strategy(store.conn, spec)
        out = paper_live.start(store, spec)
    return {"run_id": out["run_id"], "pins": out["pins"], "from": str(out["stepped_to"])}


def paper_figures(dsn: str, run_id: str) -> dict:
    import psycopg

    deadline = time.time() + 60
    with psycopg.connect(dsn, autocommit=True) as c:
        while True:  # the sensor's catch-up for the last events, if the last live run left any
            backlog = c.execute("SELECT count(*) FROM market_event_queue WHERE consumer = 'paper' AND status <> 'done'"
                                ).fetchone()[0]
            if not backlog or time.time() > deadline:
                break
            time.sleep(1)
        stepped, = c.execute("SELECT stepped_to FROM paper_runs WHERE run_id = %s", (run_id,)).fetchone()
        orders, = c.execute("SELECT count(*) FROM orders WHERE run_id = %s", (run_id,)).fetchone()
        # the newest close every live series has delivered (the feed's last round may stop part-way)
        newest, = c.execute("SELECT min(m) FROM (SELECT max(ts) + interval '5 minutes' AS m FROM ohlcv WHERE "
                            "timeframe = '5m' AND symbol IN (SELECT symbol FROM symbols WHERE live) GROUP BY symbol) x"
                            ).fetchone()
    return {"paper_stepped_to": str(stepped), "paper_orders": orders, "paper_backlog_end": backlog,
            "paper_behind_s": (newest - stepped).total_seconds() if stepped and newest else None}


def duplicated(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM (SELECT e FROM live_commits, unnest(event_ids) e GROUP BY e "
                         "HAVING count(*) > 1) d").fetchone()[0]


def launch_backfill(port: int, predictions_partitioned: bool, partitions: list[str]) -> tuple[str, list[str]]:
    if predictions_partitioned:
        assets = [["predictions"], ["forecasts"], ["patterns"]]
    else:
        assets = [["market", "ohlcv"], ["market", "ohlcv_1h"], ["features"]]
    q = ("mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
         "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } "
         "... on InvalidSubsetError { message } ... on PartitionSetNotFoundError { message } } }")
    out = graphql(port, q, {"p": {"partitionNames": partitions, "assetSelection": [{"path": a} for a in assets],
                                  "tags": [{"key": "tp/run_kind", "value": "backfill"}], "title": "live benchmark"}})
    res = out.get("data", {}).get("launchPartitionBackfill") or {}
    if res.get("__typename") != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill not launched: {out}")
    return res["backfillId"], ["/".join(a) for a in assets]


def backfill_runs(instance, backfill_id: str) -> dict:
    from dagster import RunsFilter

    runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
    out: dict[str, int] = {}
    for r in runs:
        out[r.status.value] = out.get(r.status.value, 0) + 1
    return out


class _Done(Exception):
    """The run's phases are over early (--kill-worker-at leaves the backfill phase out)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--rate", type=float, default=10.0, help="candles per second, in total")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of the live feed")
    ap.add_argument("--backfill-duration", type=float, default=None, help="seconds of the feed during the backfill "
                                                                          "(default: a third of --duration, >= 30)")
    ap.add_argument("--bare-samples", type=int, default=20)
    ap.add_argument("--history-days", type=int, default=120)
    ap.add_argument("--per-symbol-models", type=int, default=None,
                    help="symbols with their own regime and signal champions (default: all)")
    ap.add_argument("--backfill-symbols", type=int, default=4)
    ap.add_argument("--backfill-months", type=int, default=12)
    ap.add_argument("--port", type=int, default=3321)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--kill-worker-at", type=float, default=None, metavar="S",
                    help="SIGKILL one live run in flight S seconds into the feed (the backfill phase is left out)")
    ap.add_argument("--paper", action="store_true", help="a live paper strategy over the live symbols during the feed")
    ap.add_argument("--serve", type=float, default=None, metavar="RPS",
                    help="tp serve running beside, answering RPS read-API requests a second (candles and live status)")
    ap.add_argument("--production", action="store_true",
                    help="the production shape: separate PostgreSQL server, code server, daemon, webserver and live "
                         "runner processes with docker/dagster.yaml")
    args = ap.parse_args()
    bf_duration = args.backfill_duration or max(30.0, args.duration / 3)
    per_symbol = args.symbols if args.per_symbol_models is None else args.per_symbol_models

    tmp = Path(tempfile.mkdtemp(prefix="tp-live-bench-"))
    home = tmp / "home"
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    # the stored history ends well before now, so the feed has closed candles to append at any rate
    per_symbol_candles = args.rate * (args.duration + bf_duration + 120) / args.symbols
    hist_end = (now - timedelta(days=1, minutes=5 * per_symbol_candles)).replace(minute=0)
    hist_start = hist_end - timedelta(days=args.history_days)
    bf_first_month = (hist_end - timedelta(days=31 * args.backfill_months)).replace(day=1, hour=0, minute=0)
    # the embedded shape on one machine (a local Dagster instance and MLflow store) over a throwaway database
    env_home = {"TP_EMBEDDED": "0" if args.production else "1", "TP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "TP_NHITS_TIMEFRAMES": "5m",
                "TP_HISTORY_START": bf_first_month.strftime("%Y-%m-01"), "TP_DEVICE": "cpu", "TP_SOURCE": "synthetic:7"}
    pg_external = workspace = None
    ports: dict[str, int] = {}
    if args.production:
        sys.path.insert(0, str(REPO / "tests"))
        from test_deployment import PASSWORD, ExternalPostgres, _free_port, production_instance_dir

        pg_external = ExternalPostgres()  # the `postgres` service: its own server, TCP, password auth
        ports = {"code": _free_port(), "bare": _free_port(), "runner": _free_port()}
        dagster_home, workspace = production_instance_dir(tmp, ports["code"], ports["runner"])
        env_home.update({"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": "127.0.0.1",
                         "DAGSTER_PG_PORT": str(pg_external.port), "DAGSTER_PG_USERNAME": "postgres",
                         "DAGSTER_PG_PASSWORD": PASSWORD, "DAGSTER_PG_DB": "dagster"})
        os.environ["TP_DATABASE_URL"] = pg_external.url("postgres")
        for change in PRODUCTION_CHANGES:
            log(f"production shape, changed: {change}")
    os.environ.update(env_home)  # before the platform reads them (some at import)
    admin, pg_tmp = os.environ.get("TP_DATABASE_URL"), None
    if not admin:
        from trading_platform.store.embedded import ensure_embedded

        pg_tmp = tmp / "pg"
        admin = ensure_embedded(pg_tmp)
    from benchmarks.scale import fresh_db

    dsn = fresh_db(admin, "live")
    os.environ["TP_DATABASE_URL"] = dsn
    proc = None
    services: list = []
    from trading_platform.live.settings import live_settings

    figures: dict = {"mode": "production" if args.production else "embedded", "symbols": args.symbols,
                     "rate": args.rate, "duration_s": args.duration, "retry_after_s": live_settings().retry_after_s}
    if args.production:
        figures["production_changes"] = PRODUCTION_CHANGES
    try:
        from trading_platform.instance import ensure_dagster_home
        from trading_platform.store.db import connect

        ensure_dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        live = [f"L{i:02d}/USDT" for i in range(args.symbols)]
        extra = [f"H{i:02d}/USDT" for i in range(args.backfill_symbols)]
        t = time.perf_counter()
        with connect(dsn) as store:
            load_history(store, live, hist_start, hist_end, live=True)
            for s in extra:  # symbols for the backfill: registered, history to be ingested by the backfill
                from trading_platform.core.symbols import SymbolInfo

                store.add_symbol(SymbolInfo.create(s, timeframes=["5m", "1h"]))
        from dagster import DagsterInstance

        from trading_platform.symbols import sync_partitions

        with connect(dsn) as store:
            sync_partitions(DagsterInstance.get(), store)
        log(f"market: {args.symbols} live symbols x {args.history_days} days of 5m candles "
            f"({time.perf_counter() - t:.0f} s)")
        models = train_models(dsn, live, per_symbol, home, os.environ["MLFLOW_TRACKING_URI"])
        figures["models_registered"] = models["versions"]
        figures["families"] = models["families"]
        log(f"models: {models['versions']} champions of {', '.join(models['families'])} ({models['train_s']} s)")

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "TP_LOG_LEVEL": "WARNING"}
        if args.production:
            services = start_production(tmp, env, args.port, ports, workspace)
            proc = dict(services)["webserver"]
            wait_webserver(args.port, proc)
            log("the production shape is up: code servers, live runner, daemon, webserver")
        else:
            proc = start_dagster(tmp, env, args.port)
            wait_webserver(args.port, proc)
            log("dagster dev is up (webserver and daemon)")
        instance = DagsterInstance.get()

        # 1. the bare baseline
        bare = bare_phase(dsn, args.bare_samples)
        figures["bare_p50_s"], figures["bare_p95_s"] = pct(bare, 0.5), pct(bare, 0.95)
        log(f"bare sensor -> trivial op: p50 {figures['bare_p50_s']} s, p95 {figures['bare_p95_s']} s "
            f"({len(bare)} runs)")

        api = None
        if args.serve:
            api = ApiLoad(env, live, args.serve, tmp)
            api.start()
            log(f"tp serve answering {args.serve} requests a second beside the feed")
        if args.paper:
            figures["paper"] = start_paper(dsn, live)
            log(f"paper: {figures['paper']['run_id']} live over {len(live)} symbols, pins {figures['paper']['pins']}")

        # 2. live: a warm-up candle per symbol (the first run after a start pays cold caches), then the feed
        feed_phase(dsn, live, args.rate, None, "bench warmup", count=len(live))
        drain(dsn, 180)
        since = time.time()
        log(f"feeding {args.rate} candles/s over {len(live)} symbols for {args.duration:.0f} s ...")
        killed: dict = {}
        killer = None
        if args.kill_worker_at is not None:
            import threading

            killer = threading.Thread(target=kill_worker_at, args=(instance, args.kill_worker_at, killed), daemon=True)
            killer.start()
        fed = feed_phase(dsn, live, args.rate, args.duration, "bench feed")
        if killer is not None:
            killer.join(timeout=180)
        if api is not None:
            figures["api"] = api.figures()
            log(f"tp serve beside the feed: {json.dumps(figures['api'])}")
        backlog = drain(dsn, max(180.0, live_settings().retry_after_s * 3))
        if api is not None:
            figures["api"].update(api.counted(dsn))
            log(f"/metrics against the store: {json.dumps(figures['api'])}")
        main_fig = live_figures(dsn, "bench feed")
        figures.update(fed=fed["fed"], fed_rate=fed["rate"], predicted=main_fig["done"],
                       lost=fed["fed"] - main_fig["fed_done"], missing_pump_predictions=main_fig["missing_pump_predictions"],
                       p50_s=main_fig["p50_s"], p95_s=main_fig["p95_s"], p99_s=main_fig["p99_s"],
                       max_s=main_fig["max_s"], backlog_end=backlog)
        figures["runs"] = run_breakdown(dsn, instance, since)
        figures["models_loaded"] = figures["runs"]["models_loaded_max"]
        if args.paper:
            figures.update(paper_figures(dsn, figures["paper"]["run_id"]))
            log(f"paper: stepped to {figures['paper_stepped_to']}, {figures['paper_orders']} orders, backlog "
                f"{figures['paper_backlog_end']}")
        log(f"live: {json.dumps(main_fig)}")
        log(f"live runs: {json.dumps(figures['runs'])}")
        if args.kill_worker_at is not None:
            figures.update(killed_figures(dsn, instance, killed))
            figures["duplicated"] = duplicated(dsn)
            log(f"killed: {json.dumps({k: v for k, v in figures.items() if k.startswith('killed')})}; "
                "the backfill phase is left out with --kill-worker-at")
            raise _Done

        # 3. the same feed while a backfill runs
        from trading_platform.assets.models import predictions as predictions_asset

        partitioned = predictions_asset.partitions_def is not None
        months = sorted({(bf_first_month + timedelta(days=31 * i)).strftime("%Y-%m-01")
                         for i in range(args.backfill_months)})
        symbols = live if partitioned else extra
        partitions = [f"{m}|{s}" for s in symbols for m in months]
        bf_id, bf_assets = launch_backfill(args.port, partitioned, partitions)
        figures["backfill_assets"] = bf_assets
        deadline = time.time() + 120
        while not backfill_runs(instance, bf_id).get("STARTED") and time.time() < deadline:
            time.sleep(1)
        log(f"backfill {bf_id} of {', '.join(bf_assets)} over {len(partitions)} partitions: "
            f"{backfill_runs(instance, bf_id)}; feeding for {bf_duration:.0f} s ...")
        since_bf = time.time()
        fed_bf = feed_phase(dsn, live, args.rate, bf_duration, "bench feed during backfill")
        backlog_bf = drain(dsn, 180)
        bf_fig = live_figures(dsn, "bench feed during backfill")
        figures.update(fed_during_backfill=fed_bf["fed"], lost_during_backfill=fed_bf["fed"] - bf_fig["fed_done"],
                       p50_during_backfill_s=bf_fig["p50_s"], p99_during_backfill_s=bf_fig["p99_s"],
                       backlog_end=backlog + backlog_bf, backfill_runs=backfill_runs(instance, bf_id))
        figures["runs_during_backfill"] = run_breakdown(dsn, instance, since_bf)
        figures["lost"] += figures["lost_during_backfill"]
        figures["duplicated"] = duplicated(dsn)
        log(f"during the backfill: {json.dumps(bf_fig)}; backfill runs {figures['backfill_runs']}")
    except _Done:
        pass
    finally:
        if args.serve and "api" in locals() and api is not None:
            api.stop()
        for _, p in reversed(services):
            stop(p, signal.SIGTERM)
        if proc is not None and not services:
            stop(proc)
        if pg_external is not None:
            pg_external.stop()
        if pg_tmp is not None:
            from trading_platform.store.embedded import stop_embedded

            stop_embedded(pg_tmp)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    p50, p99 = figures.get("p50_s"), figures.get("p99_s")
    bp50, bp95 = figures.get("bare_p50_s"), figures.get("bare_p95_s")
    if args.kill_worker_at is not None:
        done_s = figures.get("killed_batch_done_s")
        figures["targets"] = {
            "lost_0": figures.get("lost") == 0, "duplicated_0": figures.get("duplicated") == 0,
            "backlog_end_0": figures.get("backlog_end") == 0,
            "killed_batch_done_within_retry_after_plus_10s": done_s is not None
            and done_s <= figures["retry_after_s"] + 10,
        }
        print(json.dumps(figures))
        return
    figures["targets"] = {
        "lost_0": figures.get("lost") == 0, "duplicated_0": figures.get("duplicated") == 0,
        "backlog_end_0": figures.get("backlog_end") == 0,
        "p50_within_2s_of_bare_p50": p50 is not None and bp50 is not None and p50 <= bp50 + 2,
        "p99_within_6s_of_bare_p95": p99 is not None and bp95 is not None and p99 <= bp95 + 6,
        "p50_at_most_12s": p50 is not None and p50 <= 12, "p99_at_most_20s": p99 is not None and p99 <= 20,
        "p99_during_backfill_within_10s_of_bare_p95": (figures.get("p99_during_backfill_s") is not None
                                                       and bp95 is not None
                                                       and figures["p99_during_backfill_s"] <= bp95 + 10),
    }
    if args.paper:  # the paper run stepped every candle of the feed (the newest close of every series)
        figures["targets"]["paper_kept_up"] = figures.get("paper_backlog_end") == 0 and \
            figures.get("paper_behind_s") is not None and figures["paper_behind_s"] <= 0
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

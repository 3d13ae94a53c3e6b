"""``tp backup DIR`` and ``tp restore DIR``: their time and size on a demo-sized deployment, and what comes back.

Two deployments in the embedded shape, each with its own database, TP_HOME, DAGSTER_HOME (Dagster's SQLite
storage) and MLflow store (SQLite under TP_HOME, artifacts in TP_HOME/mlartifacts), and one model signing key for
the whole run (a random TP_MODEL_SIGNING_KEY: it is never in a backup, so the restored deployment serves its models
only with the same key). By default each deployment's database is on its own throwaway PostgreSQL server: A's an
embedded one in the temp dir (``pg``), B's a second embedded one (``pg2``), so the restore is onto another server,
where the cluster-wide roles the dump grants to (tp_owner, tp_platform, tp_reader, tp_api_writer, live_writer) do
not exist until ``tp restore`` creates them. ``--database-url ADMIN_DSN`` (or TP_DATABASE_URL): A's server is that
one (databases are created on it) and, unless ``--restore-database-url ADMIN_DSN`` names another, B's too;
``--same-server``: B on A's server (the roles exist already there: the restore onto another server is not
measured).

1. Deployment A is filled: ``--symbols`` crypto symbols (``C01/USDT``…, 1h only) with ``--days`` of hourly
   candles from the synthetic source written through the store (``ingest_frame``: normalized, then
   ``write_candles``), ending two closed hours ago
   (the next closed candles are left for the live path); the ``features`` asset over every symbol-month in one run
   (its partition range spans every symbol and month); the pooled pump classifier on 1h (tiny: 40 trees, gate
   margins that let it be champion; promoted by hand if its gate says otherwise), a regime HMM for the first symbol
   (10 iterations, promoted); the ``predictions`` asset over every symbol-month in one run: the pump champion's
   predictions over the whole history of every symbol and the regime champion's over the first symbol's (no
   forecasts or patterns: no NHITS or TCN is trained). Every run is recorded in A's Dagster storage. The symbols
   are then marked live.
2. Before: every table of A's market store (its rows, and an md5 over the md5 of every row, in a fixed order), the
   models A serves (``resolve_versions``: name, version, role) and that each loads (``ModelServer.load``).
3. ``tp backup DIR --json`` as a process with A's environment: ``backup_s`` (wall time of the command, the
   interpreter's start included), ``backup_bytes`` (the manifest's). Beside it, ``pg_dump -Fc --no-owner`` of A's
   market database alone (the binary ``tp backup`` picks): ``raw_pg_dump_s``, ``backup_ratio_vs_raw_pg_dump``.
4. Deployment B: a new empty database on B's server (by default the second embedded one: ``restore_other_server``
   says whether B's server is another than A's), its own (empty) TP_HOME and DAGSTER_HOME, the same key.
   ``roles_before_restore``: which of the five roles exist on B's server (none on a fresh embedded one).
   ``tp restore DIR --json`` as a process with B's environment: ``restore_s``. Then ``roles_after_restore`` (which
   of them exist now) and ``tables_not_owned_by_tp_owner`` (the tables of B's schema not owned by tp_owner: the dump
   has no owners, and the restore gives its objects back to tp_owner). Beside it, ``pg_restore --no-owner`` of the
   raw dump into a third empty database on B's server (after ``tp restore``: its grants need the roles it
   created): ``raw_pg_restore_s``, ``restore_ratio_vs_raw_pg_restore``.
5. After: the same per-table figures on B: ``rows_diff`` (the sum over every table of |rows in A - rows in B|) and
   ``tables_differing`` (tables whose rows or md5 differ); the models B serves from its own registry and artifacts,
   each loaded through a fresh model cache under B's TP_HOME (``models_served_after`` against
   ``models_served_before``); Dagster's runs (``dagster_runs_before``/``_after``, the same run ids).
6. Live after the restore: in B, the next closed 1h candle of the first symbol is written through the live write
   path (``write_live``: its event in the outbox), the live sensor is ticked on B's Dagster instance with B's
   resources, the run it requests is executed in process, and ``live_predicted_after_restore`` says whether the
   candle now has a prediction of every model B serves for that symbol (``live_models_predicted``).

Targets (``targets_met``): ``rows_diff`` = 0, ``tables_differing`` = 0, ``models_served_before`` =
``models_served_after`` (every one loading), the same Dagster runs, ``live_predicted_after_restore``,
``roles_after_restore`` holding all five roles, ``tables_not_owned_by_tp_owner`` = 0, and the whole run within 20
minutes on this 2-core machine (with the defaults, about 2.5 minutes: half of it the scoring run).
The pump gate needs some history: ``--symbols 2 --days 60`` is about the smallest run that works. On an external
server B's restore leaves the roles it created there (they are the cluster's: dropping B's databases keeps them).

    python benchmarks/backup.py [--symbols 20] [--days 365] [--keep DIR] [--database-url ADMIN_DSN]
                                [--same-server | --restore-database-url ADMIN_DSN]

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# out of the path (Python put it first, running this script): benchmarks/watchdog.py would shadow the watchdog
# package Dagster's instance imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SEED = 7
HOUR = timedelta(hours=1)
PUMP = {"timeframe": "1h", "rise": 0.02, "n_estimators": 40, "max_depth": 3, "n_boot": 200,
        "min_improvement_auc": -1.0, "min_improvement_log_loss": -1.0}
REGIME = {"n_iter": 10, "n_boot": 200}
FAST_LIVE = {"TP_LIVE_WAIT_S": "0", "TP_LIVE_POLL_S": "0.1"}  # as tests/test_live.py: a tick does not wait
# variables of the environment that would point a deployment elsewhere than where this benchmark puts it
QUIET = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
         "MLFLOW_LOGGING_LEVEL": "WARNING"}  # as tp up's services: no progress bars in the log
FOREIGN = ("TP_RAG_DIR", "TP_BACKUP_MLFLOW_DB", "TP_BACKUP_MLFLOW_ARTIFACTS", "DAGSTER_PG_HOST", "MLFLOW_REGISTRY_URI",
           "TP_HISTORY_START", "TP_LIVE_MAX_RUNS", "TP_LIVE_LISTEN", "TP_LIVE_BATCH_MAX", "TP_LIVE_RETRY_AFTER_S")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- databases ---------------------------------------------------------------------------------------------------
def with_db(dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    d = conninfo_to_dict(dsn)
    d["dbname"] = name
    return make_conninfo(**d)


def create_db(admin: str, prefix: str) -> str:
    """A new, empty database (no schema) on the admin DSN's server; its DSN."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return with_db(admin, name)


def drop_db(admin: str, dsn: str) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {conninfo_to_dict(dsn)['dbname']} WITH (FORCE)")


def roles(dsn: str) -> list[str]:
    """Which of the roles the market store's grants name exist on the server of ``dsn`` (sorted)."""
    import psycopg

    from trading_platform.backup import ROLES

    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                                        (list(ROLES),))]


def not_owned_by_tp_owner(dsn: str) -> int:
    """The tables of the schema of ``dsn`` whose owner is not tp_owner."""
    import psycopg

    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                         "AND tableowner <> 'tp_owner'").fetchone()[0]


def server_id(admin: str) -> str:
    """What tells servers apart: the cluster's system identifier (where this login may read it), else the
    address (host, port) of the DSN."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        with psycopg.connect(admin, autocommit=True) as c:
            return f"system {c.execute('SELECT system_identifier FROM pg_control_system()').fetchone()[0]}"
    except psycopg.Error:
        d = conninfo_to_dict(admin)
        return f"address {d.get('host') or ''}:{d.get('port') or 5432}"


def tables(dsn: str) -> dict[str, tuple[int, str]]:
    """Every table of the market store: (rows, md5 of its rows in a fixed order). As tests/test_backup.py
    ``_tables``, with each row hashed first (a year of features would make one string of hundreds of MB)."""
    import psycopg

    with psycopg.connect(dsn) as c:
        names = [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                         "ORDER BY 1")]
        return {t: tuple(c.execute(f"SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), '')) FROM "
                                   f"(SELECT md5(x::text) AS h FROM \"{t}\" x) r").fetchone()) for t in names}


# ---- a deployment ------------------------------------------------------------------------------------------------
def deployment_env(home: Path, dsn: str, key: str) -> dict:
    return {"TP_EMBEDDED": "1", "TP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "TP_DATABASE_URL": dsn,
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "TP_MODEL_SIGNING_KEY": key,
            "HF_HUB_OFFLINE": "1", "TP_DEVICE": "cpu", "TP_LOG_LEVEL": "WARNING"}


def use(env: dict) -> None:
    """Make ``env`` this process's deployment (the platform reads its settings when used); forget what the
    serving resource remembered of another."""
    for k in FOREIGN:
        os.environ.pop(k, None)
    os.environ.update(env)
    from trading_platform.resources import serving

    serving._MEMORY.clear()
    serving._ALIASES.clear()
    serving._VERIFIED.clear()


def resources() -> dict:
    from trading_platform.resources import MarketDB, MLflowResource, ModelServer

    return {"market_db": MarketDB(database_url=os.environ["TP_DATABASE_URL"]), "mlflow": MLflowResource(),
            "model_server": ModelServer(device="cpu")}


def fill(dsn: str, symbols: list[str], start: datetime, end: datetime) -> dict:
    """Deployment A (its environment in force): candles, features, models, predictions, runs; the symbols live."""
    from dagster import DagsterInstance, materialize

    from trading_platform.assets.features import features
    from trading_platform.assets.models import predictions, pump_xgb, regime_hmm
    from trading_platform.assets.partitions import market_key, month_key
    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.instance import ensure_dagster_home
    from trading_platform.models.registry import promote
    from trading_platform.sources.synthetic import SyntheticSource
    from trading_platform.store.db import connect

    out: dict = {}
    t = time.perf_counter()
    source = SyntheticSource(SEED)
    written = 0
    with connect(dsn) as store:
        for s in symbols:
            info = SymbolInfo.create(s, timeframes=["1h"])
            store.add_symbol(info)
            written += store.ingest_frame(s, "1h", source.fetch(info, "1h", start, end), "synthetic").inserted
    out["candles"] = written
    out["candles_s"] = round(time.perf_counter() - t, 1)
    log(f"  {written:,} candles ({len(symbols)} symbols x 1h, {start:%Y-%m-%d} .. {end:%Y-%m-%d %H:%M}) in "
        f"{out['candles_s']} s")

    ensure_dagster_home()
    res = resources()
    first, last = month_key(start), month_key(end - HOUR)
    every = {"dagster/asset_partition_range_start": str(market_key(symbols[0], first)),
             "dagster/asset_partition_range_end": str(market_key(symbols[-1], last))}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

    def run(asset, config=None, **kw):
        key = asset.key.to_python_identifier()
        r = materialize([asset], instance=instance, resources=res,
                        run_config={**quiet, **({"ops": {key: {"config": config}}} if config else {})}, **kw)
        if not r.success:
            raise RuntimeError(f"{key} failed")
        ms = r.asset_materializations_for_node(key)
        return {k: v.value for k, v in ms[0].metadata.items()} if ms else {}

    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("symbol", symbols)  # in order: the range spans every symbol
        t = time.perf_counter()
        run(features, tags=every)
        out["features_s"] = round(time.perf_counter() - t, 1)
        log(f"  features of {len(symbols)} symbols x {first[:7]} .. {last[:7]} in one run: {out['features_s']} s")
        t = time.perf_counter()
        client = res["mlflow"].client()
        md = run(pump_xgb, PUMP)
        if md.get("gate_decision") != "champion":
            log(f"  pump_xgb's gate: {md.get('gate_decision')}: promoted by hand")
            promote(client, "pump_xgb", "1")
        run(regime_hmm, REGIME, partition_key=symbols[0])
        regime_name = f"regime_hmm.{symbols[0].replace('/', '_')}"
        if "champion" not in (client.get_registered_model(regime_name).aliases or {}):
            promote(client, regime_name, "1")
        out["train_s"] = round(time.perf_counter() - t, 1)
        log(f"  trained pump_xgb (1h, pooled) and {regime_name}: {out['train_s']} s")
        t = time.perf_counter()
        md = run(predictions, tags=every)
        out["predictions_s"] = round(time.perf_counter() - t, 1)
        out["predictions_by_model"] = md.get("by_model")
        log(f"  predictions of every symbol-month in one run: {out['predictions_s']} s: {md.get('by_model')}")
        out["runs"] = sorted(r.dagster_run.run_id for r in instance.get_run_records())
    with connect(dsn) as store:
        for s in symbols:
            store.update_symbol(s, live=True)
    return out


def served(cache_dir: Path) -> list[list]:
    """The models this deployment serves (its environment in force): [name, version, role, loaded], sorted."""
    from mlflow.tracking import MlflowClient

    from trading_platform.models.scoring import resolve_versions
    from trading_platform.resources import ModelServer

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    server = ModelServer(device="cpu", cache_dir=str(cache_dir))
    out = []
    for v in sorted(resolve_versions(client, server=server), key=lambda v: (v.name, v.version, v.role)):
        try:
            server.load(v.name, version=v.version)
            ok = True
        except Exception as e:  # noqa: BLE001 - reported, and fails the target
            log(f"  {v.name} version {v.version} does not load: {type(e).__name__}: {e}")
            ok = False
        out.append([v.name, v.version, v.role, ok])
    return out


def dagster_runs() -> list[str]:
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        return sorted(r.dagster_run.run_id for r in instance.get_run_records())


def tp(args: list[str], env: dict, what: str) -> tuple[dict, float]:
    """``tp ARGS --json`` as a process: (its JSON, its wall time)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "trading_platform.cli", *args, "--json"], env=env, cwd=REPO,
                       capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}):\n{r.stderr[-4000:]}\n{r.stdout[-2000:]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1]), took


def pg_tool_run(name: str, dsn: str, args: list[str], what: str) -> float:
    """pg_dump/pg_restore (the binary ``tp backup`` picks) against ``dsn``: its wall time."""
    import psycopg

    from trading_platform.backup import _pg_tool, _server_major, _split

    with psycopg.connect(dsn, autocommit=True) as c:
        major = _server_major(c)
    conninfo, env = _split(dsn)
    binary = _pg_tool(name, major)
    t = time.perf_counter()
    r = subprocess.run([binary, *args, f"--dbname={conninfo}"], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {r.stderr[-2000:]}")
    return took


def feed_live(dsn: str, symbol: str) -> tuple[datetime, list[int]]:
    """The next closed 1h candle of the series through the live write path (as tests/test_live.py feed_next)."""
    from trading_platform.live.feed import next_closed
    from trading_platform.sources.synthetic import SyntheticSource
    from trading_platform.store.db import connect

    with connect(dsn) as store:
        info = store.get_symbol(symbol)
        new = next_closed(SyntheticSource(SEED), info, "1h", store.candle_stats(symbol, "1h")["last_ts"], 1)
        ids = store.write_live(symbol, "1h", new).events
    return datetime.fromtimestamp(int(new.ts_us[0]) / 1e6, tz=timezone.utc), ids


def live_after_restore(dsn: str, symbol: str, served_after: list[list]) -> dict:
    """B's environment in force: a live candle fed, the live sensor ticked (as tests/test_live.py ``tick``), the
    runs it requests executed in process; the candle's predictions against the served models that score the
    symbol's 1h series."""
    import psycopg
    from dagster import DagsterInstance, build_sensor_context
    from mlflow.tracking import MlflowClient

    from trading_platform.core.symbols import SymbolInfo
    from trading_platform.models.scoring import Version
    from trading_platform.sensors.live import live_predictions_job, live_predictions_sensor

    for k, v in FAST_LIVE.items():
        os.environ[k] = v
    ts, ids = feed_live(dsn, symbol)
    t = time.perf_counter()
    res = resources()
    runs_ok = []
    with DagsterInstance.get() as instance:
        with build_sensor_context(instance=instance, resources=res) as ctx:
            result = live_predictions_sensor(ctx)
        for req in result.run_requests:
            r = live_predictions_job.execute_in_process(run_config=req.run_config, tags=req.tags, instance=instance,
                                                        resources=res, raise_on_error=False)
            runs_ok.append(r.success)
    took = time.perf_counter() - t
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    info = SymbolInfo.create(symbol, timeframes=["1h"])
    expected = sorted({name for name, version, role, _ in served_after if "1h" in Version(
        name, version, role, dict(client.get_model_version(name, version).tags)).timeframes(info)})
    with psycopg.connect(dsn) as c:
        got = sorted(r[0] for r in c.execute(
            "SELECT DISTINCT model_name FROM predictions WHERE symbol = %s AND timeframe = '1h' AND ts = %s",
            (symbol, ts)))
        status = [r[0] for r in c.execute("SELECT status FROM market_event_queue WHERE event_id = ANY(%s)", (ids,))]
    return {"live_candle": ts.isoformat(), "live_events": len(ids), "live_runs": len(runs_ok),
            "live_runs_ok": bool(runs_ok) and all(runs_ok), "live_models_expected": expected,
            "live_models_predicted": got, "live_events_done": bool(status) and status.count("done") == len(status),
            "live_tick_to_commit_s": round(took, 2),
            "live_predicted_after_restore": bool(expected) and set(expected) <= set(got) and bool(runs_ok)
            and all(runs_ok)}


# ---- the run -----------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=20, help="crypto symbols of deployment A (default 20)")
    ap.add_argument("--days", type=int, default=365, help="days of hourly candles per symbol (default 365)")
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="work in DIR and keep it, with the databases and the embedded server (default: a temp dir, "
                         "removed)")
    ap.add_argument("--database-url", default=os.environ.get("TP_DATABASE_URL"),
                    help="an admin DSN of the PostgreSQL server to create the databases on (default: "
                         "TP_DATABASE_URL; neither: an embedded server in the temp dir); B's too unless "
                         "--restore-database-url names another")
    where_b = ap.add_mutually_exclusive_group()
    where_b.add_argument("--same-server", action="store_true",
                         help="restore B on A's server (default: B on a second embedded server in the temp dir, or "
                              "with --database-url on that server)")
    where_b.add_argument("--restore-database-url", metavar="ADMIN_DSN", default=None,
                         help="an admin DSN of the PostgreSQL server to restore B on (its databases are created there)")
    args = ap.parse_args()

    t_all = time.perf_counter()
    if args.keep:
        tmp = Path(args.keep).expanduser().resolve()
        if tmp.exists() and any(tmp.iterdir()):
            ap.error(f"--keep {tmp}: not an empty directory")
        tmp.mkdir(parents=True, exist_ok=True)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="tp-backup-bench-"))
    key = secrets.token_hex(32)
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    os.environ.update(QUIET)
    from trading_platform.backup import ROLES
    from trading_platform.instance import quiet_dagster_warnings

    quiet_dagster_warnings()
    admin, pg_tmp = args.database_url, None
    admin_b, pg2_tmp = args.restore_database_url, None
    os.environ.pop("TP_DATABASE_URL", None)  # each deployment names its own
    from trading_platform.store.embedded import ensure_embedded, stop_embedded

    embedded: dict[str, Path] = {}  # admin DSN -> data directory of each embedded server started here
    symbols = [f"C{i:02d}/USDT" for i in range(1, args.symbols + 1)]
    last_closed = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - HOUR
    end = last_closed - HOUR  # the stored history's last candle opens at end - 1h: two closed ones left to feed live
    start = end - timedelta(days=args.days)
    figures: dict = {"symbols": args.symbols, "days": args.days}
    dbs: list[tuple[str, str]] = []  # (admin DSN of its server, database DSN)
    try:
        if not admin:
            pg_tmp = tmp / "pg"
            admin = with_db(ensure_embedded(pg_tmp), "postgres")
            embedded[admin] = pg_tmp
        if not admin_b:
            if args.same_server or args.database_url:
                admin_b = admin
            else:
                pg2_tmp = tmp / "pg2"
                admin_b = with_db(ensure_embedded(pg2_tmp), "postgres")
                embedded[admin_b] = pg2_tmp
        figures["restore_other_server"] = server_id(admin_b) != server_id(admin)
        log(f"A's server: {'embedded in ' + str(pg_tmp) if pg_tmp else 'given'}; B's: "
            f"{'embedded in ' + str(pg2_tmp) if pg2_tmp else 'given' if args.restore_database_url else 'the same'} "
            f"(another server: {figures['restore_other_server']})")
        from benchmarks.scale import fresh_db

        dsn_a = fresh_db(admin, "bk_a")  # migrated: the deploy step
        dbs.append((admin, dsn_a))
        env_a = deployment_env(tmp / "a", dsn_a, key)
        use(env_a)
        (tmp / "a").mkdir(parents=True, exist_ok=True)
        log(f"deployment A in {tmp / 'a'}: filling")
        t = time.perf_counter()
        filled = fill(dsn_a, symbols, start, end)
        figures["fill_s"] = round(time.perf_counter() - t, 1)
        figures["fill_parts_s"] = {k: filled[k] for k in ("candles_s", "features_s", "train_s", "predictions_s")}
        figures["predictions_by_model"] = filled["predictions_by_model"]
        log(f"  filled in {figures['fill_s']} s")

        t = time.perf_counter()
        before = tables(dsn_a)
        models_before = served(tmp / "a" / "model_cache_check")
        runs_before = dagster_runs()
        figures["snapshot_s"] = round(time.perf_counter() - t, 1)
        figures["tables"] = len(before)
        figures["rows"] = sum(n for n, _ in before.values())
        figures["rows_by_table"] = {k: v[0] for k, v in before.items() if v[0]}
        log(f"  A: {figures['tables']} tables, {figures['rows']:,} rows ({figures['rows_by_table']}); serves "
            f"{models_before}; {len(runs_before)} Dagster runs")

        env_sub = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        bk = tmp / "backup"
        log(f"tp backup {bk}")
        manifest, figures["backup_s"] = tp(["backup", str(bk)], {**env_sub, **env_a}, "tp backup")
        figures["backup_s"] = round(figures["backup_s"], 2)
        figures["backup_bytes"] = manifest["bytes"]
        figures["backup_seconds_inside"] = manifest.get("seconds")
        figures["backup_parts_bytes"] = {k: v["bytes"] for k, v in manifest["parts"].items()}
        raw_dump = tmp / "raw-market.dump"
        figures["raw_pg_dump_s"] = round(pg_tool_run("pg_dump", dsn_a, ["--format=custom", "--no-owner",
                                                                        f"--file={raw_dump}"], "pg_dump"), 2)
        figures["raw_pg_dump_bytes"] = raw_dump.stat().st_size
        figures["backup_ratio_vs_raw_pg_dump"] = round(figures["backup_s"] / figures["raw_pg_dump_s"], 2)
        log(f"  backup {figures['backup_s']} s ({manifest.get('seconds')} s inside), {figures['backup_bytes']:,} "
            f"bytes {figures['backup_parts_bytes']}; raw pg_dump {figures['raw_pg_dump_s']} s, "
            f"{figures['raw_pg_dump_bytes']:,} bytes")

        dsn_b = create_db(admin_b, "bk_b")  # empty: no schema
        dbs.append((admin_b, dsn_b))
        env_b = deployment_env(tmp / "b", dsn_b, key)
        figures["roles_before_restore"] = roles(dsn_b)
        log(f"tp restore {bk} into deployment B ({tmp / 'b'}); roles on B's server before: "
            f"{figures['roles_before_restore'] or 'none'}")
        restored, figures["restore_s"] = tp(["restore", str(bk)], {**env_sub, **env_b}, "tp restore")
        figures["restore_s"] = round(figures["restore_s"], 2)
        figures["restore_seconds_inside"] = restored.get("seconds")
        figures["restore_rows_diff_reported"] = restored.get("rows_diff")
        figures["artifact_locations_rewritten"] = restored.get("artifact_locations_rewritten")
        figures["roles_after_restore"] = roles(dsn_b)
        figures["tables_not_owned_by_tp_owner"] = not_owned_by_tp_owner(dsn_b)
        log(f"  roles on B's server after: {figures['roles_after_restore']}; tables of B not owned by tp_owner: "
            f"{figures['tables_not_owned_by_tp_owner']}")
        dsn_c = create_db(admin_b, "bk_raw")  # after tp restore: the raw dump's grants need the roles
        dbs.append((admin_b, dsn_c))
        figures["raw_pg_restore_s"] = round(pg_tool_run("pg_restore", dsn_c, ["--no-owner", "--exit-on-error",
                                                                              str(raw_dump)], "pg_restore"), 2)
        figures["restore_ratio_vs_raw_pg_restore"] = round(figures["restore_s"] / figures["raw_pg_restore_s"], 2)
        log(f"  restore {figures['restore_s']} s ({restored.get('seconds')} s inside); raw pg_restore "
            f"{figures['raw_pg_restore_s']} s")

        use(env_b)
        from trading_platform.instance import ensure_dagster_home

        ensure_dagster_home()
        after = tables(dsn_b)
        names = sorted(set(before) | set(after))
        figures["rows_diff"] = sum(abs(before.get(t, (0, ""))[0] - after.get(t, (0, ""))[0]) for t in names)
        differing = [t for t in names if before.get(t) != after.get(t)]
        figures["tables_differing"] = len(differing)
        if differing:
            figures["tables_differing_names"] = differing
        models_after = served(tmp / "b" / "model_cache")
        runs_after = dagster_runs()
        figures["models_served_before"] = models_before
        figures["models_served_after"] = models_after
        figures["dagster_runs_before"] = len(runs_before)
        figures["dagster_runs_after"] = len(runs_after)
        figures["dagster_runs_equal"] = runs_before == runs_after
        log(f"  B: rows_diff {figures['rows_diff']}, tables differing {differing or 'none'}; serves {models_after}; "
            f"{len(runs_after)} Dagster runs ({'the same' if runs_before == runs_after else 'NOT the same'})")

        live = live_after_restore(dsn_b, symbols[0], models_after)
        figures.update(live)
        log(f"  live after restore: {symbols[0]} {live['live_candle']}: predicted by {live['live_models_predicted']} "
            f"(expected {live['live_models_expected']}), {live['live_runs']} run(s) in "
            f"{live['live_tick_to_commit_s']} s")
    finally:
        if args.keep:
            figures["kept"] = {"dir": str(tmp), "databases": [d for _, d in dbs],
                               "embedded_servers": [str(p) for p in embedded.values()]}
            log(f"kept {tmp} (databases {[d for _, d in dbs]})")
        else:
            try:
                for server, d in dbs:
                    if server not in embedded:  # an embedded server's databases go with it
                        drop_db(server, d)
            finally:
                for p in embedded.values():
                    try:
                        stop_embedded(p)
                    except Exception as e:  # noqa: BLE001 - the other one is still stopped
                        log(f"  the embedded server in {p} did not stop: {type(e).__name__}: {e}")
                shutil.rmtree(tmp, ignore_errors=True)

    figures["total_s"] = round(time.perf_counter() - t_all, 1)
    figures["targets_met"] = {
        "rows_diff_0": figures["rows_diff"] == 0,
        "tables_differing_0": figures["tables_differing"] == 0,
        "models_served_equal": figures["models_served_before"] == figures["models_served_after"]
        and bool(figures["models_served_after"]) and all(m[3] for m in figures["models_served_after"]),
        "dagster_runs_equal": figures["dagster_runs_equal"],
        "live_predicted_after_restore": figures["live_predicted_after_restore"],
        "roles_after_restore_all": set(figures["roles_after_restore"]) >= set(ROLES),
        "tables_not_owned_by_tp_owner_0": figures["tables_not_owned_by_tp_owner"] == 0,
        "within_20_min": figures["total_s"] <= 1200,
    }
    log(f"backup {figures['backup_s']} s ({figures['backup_ratio_vs_raw_pg_dump']}x a raw pg_dump), "
        f"{figures['backup_bytes'] / 1e6:.1f} MB; restore {figures['restore_s']} s "
        f"({figures['restore_ratio_vs_raw_pg_restore']}x a raw pg_restore); rows_diff {figures['rows_diff']}, "
        f"{figures['tables_differing']} tables differing; models "
        f"{'equal' if figures['targets_met']['models_served_equal'] else 'DIFFER'}; "
        f"live predicted after restore: {figures['live_predicted_after_restore']}; restored onto another server: "
        f"{figures['restore_other_server']} (roles before {figures['roles_before_restore'] or 'none'}, after "
        f"{figures['roles_after_restore']}; {figures['tables_not_owned_by_tp_owner']} tables not owned by "
        f"tp_owner); total {figures['total_s']} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
